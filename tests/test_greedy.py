"""Greedy means greedy (issue 12, case 17): the same request and model give the same answer whatever the seed,
the batch around it or the call, through the Python API, the command line and the server; propensity 1 is then
the true probability of what was served."""

from __future__ import annotations

import json

import numpy as np
import pytest

from genco.checkpoint import load_model
from genco.data import encode
from genco.files import load_requests, read_rows
from genco.select import SelectConfig, choose
from tests.conftest import read_jsonl, run_genco, write_jsonl


@pytest.fixture(scope="module")
def model_and_requests(tiny_model, tiny_world):
    model, _ = load_model(tiny_model)
    return model, load_requests(tiny_world / "requests.jsonl")[:256]


def _renamed(rows: list[dict], tag: str) -> list[dict]:
    """The same requests under other request_ids: the answer belongs to the request's content."""
    return [dict(r, request_id=f"{tag}-{i}") for i, r in enumerate(rows)]


def test_python_api(model_and_requests):
    model, requests = model_and_requests
    data = encode(requests, model.schema)
    reference = choose(model, data, greedy=True, seed=0).positions
    for seed, batch_size in ((1, 7), (7, 256), (12345, 100)):
        got = choose(model, data, greedy=True, seed=seed, config=SelectConfig(batch_size=batch_size)).positions
        assert np.array_equal(got, reference), (seed, batch_size)
    one_by_one = choose(model, encode(requests[:40], model.schema), greedy=True, seed=4, config=SelectConfig(batch_size=1))
    assert np.array_equal(one_by_one.positions, reference[:40])
    alone = encode(requests[5:6], model.schema)
    assert np.array_equal(choose(model, alone, greedy=True, seed=99).positions, reference[5:6])
    reverse = encode(requests[::-1], model.schema)
    assert np.array_equal(choose(model, reverse, greedy=True, seed=3).positions, reference[::-1])


@pytest.mark.parametrize("mode", ["best-of-k", "argmax"])
def test_every_serving_mode_is_greedy(model_and_requests, mode):
    model, requests = model_and_requests
    data = encode(requests, model.schema)
    reference = choose(model, data, greedy=True, seed=0, config=SelectConfig(mode=mode)).positions
    got = choose(model, data, greedy=True, seed=5, config=SelectConfig(mode=mode, batch_size=7)).positions
    assert np.array_equal(got, reference)


def test_modes_trade_search_for_time_in_order(model_and_requests):
    """The reward model's score of what each mode answers: the search's at least best-of-K's, and that at
    least the generator's argmax's (best-of-K scores the argmax too)."""
    model, requests = model_and_requests
    data = encode(requests, model.schema)
    score = {mode: choose(model, data, greedy=True, config=SelectConfig(mode=mode)).score
             for mode in ("search", "best-of-k", "argmax")}
    assert np.all(score["search"] >= score["best-of-k"] - 1e-6)
    assert np.all(score["best-of-k"] >= score["argmax"] - 1e-6)
    assert (score["search"] > score["argmax"] + 1e-6).any()


def test_explore_still_depends_on_the_seed(model_and_requests):
    model, requests = model_and_requests
    data = encode(requests, model.schema)
    a, b = (choose(model, data, greedy=False, seed=s) for s in (0, 1))
    assert not np.array_equal(a.positions, b.positions)
    assert np.all((a.propensity > 0) & (a.propensity <= 1))


def test_command_line(tiny_model, tiny_world, tmp_path):
    rows = read_jsonl(tiny_world / "requests.jsonl")[:256]
    forward = write_jsonl(tmp_path / "forward.jsonl", rows)
    backward = write_jsonl(tmp_path / "backward.jsonl", _renamed(rows[::-1], "b"))
    answers = []
    for path, seed in ((forward, "0"), (forward, "1"), (backward, "2")):
        out = tmp_path / f"{path.stem}-{seed}.jsonl"
        result = run_genco("select", "--model", tiny_model, "--requests", path, "--out", out, "--greedy", "--seed", seed, "--quiet")
        assert result.returncode == 0, result.stderr
        answers.append([s.selection for s in read_rows(out, "selections")])
    assert answers[0] == answers[1], "the seed does not move a greedy answer"
    assert answers[0] == answers[2][::-1], "nor does the order of the file, nor the request_id"


def test_server_matches_itself_and_the_command_line(server, tiny_model, tiny_world, tmp_path):
    rows = read_jsonl(tiny_world / "requests.jsonl")[:256]
    out = tmp_path / "cli.jsonl"
    result = run_genco("select", "--model", tiny_model, "--requests", write_jsonl(tmp_path / "r.jsonl", rows), "--out", out,
                       "--greedy", "--quiet")
    assert result.returncode == 0, result.stderr
    cli = [s.selection for s in read_rows(out, "selections")]

    def ask(batch: list[dict]) -> list[dict]:
        response = server.select(batch)
        assert response.status_code == 200, response.text
        return [s["selection"] for s in response.json()["selections"]]

    whole = [ask(_renamed(rows, f"call{c}")) for c in range(3)]  # the server moves its seed every call
    assert whole[0] == whole[1] == whole[2] == cli
    sevens = sum((ask(rows[i:i + 7]) for i in range(0, len(rows), 7)), [])
    assert sevens == cli
    for i in range(0, len(rows), 37):
        assert ask(rows[i:i + 1]) == [cli[i]]
    explore = server.select(rows[:20], greedy=False).json()["selections"]
    assert all(0 < s["propensity"] <= 1 for s in explore)
    assert json.dumps(explore) != json.dumps(server.select(rows[:20], greedy=False).json()["selections"])
