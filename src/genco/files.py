"""Reading and writing contract rows: JSONL, JSONL.gz, Parquet, or a folder of them.

Reading streams: rows come one at a time (Parquet a record batch at a time), so a log larger than memory
can be validated and batched. Writing is atomic: rows go to a temporary file beside the target, which is
renamed over it only once every row is written, so a failed run leaves no half-written output.
"""

from __future__ import annotations

import gzip
import json
import os
import tempfile
from collections import Counter
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any, Literal

import pyarrow as pa
import pyarrow.parquet as pq

from genco.contract import DEFAULT_MAX_CANDIDATES, DatasetShape, Kind, Request, _Row, parse_row
from genco.errors import BadRowError, GencoInputError, Location

SUFFIXES = (".jsonl", ".jsonl.gz", ".parquet")
OnBadRow = Literal["error", "skip"]


def data_format(path: Path) -> str:
    name = path.name.lower()
    for suffix in SUFFIXES:
        if name.endswith(suffix):
            return suffix
    raise GencoInputError(f"{path}: unknown file format; expected a name ending in {', '.join(SUFFIXES)}")


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
    """Parquet map columns arrive as lists of (key, value) pairs; turn them back into objects."""
    for name in _MAP_FIELDS:
        value = row.get(name)
        if isinstance(value, list):
            pairs = dict(value)
            if len(pairs) != len(value):
                raise BadRowError(location, "duplicate-component", f"{name} names a component twice")
            row[name] = pairs
        elif value is None and name in row:
            del row[name]  # a null column is a missing field
    for name in ("ad", "propensity", "revenue", "score"):
        if name in row and row[name] is None:
            del row[name]
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
) -> Iterator[tuple[Location, Any]]:
    """Like `read_rows`, but yields (location, row) so that later checks can name the line too."""
    report = report if report is not None else ReadReport()
    shape = shape if shape is not None else DatasetShape()
    for file in data_files(path):
        for location, raw in _guarded(iter_raw(file), report, on_bad_row):
            try:
                row = parse_row(kind, raw, location, max_candidates)
                shape.check(row, location)
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
                obj = json.loads(raw)
            except ValueError:
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
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{self.path.name}.", suffix=".tmp", dir=self.path.parent)
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

    def __exit__(self, exc_type, exc, tb) -> None:
        try:
            if exc_type is None:
                if self._writer is not None:
                    self._flush()
                    self._writer.close()
                self._handle.close()
                if self._raw is not None:
                    self._raw.close()
                os.chmod(self._tmp, 0o644)
                os.replace(self._tmp, self.path)
                return
        finally:
            if self._tmp.exists():
                try:
                    self._handle.close()
                    if self._raw is not None:
                        self._raw.close()
                finally:
                    self._tmp.unlink()


def write_rows(path: str | Path, kind: Kind, rows: Iterable[_Row | dict[str, Any]]) -> int:
    """Write every row atomically; returns how many were written."""
    with AtomicWriter(path, kind) as writer:
        writer.write_all(rows)
    return writer.rows


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
