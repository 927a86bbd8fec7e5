"""From typed rows to model input: a compact columnar encoding, and padded, masked batches.

Two steps, so that a large log never lives in memory as Python objects:

1. `Encoder` turns rows into `EncodedRows`: numpy columns, where every distinct element of a component is
   stored once in an element table (features + hashed id) and each row holds int32 indices into it.
2. `collate` gathers any subset of rows into a `Batch` of padded tensors. Components are laid side by side
   along one slot axis (B, T) with T = sum over components of the batch's largest candidate count for that
   component: padding is to the batch's maximum, never to a fixed size.
"""

from __future__ import annotations

import gc
import hashlib
from contextlib import contextmanager
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import asdict, dataclass, field
from functools import lru_cache
from typing import Any

import numpy as np
import torch

from genco.contract import LogRow, Request, shown_value
from genco.errors import BadRowError, GencoInputError, ItemLocation
from genco.noise import content_key


def stable_hash(text: str) -> int:
    """A 63-bit hash that is the same in every process and Python version (unlike hash())."""
    return int.from_bytes(hashlib.blake2b(text.encode(), digest_size=8).digest(), "little") >> 1


# The buckets are cached: a catalogue's ids recur on every request that offers them, and a hit costs a tenth
# of the hash (90 elements make a tenth of a batch-1 answer's time otherwise).
@lru_cache(maxsize=1 << 20)
def element_bucket(component: str, element_id: str, buckets: int) -> int:
    return stable_hash(f"{component}\x1f{element_id}") % buckets


@lru_cache(maxsize=1 << 18)
def ad_bucket(ad_id: str, buckets: int) -> int:
    return stable_hash(ad_id) % buckets


@dataclass
class FeatureSchema:
    """What a model knows of its data: components in order, feature lengths, hash sizes. Saved with the model."""

    components: list[str]
    user_dim: int
    ad_dim: int
    feature_dims: dict[str, int]
    id_buckets: int = 1 << 16
    ad_buckets: int = 1 << 14
    combination_buckets: int = 1 << 20
    pair_buckets: int = 1 << 20  # hashed pairs of element ids (GenCO's pair effects)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def require(self, row: Request, index: int) -> None:
        """Raise BadRowError, naming request `index` of a list, if `row` does not fit this schema."""
        if problem := self.problem(row):
            raise BadRowError(ItemLocation(index), *problem)

    def problem(self, row: Request) -> tuple[str, str, tuple] | None:
        """Why `row` does not fit this schema, as (contract rule, detail, field); None if it does."""
        if len(row.user) != self.user_dim:
            return "feature-length", f"user has length {len(row.user)}, the model was trained with {self.user_dim}", ("user",)
        if row.ad is not None and len(row.ad) != self.ad_dim:
            return "feature-length", f"ad has length {len(row.ad)}, the model was trained with {self.ad_dim}", ("ad",)
        for name, candidates in row.components.items():
            if name not in self.feature_dims:
                return ("unknown-component", f"component {shown_value(name)} was not in the training logs "
                        f"(known: {', '.join(self.components)})", ("components", name))
            want = self.feature_dims[name]
            lengths = [len(element.features) for element in candidates]
            if lengths.count(want) == len(lengths):
                continue
            for i, element in enumerate(candidates):
                if len(element.features) != want:
                    return ("feature-length", f"{shown_value(name)} element {shown_value(element.id)} has "
                            f"{len(element.features)} features, the model expects {want}", ("components", name, i, "features"))
        return None


@dataclass
class ComponentColumn:
    """One component across many rows: a table of distinct elements and, per row, indices into it."""

    ids: list[str] = field(default_factory=list)  # element table: id of entry e
    features: list[list[float]] = field(default_factory=list)  # element table: features of entry e
    buckets: list[int] = field(default_factory=list)  # element table: hashed id of entry e
    offsets: list[int] = field(default_factory=lambda: [0])  # row r's candidates are members[offsets[r]:offsets[r+1]]
    members: list[int] = field(default_factory=list)
    shown: list[int] = field(default_factory=list)  # row r: position of the shown element among its candidates, -1 if none
    _index: dict[str, int] = field(default_factory=dict, repr=False)
    _variants: dict[tuple[str, tuple[float, ...]], int] = field(default_factory=dict, repr=False)

    def entry(self, component: str, element_id: str, features: list[float], buckets: int) -> int:
        """The table index of this (id, features) element, adding it on first sight.

        The same id normally carries the same features everywhere; if it does not, each distinct
        feature vector gets its own entry (sharing the hashed id), so no row's features are lost.
        """
        index = self._index.get(element_id)
        if index is not None and self.features[index] == features:
            return index
        key = (element_id, tuple(features))
        if index is not None and key in self._variants:
            return self._variants[key]
        new = len(self.ids)
        self.ids.append(element_id)
        self.features.append(features)
        self.buckets.append(element_bucket(component, element_id, buckets))
        if index is None:
            self._index[element_id] = new
        else:
            self._variants[key] = new
        return new


@dataclass
class EncodedRows:
    """Rows as numpy columns (see module doc). Built by `Encoder`, sliced into batches by `collate`."""

    schema: FeatureSchema
    request_ids: list[str]
    user: np.ndarray  # (n, U) float32
    ad: np.ndarray  # (n, A) float32, zeros where a row has no ad features
    ad_bucket: np.ndarray  # (n,) int64
    ad_ids: list[str]
    columns: dict[str, dict[str, np.ndarray]]  # component -> table_features (E, F), table_bucket (E,),
    #                                              offsets (n+1,), members (nnz,), shown (n,)
    element_ids: dict[str, list[str]]  # component -> id of table entry e
    row_key: np.ndarray  # (n,) int64: every row's request key (genco.noise: what greedy selection's samples are drawn from)
    click: np.ndarray | None = None  # (n,) float32, logs only
    propensity: np.ndarray | None = None  # (n,) float32, NaN where absent
    revenue: np.ndarray | None = None  # (n,) float32, NaN where absent

    def __len__(self) -> int:
        return len(self.request_ids)

    def candidate_counts(self, component: str) -> np.ndarray:
        return np.diff(self.columns[component]["offsets"])

    def shown_positions(self) -> np.ndarray:
        """(n, M) position of the served element within each component's candidates, -1 where absent (logs)."""
        return np.stack([self.columns[name]["shown"] for name in self.schema.components], axis=1).astype(np.int64)

    def take(self, rows: Sequence[int] | np.ndarray) -> EncodedRows:
        """The given rows, in that order, as EncodedRows of their own (the element tables are shared): a split
        of a log into the part a policy is fitted on and the part it is judged on."""
        rows = np.asarray(rows, dtype=np.int64)
        columns = {}
        for name, column in self.columns.items():
            start, end = column["offsets"][rows], column["offsets"][rows + 1]
            lengths = end - start
            offsets = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64)
            members = np.repeat(start - offsets[:-1], lengths) + np.arange(offsets[-1])  # (nnz,) old member index
            columns[name] = {**column, "offsets": offsets, "members": column["members"][members], "shown": column["shown"][rows]}

        def part(values: np.ndarray | None) -> np.ndarray | None:
            return None if values is None else values[rows]
        return EncodedRows(
            schema=self.schema, request_ids=[self.request_ids[r] for r in rows], user=self.user[rows], ad=self.ad[rows],
            ad_bucket=self.ad_bucket[rows], ad_ids=[self.ad_ids[r] for r in rows], columns=columns,
            element_ids=self.element_ids, row_key=self.row_key[rows], click=part(self.click),
            propensity=part(self.propensity), revenue=part(self.revenue))


class Encoder:
    """Accumulates rows into columns; `finish()` returns EncodedRows.

    With a schema (serving a trained model) every row must fit it. Without one (reading training logs) the
    schema is learned from the rows: components in order of first appearance, lengths from the first row
    that shows them (the contract's reader has already checked that every row agrees).
    """

    def __init__(self, schema: FeatureSchema | None = None, *, id_buckets: int = 1 << 16, ad_buckets: int = 1 << 14):
        self.fixed = schema is not None
        self.schema = schema or FeatureSchema([], -1, -1, {}, id_buckets=id_buckets, ad_buckets=ad_buckets)
        self.columns = {name: ComponentColumn() for name in self.schema.components}
        self.request_ids: list[str] = []
        self.ad_ids: list[str] = []
        self.user: list[list[float]] = []
        self.ad: list[list[float] | None] = []
        self.click: list[int] = []
        self.propensity: list[float] = []
        self.revenue: list[float] = []
        self._has_logs = False

    def _learn(self, row: Request) -> None:
        s = self.schema
        if s.user_dim < 0:
            s.user_dim = len(row.user)
        if row.ad is not None and s.ad_dim < 0:
            s.ad_dim = len(row.ad)
        for name, candidates in row.components.items():
            if name not in self.columns:
                s.components.append(name)
                s.feature_dims[name] = len(candidates[0].features)
                column = self.columns[name] = ComponentColumn()
                column.offsets = [0] * (len(self.request_ids) + 1)  # earlier rows lack it
                column.shown = [-1] * len(self.request_ids)

    def add(self, row: Request, *, checked: bool = False) -> None:
        """Append one row; with a fixed schema it must fit (BadRowError otherwise) unless `checked` says it was."""
        if self.fixed:
            if not checked:
                self.schema.require(row, len(self.request_ids))
        else:
            self._learn(row)
        self.request_ids.append(row.request_id)
        self.ad_ids.append(row.ad_id)
        self.user.append(row.user)
        self.ad.append(row.ad)
        is_log = isinstance(row, LogRow)
        self._has_logs |= is_log
        buckets = self.schema.id_buckets
        for name, column in self.columns.items():
            candidates = row.components.get(name)
            if candidates is None:
                column.offsets.append(column.offsets[-1])
                column.shown.append(-1)
                continue
            shown_id = row.shown[name] if is_log else None
            shown_at = -1
            members = column.members
            for position, element in enumerate(candidates):
                members.append(column.entry(name, element.id, element.features, buckets))
                if element.id == shown_id:
                    shown_at = position
            column.offsets.append(len(members))
            column.shown.append(shown_at)
        if is_log:
            self.click.append(row.click)
            self.propensity.append(np.nan if row.propensity is None else row.propensity)
            self.revenue.append(np.nan if row.revenue is None else row.revenue)

    def __len__(self) -> int:
        return len(self.request_ids)

    def finish(self) -> EncodedRows:
        s = self.schema
        if s.user_dim < 0:
            raise GencoInputError("no rows to encode")
        s.ad_dim = max(s.ad_dim, 0)
        n = len(self.request_ids)
        columns = {}
        for name, c in self.columns.items():
            columns[name] = {
                "table_features": np.asarray(c.features, dtype=np.float32).reshape(len(c.ids), s.feature_dims[name]),
                "table_bucket": np.asarray(c.buckets, dtype=np.int64),
                "offsets": np.asarray(c.offsets, dtype=np.int64),
                "members": np.asarray(c.members, dtype=np.int32),
                "shown": np.asarray(c.shown, dtype=np.int32),
            }
        zeros = [0.0] * s.ad_dim
        ad_buckets = np.asarray([ad_bucket(a, s.ad_buckets) for a in self.ad_ids], dtype=np.int64)
        user = np.asarray(self.user, dtype=np.float32).reshape(n, s.user_dim)
        ad = np.asarray([zeros if a is None else a for a in self.ad], dtype=np.float32).reshape(n, s.ad_dim)
        logs = self._has_logs
        return EncodedRows(
            schema=s,
            request_ids=self.request_ids,
            user=user,
            ad=ad,
            ad_bucket=ad_buckets,
            ad_ids=self.ad_ids,
            columns=columns,
            element_ids={name: c.ids for name, c in self.columns.items()},
            row_key=table_keys(columns, user, ad, ad_buckets),
            click=np.asarray(self.click, dtype=np.float32) if logs else None,
            propensity=np.asarray(self.propensity, dtype=np.float32) if logs else None,
            revenue=np.asarray(self.revenue, dtype=np.float32) if logs else None,
        )


def table_keys(columns: dict[str, dict[str, np.ndarray]], user: np.ndarray, ad: np.ndarray, ad_bucket: np.ndarray) -> np.ndarray:
    """Every row's request key (genco.noise.content_key) (n,) int64, from the element tables."""
    keys = np.empty(len(user), dtype=np.int64)
    for r in range(len(user)):
        offered = []
        for name, column in columns.items():
            start, end = column["offsets"][r], column["offsets"][r + 1]
            if end > start:
                entries = column["members"][start:end]
                offered.append((name, column["table_bucket"][entries], column["table_features"][entries]))
        keys[r] = content_key(user[r], ad[r], ad_bucket[r], offered)
    return keys


def encode(rows: Iterable[Request], schema: FeatureSchema | None = None, *, checked: bool = False,
           **buckets: int) -> EncodedRows:
    """Encode rows; with no schema, learn it from the rows (training), else check every row against it (serving),
    unless `checked` says a RowChecker with this schema already did."""
    encoder = Encoder(schema, **buckets)
    with gc_paused():
        for row in rows:
            encoder.add(row, checked=checked)
    return encoder.finish()


@contextmanager
def gc_paused() -> Iterator[None]:
    """Pause the cyclic garbage collector while building large lists of small objects.

    Encoding allocates millions of long-lived objects; the collector would rescan them again and again
    (several times slower) while finding nothing to free, since nothing here forms cycles.
    """
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()


@dataclass
class Batch:
    """Padded model input for B rows. Slot axis T: component m owns slots [start_m, end_m).

    Shapes: user (B, U); ad (B, A); ad_bucket (B,); element_bucket (B, T); features[m] (B, N_m, F_m);
    mask (B, T) True on real candidates; slot_component (T,); shown (B, M) position within the component,
    -1 where the row lacks the component; click (B,).
    """

    user: torch.Tensor
    ad: torch.Tensor
    ad_bucket: torch.Tensor
    element_bucket: torch.Tensor
    features: list[torch.Tensor]
    mask: torch.Tensor
    slices: list[tuple[int, int]]
    slot_component: torch.Tensor
    element_index: list[np.ndarray]  # per component (B, N_m): element table entry, -1 on padding
    shown: torch.Tensor | None = None
    click: torch.Tensor | None = None
    propensity: torch.Tensor | None = None
    rows: np.ndarray | None = None  # which rows of the EncodedRows this batch holds
    row_key: np.ndarray | None = None  # (B,) each row's request key (genco.noise)

    @property
    def size(self) -> int:
        return self.user.shape[0]

    @property
    def present(self) -> torch.Tensor:
        """(B, M) True where the row has the component."""
        return torch.stack([self.mask[:, a:b].any(dim=1) if b > a else self.mask.new_zeros(self.size) for a, b in self.slices], dim=1)


def collate(data: EncodedRows, rows: Sequence[int] | np.ndarray, *, grid: bool = False) -> Batch:
    """Gather `rows` of `data` into padded tensors (see Batch). Vectorised: no Python loop over rows.
    grid: every component padded to the same width (at least 1), the layout genco.lean reads as (B, M, N)."""
    idx = np.asarray(rows, dtype=np.int64)
    features, buckets, masks, slices, element_index, shown = [], [], [], [], [], []
    start = 0
    counted = {name: data.columns[name]["offsets"][idx + 1] - data.columns[name]["offsets"][idx] for name in data.schema.components}
    widths = {name: int(counts.max()) if len(idx) else 0 for name, counts in counted.items()}
    if grid:
        widths = dict.fromkeys(widths, max(widths.values(), default=0) or 1)
    for name in data.schema.components:
        col = data.columns[name]
        begin, counts, width = col["offsets"][idx], counted[name], widths[name]
        steps = np.arange(width)
        valid = steps[None, :] < counts[:, None]  # (B, N_m)
        flat = np.minimum(begin[:, None] + steps[None, :], max(len(col["members"]) - 1, 0))
        entry = np.where(valid, col["members"][flat] if len(col["members"]) else 0, -1)  # (B, N_m)
        safe = np.maximum(entry, 0)
        feats = col["table_features"][safe] if len(col["table_features"]) else np.zeros((*entry.shape, data.schema.feature_dims[name]), np.float32)
        feats = feats * valid[..., None]
        bucket = np.where(valid, col["table_bucket"][safe] if len(col["table_bucket"]) else 0, 0)
        features.append(torch.from_numpy(np.ascontiguousarray(feats, dtype=np.float32)))
        buckets.append(bucket)
        masks.append(valid)
        element_index.append(entry)
        shown.append(col["shown"][idx])
        slices.append((start, start + width))
        start += width
    slot_component = torch.tensor([m for m, (a, b) in enumerate(slices) for _ in range(a, b)], dtype=torch.long)
    return Batch(
        user=torch.from_numpy(data.user[idx]),
        ad=torch.from_numpy(data.ad[idx]),
        ad_bucket=torch.from_numpy(data.ad_bucket[idx]),
        element_bucket=torch.from_numpy(np.concatenate(buckets, axis=1).astype(np.int64)),
        features=features,
        mask=torch.from_numpy(np.concatenate(masks, axis=1)),
        slices=slices,
        slot_component=slot_component,
        element_index=element_index,
        shown=torch.from_numpy(np.stack(shown, axis=1).astype(np.int64)),
        click=torch.from_numpy(data.click[idx]) if data.click is not None else None,
        propensity=torch.from_numpy(data.propensity[idx]) if data.propensity is not None else None,
        rows=idx,
        row_key=data.row_key[idx],
    )


def batch_indices(n: int, batch_size: int, *, shuffle: bool = False, seed: int = 0) -> Iterator[np.ndarray]:
    order = np.random.default_rng(seed).permutation(n) if shuffle else np.arange(n)
    for start in range(0, n, batch_size):
        yield order[start : start + batch_size]


def stream_batches(rows: Iterable[Request], schema: FeatureSchema, batch_size: int) -> Iterator[tuple[EncodedRows, Batch]]:
    """Encode and collate a row stream chunk by chunk: memory stays bounded by one chunk, whatever the log's size."""
    encoder = Encoder(schema)
    for row in rows:
        encoder.add(row)
        if len(encoder.request_ids) == batch_size:
            data = encoder.finish()
            yield data, collate(data, np.arange(len(data)))
            encoder = Encoder(schema)
    if encoder.request_ids:
        data = encoder.finish()
        yield data, collate(data, np.arange(len(data)))


def selections_at(data: EncodedRows, rows: np.ndarray, positions: np.ndarray) -> list[dict[str, str]]:
    """Chosen positions (n, M) within each component's candidates (-1: absent) -> {component: element id} per row."""
    out: list[dict[str, str]] = [{} for _ in range(len(rows))]
    for m, name in enumerate(data.schema.components):
        column, ids = data.columns[name], data.element_ids[name]
        chosen = positions[:, m]
        for k in np.flatnonzero(chosen >= 0):
            out[k][name] = ids[column["members"][column["offsets"][rows[k]] + chosen[k]]]
    return out


def request_dict(data: EncodedRows, row: int) -> dict[str, Any]:
    """Enough of a request row for a simulated world's truth: ad, user, candidate ids."""
    components = {}
    for name in data.schema.components:
        column = data.columns[name]
        members = column["members"][column["offsets"][row] : column["offsets"][row + 1]]
        if len(members):
            components[name] = [{"id": data.element_ids[name][e]} for e in members]
    return {"request_id": data.request_ids[row], "ad_id": data.ad_ids[row], "user": data.user[row].tolist(), "components": components}


def positions_of(data: EncodedRows, rows: np.ndarray, selections: Sequence[dict[str, str]]) -> np.ndarray:
    """The inverse of selections_at: {component: element id} per row -> positions (n, M), -1 where absent."""
    positions = np.full((len(rows), len(data.schema.components)), -1)
    for m, name in enumerate(data.schema.components):
        column, ids = data.columns[name], data.element_ids[name]
        for k, row in enumerate(rows):
            chosen = selections[k].get(name)
            if chosen is not None:
                members = column["members"][column["offsets"][row] : column["offsets"][row + 1]]
                positions[k, m] = [ids[e] for e in members].index(chosen)
    return positions
