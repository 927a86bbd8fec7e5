"""What the policy gradient should maximise: the generator's objective, measured on one set of reward models.

    python benchmarks/generator_objective.py            # seed-1 world, 200,000 impressions (about 10 minutes)
    python benchmarks/generator_objective.py --quick    # 8,000 impressions, for CI

The reward models (GenCO's ensemble) are trained once; the generator is then trained from the same start
with each objective and compared with no training at all and with uniform proposals:

- untrained     no policy gradient: pi = softmax of phi's scores (what `--no-rl` serves)
- mean          the paper's REINFORCE: E[R] with the mean of the K samples as baseline
- best-of-k     genco's: E[max_k R], each sample credited with what it adds to the best of the K
- uniform       every candidate equally likely: proposals that know nothing

For each, on fresh requests: the policy's entropy (nats, summed over components, mean over requests), the
share of the oracle's CTR lift captured by sampling alone (best of greedy + K by the reward models) and with
genco's coordinate ascent on top (the default serving), the reward models' predicted CTR of the answer, and
the selection time of each.
"""

from __future__ import annotations

import argparse
import copy
import json
import time

import torch

from genco import console
from genco.data import batch_indices, collate, encode
from genco.evaluate import Evaluator
from genco.select import SelectConfig, choose
from genco.train import TrainConfig, train, train_generator
from genco.world import WorldConfig, simulate_in_memory


@torch.no_grad()
def policy_entropy(model, requests) -> float:
    """Mean over requests of the generator's entropy, summed over components (nats)."""
    generator, total = getattr(model, "primary", model), 0.0
    model.eval()
    for idx in batch_indices(len(requests), 512):
        enc = generator.encode(collate(requests, idx))
        log_pi = generator.log_pi(generator.policy_scores(enc), enc)  # (B, T), -inf on padding
        total += float(-(log_pi.exp() * log_pi.masked_fill(~enc.mask, 0.0)).sum())
    return total / len(requests)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="8,000 impressions, 2 reward-model epochs")
    parser.add_argument("--impressions", type=int, default=200_000)
    parser.add_argument("--seed", type=int, default=1, help="training seed (the world is seed 1's)")
    args = parser.parse_args()
    impressions, epochs = (8_000, 2) if args.quick else (args.impressions, TrainConfig.epochs)
    console.set_quiet(True)
    world, logs, request_rows = simulate_in_memory(WorldConfig(seed=1, impressions=impressions, requests=1000))
    requests = encode(request_rows, logs.schema)
    evaluator = Evaluator(world, request_rows)
    base = train(logs, config=TrainConfig(seed=args.seed, epochs=epochs, rl=False)).model

    def measure(name: str, model) -> None:
        figures = {"generator": name, "entropy_nats": round(policy_entropy(model, requests), 3)}
        for label, passes in (("sampling_alone", 0), ("with_ascent", SelectConfig.refine_passes)):
            start = time.perf_counter()
            chosen = choose(model, requests, greedy=True, config=SelectConfig(mode="search", refine_passes=passes), seed=args.seed)
            figures[f"select_seconds_per_1k_{label}"] = round(1000 * (time.perf_counter() - start) / len(requests), 2)
            figures[f"frac_{label}"] = round(evaluator.score(chosen.selections)["frac_of_oracle_lift"], 3)
            figures[f"predicted_ctr_{label}"] = round(float(chosen.score.mean()), 5)
        print(json.dumps(figures), flush=True)

    measure("untrained", base)
    for objective in ("mean", "best-of-k"):
        model = copy.deepcopy(base)
        train_generator(model, logs, TrainConfig(seed=args.seed, rl_objective=objective))
        measure(objective, model)
    uniform = copy.deepcopy(base)
    with torch.no_grad():
        getattr(uniform, "primary", uniform).log_sharpness.fill_(-30.0)  # pi = softmax(~0 * scores): uniform
    measure("uniform", uniform)


if __name__ == "__main__":
    main()
