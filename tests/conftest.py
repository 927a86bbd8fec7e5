from __future__ import annotations

import functools
import json
import subprocess
import sys
from pathlib import Path

import pytest

from genco.world import WorldConfig, simulate


def run_genco(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess:
    """Run the real command line (`python -m genco ...`), as a user's pipeline would."""
    return subprocess.run([sys.executable, "-m", "genco", *map(str, args)], capture_output=True, text=True, cwd=cwd)


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
