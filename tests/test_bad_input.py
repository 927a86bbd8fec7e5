"""Every rule of CONTRACT.md section 1 "Bad input": a message naming file, line and rule, exit status 2."""

from __future__ import annotations

import copy
import json
import math

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from genco.contract import RULES, parse_row
from genco.errors import BadRowError, Location
from genco.files import PARQUET_SCHEMAS, read_rows
from tests.conftest import log_row, run_genco, write_jsonl


def _mutate(path: str, value):
    """A log row with the value at a dotted path replaced (or removed when value is DROP)."""
    row = log_row(request_id="r-2")
    *parents, last = path.split(".")
    target = row
    for key in parents:
        target = target[int(key)] if key.isdigit() else target[key]
    if value is DROP:
        del target[last]
    else:
        target[int(last) if last.isdigit() else last] = value
    return row


DROP = object()

# (rule, bad second line): each breaks exactly one rule.
CASES = [
    ("invalid-json", '{"request_id": "r-2", "ad_id": '),
    ("not-an-object", "[1, 2, 3]"),
    ("missing-field", _mutate("ad_id", DROP)),
    ("missing-field", _mutate("components.title.0.id", DROP)),
    ("wrong-type", _mutate("user", ["0.1", 0.2])),
    ("wrong-type", _mutate("ad_id", 17)),
    ("non-finite-number", _mutate("components.image.0.features", [0.5, math.nan, 0.9])),
    ("non-finite-number", _mutate("user", [math.inf, 0.2])),
    ("feature-range", _mutate("user", [1e13, 0.2])),
    ("feature-range", _mutate("components.image.0.features", [0.5, -3.4028235e38, 0.9])),
    ("no-components", _mutate("components", {})),
    ("empty-candidates", {**_mutate("components.title", []), "shown": {"image": "i-1"}}),
    ("duplicate-element-id", _mutate("components.title.1.id", "t-1")),
    ("shown-components", _mutate("shown", {"title": "t-2"})),
    ("shown-components", _mutate("shown", {"title": "t-2", "image": "i-1", "badge": "b-1"})),
    ("shown-not-candidate", _mutate("shown.title", "t-9")),
    ("click-not-binary", _mutate("click", 2)),
    ("click-not-binary", _mutate("click", True)),
    ("click-not-binary", _mutate("click", 0.5)),
    ("propensity-range", _mutate("propensity", 0.0)),
    ("propensity-range", _mutate("propensity", 1.5)),
    ("revenue-negative", _mutate("revenue", -0.1)),
    ("feature-length", _mutate("user", [0.1, 0.2, 0.3])),
    ("feature-length", _mutate("components.title.0.features", [0.1])),
    ("feature-length", _mutate("ad", [])),
    ("duplicate-request-id", log_row(request_id="r-1")),
]


@pytest.mark.parametrize("rule,bad", CASES, ids=[f"{r}-{i}" for i, (r, _) in enumerate(CASES)])
def test_each_rule_names_file_line_and_rule_with_exit_2(tmp_path, rule, bad):
    path = write_jsonl(tmp_path / "logs.jsonl", [log_row(), bad if isinstance(bad, str) else json.dumps(bad)])
    result = run_genco("validate", path, "--kind", "logs")
    assert result.returncode == 2, result.stderr
    assert f"{path}:2: rule {rule}" in result.stderr
    assert "Traceback" not in result.stderr


def test_too_many_candidates_has_a_configurable_limit(tmp_path):
    path = write_jsonl(tmp_path / "logs.jsonl", [log_row()])
    result = run_genco("validate", path, "--max-candidates", "1")
    assert result.returncode == 2
    assert f"{path}:1: rule too-many-candidates" in result.stderr
    assert run_genco("validate", path, "--max-candidates", "2").returncode == 0


def test_skip_mode_counts_bad_rows_and_keeps_good_ones(tmp_path):
    rows = [log_row(), json.dumps(_mutate("click", 3)), log_row(request_id="r-3"), "not json", log_row(request_id="r-4")]
    path = write_jsonl(tmp_path / "logs.jsonl", [r if isinstance(r, str) else json.dumps(r) for r in rows])
    result = run_genco("validate", path, "--on-bad-row", "skip", "--json")
    assert result.returncode == 0, result.stderr
    summary = json.loads(result.stdout)
    assert summary["rows"] == 3
    assert summary["skipped"] == {"click-not-binary": 1, "invalid-json": 1}


def test_skipped_row_does_not_set_the_feature_length(tmp_path):
    # The first row is bad (and skipped): its user length must not become the data set's length.
    rows = [json.dumps(_mutate("user", [0.1, 0.2, 0.3]) | {"click": 9}), json.dumps(log_row())]
    path = write_jsonl(tmp_path / "logs.jsonl", rows)
    assert len(list(read_rows(path, "logs", on_bad_row="skip"))) == 1


def _parquet(path, rows, kind="logs"):
    pq.write_table(pa.Table.from_pylist(rows, schema=PARQUET_SCHEMAS[kind]), path)
    return path


@pytest.mark.parametrize(
    "rule,bad",
    [
        ("shown-not-candidate", _mutate("shown.title", "t-9")),
        ("non-finite-number", _mutate("user", [math.nan, 0.2])),
        ("feature-length", _mutate("components.image.0.features", [0.5])),
        ("click-not-binary", _mutate("click", 5)),
    ],
)
def test_parquet_errors_name_the_row(tmp_path, rule, bad):
    path = _parquet(tmp_path / "logs.parquet", [log_row(), bad])
    result = run_genco("validate", path)
    assert result.returncode == 2
    assert f"{path}: row 2: rule {rule}" in result.stderr


def test_parquet_map_with_a_repeated_component(tmp_path):
    row = log_row()
    row["components"] = list(row["components"].items()) + [("title", row["components"]["title"])]
    path = _parquet(tmp_path / "logs.parquet", [row])
    result = run_genco("validate", path)
    assert result.returncode == 2
    assert "row 1: rule duplicate-component" in result.stderr


def test_unreadable_files_are_input_errors(tmp_path):
    (tmp_path / "x.parquet").write_bytes(b"not parquet at all")
    (tmp_path / "y.jsonl.gz").write_bytes(b"\x1f\x8b\x08 truncated")
    (tmp_path / "z.csv").write_text("a,b\n")
    for name in ("x.parquet", "y.jsonl.gz", "z.csv", "missing.jsonl"):
        result = run_genco("validate", tmp_path / name, "--kind", "logs")
        assert result.returncode == 2, name
        assert str(tmp_path / name) in result.stderr
        assert "Traceback" not in result.stderr


# -- property-based: the reader never crashes, whatever the row ---------------------------------------------------

json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-3, 3) | st.floats(allow_nan=True) | st.text(max_size=4),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=4), inner, max_size=3),
    max_leaves=8,
)


def _paths(value, prefix=()):
    yield prefix
    if isinstance(value, dict):
        for k, v in value.items():
            yield from _paths(v, prefix + (k,))
    elif isinstance(value, list):
        for i, v in enumerate(value):
            yield from _paths(v, prefix + (i,))


def mutated(data, value, replacement):
    """A copy of `value` with one place (drawn: the whole, a field, an item) replaced by `replacement` or, in a
    dict, removed."""
    path = data.draw(st.sampled_from(list(_paths(value))))
    if not path:
        return replacement
    out = copy.deepcopy(value)
    target = out
    for key in path[:-1]:
        target = target[key]
    if data.draw(st.booleans()) and isinstance(target, dict):
        del target[path[-1]]
    else:
        target[path[-1]] = replacement
    return out


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data(), replacement=json_values)
def test_any_mutation_is_either_valid_or_a_named_rule(data, replacement):
    mutated_row = mutated(data, log_row(), replacement)
    line = json.dumps(mutated_row).encode()
    for raw in (line, mutated_row):  # as a JSON line and as a Parquet-style dict
        if not isinstance(raw, (bytes, dict)):
            continue
        try:
            parse_row("logs", raw, Location("x.jsonl", 1), max_candidates=100)
        except BadRowError as error:
            assert error.rule in RULES
            assert str(error).startswith("x.jsonl:1: rule ")


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=60))
def test_arbitrary_bytes_never_crash_the_reader(raw):
    try:
        parse_row("requests", raw, Location("x.jsonl", 7), max_candidates=100)
    except BadRowError as error:
        assert error.rule in RULES
