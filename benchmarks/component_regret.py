"""Where a policy's greedy choices fall short, component by component, at interaction 0.

    python benchmarks/component_regret.py --seed 1 mvt genco-one-reward-model
    python benchmarks/component_regret.py --quick          # 4,000 impressions, counting and one GenCO epoch: for CI

At interaction 0 the world is additive: the best combination is the best element of each component (its
quality plus the user's personal preference), so a policy's shortfall splits exactly by component. For each
policy this prints the share of the oracle's lift and, per component, the mean over 1,000 fresh requests of
the true effect of that component's best candidate minus the effect of the one chosen (units of the click
logit).
"""

from __future__ import annotations

import argparse
import json

import numpy as np

from genco import bench, console
from genco.data import encode
from genco.evaluate import Evaluator
from genco.world import WorldConfig, simulate_in_memory


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("policies", nargs="*", default=["mvt", "genco-one-reward-model"])
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--impressions", type=int, default=50_000)
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args()
    policies, impressions, options = args.policies, args.impressions, {}
    if args.quick:
        policies, impressions, options = ["counting", "genco-one-reward-model"], 4_000, {"epochs": 1}
    console.set_quiet(True)
    world, logs, rows = simulate_in_memory(WorldConfig(seed=args.seed, impressions=impressions, requests=1_000, interaction=0.0))
    requests = encode(rows, logs.schema)
    evaluator = Evaluator(world, rows)
    for name in policies:
        policy = bench.build_policy(name, args.seed, world, **(options if name.startswith("genco") else {}))
        chosen = policy.fit(logs).choose(requests, greedy=True, seed=args.seed)
        regret: dict[str, list[float]] = {}
        for request, selection in zip(evaluator.requests, chosen.selections):
            user = np.asarray(request["user"], dtype=float)
            for component, candidates in request["components"].items():
                elements = [world._element(component, c["id"]) for c in candidates]
                effect = world._unary(component, np.asarray(elements), user)
                picked = elements.index(world._element(component, selection[component]))
                regret.setdefault(component, []).append(float(effect.max() - effect[picked]))
        print(json.dumps({"policy": name, "seed": args.seed, "impressions": impressions,
                          "frac_of_oracle_lift": round(evaluator.score(chosen.selections)["frac_of_oracle_lift"], 3),
                          "regret_by_component": {c: round(float(np.mean(v)), 3) for c, v in regret.items()}}), flush=True)


if __name__ == "__main__":
    main()
