"""Serving for production (issue 14): calls batched together, models reloaded without a failed or mixed answer,
every served decision logged, clicks joined into the next training log, and the whole loop closed."""

from __future__ import annotations

import json
import shutil
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest

from genco.batching import MicroBatcher
from genco.checkpoint import load_model
from genco.contract import Decision, LogRow, Selection
from genco.decisions import DecisionLog, join
from genco.errors import BadRowError
from genco.evaluate import Evaluator
from genco.files import load_requests, read_rows
from genco.train import TrainConfig, read_logs, save_trained, train
from genco.select import select_requests
from genco.world import World, WorldConfig, simulate
from tests.conftest import Server, read_jsonl, run_genco, write_jsonl


def test_calls_waiting_while_the_worker_is_busy_are_answered_together():
    release, batches = threading.Event(), []

    def answer(key, requests):
        release.wait(10)
        return [(key, r) for r in requests]

    batcher = MicroBatcher(answer, window_seconds=0.0, max_batch=100, on_batch=lambda calls, rows: batches.append((calls, rows)))
    first = batcher.submit("a", [0])
    time.sleep(0.1)  # the worker holds the first call; these queue behind it
    rest = [batcher.submit("a" if i % 2 else "b", [i, i + 100]) for i in range(1, 6)]
    release.set()
    assert first.result(10) == [("a", 0)]
    for i, future in enumerate(rest, start=1):
        key = "a" if i % 2 else "b"
        assert future.result(10) == [(key, i), (key, i + 100)], "each call gets its own answers, in order"
    batcher.stop()
    assert batches == [(1, 1), (5, 10)]


def test_a_failing_batch_fails_its_calls_and_the_batcher_lives_on():
    def answer(key, requests):
        if key == "bad":
            raise RuntimeError("boom")
        return requests

    batcher = MicroBatcher(answer, window_seconds=0.001, max_batch=8)
    with pytest.raises(RuntimeError):
        batcher.submit("bad", [1]).result(10)
    assert batcher.submit("good", [2, 3]).result(10) == [2, 3]
    batcher.stop()


def _selection(request, propensity=0.25) -> Selection:
    return Selection(request_id=request.request_id, propensity=propensity, score=0.03,
                     selection={name: candidates[-1].id for name, candidates in request.components.items()})


def test_decision_files_rotate_and_appear_whole(tiny_world, tmp_path):
    requests = load_requests(tiny_world / "requests.jsonl")[:25]
    log = DecisionLog(tmp_path / "decisions", rotate_rows=10, rotate_seconds=3600)
    log.record(requests, [_selection(r) for r in requests], "m@1")
    finished = sorted((tmp_path / "decisions").glob("decisions-*.jsonl"))
    assert len(finished) == 2, "20 rows published in two files of 10; 5 still in the open file"
    assert len(list((tmp_path / "decisions").glob(".decisions-*.open"))) == 1
    log.close()
    rows = [Decision.model_validate(json.loads(line)) for f in sorted((tmp_path / "decisions").glob("decisions-*.jsonl"))
            for line in open(f)]
    assert [r.request_id for r in rows] == [r.request_id for r in requests], "a clean shutdown loses nothing"
    assert {r.model_version for r in rows} == {"m@1"} and all(r.propensity == 0.25 for r in rows)
    assert not list((tmp_path / "decisions").glob(".*.open"))


def test_an_idle_decision_file_is_published_by_age(tiny_world, tmp_path):
    requests = load_requests(tiny_world / "requests.jsonl")[:3]
    log = DecisionLog(tmp_path / "d", rotate_rows=1000, rotate_seconds=0.2)
    log.record(requests, [_selection(r) for r in requests], "m@1")
    deadline = time.monotonic() + 10
    while not list((tmp_path / "d").glob("decisions-*.jsonl")) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert len(read_jsonl(next((tmp_path / "d").glob("decisions-*.jsonl")))) == 3
    log.close()


def test_join_marks_clicked_decisions_and_counts_the_rest(tiny_world, tmp_path):
    requests = load_requests(tiny_world / "requests.jsonl")[:30]
    log = DecisionLog(tmp_path / "d", rotate_rows=7)
    log.record(requests, [_selection(r) for r in requests], "m@2")
    log.close()
    clicks = write_jsonl(tmp_path / "clicks.jsonl", [
        {"request_id": requests[3].request_id, "revenue": 0.4},
        {"request_id": requests[3].request_id},  # the same click twice
        {"request_id": requests[11].request_id},
        {"request_id": "not-ours"}])
    result = run_genco("join", "--decisions", tmp_path / "d", "--clicks", clicks, "--out", tmp_path / "logs.parquet")
    assert result.returncode == 0, result.stderr
    summary = json.loads(result.stdout.split(": ", 1)[1])
    assert summary | {"ctr": 0} == {"decisions": 30, "clicks": 2, "ctr": 0, "click_events": 4, "unmatched_click_events": 1,
                                    "unfinished_files": 0}
    rows = list(read_rows(tmp_path / "logs.parquet", "logs"))
    assert [r.request_id for r in rows] == [r.request_id for r in requests]
    assert [r.click for r in rows] == [int(i in (3, 11)) for i in range(30)]
    assert rows[3].revenue == 0.4 and rows[11].revenue is None and rows[0].propensity == 0.25
    assert all(isinstance(r, LogRow) for r in rows)


def test_join_refuses_a_request_decided_twice(tiny_world, tmp_path):
    requests = load_requests(tiny_world / "requests.jsonl")[:4]
    for part, decided in (("a", requests[:2]), ("b", requests[1:3])):
        log = DecisionLog(tmp_path / "d" / part)
        log.record(decided, [_selection(r) for r in decided], "m")
        log.close()
    clicks = write_jsonl(tmp_path / "clicks.jsonl", [{"request_id": requests[1].request_id}])
    with pytest.raises(BadRowError, match="duplicate-request-id|also decided"):
        join(tmp_path / "d", clicks, tmp_path / "logs.jsonl")
    result = run_genco("join", "--decisions", tmp_path / "d", "--clicks", clicks, "--out", tmp_path / "logs.jsonl")
    assert result.returncode == 2 and "Traceback" not in result.stderr and "decisions-" in result.stderr
    assert not (tmp_path / "logs.jsonl").exists()


def test_bad_click_rows_name_the_file_and_line(tiny_world, tmp_path):
    requests = load_requests(tiny_world / "requests.jsonl")[:2]
    log = DecisionLog(tmp_path / "d")
    log.record(requests, [_selection(r) for r in requests], "m")
    log.close()
    clicks = tmp_path / "clicks.jsonl"
    clicks.write_text('{"request_id": "x"}\n{"request_id": 7}\n')
    result = run_genco("join", "--decisions", tmp_path / "d", "--clicks", clicks, "--out", tmp_path / "logs.jsonl")
    assert result.returncode == 2 and "clicks.jsonl:2: rule wrong-type" in result.stderr


def _perturbed_copy(model_dir: Path, out: Path, seed: int) -> str:
    """The same model with its reward models' weights nudged, saved as genco train would: a new version."""
    import torch

    from genco.checkpoint import save_model

    model, meta = load_model(model_dir)
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.05 * torch.randn(p.shape, generator=generator))
    save_model(model, out, {k: v for k, v in meta.items() if k not in ("format", "version", "kind", "schema",
                                                                      "model_config", "ensemble", "model_version")})
    return load_model(out)[1]["model_version"]


def test_hot_reload_under_concurrent_calls_fails_none_and_mixes_none(tiny_model, tiny_world, tmp_path):
    served = tmp_path / "served"
    shutil.copytree(tiny_model, served)
    requests = read_jsonl(tiny_world / "requests.jsonl")[:8]
    server = Server(served, "--reload-seconds", "0.1", log=tmp_path / "serve.log")
    try:
        old = server.client.get("/healthz").json()["model_version"]
        stop, seen, failures = threading.Event(), [[] for _ in range(6)], []

        def caller(k: int) -> None:
            while not stop.is_set():
                answer = server.select(requests[k % 4 : k % 4 + 3])
                if answer.status_code != 200:
                    failures.append(answer.text)
                else:
                    seen[k].append(answer.json()["model_version"])

        with ThreadPoolExecutor(6) as pool:
            for k in range(6):
                pool.submit(caller, k)
            time.sleep(1.0)
            new = _perturbed_copy(served, served, seed=1)  # genco train --out into the served folder
            deadline = time.monotonic() + 30
            while server.client.get("/healthz").json()["model_version"] != new and time.monotonic() < deadline:
                time.sleep(0.05)
            time.sleep(1.0)
            stop.set()
        assert not failures
        assert server.client.get("/healthz").json()["model_version"] == new != old
        for versions in seen:
            assert set(versions) <= {old, new} and versions[-1] == new
            switched = versions.index(new)
            assert set(versions[switched:]) == {new}, "once a caller saw the new version, every answer names it"
        metrics = server.client.get("/metrics").text
        assert 'genco_model_reloads_total{outcome="ok"} 1.0' in metrics
        assert f'genco_model_info{{model_version="{new}"}} 1.0' in metrics
        assert 'genco_select_calls_total{outcome="error"}' not in metrics
    finally:
        server.stop()


def test_a_broken_model_written_to_the_folder_keeps_the_old_one_serving(tiny_model, tiny_world, tmp_path):
    served = tmp_path / "served"
    shutil.copytree(tiny_model, served)
    server = Server(served, "--reload-seconds", "0.1", log=tmp_path / "serve.log")
    try:
        old = server.client.get("/healthz").json()["model_version"]
        (served / "model.safetensors").write_bytes(b"\x00" * 64)
        deadline = time.monotonic() + 30
        while 'outcome="failed"' not in server.client.get("/metrics").text and time.monotonic() < deadline:
            time.sleep(0.05)
        assert 'genco_model_reloads_total{outcome="failed"} 1.0' in server.client.get("/metrics").text
        assert server.client.get("/healthz").json()["model_version"] == old
        answer = server.select(read_jsonl(tiny_world / "requests.jsonl")[:2])
        assert answer.status_code == 200 and answer.json()["model_version"] == old
    finally:
        server.stop()


def test_serving_flags_out_of_range_exit_2(tiny_model):
    for flag, value in (("--workers", "0"), ("--mode", "fastest")):  # the ranges themselves: ServeConfig, one place
        result = run_genco("serve", "--model", tiny_model, "--port", "0", flag, value)
        assert result.returncode == 2 and "Traceback" not in result.stderr, (flag, result.stderr)


def test_the_loop_serve_explore_log_join_train_reload_improves_selections(tmp_path):
    """serve explore -> log decisions -> clicks from the world's truth -> join -> train -> reload: the model trained
    on what it served chooses better than the one that served it."""
    world_dir = tmp_path / "world"
    simulate(WorldConfig(seed=11, ads=40, impressions=800, requests=2000, max_candidates=6), world_dir)
    world = World.load(world_dir)
    first_logs, _ = read_logs(world_dir / "logs.jsonl")
    config = TrainConfig(epochs=3, reward_models=1, seed=2)
    served = tmp_path / "model"
    save_trained(train(first_logs, config=config), served, config)
    requests = read_jsonl(world_dir / "requests.jsonl")
    explore, fresh = requests[:1600], requests[1600:]
    server = Server(served, "--reload-seconds", "0.2", "--log-decisions", str(tmp_path / "decisions"),
                    "--epsilon", "0.3", log=tmp_path / "serve.log")
    try:
        def true_ctr(selections: list[dict]) -> float:
            return float(np.mean(world.click_probability_dicts(fresh, [s["selection"] for s in selections])))

        first_model, meta = load_model(served)
        first_version = meta["model_version"]
        before = true_ctr([s.model_dump() for s in select_requests(first_model, load_requests(world_dir / "requests.jsonl")[1600:],
                                                                   greedy=True)])
        served_rows = []
        for start in range(0, len(explore), 200):
            answer = server.select(explore[start : start + 200], greedy=False)
            assert answer.status_code == 200
            served_rows += answer.json()["selections"]
        rng = np.random.default_rng(0)
        p = world.click_probability_dicts(explore, [s["selection"] for s in served_rows])
        clicked = [{"request_id": s["request_id"]} for s, q in zip(served_rows, p) if rng.random() < q]
        write_jsonl(tmp_path / "clicks.jsonl", clicked)
        server.stop()  # a clean shutdown publishes the open decision file
        result = run_genco("join", "--decisions", tmp_path / "decisions", "--clicks", tmp_path / "clicks.jsonl",
                           "--out", tmp_path / "served-logs.jsonl")
        assert result.returncode == 0, result.stderr
        joined = read_jsonl(tmp_path / "served-logs.jsonl")
        assert len(joined) == len(explore) and sum(r["click"] for r in joined) == len(clicked)
        assert {r["model_version"] for r in joined} == {first_version}
        assert all(r["propensity"] == s["propensity"] for r, s in zip(joined, served_rows))

        server = Server(served, "--reload-seconds", "0.2", log=tmp_path / "serve2.log")
        shutil.copy(world_dir / "logs.jsonl", tmp_path / "all-logs.jsonl")
        with open(tmp_path / "all-logs.jsonl", "a") as handle:
            handle.write((tmp_path / "served-logs.jsonl").read_text())
        result = run_genco("train", "--logs", tmp_path / "all-logs.jsonl", "--out", served, "--epochs", "3",
                           "--reward-models", "1", "--seed", "2", "--quiet")
        assert result.returncode == 0, result.stderr
        deadline = time.monotonic() + 60
        while server.client.get("/healthz").json()["model_version"] == first_version and time.monotonic() < deadline:
            time.sleep(0.1)
        answer = server.select(fresh).json()
        assert answer["model_version"] != first_version
        after = true_ctr(answer["selections"])
        random_ctr = float(Evaluator(world, fresh).random_p.mean())
        assert after > before, (random_ctr, before, after)
    finally:
        server.stop()
