"""Request rows straight into the lean program's grid inputs (genco.lean), and its answer back into selections.

Why apart from genco.data. `encode` + `collate` build a columnar element table (each distinct element stored
once, rows as indices into it), which is what a log of millions of rows needs; for the handful of requests of
one served call that table is pure overhead, paid on every call (most of a batch-1 answer's time once the
program itself is lean). Here each request's candidates are written into the (B, M, N) grid directly, one
pass per component. The arrays are exactly `grid_inputs(collate(encode(requests), ..., grid=True), ...)`'s
(tests/test_request_grid.py), so answers do not depend on which path built them.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from genco.contract import Request
from genco.data import FeatureSchema, ad_bucket, element_bucket
from genco.lean import grid_arrays
from genco.noise import content_key


def request_grid(requests: Sequence[Request], schema: FeatureSchema, k: int, enumerate_up_to: int = 0) -> dict[str, np.ndarray]:
    """The lean program's inputs for `requests` (which fit `schema`): every component padded to the widest pool
    of the call, request-keyed noise for K samples, and every combination of rows with at most
    `enumerate_up_to` of them as `extra`."""
    names = schema.components
    B, M = len(requests), len(names)
    N = max((len(r.components.get(name, ())) for r in requests for name in names), default=0) or 1
    mask = np.zeros((B, M, N), dtype=bool)
    buckets = np.zeros((B, M, N), dtype=np.int64)
    widths = [schema.feature_dims[name] for name in names]
    features = np.zeros((B, M, N, max(widths, default=0)), dtype=np.float32)
    zeros = [0.0] * schema.ad_dim
    user = np.asarray([r.user for r in requests], dtype=np.float32).reshape(B, schema.user_dim)
    ad = np.asarray([zeros if r.ad is None else r.ad for r in requests], dtype=np.float32).reshape(B, schema.ad_dim)
    ads = np.asarray([ad_bucket(r.ad_id, schema.ad_buckets) for r in requests], dtype=np.int64)
    keys = np.empty(B, dtype=np.int64)
    for b, request in enumerate(requests):
        sizes = [len(request.components.get(name, ())) for name in names]
        for m, name in enumerate(names):
            n = sizes[m]
            if n:
                candidates = request.components[name]
                mask[b, m, :n] = True
                buckets[b, m, :n] = [element_bucket(name, element.id, schema.id_buckets) for element in candidates]
                if widths[m]:
                    features[b, m, :n, :widths[m]] = [element.features for element in candidates]
        keys[b] = content_key(user[b], ad[b], ads[b], [(names[m], buckets[b, m, :sizes[m]], features[b, m, :sizes[m], :widths[m]])
                                                       for m in range(M) if sizes[m]])
    return grid_arrays(user, ad, ads, buckets, mask, features, keys, k, enumerate_up_to)


def grid_selections(requests: Sequence[Request], schema: FeatureSchema, positions: np.ndarray) -> list[dict[str, str]]:
    """Chosen positions (B, M) within components (-1: absent) -> {component: element id} per request."""
    return [{name: request.components[name][p].id for name, p in zip(schema.components, row.tolist()) if p >= 0}
            for request, row in zip(requests, positions)]
