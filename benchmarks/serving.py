"""Serving cost and quality of each greedy mode, in-process, beside the peers' choose (issue 14).

    python benchmarks/serving.py             # quality at 200,000 impressions (seed-1 world), latency on 6 x 15 pools
    python benchmarks/serving.py --quick     # 4,000 impressions, one reward model, batches of 32: for CI
    python benchmarks/serving.py --quick --batch 256
    python benchmarks/serving.py --programs-only --latency-impressions 4000   # the lean program's rows alone
    PYTHONPATH=../other-checkout/src python benchmarks/serving.py --programs-only ...   # the same for another version

Quality: GenCO (the default ensemble) is trained once on the seed-1 world's random-exposure logs; each mode's
greedy selections for 1,000 fresh requests are scored on the world (share of the oracle's CTR lift), with
the loss against the full search.

Latency: requests of 6 components x 15 candidates (the world's requests, each pool filled up to 15 with other
elements of its component), K = 16. Per mode and runtime (the full model; the lean program in torch; its ONNX
export in ONNX Runtime), and for the autoregressive variant, MVT's choose and (when installed) VW's slates
predict, each fitted on the latency log: batch 1 on one thread, p50 and p99 of the time from request rows to
answers (encoding included, as the server pays it), and throughput at batch 256 on two threads. For the lean
runtimes also `program_*`: the program alone on inputs already built (what an ad server that feeds the ONNX
file itself pays). Ratios are to what `genco serve` runs by default (best-of-k in ONNX Runtime where genco[onnx]
is installed, else the lean torch program) in the same run. Printed as JSON lines.
"""

from __future__ import annotations

import argparse
import json
import time

import numpy as np
import torch

from genco import console
from genco.contract import Request
from genco.data import collate, encode
from genco.export import OnnxGreedy, export_onnx, onnx_available, optimized
from genco.lean import grid_inputs, greedy_program
from genco.evaluate import Evaluator
from genco.policies import make_policy
from genco.select import MODES, SelectConfig, choose, select_requests
from genco.world import WorldConfig, simulate_in_memory


def full_pools(requests: list[Request], size: int, rng: np.random.Generator) -> list[Request]:
    """Every request with each of its components' pools filled up to `size` candidates from the others' pools."""
    rows = [r.model_dump(exclude_none=True) for r in requests]
    catalogue: dict[str, dict[str, dict]] = {}
    for row in rows:
        for name, candidates in row["components"].items():
            for element in candidates:
                catalogue.setdefault(name, {})[element["id"]] = element
    names = sorted(catalogue, key=len)
    out = []
    for row in rows:
        components = {}
        for name in names:
            have = {e["id"]: e for e in row["components"].get(name, [])}
            others = [i for i in catalogue[name] if i not in have]
            for i in rng.choice(len(others), size=max(0, min(size - len(have), len(others))), replace=False):
                have[others[i]] = catalogue[name][others[i]]
            components[name] = list(have.values())[:size]
        out.append(Request.model_validate({**row, "components": components}))
    return out


def timed(call, repeats: int) -> np.ndarray:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        call()
        times.append(time.perf_counter() - start)
    return np.asarray(times)


def figures(one, many, n: int, calls: int, rounds: int, prefix: str = "") -> dict:
    """one(i): answer the i-th single request; many(): answer a batch of n. p50/p99 of one on 1 thread and
    requests/s of many on 2 threads."""
    torch.set_num_threads(1)
    one(0)  # warm up
    single = timed(lambda it=iter(range(10**9)): one(next(it)), calls)
    torch.set_num_threads(2)
    many()
    batch = timed(many, rounds)
    return {f"{prefix}p50_ms": round(1000 * float(np.median(single)), 3), f"{prefix}p99_ms": round(1000 * float(np.quantile(single, 0.99)), 3),
            f"{prefix}batch{n}_requests_per_s": round(n / float(np.median(batch)))}


def latency_figures(answer, requests: list[Request], calls: int, rounds: int, batch_size: int, answer_batch=None) -> dict:
    """answer(list of requests) -> anything; answer_batch for the batch where a runtime's threads are fixed when built."""
    batch = requests[:batch_size]
    return figures(lambda i: answer([requests[i % len(requests)]]), lambda: (answer_batch or answer)(batch), len(batch),
                   calls, rounds)


def program_figures(program, program_batch, data, k: int, calls: int, rounds: int, batch_size: int) -> dict:
    """The lean program alone, on grid inputs built beforehand (one per request, and one batch)."""
    singles = [grid_inputs(collate(data, [i], grid=True), k, 256) for i in range(min(len(data), 100))]
    n = min(batch_size, len(data))
    batch = grid_inputs(collate(data, np.arange(n), grid=True), k, 256)
    return figures(lambda i: program.answer(singles[i % len(singles)]), lambda: program_batch.answer(batch), n, calls, rounds,
                   prefix="program_")


def peers(rows: dict, latency_logs, pools: list[Request], options: dict, calls: int, rounds: int, batch_size: int) -> None:
    """The autoregressive variant's search, MVT's choose and (when installed) VW's slates predict, into rows."""
    autoregressive = make_policy("genco-autoregressive", seed=1, **options).fit(latency_logs).model
    rows["genco-autoregressive search"] = latency_figures(
        lambda batch: select_requests(autoregressive, batch, greedy=True, config=SelectConfig(mode="search")), pools, calls, rounds,
        batch_size)
    for name in ("mvt", "vw-slates"):
        try:
            peer = make_policy(name, seed=1).fit(latency_logs)
        except ImportError:
            continue
        rows[name] = latency_figures(lambda batch: peer.choose(encode(batch, latency_logs.schema), greedy=True), pools,
                                     calls, rounds, batch_size)


def quality(impressions: int, options: dict):
    """Each mode's share of the oracle's lift on the seed-1 world, and its loss against the search; -> the logs,
    requests and model it fitted."""
    world, logs, request_rows = simulate_in_memory(WorldConfig(seed=1, impressions=impressions, requests=1000))
    requests = encode(request_rows, logs.schema)
    evaluator = Evaluator(world, request_rows)
    genco = make_policy("genco", seed=1, **options).fit(logs)
    search = None
    for mode in MODES:
        chosen = choose(genco.model, requests, greedy=True, config=SelectConfig(mode=mode))
        share = evaluator.score(chosen.selections)["frac_of_oracle_lift"]
        search = share if mode == "search" else search
        print(json.dumps({"measure": "quality", "mode": mode, "impressions": impressions,
                          "frac_of_oracle_lift": round(share, 4), "loss_vs_search": round(search - share, 4)}), flush=True)
    return logs, request_rows, genco.model


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--impressions", type=int, default=200_000, help="logs of the quality measurement")
    parser.add_argument("--batch", type=int, default=None, help="throughput batch (default 256; quick 32)")
    parser.add_argument("--latency-impressions", type=int, default=20_000, help="logs the latency models are fitted on")
    parser.add_argument("--programs-only", action="store_true",
                        help="no quality run, no full model, no peers: the lean program's rows alone (an A/B of two versions)")
    args = parser.parse_args()
    quick = args.quick
    impressions, latency_impressions = (4_000, 4_000) if quick else (args.impressions, args.latency_impressions)
    options = {"epochs": 1, "reward_models": 1, "rl_epochs": 1} if quick else {}
    calls, rounds, batch_size = (20, 1, 32) if quick else (500, 10, 256)
    batch_size = args.batch or batch_size
    console.set_quiet(True)

    fitted = None if args.programs_only else quality(impressions, options)
    if quick and fitted:  # the quality model serves for the latency too
        latency_logs, latency_rows, model = fitted
        latency_rows = latency_rows[:300]
    else:
        _, latency_logs, latency_rows = simulate_in_memory(WorldConfig(seed=2, impressions=latency_impressions, requests=300))
        model = make_policy("genco", seed=1).fit(latency_logs).model
    pools = full_pools(latency_rows, 15, np.random.default_rng(0))
    rows = {}
    data = encode(pools, model.schema)
    for mode in MODES:
        config = SelectConfig(mode=mode)
        if not args.programs_only:
            rows[f"genco {mode} full model"] = latency_figures(
                lambda batch: select_requests(model, batch, greedy=True, config=config), pools, calls, rounds, batch_size)
        if mode == "search":
            continue
        k = 0 if mode == "argmax" else config.k
        lean = greedy_program(model, mode, "torch")
        onnx_bytes = optimized(export_onnx(lean))
        runtimes = {"lean torch": (lean, lean), "onnx": (OnnxGreedy(onnx_bytes, threads=1), OnnxGreedy(onnx_bytes, threads=2))}
        for runtime, (program, program_batch) in runtimes.items():
            rows[f"genco {mode} {runtime}"] = latency_figures(
                lambda batch: select_requests(model, batch, greedy=True, config=config, program=program), pools, calls, rounds,
                batch_size, answer_batch=lambda batch: select_requests(model, batch, greedy=True, config=config, program=program_batch)
            ) | program_figures(program, program_batch, data, k, calls, rounds, batch_size)
    if not args.programs_only:
        peers(rows, latency_logs, pools, options, calls, rounds, batch_size)
    default = f"genco {SelectConfig.mode} {'onnx' if onnx_available() else 'lean torch'}"  # what genco serve runs
    reference, throughput = rows[default], f"batch{batch_size}_requests_per_s"
    for name, measured in rows.items():
        print(json.dumps({"measure": "latency", "policy": name, "pools": "6 x 15", **measured,
                          "p50_vs_default": round(measured["p50_ms"] / reference["p50_ms"], 3),
                          "throughput_vs_default": round(measured[throughput] / reference[throughput], 3)}), flush=True)


if __name__ == "__main__":
    main()
