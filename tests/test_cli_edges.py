"""The command line against bad options and awkward inputs (issue 12, cases 6-16): exit 2 with the flag or the
file, line and rule named, never a traceback; and what a valid but unusual input (empty context, empty
features, Parquet written by pyarrow from plain rows, a tiny log) gets."""

from __future__ import annotations

import json
import math
import socket

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from genco.contract import Limits
from genco.data import encode
from genco.files import finite_json, json_text, read_rows
from genco.model import ModelConfig
from genco.options import OptionError
from genco.select import CELL_BUDGET, SelectConfig, largest_pools, rows_per_batch
from genco.train import TrainConfig
from genco.world import WorldConfig
from tests.conftest import log_row, read_jsonl, run_genco, write_jsonl


def _strict_json(text: str):
    """json.loads that refuses NaN and Infinity, as jq and browsers do."""
    def refuse(literal):
        raise ValueError(f"{literal} is not JSON")
    return json.loads(text, parse_constant=refuse)


def _clean_failure(result, *needles: str) -> None:
    assert result.returncode == 2, (result.returncode, result.stderr)
    for needle in needles:
        assert needle in result.stderr, (needle, result.stderr)
    assert "Traceback" not in result.stderr and "Exception ignored" not in result.stderr, result.stderr


@pytest.mark.parametrize("flag,value,words", [
    ("--epochs", "0", "--epochs must be >= 1"), ("--epochs", "-1", "--epochs must be >= 1"),
    ("--dim", "0", "--dim must be >= 1"), ("--dim", "5", "--dim must be a multiple of heads"),
    ("--k", "0", "--k must be >= 2"), ("--lr", "-1", "--lr must be > 0"), ("--lr", "nan", "--lr must be > 0"),
    ("--batch-size", "0", "--batch-size must be >= 1"), ("--holdout", "1", "--holdout must be >= 0 and < 1"),
    ("--rl-weight", "inf", "--rl-weight must be"), ("--seed", "-3", "--seed must be >= 0"),
    ("--reward-models", "0", "--reward-models must be >= 1"), ("--max-candidates", "0", "--max-candidates must be >= 1"),
])
def test_train_options_out_of_range(genco_here, tiny_world, tmp_path, flag, value, words):
    result = genco_here("train", "--logs", tiny_world / "logs.jsonl", "--out", tmp_path / "m", flag, value)
    _clean_failure(result, words)
    assert not (tmp_path / "m").exists(), "refused before anything was written"


def test_train_out_naming_a_file(genco_here, tiny_world):
    _clean_failure(genco_here("train", "--logs", tiny_world / "logs.jsonl", "--out", tiny_world / "logs.jsonl"),
                   "--out", "exists and is not a folder")
    _clean_failure(genco_here("train", "--logs", tiny_world / "logs.jsonl", "--out", tiny_world / "logs.jsonl" / "m"),
                   "is not a folder")


@pytest.mark.parametrize("args,words", [
    (["--k", "1000000000"], "--k must be >= 0 and <= 1024"), (["--epsilon", "1.5"], "--epsilon must be"),
    (["--refine-starts", "0"], "--refine-starts must be >= 1"), (["--seed", "-1"], "--seed must be >= 0"),
])
def test_select_options_out_of_range(genco_here, tiny_world, tiny_model, tmp_path, args, words):
    result = genco_here("select", "--model", tiny_model, "--requests", tiny_world / "requests.jsonl",
                       "--out", tmp_path / "s.jsonl", "--greedy", *args)
    _clean_failure(result, words)


def test_selection_batches_bound_memory_whatever_k(tiny_world, tiny_model):
    from genco.checkpoint import load_model
    from genco.files import load_requests

    model, _ = load_model(tiny_model)
    data = encode(load_requests(tiny_world / "requests.jsonl"), model.schema)
    pools = largest_pools(data)
    small, large = rows_per_batch(model, pools, SelectConfig(k=16)), rows_per_batch(model, pools, SelectConfig(k=1024))
    assert large < small <= 256
    assert large >= 1
    few = write_jsonl(tiny_world.parent / "few.jsonl", read_jsonl(tiny_world / "requests.jsonl")[:30])
    result = run_genco("select", "--model", tiny_model, "--requests", few, "--out", tiny_world.parent / "k1024.jsonl",
                       "--greedy", "--k", "1024", "--quiet")
    assert result.returncode == 0, result.stderr
    assert CELL_BUDGET <= 1 << 26, "the budget the docs state"


@pytest.mark.parametrize("args,words", [(["--port", "70000"], "--port must be >= 0 and <= 65535"),
                                        (["--port", "-1"], "--port must be"), (["--max-requests", "0"], "--max-requests must be"),
                                        (["--max-body-bytes", "10"], "--max-body-bytes must be"), (["--host", "no-such-host.invalid"], "--host")])
def test_serve_options(genco_here, tiny_model, args, words):
    _clean_failure(genco_here("serve", "--model", tiny_model, *args), words)


def test_serve_on_a_port_in_use(tiny_model):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        _clean_failure(run_genco("serve", "--model", tiny_model, "--port", str(port)), f"--port {port}: already in use")


@pytest.mark.parametrize("args,words", [(["--interaction", "nan"], "--interaction must be"), (["--ads", "0"], "--ads must be >= 1"),
                                        (["--max-candidates", "1"], "--max-candidates must be >= 2"),
                                        (["--cold-share", "1"], "--cold-share must be"), (["--seed", "-1"], "--seed must be")])
def test_simulate_options(genco_here, tmp_path, args, words):
    _clean_failure(genco_here("simulate", "--out", tmp_path / "w", *args), words)


def test_bench_and_demo_options(genco_here, tmp_path):
    _clean_failure(genco_here("bench", "--seeds", "0", "--out", tmp_path / "b"), "--seeds must be >= 1")
    _clean_failure(genco_here("bench", "--impressions", "0", "--out", tmp_path / "b"), "--impressions must be >= 1")
    _clean_failure(genco_here("demo", "--seed", "-1", "--out", tmp_path / "d"), "--seed must be >= 0")


def test_the_python_api_refuses_what_the_command_line_refuses():
    for make, field in [(lambda: TrainConfig(epochs=0), "epochs"), (lambda: TrainConfig(lr=math.nan), "lr"),
                        (lambda: ModelConfig(dim=0), "dim"), (lambda: SelectConfig(k=10**9), "k"),
                        (lambda: WorldConfig(interaction=math.nan), "interaction"), (lambda: Limits(max_candidates=0), "max_candidates"),
                        (lambda: TrainConfig(epochs=2.5), "epochs"), (lambda: TrainConfig(epochs=True), "epochs")]:
        with pytest.raises(OptionError) as caught:
            make()
        assert caught.value.option == field and isinstance(caught.value, ValueError)


def test_validate_deeply_nested_json(tmp_path):
    path = tmp_path / "deep.jsonl"
    path.write_text("[" * 100_000 + "\n")
    for args in ([], ["--kind", "logs"]):
        _clean_failure(run_genco("validate", path, *args), f"{path}:1: rule invalid-json")


def test_select_to_parquet_on_bad_input_leaves_nothing(tiny_world, tiny_model, tmp_path):
    rows = read_jsonl(tiny_world / "requests.jsonl")[:3]
    rows.append(dict(rows[0], request_id="bad", user=[0.0]))
    path = write_jsonl(tmp_path / "r.jsonl", rows)
    out = tmp_path / "o.parquet"
    _clean_failure(run_genco("select", "--model", tiny_model, "--requests", path, "--out", out), f"{path}:4: rule feature-length")
    assert not out.exists() and not list(tmp_path.glob(".o.parquet*")), "no output, no temporary file left"


def test_messages_are_filled_in(genco_here, tmp_path):
    row = log_row()
    row["components"]["title"].append(dict(row["components"]["title"][0]))
    path = write_jsonl(tmp_path / "dup.jsonl", [row])
    _clean_failure(genco_here("validate", path), "component 'title' lists element 't-1' twice")
    row = log_row(shown={"image": "i-1"})
    row["components"]["title"] = []
    path = write_jsonl(tmp_path / "empty.jsonl", [row])
    _clean_failure(genco_here("validate", path), "component 'title' has no candidates")


def test_evaluate_and_model_files_are_strict_json(tmp_path):
    assert finite_json({"a": [math.nan, 1.0, math.inf], "b": 2}) == {"a": [None, 1.0, None], "b": 2}
    assert json_text({"auc": math.nan}) == '{"auc": null}'
    # 3 rows, 1 click, one held out: a single class, so held-out AUC is undefined
    rows = [log_row(request_id=f"r-{i}", click=int(i == 0)) for i in range(3)]
    logs = write_jsonl(tmp_path / "logs.jsonl", rows)
    result = run_genco("train", "--logs", logs, "--out", tmp_path / "m", "--epochs", "1", "--reward-models", "1",
                       "--holdout", "0.34", "--quiet")
    assert result.returncode == 0, result.stderr
    for name in ("genco.json", "history.json"):
        _strict_json((tmp_path / "m" / name).read_text())
    line = _strict_json(result.stdout.split(": ", 1)[1])
    assert line["heldout_auc"] is None
    assert "warning: only 1 held-out row with" in result.stderr, "tiny hold-outs are called noise"


def test_no_holdout_says_the_figures_are_on_training_rows(tiny_world, tmp_path):
    result = run_genco("train", "--logs", tiny_world / "logs.jsonl", "--out", tmp_path / "m", "--epochs", "1",
                       "--reward-models", "1", "--rl-epochs", "0", "--holdout", "0")
    assert result.returncode == 0, result.stderr
    assert "warning: nothing is held out" in result.stderr and "train-row AUC" in result.stderr
    assert json.loads((tmp_path / "m" / "genco.json").read_text())["metrics"]["judged_on"] == "training-rows"


# -- Parquet as users write it -----------------------------------------------------------------------------------

def _rows_with_a_missing_component(n=6):
    rows = []
    for i in range(n):
        row = log_row(request_id=f"r-{i}", click=i % 2)
        if i % 2:
            del row["components"]["image"], row["shown"]["image"]
        if i == 3:
            del row["propensity"]
        rows.append(row)
    return rows


@pytest.mark.parametrize("encoding", ["struct", "map"])
def test_parquet_from_plain_rows_with_missing_components(tmp_path, encoding):
    from genco.files import PARQUET_SCHEMAS

    rows = _rows_with_a_missing_component()
    table = pa.Table.from_pylist(rows) if encoding == "struct" else pa.Table.from_pylist(rows, schema=PARQUET_SCHEMAS["logs"])
    if encoding == "struct":
        assert pa.types.is_struct(table.schema.field("components").type), "what pyarrow infers from plain rows"
    path = tmp_path / "logs.parquet"
    pq.write_table(table, path)
    result = run_genco("validate", path, "--json")
    assert result.returncode == 0, result.stderr
    summary = json.loads(result.stdout)
    assert summary["rows"] == 6 and summary["components"]["image"]["rows"] == 3
    read = list(read_rows(path, "logs"))
    assert [set(r.components) for r in read] == [set(r["components"]) for r in rows]
    assert [r.propensity for r in read] == [r.get("propensity") for r in rows]


# -- empty context and features ------------------------------------------------------------------------------------

def _blank(row: dict) -> dict:
    row = dict(row, user=[])
    row.pop("ad", None)
    row["components"] = {name: [{"id": e["id"], "features": []} for e in cands] for name, cands in row["components"].items()}
    return row


def test_no_torch_warnings_with_empty_user_and_features(tiny_world, tmp_path):
    logs = write_jsonl(tmp_path / "logs.jsonl", [_blank(r) for r in read_jsonl(tiny_world / "logs.jsonl")[:1500]])
    requests = write_jsonl(tmp_path / "requests.jsonl", [_blank(r) for r in read_jsonl(tiny_world / "requests.jsonl")[:50]])
    result = run_genco("train", "--logs", logs, "--out", tmp_path / "m", "--epochs", "1", "--reward-models", "1", "--quiet")
    assert result.returncode == 0 and "Warning" not in result.stderr, result.stderr
    for mode in ("--greedy", "--explore"):
        result = run_genco("select", "--model", tmp_path / "m", "--requests", requests, "--out", tmp_path / "s.jsonl", mode, "--quiet")
        assert result.returncode == 0 and result.stderr == "", result.stderr


def test_train_option_defaults_are_the_configs_defaults():
    """`genco train` states its defaults in its signature (for --help); they must be what the Python API trains
    with, so that a model trained by either is the same model."""
    import inspect
    from dataclasses import fields

    from genco.cli import train

    options = {name: parameter.default for name, parameter in inspect.signature(train).parameters.items()}
    checked = 0
    for config in (TrainConfig(), ModelConfig()):
        for field in fields(config):
            wanted, flag = getattr(config, field.name), f"no_{field.name}"  # --no-attention sets attention=False
            if flag in options:
                assert options[flag] is (not wanted), (flag, wanted)
            elif field.name in options:
                given = options[field.name]
                assert getattr(given, "value", given) == wanted, (field.name, given, wanted)
            else:
                continue
            checked += 1
    assert checked >= 20, checked
