"""Reading and writing contract rows: JSONL, JSONL.gz, Parquet, or a folder of them.

Reading streams: rows come one at a time (Parquet a record batch at a time), so a log larger than memory
can be validated and batched. Writing is atomic: rows go to a temporary file beside the target, which is
renamed over it only once every row is written, so a failed run leaves no half-written output.
"""

from __future__ import annotations

import contextlib
import gzip
import json
import math
import os
import tempfile
from collections import Counter
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any, Literal

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pydantic_core

from genco.contract import DEFAULT_MAX_CANDIDATES, DatasetShape, Kind, Limits, ModelSchema, Request, RowChecker, _Row
from genco.errors import BadRowError, GencoInputError, Location

SUFFIXES = (".jsonl", ".jsonl.gz", ".parquet")
OnBadRow = Literal["error", "skip"]


def data_format(path: Path) -> str:
    name = path.name.lower()
    for suffix in SUFFIXES:
        if name.endswith(suffix):
            return suffix
    raise GencoInputError(f"{path}: unknown file format; expected a name ending in {', '.join(SUFFIXES)}")


def output_folder(path: str | Path, flag: str = "--out") -> Path:
    """A folder to write into, created if needed; a GencoInputError naming the flag if it cannot be."""
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise GencoInputError(f"{flag} {path}: exists and is not a folder")
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise GencoInputError(f"{flag} {path}: cannot create the folder ({exc.strerror or exc})") from None
    return path


def data_files(path: str | Path) -> list[Path]:
    """The files of a data set: the file itself, or every .jsonl/.jsonl.gz/.parquet file under a folder, sorted."""
    path = Path(path)
    if path.is_dir():
        files = sorted(p for p in path.rglob("*") if p.is_file() and p.name.lower().endswith(SUFFIXES))
        if not files:
            raise GencoInputError(f"{path}: folder holds no {', '.join(SUFFIXES)} files")
        return files
    if not path.exists():
        raise GencoInputError(f"{path}: no such file or folder")
    data_format(path)
    return [path]


# -- reading ---------------------------------------------------------------------------------------------------

_MAP_FIELDS = ("components", "shown", "selection")


def _from_parquet(row: dict[str, Any], location: Location) -> dict[str, Any]:
    """A Parquet row as the contract's object. Two encodings of the component maps are read alike:

    - map<string, ...> columns arrive as lists of (key, value) pairs;
    - struct columns (what `pyarrow.Table.from_pylist(rows)` infers from plain rows) arrive as dicts with
      one key per component of the whole table, null where this row lacks the component: null means absent.

    A null optional field (ad, propensity, revenue, score, an element's features) is a missing one.
    """
    for name in _MAP_FIELDS:
        value = row.get(name)
        if isinstance(value, list):
            pairs = dict(value)
            if len(pairs) != len(value):
                raise BadRowError(location, "duplicate-component", f"{name} names a component twice", (name,))
            row[name] = pairs
        elif isinstance(value, dict):
            row[name] = {key: v for key, v in value.items() if v is not None}
        elif value is None and name in row:
            del row[name]  # a null column is a missing field
    for name in ("ad", "propensity", "revenue", "score"):
        if name in row and row[name] is None:
            del row[name]
    components = row.get("components")
    if isinstance(components, dict):
        for candidates in components.values():
            for element in candidates if isinstance(candidates, list) else ():
                if isinstance(element, dict) and "features" in element and element["features"] is None:
                    del element["features"]
    return row


def iter_raw(path: Path) -> Iterator[tuple[Location, bytes | dict[str, Any]]]:
    """Yield (location, raw row) for one file: JSON lines as bytes, Parquet rows as dicts."""
    fmt = data_format(path)
    if fmt == ".parquet":
        try:
            parquet = pq.ParquetFile(path)
        except (pa.ArrowException, OSError) as exc:
            raise GencoInputError(f"{path}: not a readable Parquet file ({exc})") from None
        number = 0
        for batch in parquet.iter_batches(batch_size=2048):
            for row in batch.to_pylist():
                number += 1
                location = Location(str(path), number, parquet=True)
                yield location, _from_parquet(row, location)
        return
    opener = gzip.open if fmt == ".jsonl.gz" else open
    try:
        with opener(path, "rb") as handle:
            for number, line in enumerate(handle, start=1):
                if line.strip():
                    yield Location(str(path), number), line
    except (OSError, EOFError) as exc:  # a truncated .gz, a folder named x.jsonl, ...
        raise GencoInputError(f"{path}: cannot be read ({exc})") from None


@dataclass
class ReadReport:
    """What a read saw: rows accepted, and rows skipped by rule (with the first skipped place of each)."""

    rows: int = 0
    skipped: Counter[str] = field(default_factory=Counter)
    first_skipped: dict[str, str] = field(default_factory=dict)

    @property
    def skipped_total(self) -> int:
        return sum(self.skipped.values())

    def skip(self, error: BadRowError) -> None:
        self.skipped[error.rule] += 1
        self.first_skipped.setdefault(error.rule, str(error))

    def summary(self) -> str:
        if not self.skipped:
            return "no bad rows"
        parts = ", ".join(f"{n} {rule}" for rule, n in self.skipped.most_common())
        return f"skipped {self.skipped_total} bad rows ({parts})"


def read_rows(path: str | Path, kind: Kind, **options: Any) -> Iterator[Any]:
    """Stream the typed rows of a file or folder, checking every rule of CONTRACT.md section 1.

    With on_bad_row="error" the first bad row raises BadRowError (exit status 2 on the command line);
    with "skip" bad rows are counted in `report` and left out. See `read_located` for the options.
    """
    for _, row in read_located(path, kind, **options):
        yield row


def read_located(
    path: str | Path,
    kind: Kind,
    *,
    on_bad_row: OnBadRow = "error",
    max_candidates: int = DEFAULT_MAX_CANDIDATES,
    report: ReadReport | None = None,
    shape: DatasetShape | None = None,
    schema: ModelSchema | None = None,
) -> Iterator[tuple[Location, Any]]:
    """Like `read_rows`, but yields (location, row) so that later checks can name the line too. With a model's
    `schema`, rows that do not fit it are bad rows too (genco select)."""
    report = report if report is not None else ReadReport()
    checker = RowChecker(kind, Limits(max_candidates=max_candidates), schema, shape)
    for file in data_files(path):
        for location, raw in _guarded(iter_raw(file), report, on_bad_row):
            try:
                row = checker.check(raw, location)
            except BadRowError as error:
                if on_bad_row == "error":
                    raise
                report.skip(error)
                continue
            report.rows += 1
            yield location, row


def _guarded(rows: Iterator[tuple[Location, Any]], report: ReadReport, on_bad_row: OnBadRow):
    """Pass rows through, turning a malformed Parquet map (raised while reading) into a skip when asked."""
    while True:
        try:
            yield next(rows)
        except StopIteration:
            return
        except BadRowError as error:
            if on_bad_row == "error":
                raise
            report.skip(error)


def detect_kind(path: str | Path) -> Kind:
    """Guess what a file holds from its first row: selections have `selection`, logs have `shown`/`click`."""
    first = data_files(path)[0]
    if data_format(first) == ".parquet":
        try:
            names = set(pq.read_schema(first).names)
        except (pa.ArrowException, OSError) as exc:
            raise GencoInputError(f"{first}: not a readable Parquet file ({exc})") from None
    else:
        names = set()
        for location, raw in iter_raw(first):
            try:
                obj = pydantic_core.from_json(raw)
            except ValueError:  # pydantic's parser also refuses nesting past its limit, where json would recurse
                raise BadRowError(location, "invalid-json", "cannot detect the kind of rows from a broken line") from None
            names = set(obj) if isinstance(obj, dict) else set()
            break
    if "selection" in names:
        return "selections"
    if "shown" in names or "click" in names:
        return "logs"
    return "requests"


def load_requests(path: str | Path, **kwargs: Any) -> list[Request]:
    return list(read_rows(path, "requests", **kwargs))


# -- writing ---------------------------------------------------------------------------------------------------

_FEATURES = pa.list_(pa.float64())
_ELEMENT = pa.struct([("id", pa.string()), ("features", _FEATURES)])
_REQUEST_FIELDS = [
    ("request_id", pa.string()),
    ("ad_id", pa.string()),
    ("user", _FEATURES),
    ("ad", _FEATURES),
    ("components", pa.map_(pa.string(), pa.list_(_ELEMENT))),
]
PARQUET_SCHEMAS: dict[Kind, pa.Schema] = {
    "requests": pa.schema(_REQUEST_FIELDS),
    "logs": pa.schema(
        _REQUEST_FIELDS
        + [
            ("shown", pa.map_(pa.string(), pa.string())),
            ("click", pa.int8()),
            ("propensity", pa.float64()),
            ("revenue", pa.float64()),
        ]
    ),
    "selections": pa.schema(
        [
            ("request_id", pa.string()),
            ("selection", pa.map_(pa.string(), pa.string())),
            ("score", pa.float64()),
            ("propensity", pa.float64()),
        ]
    ),
}


class AtomicWriter:
    """Write rows to `path` through a temporary file that is renamed into place only on success.

    Use as a context manager; rows may be typed rows (pydantic models) or plain dicts.
    """

    def __init__(self, path: str | Path, kind: Kind, *, parquet_batch: int = 4096):
        self.path = Path(path)
        self.kind = kind
        self.format = data_format(self.path)
        self._batch: list[dict[str, Any]] = []
        self._parquet_batch = parquet_batch
        self._writer: pq.ParquetWriter | None = None
        self.rows = 0

    def __enter__(self) -> "AtomicWriter":
        if self.path.is_dir():
            raise GencoInputError(f"{self.path}: is a folder; name a file ending in {', '.join(SUFFIXES)}")
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(prefix=f".{self.path.name}.", suffix=".tmp", dir=self.path.parent)
        except OSError as exc:
            raise GencoInputError(f"{self.path}: cannot be written ({exc.strerror or exc})") from None
        self._tmp = Path(tmp)
        raw = os.fdopen(fd, "wb")
        if self.format == ".jsonl.gz":
            self._handle: IO[bytes] = gzip.GzipFile(fileobj=raw, mode="wb")
            self._raw = raw
        else:
            self._handle, self._raw = raw, None
        if self.format == ".parquet":
            self._writer = pq.ParquetWriter(self._handle, PARQUET_SCHEMAS[self.kind])
        return self

    def write(self, row: _Row | dict[str, Any]) -> None:
        self.rows += 1
        if self._writer is not None:
            self._batch.append(row.model_dump() if isinstance(row, _Row) else row)
            if len(self._batch) >= self._parquet_batch:
                self._flush()
            return
        if isinstance(row, _Row):
            line = row.model_dump_json(exclude_none=True).encode()
        else:
            line = json.dumps(row, separators=(",", ":"), allow_nan=False).encode()
        self._handle.write(line + b"\n")

    def write_all(self, rows: Iterable[_Row | dict[str, Any]]) -> "AtomicWriter":
        for row in rows:
            self.write(row)
        return self

    def _flush(self) -> None:
        assert self._writer is not None
        if self._batch:
            table = pa.Table.from_pylist(self._batch, schema=PARQUET_SCHEMAS[self.kind])
            self._writer.write_table(table)
            self._batch = []

    def _close(self) -> None:
        if self._writer is not None:
            writer, self._writer = self._writer, None
            writer.close()  # writes the footer; a writer left open would try again when collected, on a closed file
        self._handle.close()
        if self._raw is not None:
            self._raw.close()

    def __exit__(self, exc_type, exc, tb) -> None:
        try:
            if exc_type is None:
                if self._writer is not None:
                    self._flush()
                self._close()
                os.chmod(self._tmp, 0o644)
                os.replace(self._tmp, self.path)
        finally:
            if self._tmp.exists():  # the run failed (before or here): drop the half-written file, keep the target
                with contextlib.suppress(Exception):
                    self._close()
                self._tmp.unlink(missing_ok=True)


def write_rows(path: str | Path, kind: Kind, rows: Iterable[_Row | dict[str, Any]]) -> int:
    """Write every row atomically; returns how many were written."""
    with AtomicWriter(path, kind) as writer:
        writer.write_all(rows)
    return writer.rows


def finite_json(value: Any) -> Any:
    """`value` with every NaN or infinite float replaced by None: JSON has no NaN, and strict parsers (jq,
    browsers, most languages) refuse the literal that Python's json writes for it. A NaN figure is "no figure"."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {k: finite_json(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [finite_json(v) for v in value]
    if isinstance(value, np.generic):
        return finite_json(value.item())
    return value


def json_text(value: Any, indent: int | None = None) -> str:
    """Strict JSON (null where a figure is NaN or infinite): what genco writes to files and prints."""
    return json.dumps(finite_json(value), indent=indent, allow_nan=False)


def atomic_write_json(path: str | Path, value: Any, indent: int | None = 1) -> None:
    atomic_write_bytes(path, json_text(value, indent).encode())


def atomic_write_bytes(path: str | Path, data: bytes) -> None:
    """Write a small file (JSON, a model, a plot) atomically."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
