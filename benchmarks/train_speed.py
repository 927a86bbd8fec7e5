"""Training and selection speed of GenCO on the default world.

    python benchmarks/train_speed.py            # 200,000 impressions, `genco train`'s defaults (early stopping)
    python benchmarks/train_speed.py --quick    # 10,000 impressions, 2 epochs, for CI

Prints impressions/s of each training stage (reward model: combination BCE + MIL; generator: policy
gradient with K samples per context), the whole `train` time (goal: under 10 minutes for 200k impressions
on 2 cores), and selection time per 1,000 requests (greedy: K samples + coordinate ascent; explore).
"""

from __future__ import annotations

import argparse
import json
import time

import torch

from genco import console
from genco.data import encode
from genco.model import ModelConfig
from genco.select import choose
from genco.train import TrainConfig, train
from genco.world import WorldConfig, simulate_in_memory


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="10k impressions, 2 epochs")
    parser.add_argument("--impressions", type=int, default=200_000)
    parser.add_argument("--epochs", type=int, default=TrainConfig.epochs, help="reward-model epochs at most")
    args = parser.parse_args()
    impressions, epochs = (10_000, 2) if args.quick else (args.impressions, args.epochs)
    console.set_quiet(True)
    start = time.perf_counter()
    world, logs, requests = simulate_in_memory(WorldConfig(seed=1, impressions=impressions, requests=2000))
    simulate_seconds = time.perf_counter() - start
    result = train(logs, ModelConfig(), TrainConfig(epochs=epochs, seed=0))
    stage_rate = {}
    for stage in ("reward", "generator"):
        records = [r for r in result.trained_epochs if r.stage == stage]
        seconds = sum(r.seconds for r in records)  # includes the held-out evaluation after each epoch
        stage_rate[stage] = (len(records), round(result.impressions * len(records) / seconds) if seconds else 0)
    request_data = encode(requests, logs.schema)
    timings = {}
    for greedy in (True, False):
        start = time.perf_counter()
        choose(result.model, request_data, greedy=greedy)
        timings["greedy" if greedy else "explore"] = 1000 * (time.perf_counter() - start) / len(requests)
    report = {
        "impressions": impressions,
        "threads": torch.get_num_threads(),
        "simulate_and_read_seconds": round(simulate_seconds, 1),
        "reward_models": result.summary()["reward_models"],
        "reward_epochs": stage_rate["reward"][0],  # over all reward models; the rate below is per epoch of one
        "reward_impressions_per_second": stage_rate["reward"][1],
        "generator_epochs": stage_rate["generator"][0],
        "generator_impressions_per_second": stage_rate["generator"][1],
        "train_seconds": round(result.seconds, 1),
        "select_seconds_per_1k_greedy": round(timings["greedy"], 3),
        "select_seconds_per_1k_explore": round(timings["explore"], 3),
        "heldout_auc": round(result.best.heldout_auc, 4),
    }
    print(json.dumps(report))
    if not args.quick and result.seconds > 600:
        raise SystemExit(f"training took {result.seconds:.0f}s, over the 10-minute goal")


if __name__ == "__main__":
    main()
