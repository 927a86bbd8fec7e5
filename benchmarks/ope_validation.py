"""Off-policy estimators against the truth: bias, RMSE and interval coverage over many simulated worlds.

    python benchmarks/ope_validation.py                 # 20 seeds, interaction 0 and 1: about 2 hours in one process
    python benchmarks/ope_validation.py --quick         # 2 seeds, small logs, one GenCO epoch: for CI
    python benchmarks/ope_validation.py --interactions 0 --json a.json &   # one process per interaction, then
    python benchmarks/ope_validation.py --interactions 1 --json b.json; wait
    python benchmarks/ope_validation.py --from-json a.json b.json          # the table of both
    python benchmarks/ope_validation.py --seeds 5 --max-candidates 15 --json reports/ope.json

For every seed and interaction strength: a world (6 components of up to --max-candidates elements), a
random-exposure log to fit the targets on, and a fresh one of --eval-impressions to judge them on, as
`genco ope` would. The targets: GenCO in explore mode (its pi mixed with --epsilon uniform, the propensity
exact) and greedy (as `genco serve` answers by default: best-of-k), per-element counting greedy, MVT in explore mode (posterior draws; q estimated from
--samples of them). Each estimator of genco.ope estimates each target's CTR on the judged log; the truth is
the target's true expected CTR on the same requests (the world's click probabilities, averaged over the
target's draws). `recommended` is what `genco ope` would tell the user to read (genco.ope.recommend).

Prints one JSON line per (interaction, target, estimator) and a Markdown table: bias (mean estimate minus
truth), RMSE, coverage of the 95% interval, the mean interval width and the mean effective sample size.
At interaction 0 the world is additive, where PI, SNPI and DR-PI are unbiased; at 1 they are not.
"""

from __future__ import annotations

import argparse
import json
import time
from collections import defaultdict
from pathlib import Path

import numpy as np

from genco import console
from genco.contract import LogRow
from genco.data import encode
from genco.estimators import Estimate
from genco.ope import OPEConfig, RewardModel, estimate_view, model_view, policy_view, recommend
from genco.policies import make_genco, make_policy
from genco.select import SelectConfig
from genco.world import World, WorldConfig, random_exposure_logs

TARGETS = (("genco", "explore"), ("genco", "greedy"), ("counting", "greedy"), ("mvt", "explore"))


def one_seed(seed: int, interaction: float, args) -> list[dict]:
    world = World.generate(WorldConfig(seed=seed, ads=args.ads, interaction=interaction, max_candidates=args.max_candidates))
    fit = encode(LogRow.model_validate(r) for r in random_exposure_logs(world, args.fit_impressions, seed))
    judged = encode((LogRow.model_validate(r) for r in random_exposure_logs(world, args.eval_impressions, seed + 10_000)), fit.schema)
    genco = make_genco("genco", seed=seed, epochs=args.epochs, reward_models=args.reward_models).fit(fit)
    fitted = {"genco": genco, "counting": make_policy("counting").fit(fit), "mvt": make_policy("mvt", seed=seed).fit(fit)}
    rows = []
    for name, mode in TARGETS:
        config = OPEConfig(mode=mode, epsilon=args.epsilon, samples=args.samples, seed=seed)
        target = fitted[name]
        view = (model_view(genco.model, judged, config, SelectConfig()) if name == "genco"
                else policy_view(target, judged, config))
        # every target's direct method reads GenCO's reward model, fitted on the fit log (as genco ope does)
        result = estimate_view(judged, view, config, reward_model=RewardModel(genco.model, "genco's own"), policy=name,
                               world=world)
        recommended = result.estimate(result.recommended)
        for label, e in [(e.estimator, e) for e in result.estimates] + [(f"recommended ({recommended.estimator})", recommended)]:
            rows.append({"interaction": interaction, "seed": seed, "target": f"{name} {mode}", "estimator": label,
                         "value": e.value, "low": e.low, "high": e.high, "ess": e.ess, "truth": result.truth})
    return rows


def rerecommend(rows: list[dict]) -> list[dict]:
    """The rows of an earlier run with the `recommended` rows chosen again by today's genco.ope.recommend."""
    runs: dict[tuple, list[dict]] = defaultdict(list)
    for row in rows:
        if not row["estimator"].startswith("recommended"):
            runs[(row["interaction"], row["seed"], row["target"])].append(row)
    out = []
    for group in runs.values():
        estimates = [Estimate(g["estimator"], g["value"], g["low"], g["high"], "", g["ess"], 0) for g in group]
        name = recommend(estimates)
        out += group + [{**next(g for g in group if g["estimator"] == name), "estimator": f"recommended ({name})"}]
    return out


def compact(summary: list[dict]) -> str:
    """One table per interaction: estimators down, targets across, each cell bias / RMSE / coverage."""
    targets = list(dict.fromkeys(s["target"] for s in summary))
    estimators = list(dict.fromkeys(s["estimator"] for s in summary))
    cells = {(s["interaction"], s["target"], s["estimator"]): s for s in summary}
    out = []
    for interaction in dict.fromkeys(s["interaction"] for s in summary):
        out += [f"\ninteraction {interaction:g}: bias (points of CTR) / RMSE / 95% coverage",
                "| estimator | " + " | ".join(targets) + " |", "|---" * (len(targets) + 1) + "|"]
        for estimator in estimators:
            row = []
            for target in targets:
                s = cells.get((interaction, target, estimator))
                row.append("" if s is None or s["bias"] is None else
                           f"{100 * s['bias']:+.2f} / {100 * s['rmse']:.2f} / {s['coverage']:.2f}")
            out.append(f"| {estimator} | " + " | ".join(row) + " |")
        out.append("| true CTR % | " + " | ".join(f"{100 * cells[(interaction, t, 'dm')]['truth']:.2f}" for t in targets) + " |")
    return "\n".join(out)


def summarise(rows: list[dict]) -> list[dict]:
    groups: dict[tuple, list[dict]] = defaultdict(list)
    for row in rows:
        estimator = "recommended" if row["estimator"].startswith("recommended") else row["estimator"]
        groups[(row["interaction"], row["target"], estimator)].append(row)
    out = []
    for (interaction, target, estimator), group in groups.items():
        value = np.array([g["value"] for g in group])
        truth = np.array([g["truth"] for g in group])
        finite = np.isfinite(value)
        error = value[finite] - truth[finite]
        covered = [g["low"] <= g["truth"] <= g["high"] for g, f in zip(group, finite) if f]
        picks = sorted({g["estimator"][len("recommended ("):-1] for g in group}) if estimator == "recommended" else []
        out.append({
            "interaction": interaction, "target": target, "estimator": estimator, "seeds": len(group),
            "finite": int(finite.sum()), "truth": float(truth.mean()),
            "bias": float(error.mean()) if finite.any() else None,
            "rmse": float(np.sqrt(np.mean(error ** 2))) if finite.any() else None,
            "coverage": float(np.mean(covered)) if covered else None,
            "width": float(np.mean([g["high"] - g["low"] for g, f in zip(group, finite) if f])) if finite.any() else None,
            "ess": float(np.mean([g["ess"] for g in group])),
            **({"picked": picks} if picks else {}),
        })
    return out


def table(summary: list[dict]) -> str:
    def pct(x, digits=3):
        return "n/a" if x is None else f"{100 * x:+.{digits}f}" if digits == 3 else f"{100 * x:.{digits}f}"
    lines = ["| interaction | target | estimator | true CTR % | bias (pp) | RMSE (pp) | 95% coverage | CI width (pp) | ESS |",
             "|---|---|---|---|---|---|---|---|---|"]
    for s in summary:
        name = s["estimator"] + (f" ({', '.join(s['picked'])})" if s.get("picked") else "")
        coverage = "n/a" if s["coverage"] is None else f"{s['coverage']:.2f}"
        lines.append(f"| {s['interaction']:g} | {s['target']} | {name} | {100 * s['truth']:.3f} | {pct(s['bias'])} | "
                     f"{pct(s['rmse'], 2)} | {coverage} | {pct(s['width'], 2)} | {s['ess']:.0f} |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seeds", type=int, default=20)
    parser.add_argument("--interactions", default="0,1")
    parser.add_argument("--ads", type=int, default=200)
    parser.add_argument("--max-candidates", type=int, default=5)
    parser.add_argument("--fit-impressions", type=int, default=10_000)
    parser.add_argument("--eval-impressions", type=int, default=12_000)
    parser.add_argument("--epsilon", type=float, default=0.3)
    parser.add_argument("--samples", type=int, default=8)
    parser.add_argument("--epochs", type=int, default=6)
    parser.add_argument("--reward-models", type=int, default=3)
    parser.add_argument("--json", type=Path, default=None, help="Also write every per-seed row and the summary here.")
    parser.add_argument("--from-json", type=Path, nargs="+", default=None,
                        help="Only summarise the rows of earlier runs' --json files (e.g. one process per interaction).")
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args()
    if args.from_json:
        rows = rerecommend([row for path in args.from_json for row in json.loads(path.read_text())["rows"]])
        print(table(summarise(rows)))
        print(compact(summarise(rows)))
        return
    if args.quick:
        args.seeds, args.ads, args.fit_impressions, args.eval_impressions = 2, 40, 2000, 3000
        args.epochs, args.samples, args.reward_models = 1, 2, 1
    console.set_quiet(True)
    rows = []
    start = time.perf_counter()
    for interaction in [float(x) for x in args.interactions.split(",")]:
        for seed in range(1, args.seeds + 1):
            rows += one_seed(seed, interaction, args)
            console.err.print(f"interaction {interaction:g} seed {seed}: {time.perf_counter() - start:.0f} s")
    summary = summarise(rows)
    for s in summary:
        print(json.dumps(s), flush=True)
    print(table(summary))
    print(compact(summary))
    if args.json:
        from genco.files import atomic_write_json

        atomic_write_json(args.json, {"settings": vars(args) | {"json": str(args.json)}, "rows": rows, "summary": summary})


if __name__ == "__main__":
    main()
