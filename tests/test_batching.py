"""Rows -> padded tensors: masks, padding to the batch's maximum, features in place, hashed ids in range."""

from __future__ import annotations

import numpy as np
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from genco.contract import LogRow
from genco.data import collate, encode, selections_at, stable_hash
from tests.test_files import log_rows


def _check_batch(rows, schema, data, batch):
    B = len(rows)
    assert batch.mask.shape == batch.element_bucket.shape == (B, batch.slices[-1][1])
    for m, name in enumerate(schema.components):
        a, b = batch.slices[m]
        counts = [len(r.components.get(name, [])) for r in rows]
        assert b - a == max(counts), "each component is padded to the batch's largest pool, not a fixed size"
        assert batch.mask[:, a:b].sum(dim=1).tolist() == counts
        feats = batch.features[m]
        assert feats.shape == (B, b - a, schema.feature_dims[name])
        for r, row in enumerate(rows):
            cands = row.components.get(name, [])
            for j, element in enumerate(cands):
                assert torch.allclose(feats[r, j], torch.tensor(element.features, dtype=torch.float32))
                assert data.element_ids[name][batch.element_index[m][r, j]] == element.id
            assert (feats[r, len(cands) :] == 0).all(), "padding carries no features"
            assert (batch.element_index[m][r, len(cands) :] == -1).all()
            shown = batch.shown[r, m].item()
            assert shown == (cands.index(next(e for e in cands if e.id == row.shown[name])) if cands else -1)
    assert (batch.element_bucket >= 0).all() and (batch.element_bucket < schema.id_buckets).all()
    assert (batch.ad_bucket < schema.ad_buckets).all()
    assert batch.slot_component.tolist() == [m for m, (a, b) in enumerate(batch.slices) for _ in range(a, b)]


@settings(max_examples=40, deadline=None)
@given(rows=log_rows(n_rows=st.integers(1, 6)))
def test_padding_and_masks(rows):
    typed = [LogRow.model_validate(r) for r in rows]
    data = encode(typed, id_buckets=97, ad_buckets=13)
    schema = data.schema
    batch = collate(data, np.arange(len(typed)))
    _check_batch(typed, schema, data, batch)
    assert batch.click.tolist() == [r.click for r in typed]


def test_large_pools_and_subsets():
    rows = []
    for r, n in enumerate([1, 150, 7]):
        comps = {"title": [{"id": f"t{k}", "features": [float(k), 1.0]} for k in range(n)], "cta": [{"id": "go", "features": []}]}
        rows.append(LogRow.model_validate({"request_id": f"r{r}", "ad_id": "a", "user": [], "components": comps,
                                           "shown": {"title": f"t{n - 1}", "cta": "go"}, "click": 0}))
    data = encode(rows)
    schema = data.schema
    _check_batch(rows, schema, data, collate(data, np.arange(3)))
    # A batch of the small rows is padded to its own maximum (7), not to the data set's (150).
    small = collate(data, np.array([0, 2]))
    assert small.slices[0] == (0, 7)
    _check_batch([rows[0], rows[2]], schema, data, small)
    choice = np.array([[0, 0], [6, 0]])
    assert selections_at(data, np.array([0, 2]), choice) == [{"title": "t0", "cta": "go"}, {"title": "t6", "cta": "go"}]


def test_same_id_different_features_keeps_both():
    make = lambda r, f: LogRow.model_validate({"request_id": r, "ad_id": "a", "user": [], "click": 1,
                                               "components": {"title": [{"id": "t", "features": [f]}]}, "shown": {"title": "t"}})
    rows = [make("r1", 1.0), make("r2", 2.0), make("r3", 1.0)]
    data = encode(rows)
    batch = collate(data, np.arange(3))
    assert batch.features[0][:, 0, 0].tolist() == [1.0, 2.0, 1.0]
    assert len(set(batch.element_bucket[:, 0].tolist())) == 1, "one id, one hashed embedding"


def test_hash_is_stable_across_processes():
    # Fixed value: a model trained in one process must find the same buckets when served in another.
    assert stable_hash("title\x1ft-9") == stable_hash("title\x1ft-9") == 182256658668408408
