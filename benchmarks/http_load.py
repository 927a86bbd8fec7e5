"""`genco serve` under a real load generator (hey) on 127.0.0.1: latency and throughput at fixed rates, at
saturation, and through a model swap (issue 14).

    python benchmarks/http_load.py                      # 60 s per rate: 100, 500, 1000 req/s, saturation, swap at 500
    python benchmarks/http_load.py --quick              # 3 s at 100 req/s and a swap: for CI
    python benchmarks/http_load.py --model MODEL -- --mode argmax   # genco serve flags after --

Each call holds one request of 6 components x 15 candidates (greedy). The server runs as a user starts it
(`genco serve --port 0`, its defaults unless flags are given); hey (`apt-get install hey`) drives it with C
connections, each limited to rate / C calls per second (none at saturation). hey's connections tick in
step, so a fixed rate arrives as bursts of C simultaneous calls: every rate is run with 16 connections (bursts
of 16, the hardest case) and with 4 (closer to what independent callers send: at 500 calls/s and a few ms
per call, Little's law puts about two calls in flight); `--connections` chooses. The swap run writes a new
model into the served folder halfway (as `genco train --out` would) while a watcher, 50 of the rate's calls a
second, checks that once an answer names the new version, none names the old (`--swap-only`: this run alone). Printed as JSON lines: calls, errors
(any status but 200), p50 / p99 ms, achieved calls per second.
"""

from __future__ import annotations

import argparse
import csv
import io
import json
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import httpx
import numpy as np
import torch

from genco import console
from genco.checkpoint import load_model, save_model
from genco.train import TrainConfig, save_trained, train
from genco.world import WorldConfig, simulate_in_memory

sys.path.insert(0, str(Path(__file__).parent))
from serving import full_pools  # noqa: E402


def start_server(model_dir: Path, flags: list[str], log: Path) -> tuple[subprocess.Popen, str]:
    process = subprocess.Popen([sys.executable, "-m", "genco", "serve", "--model", str(model_dir), "--port", "0", *flags],
                               stdout=subprocess.DEVNULL, stderr=open(log, "w"))
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        text = log.read_text()
        if " on http://" in text:
            url = text.split(" on http://", 1)[1].split()[0]
            while httpx.get(f"http://{url}/healthz", timeout=120).status_code != 200:  # workers may still be loading
                time.sleep(0.05)
            return process, f"http://{url}"
        if process.poll() is not None:
            raise SystemExit(f"genco serve exited: {text}")
        time.sleep(0.1)
    raise SystemExit("genco serve did not start")


def hey(url: str, body: Path, seconds: float, rate: int | None, connections: int) -> dict:
    """One hey run; its per-call CSV summarised."""
    command = ["hey", "-z", f"{seconds}s", "-c", str(connections), "-m", "POST", "-T", "application/json",
               "-D", str(body), "-o", "csv"]
    if rate:
        command += ["-q", str(max(1, rate // connections))]
    result = subprocess.run([*command, f"{url}/v1/select"], capture_output=True, text=True, check=True)
    rows = list(csv.DictReader(io.StringIO(result.stdout)))
    times = np.asarray([float(r["response-time"]) for r in rows])
    errors = sum(r["status-code"] != "200" for r in rows)
    return {"rate": rate or "saturation", "connections": connections, "seconds": seconds, "calls": len(rows), "errors": errors,
            "p50_ms": round(1000 * float(np.median(times)), 2), "p99_ms": round(1000 * float(np.quantile(times, 0.99)), 2),
            "calls_per_s": round(len(rows) / seconds, 1)}


#: Calls per second the swap run's watcher makes (at most: one after another, paced), out of the run's rate.
WATCHER_RATE = 50


def swap_during(url: str, body: Path, seconds: float, rate: int, served: Path, connections: int) -> dict:
    """hey at `rate` with a new model written into the served folder halfway; a watcher, one caller among the
    rate's, checks the versions."""
    payload = body.read_bytes()
    old = httpx.get(f"{url}/healthz").json()["model_version"]
    versions, failures, stop = [], [], threading.Event()

    def watch() -> None:
        with httpx.Client(base_url=url, timeout=30) as client:
            start, calls = time.monotonic(), 0
            while not stop.wait(max(0.0, start + calls / WATCHER_RATE - time.monotonic())):
                calls += 1
                answer = client.post("/v1/select", content=payload, headers={"content-type": "application/json"})
                if answer.status_code == 200:
                    versions.append(answer.json()["model_version"])
                else:
                    failures.append(answer.status_code)

    def swap() -> None:
        time.sleep(seconds / 2)
        model, meta = load_model(served)
        with torch.no_grad():
            for p in model.parameters():
                p.mul_(1.01)
        save_model(model, served, {"metrics": meta.get("metrics", {})})

    watcher, swapper = threading.Thread(target=watch), threading.Thread(target=swap)
    watcher.start()
    swapper.start()
    figures = hey(url, body, seconds, rate - WATCHER_RATE, connections)  # the watcher's calls make up the rate
    swapper.join()
    deadline = time.monotonic() + 30  # short (--quick) runs end before the reload does: wait for it, watcher on
    while httpx.get(f"{url}/healthz").json()["model_version"] == old and time.monotonic() < deadline:
        time.sleep(0.1)
    time.sleep(0.5)
    stop.set()
    watcher.join()
    new = httpx.get(f"{url}/healthz").json()["model_version"]
    switched = versions.index(new) if new in versions else len(versions)
    return {**figures, "rate": rate, "swap": True, "old_version": old, "new_version": new, "watcher_calls": len(versions),
            "watcher_failures": len(failures), "mixed_after_swap": sum(v != new for v in versions[switched:]),
            "swapped": new != old}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--model", type=Path, help="a model folder to serve (copied); default: trained here on 20,000 impressions")
    parser.add_argument("--seconds", type=float, default=60.0)
    parser.add_argument("--rates", default="100,500,1000")
    parser.add_argument("--swap-rate", type=int, default=500)
    parser.add_argument("--swap-only", action="store_true", help="run the swap alone, not the fixed rates and saturation")
    parser.add_argument("--connections", default="16,4",
                        help="hey's connections, one or more (each a run of every rate): each connection sends rate / "
                             "connections calls per second, all in step, so a fixed rate arrives in bursts of this many calls")
    parser.add_argument("flags", nargs="*", help="genco serve flags, after --, e.g. -- --mode argmax")
    args = parser.parse_args()
    if shutil.which("hey") is None:
        raise SystemExit("hey is not installed (apt-get install hey)")
    seconds, rates, swap_rate = (3.0, [100], 100) if args.quick else (args.seconds, [int(r) for r in args.rates.split(",")],
                                                                     args.swap_rate)
    console.set_quiet(True)
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        _, logs, rows = simulate_in_memory(WorldConfig(seed=2, impressions=4_000 if args.quick else 20_000, requests=50))
        served = tmp / "model"
        if args.model:
            shutil.copytree(args.model, served)
        else:
            config = TrainConfig(epochs=1 if args.quick else 30, seed=1)
            save_trained(train(logs, config=config), served, config)
        request = full_pools(rows, 15, np.random.default_rng(0))[0]
        body = tmp / "body.json"
        body.write_text(json.dumps({"requests": [request.model_dump(exclude_none=True)], "greedy": True}))
        process, url = start_server(served, args.flags, tmp / "serve.log")
        try:
            for connections in [int(c) for c in args.connections.split(",")]:
                for rate in [] if args.swap_only else [*rates, None]:
                    print(json.dumps({"flags": args.flags, **hey(url, body, seconds, rate, connections)}), flush=True)
                print(json.dumps({"flags": args.flags, **swap_during(url, body, seconds, swap_rate, served, connections)}),
                      flush=True)
        finally:
            process.terminate()
            process.wait(timeout=30)


if __name__ == "__main__":
    main()
