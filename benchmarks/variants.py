"""GenCO variants side by side on any world, each seed its own world and log: the share of the oracle's lift.

    python benchmarks/variants.py --interaction 0 --seeds 1,2,3 \
        genco-one-reward-model genco-one-reward-model:weight_decay=3.0
    python benchmarks/variants.py --form gated --seeds 1,2,3 genco-one-reward-model genco-one-reward-model:attention=false
    python benchmarks/variants.py --cold-share 0.2 --seeds 1,2,3 genco mvt    # cold start, as `genco bench`'s
    python benchmarks/variants.py --quick      # 4,000 impressions, one seed, two epochs: for CI

A variant is a policy name (`genco bench --list`) and optional settings, `name:field=value,...`, where a field
is one of ModelConfig, TrainConfig or SelectConfig (genco.policies.make_genco) and a value is a number, true,
false or a word (`genco:wide_priors=evidence`). One world's reading moves by 0.1 and more between seeds at
50,000 impressions: compare means over several seeds, and the paired per-seed figures this prints.
"""

from __future__ import annotations

import argparse
import json
import time

from genco import bench, console
from genco.world import FEATURES, FORMS, WorldConfig


def _number_or_text(text: str) -> int | float | str:
    try:
        return int(text)
    except ValueError:
        pass
    try:
        return float(text)
    except ValueError:
        return text


def parse_variant(spec: str) -> tuple[str, dict]:
    """'genco-one-reward-model:weight_decay=3,attention=false' -> (name, {setting: value})."""
    name, _, settings = spec.partition(":")
    options = {}
    for pair in filter(None, settings.split(",")):
        key, _, text = pair.partition("=")
        lowered = text.strip().lower()
        options[key.strip()] = (lowered == "true") if lowered in ("true", "false") else _number_or_text(text.strip())
    return name, options


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("variants", nargs="*", default=["genco-one-reward-model"])
    parser.add_argument("--form", default="tree", choices=FORMS)
    parser.add_argument("--features", default="full", choices=FEATURES)
    parser.add_argument("--interaction", type=float, default=1.0)
    parser.add_argument("--impressions", type=int, default=50_000)
    parser.add_argument("--ads", type=int, default=500)
    parser.add_argument("--candidates", type=int, default=15, help="candidates per component at most (the world's max_candidates)")
    parser.add_argument("--requests", type=int, default=1_000, help="fresh requests scored")
    parser.add_argument("--seeds", default="1,2,3")
    parser.add_argument("--cold-share", type=float, default=0.0,
                        help="the cold-start scenario: this share of the elements never logged, scored on the requests that hold one")
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--notes", action="store_true", help="show the training's notes (the wide part's chosen priors among them)")
    args = parser.parse_args()
    seeds = [int(s) for s in args.seeds.split(",")]
    impressions, options = args.impressions, {}
    if args.quick:
        seeds, impressions, options = seeds[:1], 4_000, {"epochs": 2}
    console.set_quiet(not args.notes)
    world = WorldConfig(seed=seeds[0], impressions=impressions, requests=args.requests, interaction=args.interaction,
                        interaction_form=args.form, features=args.features, ads=args.ads, max_candidates=args.candidates)
    for spec in args.variants:
        name, settings = parse_variant(spec)
        began = time.perf_counter()
        if args.cold_share:
            rows = bench.cold_start([name], world, seeds, share=args.cold_share, **options, **settings)
        else:
            rows = bench.offline([name], world, seeds, **options, **settings)
        shares = [round(r["frac_of_oracle_lift"], 3) for r in rows]
        cold = f", {args.cold_share} of the elements cold" if args.cold_share else ""
        print(json.dumps({"variant": spec, "world": f"{args.form}, {args.features} features, interaction "
                          f"{args.interaction}, {impressions} impressions, {args.candidates} candidates{cold}", "seeds": seeds, "frac_of_oracle_lift": shares,
                          "mean": round(sum(shares) / len(shares), 3), "seconds": round(time.perf_counter() - began)}),
              flush=True)


if __name__ == "__main__":
    main()
