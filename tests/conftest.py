from __future__ import annotations

import functools
import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from genco.world import WorldConfig, simulate


@pytest.fixture(scope="session", autouse=True)
def onnx_cache(tmp_path_factory):
    """Exported graphs (genco.export.cached_export) go to a folder of this test session, not the user's cache:
    each layout is exported once per session, and the servers the tests start (which inherit the variable)
    reuse it."""
    folder = tmp_path_factory.mktemp("genco-cache")
    previous = os.environ.get("GENCO_CACHE")
    os.environ["GENCO_CACHE"] = str(folder)
    yield folder
    if previous is None:
        os.environ.pop("GENCO_CACHE", None)
    else:
        os.environ["GENCO_CACHE"] = previous


def run_genco(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess:
    """Run the real command line (`python -m genco ...`), as a user's pipeline would."""
    return subprocess.run([sys.executable, "-m", "genco", *map(str, args)], capture_output=True, text=True, cwd=cwd)


@pytest.fixture()
def genco_here(capsys):
    """The command line in this process (`genco.cli.main`, what the console script calls): the same exit statuses
    and messages as run_genco, without a second or two of start-up per call."""
    from genco import cli

    def run(*args: str) -> subprocess.CompletedProcess:
        capsys.readouterr()
        try:
            cli.main([str(a) for a in args])
            code = 0
        except SystemExit as exit_:
            code = exit_.code or 0
        captured = capsys.readouterr()
        return subprocess.CompletedProcess(args, code, captured.out, captured.err)
    return run


@pytest.fixture(scope="session")
def small_world(tmp_path_factory) -> Path:
    """A small simulated world (seeded) shared by the tests that only read it."""
    out = tmp_path_factory.mktemp("world")
    simulate(WorldConfig(seed=3, ads=60, impressions=3000, requests=200, max_candidates=8, revenue=True), out)
    return out


@pytest.fixture(scope="session")
def train_world(tmp_path_factory) -> Path:
    """A world with enough logs for a small model to learn something (seeded)."""
    out = tmp_path_factory.mktemp("train-world")
    simulate(WorldConfig(seed=4, ads=80, impressions=12000, requests=300, max_candidates=8), out)
    return out


def log_row(**overrides) -> dict:
    """One valid log row; tests break one rule at a time from here."""
    row = {
        "request_id": "r-1",
        "ad_id": "ad-1",
        "user": [0.1, -0.2],
        "ad": [1.0],
        "components": {
            "title": [{"id": "t-1", "features": [0.1, 0.2]}, {"id": "t-2", "features": [0.3, -0.2]}],
            "image": [{"id": "i-1", "features": [0.5, 0.1, 0.9]}],
        },
        "shown": {"title": "t-2", "image": "i-1"},
        "click": 1,
        "propensity": 0.5,
    }
    row.update(overrides)
    return row


def write_jsonl(path: Path, rows: list) -> Path:
    path.write_text("".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in rows))
    return path


def assert_valid_choices(choices, requests, *, greedy: bool) -> None:
    """What every policy's answer must satisfy, whatever the policy: one valid position per component the
    request has (-1 exactly where it lacks one), a propensity in (0, 1] (1 in greedy mode), a selection per row."""
    import numpy as np

    from genco.baselines.base import request_counts

    counts = request_counts(requests)  # (n, M)
    assert choices.positions.shape == counts.shape
    present = counts > 0
    assert np.array_equal(choices.positions >= 0, present), "-1 exactly where the request lacks the component"
    assert np.all(choices.positions < np.maximum(counts, 1))
    assert np.all((choices.propensity > 0) & (choices.propensity <= 1))
    if greedy:
        assert np.all(choices.propensity == 1)
    assert len(choices.selections) == len(requests)
    for selection, row in zip(choices.selections, present):
        assert len(selection) == row.sum()


class EasyWorld:
    """A small, easy world held in memory: few candidates, strong effects, plenty of logs for its size."""

    def __init__(self, interaction: float = 1.0, seed: int = 7):
        from genco.baselines.base import request_counts
        from genco.data import encode
        from genco.evaluate import Evaluator
        from genco.world import simulate_in_memory

        config = WorldConfig(seed=seed, ads=25, impressions=6000, requests=300, max_candidates=4, interaction=interaction)
        self.world, self.logs, request_rows = simulate_in_memory(config)
        self.requests = encode(request_rows, self.logs.schema)  # EncodedRows, same schema as the logs
        self.evaluator = Evaluator(self.world, request_rows)
        # the policies' tests rely on it: some requests lack a component
        assert (request_counts(self.requests) == 0).any(), "the easy world should have requests that lack a component"

    def frac(self, choices) -> float:
        """Fraction of the oracle's lift that a policy's Choices capture."""
        return self.evaluator.score(choices.selections)["frac_of_oracle_lift"]

    @functools.cached_property
    def random_frac(self) -> float:
        """The same for uniform random choices: the bar every policy's test must clear."""
        from genco.baselines.base import RandomPolicy

        return self.frac(RandomPolicy().choose(self.requests, seed=0))


@pytest.fixture(scope="session")
def easy_world() -> EasyWorld:
    return EasyWorld()


@pytest.fixture(scope="session")
def tiny_world(tmp_path_factory) -> Path:
    """A small world (seeded) for the model the edge and serving tests drive."""
    out = tmp_path_factory.mktemp("tiny-world")
    simulate(WorldConfig(seed=5, ads=40, impressions=3000, requests=300, max_candidates=6), out)
    return out


@pytest.fixture(scope="session")
def tiny_model(tiny_world, tmp_path_factory) -> Path:
    """A model folder trained (briefly) on tiny_world: an ensemble of two reward models and a generator."""
    from genco.train import TrainConfig, read_logs, save_trained, train

    data, _ = read_logs(tiny_world / "logs.jsonl")
    config = TrainConfig(epochs=2, reward_models=2, seed=1)
    out = tmp_path_factory.mktemp("tiny-model") / "model"
    save_trained(train(data, config=config), out, config)
    return out


class Server:
    """`genco serve` as a user starts it: a real process on a free local port (the tests' own)."""

    def __init__(self, model_dir: Path, *args: str, log: Path):
        self.log = log
        self.process = subprocess.Popen([sys.executable, "-m", "genco", "serve", "--model", str(model_dir), "--port", "0", *args],
                                        stdout=subprocess.DEVNULL, stderr=open(log, "w"))
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            found = re.search(r"on http://([\d.]+):(\d+)", log.read_text())
            if found:
                self.url = f"http://{found.group(1)}:{found.group(2)}"
                break
            if self.process.poll() is not None:
                raise RuntimeError(f"genco serve exited with {self.process.returncode}: {log.read_text()}")
            time.sleep(0.1)
        else:
            self.stop()
            raise RuntimeError(f"genco serve did not start: {log.read_text()}")
        self.client = httpx.Client(base_url=self.url, timeout=60)
        while self.client.get("/healthz").status_code != 200:  # bound before the app is up: wait for it
            time.sleep(0.05)

    def post(self, path: str, body: bytes, content_type: str | None = "application/json", **headers: str):
        if content_type is not None:
            headers["content-type"] = content_type
        return self.client.post(path, content=body, headers=headers)

    def select(self, requests: list[dict], **fields) -> httpx.Response:
        return self.post("/v1/select", json.dumps({"requests": requests, **fields}).encode())

    def stop(self) -> None:
        self.process.terminate()
        try:
            self.process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            self.process.kill()


@pytest.fixture(scope="module")
def server(tiny_model, tmp_path_factory):
    """The real server on the tiny model, with small limits so that the limit tests stay small."""
    started = Server(tiny_model, "--max-requests", "300", "--max-body-bytes", "2000000", "--max-candidates", "50",
                     log=tmp_path_factory.mktemp("serve") / "serve.log")
    yield started
    started.stop()


def read_jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in open(path) if line.strip()]
