"""The command line and the HTTP service, end to end, as a user's pipeline drives them."""

from __future__ import annotations

import json

import pytest
from fastapi.testclient import TestClient

from genco.files import read_rows
from genco.serve import create_app
from tests.conftest import run_genco, write_jsonl


@pytest.fixture(scope="module")
def model_dir(train_world, tmp_path_factory):
    out = tmp_path_factory.mktemp("cli") / "model"
    result = run_genco("train", "--logs", train_world / "logs.jsonl", "--out", out, "--epochs", "2", "--seed", "3",
                       "--reward-models", "2", "--rl-epochs", "1", "--quiet")
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout.split(": ", 1)[1])["best_epoch"] in (0, 1, 2)  # 0: the wide part alone was kept
    return out


def test_train_writes_a_complete_model_folder(model_dir):
    names = {p.name for p in model_dir.iterdir()}
    assert {"model.safetensors", "genco.json", "history.json", "training_curve.png", "attention.png"} <= names
    meta = json.loads((model_dir / "genco.json").read_text())
    assert meta["train_config"]["rl_weight"] == 0.15 and meta["model_config"]["context_dim"] == 8
    assert meta["train_config"]["network_judge"] == "shrink" and len(meta["metrics"]["network_weights"]) == 2
    assert 0.5 < meta["metrics"]["heldout_auc"] < 1


@pytest.mark.parametrize("mode", ["--greedy", "--explore"])
def test_select_then_evaluate(train_world, model_dir, tmp_path, mode):
    out = tmp_path / "sel.parquet"
    result = run_genco("select", "--model", model_dir, "--requests", train_world / "requests.jsonl", "--out", out, mode, "--quiet")
    assert result.returncode == 0, result.stderr
    requests = [json.loads(line) for line in open(train_world / "requests.jsonl")]
    selections = list(read_rows(out, "selections"))
    assert [s.request_id for s in selections] == [r["request_id"] for r in requests], "one row per request, same order"
    for s in selections:
        assert 0 < s.propensity <= 1 and 0 < s.score < 1
        if mode == "--greedy":
            assert s.propensity == 1.0
    figures = json.loads(run_genco("evaluate", "--world", train_world, "--selections", out).stdout)
    assert figures["n"] == len(requests)
    if mode == "--greedy":
        assert figures["frac_of_oracle_lift"] > 0.1


def test_select_names_the_request_that_does_not_fit_the_model(train_world, model_dir, tmp_path):
    request = json.loads(open(train_world / "requests.jsonl").readline())
    odd = dict(request, request_id="odd", components={**request["components"], "sticker": [{"id": "s", "features": []}]})
    short = dict(request, request_id="short", user=[0.0])
    path = write_jsonl(tmp_path / "req.jsonl", [request, odd, short])
    result = run_genco("select", "--model", model_dir, "--requests", path, "--out", tmp_path / "s.jsonl")
    assert result.returncode == 2
    assert f"{path}:2: rule unknown-component" in result.stderr
    assert not (tmp_path / "s.jsonl").exists(), "nothing half-written"
    result = run_genco("select", "--model", model_dir, "--requests", path, "--out", tmp_path / "s.jsonl", "--on-bad-row", "skip")
    assert result.returncode == 0
    assert "skipped 2 bad rows" in result.stderr
    assert [s.request_id for s in read_rows(tmp_path / "s.jsonl", "selections")] == [request["request_id"]]


def test_usage_errors_exit_2(tmp_path):
    assert run_genco("train").returncode == 2
    assert run_genco("select", "--model", tmp_path, "--requests", tmp_path, "--out", tmp_path / "x.jsonl", "--k", "-1").returncode == 2
    assert run_genco("nonsense").returncode == 2
    help_text = run_genco("train", "--help").stdout
    assert "--no-attention" in help_text and "--no-mil" in help_text and "--no-rl" in help_text


def test_http_service(train_world, model_dir):
    client = TestClient(create_app(model_dir))
    assert client.get("/healthz").status_code == 200
    requests = [json.loads(line) for line in open(train_world / "requests.jsonl")][:5]
    answer = client.post("/v1/select", json={"requests": requests})
    assert answer.status_code == 200, answer.text
    body = answer.json()
    assert body["model_version"].startswith("model@")
    assert [s["request_id"] for s in body["selections"]] == [r["request_id"] for r in requests]
    for request, selection in zip(requests, body["selections"]):
        assert set(selection["selection"]) == set(request["components"])
        assert selection["propensity"] == 1.0
    explore = client.post("/v1/select", json={"requests": requests, "greedy": False}).json()
    assert all(0 < s["propensity"] <= 1 for s in explore["selections"])

    bad = dict(requests[0], user=["x"])
    response = client.post("/v1/select", json={"requests": [bad]})
    assert response.status_code == 422
    assert "user" in json.dumps(response.json())
    unknown = dict(requests[0], components={"sticker": [{"id": "s", "features": []}]})
    response = client.post("/v1/select", json={"requests": [unknown]})
    assert response.status_code == 422 and "unknown-component" in response.text
    assert client.post("/v1/select", content=b"{not json", headers={"content-type": "application/json"}).status_code == 422
    assert client.get("/healthz").status_code == 200, "the server stays up"
    metrics = client.get("/metrics").text
    assert 'genco_select_calls_total{outcome="ok"} 2.0' in metrics
    assert "genco_select_seconds_bucket" in metrics
