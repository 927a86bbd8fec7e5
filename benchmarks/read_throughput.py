"""Read throughput and peak memory: validate + batch a large log, JSONL and Parquet.

    python benchmarks/read_throughput.py            # a 1 GB JSONL log (and the same rows as Parquet)
    python benchmarks/read_throughput.py --quick    # 20 MB, for CI

The log is simulated once into --dir (reused on later runs). Each format is then read in a fresh process
that streams rows through the validator and into padded batches, and reports rows/s and its peak resident
memory (ru_maxrss), next to the memory of the same process before reading (imports only).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

import numpy as np


def build_log(directory: Path, size_mb: int) -> tuple[Path, Path]:
    from genco.files import AtomicWriter, read_rows
    from genco.world import World, WorldConfig

    jsonl, parquet = directory / f"logs-{size_mb}mb.jsonl", directory / f"logs-{size_mb}mb.parquet"
    if not jsonl.exists():
        world = World.generate(WorldConfig(seed=7, ads=2000))
        rng = np.random.default_rng(7)
        with AtomicWriter(jsonl, "logs") as writer:
            first = 0
            while writer._handle.tell() < size_mb * 2**20:
                requests = world.request_dicts(2000, rng, prefix="l", first=first)
                writer.write_all(world.log_dicts(requests, None, rng))
                first += 2000
    if not parquet.exists():
        with AtomicWriter(parquet, "logs") as writer:
            writer.write_all(read_rows(jsonl, "logs"))
    return jsonl, parquet


def measure(path: str) -> None:
    """Child process: stream, validate and batch every row; print one JSON line."""
    from itertools import islice

    from genco.data import encode, stream_batches
    from genco.files import read_rows

    schema = encode(islice(read_rows(path, "logs"), 2000)).schema
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    start = time.perf_counter()
    rows = batches = 0
    for _, batch in stream_batches(read_rows(path, "logs"), schema, batch_size=1024):
        rows += batch.size
        batches += 1
    seconds = time.perf_counter() - start
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(json.dumps({"rows": rows, "batches": batches, "seconds": seconds, "rows_per_s": rows / seconds,
                      "peak_rss_mb": peak, "rss_after_imports_mb": before}))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="a 20 MB log instead of 1 GB")
    parser.add_argument("--size-mb", type=int, default=1024)
    parser.add_argument("--dir", type=Path, default=Path("runs/bench-read"))
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        measure(args.child)
        return
    size = 20 if args.quick else args.size_mb
    args.dir.mkdir(parents=True, exist_ok=True)
    jsonl, parquet = build_log(args.dir, size)
    print("| format | file MB | rows | rows/s | peak RSS MB | RSS after imports MB |")
    print("|---|---|---|---|---|---|")
    for path in (jsonl, parquet):
        child = subprocess.run([sys.executable, __file__, "--child", str(path)], capture_output=True, text=True)
        if child.returncode != 0:
            sys.exit(f"reading {path} failed:\n{child.stderr}")
        r = json.loads(child.stdout)
        mb = os.path.getsize(path) / 2**20
        print(f"| {path.suffix[1:]} | {mb:.0f} | {r['rows']} | {r['rows_per_s']:.0f} | {r['peak_rss_mb']:.0f} | {r['rss_after_imports_mb']:.0f} |")
        if r["peak_rss_mb"] > 1024:
            sys.exit(f"peak memory {r['peak_rss_mb']:.0f} MB is over the 1 GB goal")


if __name__ == "__main__":
    main()
