"""Contract round trips: what genco writes, genco (and pyarrow / json) reads back unchanged, in every format."""

from __future__ import annotations

import gzip
import json

import pyarrow.parquet as pq
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from genco.contract import LogRow, Request, Selection
from genco.files import AtomicWriter, detect_kind, read_rows, write_rows
from tests.conftest import log_row

FORMATS = [".jsonl", ".jsonl.gz", ".parquet"]

finite = st.floats(-1e6, 1e6, allow_nan=False, allow_infinity=False)


@st.composite
def log_rows(draw, n_rows=st.integers(1, 5)):
    """Valid log rows of one data set: fixed feature lengths, components that come and go."""
    names = draw(st.lists(st.text("abcdefgh_", min_size=1, max_size=6), min_size=1, max_size=4, unique=True))
    dims = {name: draw(st.integers(0, 3)) for name in names}
    user_dim = draw(st.integers(0, 3))
    rows = []
    for r in range(draw(n_rows)):
        present = draw(st.lists(st.sampled_from(names), min_size=1, unique=True))
        components = {}
        for name in present:
            ids = draw(st.lists(st.text(min_size=1, max_size=5), min_size=1, max_size=6, unique=True))
            components[name] = [{"id": i, "features": draw(st.lists(finite, min_size=dims[name], max_size=dims[name]))} for i in ids]
        row = {
            "request_id": f"r{r}",
            "ad_id": draw(st.text(max_size=4)),
            "user": draw(st.lists(finite, min_size=user_dim, max_size=user_dim)),
            "components": components,
            "shown": {n: draw(st.sampled_from([e["id"] for e in c])) for n, c in components.items()},
            "click": draw(st.integers(0, 1)),
        }
        if draw(st.booleans()):
            row["propensity"] = draw(st.floats(1e-9, 1.0))
        if draw(st.booleans()):
            row["revenue"] = draw(st.floats(0, 100))
        rows.append(row)
    return rows


@pytest.mark.parametrize("suffix", FORMATS)
@settings(max_examples=25, deadline=None)
@given(rows=log_rows())
def test_log_rows_round_trip(tmp_path_factory, suffix, rows):
    path = tmp_path_factory.mktemp("rt") / f"logs{suffix}"
    typed = [LogRow.model_validate(r) for r in rows]
    assert write_rows(path, "logs", typed) == len(rows)
    assert list(read_rows(path, "logs")) == typed
    assert detect_kind(path) == "logs"


@pytest.mark.parametrize("suffix", FORMATS)
def test_requests_and_selections_round_trip(tmp_path, suffix):
    request = Request.model_validate({k: v for k, v in log_row().items() if k not in ("shown", "click", "propensity")})
    no_ad = request.model_copy(update={"request_id": "r-2", "ad": None})
    write_rows(tmp_path / f"req{suffix}", "requests", [request, no_ad])
    assert list(read_rows(tmp_path / f"req{suffix}", "requests")) == [request, no_ad]
    assert detect_kind(tmp_path / f"req{suffix}") == "requests"
    selections = [
        Selection(request_id="r-1", selection={"title": "t-2", "image": "i-1"}, score=0.03, propensity=1.0),
        Selection(request_id="r-2", selection={"title": "t-1", "image": "i-1"}),
    ]
    write_rows(tmp_path / f"sel{suffix}", "selections", selections)
    assert list(read_rows(tmp_path / f"sel{suffix}", "selections")) == selections
    assert detect_kind(tmp_path / f"sel{suffix}") == "selections"


def test_written_files_are_plain_json_and_parquet(tmp_path):
    row = LogRow.model_validate(log_row())
    write_rows(tmp_path / "a.jsonl.gz", "logs", [row])
    assert json.loads(gzip.open(tmp_path / "a.jsonl.gz").read()) == log_row()
    write_rows(tmp_path / "a.parquet", "logs", [row])
    table = pq.read_table(tmp_path / "a.parquet")
    assert table.num_rows == 1
    assert dict(table.column("shown").to_pylist()[0]) == {"title": "t-2", "image": "i-1"}


def test_a_folder_is_one_data_set(tmp_path):
    rows = [LogRow.model_validate(log_row(request_id=f"r{k}")) for k in range(6)]
    (tmp_path / "part").mkdir()
    write_rows(tmp_path / "a.jsonl", "logs", rows[:2])
    write_rows(tmp_path / "part" / "b.parquet", "logs", rows[2:4])
    write_rows(tmp_path / "c.jsonl.gz", "logs", rows[4:])
    (tmp_path / "README.txt").write_text("ignored")
    assert sorted(r.request_id for r in read_rows(tmp_path, "logs")) == [f"r{k}" for k in range(6)]


def test_a_failed_write_leaves_nothing_behind(tmp_path):
    target = tmp_path / "out.jsonl"
    target.write_text("previous contents\n")
    with pytest.raises(RuntimeError):
        with AtomicWriter(target, "logs") as writer:
            writer.write(LogRow.model_validate(log_row()))
            raise RuntimeError("crash half-way")
    assert target.read_text() == "previous contents\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.jsonl"]


def test_reading_streams(tmp_path):
    """The reader yields the first row before it has read the whole file."""
    path = tmp_path / "logs.jsonl"
    path.write_text(json.dumps(log_row()) + "\n" + "{broken\n")
    rows = read_rows(path, "logs")
    assert next(rows).request_id == "r-1"
