"""Randomness for sampling combinations: seeded (explore, training) or keyed by the request (greedy).

Greedy selection samples K combinations from the generator and serves the best one found. With a seeded
generator, which samples a request gets depends on the seed and on the rows drawn before it in the batch,
so the same request could get a different "greedy" answer from call to call while reporting propensity 1.
`RequestNoise` draws each request's uniforms from a counter-based hash of (request key, stream, sample,
position) instead: the same request gets the same samples whatever the seed, the batch or the call, and
two different requests get independent ones.

The request key (`content_key`) hashes what the model sees of a request, not its request_id: the user and
ad features and every candidate's hashed id and features, as float32 arrays (a request's grid, genco.
request_grid, or a log's element tables, genco.data, give the same bytes): a few array copies per component
where hashing every element's Python objects took a tenth of a batch-1 answer.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable

import numpy as np
import torch

_GOLDEN = np.uint64(0x9E3779B97F4A7C15)
_M1, _M2 = np.uint64(0xBF58476D1CE4E5B9), np.uint64(0x94D049BB133111EB)
_S30, _S27, _S31, _S11, _S32 = (np.uint64(s) for s in (30, 27, 31, 11, 32))


def _mix(z: np.ndarray) -> np.ndarray:
    """splitmix64's finaliser on a uint64 array (wrapping arithmetic): a bijection that scatters every bit."""
    z = (z ^ (z >> _S30)) * _M1
    z = (z ^ (z >> _S27)) * _M2
    return z ^ (z >> _S31)


def content_key(user: np.ndarray, ad: np.ndarray, ad_bucket: int, components: Iterable[tuple[str, np.ndarray, np.ndarray]]) -> int:
    """A request's key, 63 bits: a hash of what the model sees of it. user (U,) and ad (A,) float32, and for
    each component it offers, in any order: (name, hashed ids (n,) int64, features (n, F) float32). Hashed in
    name order, so that the key does not depend on the order of a model's components."""
    parts = [user.tobytes(), ad.tobytes(), int(ad_bucket).to_bytes(8, "little")]
    for name, buckets, features in sorted(components, key=lambda component: component[0]):
        parts += [name.encode(), buckets.tobytes(), features.tobytes()]
    framed = b"".join(len(p).to_bytes(4, "little") + p for p in parts)  # length-prefixed: no two requests frame alike
    return int.from_bytes(hashlib.blake2b(framed, digest_size=8).digest(), "little") >> 1


class RequestNoise:
    """Uniforms in (0, 1) that are a function of each row's request key alone. keys: (B,) non-negative ints."""

    def __init__(self, keys: np.ndarray):
        self.keys = np.asarray(keys).astype(np.uint64)

    def uniform(self, k: int, n: int, stream: int) -> torch.Tensor:
        """(B, k, n): entry [b, i, j] depends on (keys[b], stream, i, j) only, never on B or on n beyond j."""
        return self.streams(k, n, [stream])[:, :, 0]

    def streams(self, k: int, n: int, streams) -> torch.Tensor:
        """(B, k, S, n): uniform(k, n, s) of every stream s in `streams`, drawn in one pass."""
        return torch.from_numpy(self.stream_array(k, n, streams))

    def stream_array(self, k: int, n: int, streams) -> np.ndarray:
        """streams(k, n, streams) as a float32 numpy array."""
        base = _mix(self.keys[:, None] + (np.asarray(streams, dtype=np.uint64)[None, :] + np.uint64(1)) * _GOLDEN)  # (B, S)
        counter = (np.arange(k, dtype=np.uint64)[:, None] << _S32) | np.arange(n, dtype=np.uint64)[None, :]  # (k, n)
        z = _mix(_mix(base[:, None, :, None] ^ (counter[None, :, None, :] * _GOLDEN + _GOLDEN)))  # (B, k, S, n)
        u = ((z >> _S11).astype(np.float64) + 0.5) * 2.0**-53  # 53 bits, never 0 or 1
        return u.astype(np.float32).clip(1e-7, 1 - 1e-7)


Randomness = torch.Generator | RequestNoise | None


def uniform(source: Randomness, rows: int, k: int, n: int, stream: int) -> torch.Tensor:
    """(rows, k, n) uniforms in (0, 1): from a seeded torch generator (or torch's global one), or keyed by request."""
    if isinstance(source, RequestNoise):
        assert len(source.keys) == rows, (len(source.keys), rows)
        return source.uniform(k, n, stream)
    return torch.rand((rows, k, n), generator=source).clamp_(1e-12, 1 - 1e-12)
