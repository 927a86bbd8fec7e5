"""Training and selection speed of GenCO on the default world.

    python benchmarks/train_speed.py            # 200,000 impressions, training to early stop (at most 12 epochs)
    python benchmarks/train_speed.py --quick    # 10,000 impressions, 2 epochs, for CI

Prints impressions/s of training (all loss terms: combination BCE, MIL, policy gradient), the whole
`train` time, and selection time per 1,000 requests (greedy: K samples + coordinate ascent; explore).
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
    parser.add_argument("--epochs", type=int, default=12)
    args = parser.parse_args()
    impressions, epochs = (10_000, 2) if args.quick else (args.impressions, args.epochs)
    console.set_quiet(True)
    start = time.perf_counter()
    world, logs, requests = simulate_in_memory(WorldConfig(seed=1, impressions=impressions, requests=2000))
    simulate_seconds = time.perf_counter() - start
    result = train(logs, ModelConfig(), TrainConfig(epochs=epochs, seed=0))
    epochs_run = len(result.history)
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
        "epochs_run": epochs_run,
        "train_seconds": round(result.seconds, 1),
        "train_impressions_per_second": round(result.impressions * epochs_run / result.seconds),
        "select_seconds_per_1k_greedy": round(timings["greedy"], 3),
        "select_seconds_per_1k_explore": round(timings["explore"], 3),
        "heldout_auc": round(result.best.heldout_auc, 4),
    }
    print(json.dumps(report))
    if not args.quick and result.seconds > 600:
        raise SystemExit(f"training took {result.seconds:.0f}s, over the 10-minute goal")


if __name__ == "__main__":
    main()
