"""The table form over many logs: how far can any learner beat counting whole combinations?

    python benchmarks/table_form.py                  # 25 logs (seeds 1-25), 200,000 impressions each
    python benchmarks/table_form.py --quick          # 2 logs of 20,000 impressions: for CI

The table form (`genco simulate --interaction-form table --features none --ads 1`, docs/worlds.md) is one
creative of 200 combinations whose click logit is a random draw with its variance split between main effects,
pairs and higher orders. Everything a learner can know about a combination beyond its own clicks comes
through the lower orders, so the best it can do is shrink each combination's own click rate toward what its
elements and pairs say, as far as the variance of the higher orders warrants. GenCO's wide part (genco.refit)
is that model; its prior precisions are the shrinkage. Per log this fits the wide part alone (the network
silenced, one reward model) with the priors chosen by held-out log loss (fitted on 90% of the rows, the rest
judging the grid, as in training) and by the evidence, pooled per block or per component and pair of components
(`ard`; on every row, since it needs none held out), each then
solved on every row as training ends, and counting whole combinations (combination-ts) on the same log, then
prints each one's share of the oracle's lift, the paired differences with their standard errors, and the
split of the variance the evidence believes in next to the world's. One log's reading moves by 0.3 and more: the paired mean over many
logs is the figure to read.
"""

from __future__ import annotations

import argparse
import json
import math
import time

import numpy as np
import torch

from genco import console
from genco.data import encode
from genco.evaluate import Evaluator
from genco.model import GenCO, ModelConfig
from genco.policies import BENCH_SELECT, make_policy
from genco.refit import PRIORS, choose_priors, solve_wide
from genco.select import choose
from genco.train import split, start_at_click_rate
from genco.world import WorldConfig, simulate_in_memory


def wide_part_alone(logs, priors: str, seed: int) -> tuple[GenCO, dict[str, float]]:
    """GenCO's wide part on its own, as genco.train fits it when the network is not kept: the priors chosen
    (on a held-out split, or by the evidence, pooled or per component (ard), on every row, which needs none), then the MAP on every row."""
    torch.manual_seed(seed)
    model = GenCO(logs.schema, ModelConfig())
    start_at_click_rate(model, logs)
    every_row = np.arange(len(logs))
    rows, heldout = split(len(logs), 0.1, seed)
    if priors != "heldout":  # the evidence needs no rows held out
        rows = every_row
    model.count_ids(logs, rows)
    model.silence_network()
    precisions = choose_priors([model], logs, [(rows, heldout)], priors=priors)
    solve_wide(model, logs, every_row, precisions)
    return model.eval(), precisions


def believed_split(precisions: dict[str, float], components: int) -> list[float]:
    """The evidence's split of the creative logit's variance: K main effects, K(K-1)/2 pairs and one
    combination effect per combination, each block's variance 1 / its precision."""
    variances = [components / precisions["elements"], components * (components - 1) / 2 / precisions["pairs"],
                 1 / precisions["combinations"]]
    return [round(v / sum(variances), 2) for v in variances]


def paired(a: list[float], b: list[float]) -> str:
    d = np.array(a) - np.array(b)
    se = d.std(ddof=1) / math.sqrt(len(d)) if len(d) > 1 else float("nan")
    return f"{d.mean():+.3f} ± {se:.3f} (wins {int((d > 1e-9).sum())}, losses {int((d < -1e-9).sum())})"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seeds", type=int, default=25, help="logs (and tables): seeds 1..N")
    parser.add_argument("--impressions", type=int, default=200_000)
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args()
    seeds, impressions = (range(1, 3), 20_000) if args.quick else (range(1, args.seeds + 1), args.impressions)
    console.set_quiet(True)
    shares: dict[str, list[float]] = {name: [] for name in (*PRIORS, "combination-ts")}
    for seed in seeds:
        config = WorldConfig(seed=seed, impressions=impressions, requests=1_000, interaction_form="table",
                             features="none", ads=1)
        world, logs, request_rows = simulate_in_memory(config)
        requests, evaluator = encode(request_rows, logs.schema), Evaluator(world, request_rows)
        row: dict = {"seed": seed}
        for priors in PRIORS:
            began = time.perf_counter()
            model, precisions = wide_part_alone(logs, priors, seed)
            chosen = choose(model, requests, greedy=True, config=BENCH_SELECT, seed=seed)
            row[priors] = round(evaluator.score(chosen.selections)["frac_of_oracle_lift"], 3)
            row[f"{priors}_seconds"] = round(time.perf_counter() - began, 1)
            if priors != "heldout":
                row[f"{priors}_split"] = believed_split(precisions, len(config.table_sizes))
        counting = make_policy("combination-ts", seed=seed).fit(logs)
        row["combination-ts"] = round(evaluator.score(counting.choose(requests, greedy=True, seed=seed).selections)["frac_of_oracle_lift"], 3)
        for name in shares:
            shares[name].append(row[name])
        print(json.dumps(row), flush=True)
    print(json.dumps({"logs": len(shares["evidence"]), "impressions": impressions, "world_split": list(config.variance_split),
                      **{f"mean_{name}": round(float(np.mean(v)), 3) for name, v in shares.items()},
                      "evidence_minus_counting": paired(shares["evidence"], shares["combination-ts"]),
                      "ard_minus_counting": paired(shares["ard"], shares["combination-ts"]),
                      "heldout_minus_counting": paired(shares["heldout"], shares["combination-ts"]),
                      "ard_minus_evidence": paired(shares["ard"], shares["evidence"]),
                      "evidence_minus_heldout": paired(shares["evidence"], shares["heldout"])}, ensure_ascii=False))


if __name__ == "__main__":
    main()
