"""One small interface for every policy genco compares: fit on logs, choose for requests.

    policy.fit(logs)                                  # EncodedRows of log rows (random exposure or served traffic)
    choices = policy.choose(requests, greedy=True)    # EncodedRows of request rows -> Choices

`greedy=True` answers the policy's best guess (propensity 1); `greedy=False` explores and reports the
propensity of what it served, so that the served traffic can be logged and fitted again (closed loop).
Positions are within each component's candidate list, -1 where a request lacks the component.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Iterator
from contextlib import contextmanager

import numpy as np
import torch

from genco.data import EncodedRows, selections_at
from genco.select import Choices


class Policy(ABC):
    name: str = "policy"

    @abstractmethod
    def fit(self, logs: EncodedRows) -> "Policy":
        """Learn from logs; calling it again with more logs refits (the closed loop's retrain step)."""

    @abstractmethod
    def choose(self, requests: EncodedRows, *, greedy: bool = True, seed: int = 0) -> Choices:
        """One combination per request."""


def choices(requests: EncodedRows, positions: np.ndarray, score: np.ndarray | None = None,
            propensity: np.ndarray | None = None) -> Choices:
    """Wrap chosen positions (n, M) into Choices with their element ids."""
    n = len(requests)
    rows = np.arange(n)
    return Choices(
        positions=positions,
        score=np.full(n, np.nan) if score is None else score,
        propensity=np.ones(n) if propensity is None else propensity,
        selections=selections_at(requests, rows, positions),
    )


def candidate_lists(data: EncodedRows, component: str) -> Iterator[tuple[int, np.ndarray]]:
    """(row, element-table entries of that row's candidates) for every row that has the component."""
    column = data.columns[component]
    offsets, members = column["offsets"], column["members"]
    for r in range(len(data)):
        a, b = offsets[r], offsets[r + 1]
        if b > a:
            yield r, members[a:b]


def shown_entries(logs: EncodedRows, component: str) -> tuple[np.ndarray, np.ndarray]:
    """(rows that have the component, element-table entry shown in each)."""
    column = logs.columns[component]
    rows = np.flatnonzero(column["shown"] >= 0)
    return rows, column["members"][column["offsets"][rows] + column["shown"][rows]]


def uniform_positions(requests: EncodedRows, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """A uniformly random combination per request and its propensity."""
    counts = np.stack([requests.candidate_counts(name) for name in requests.schema.components], axis=1)  # (n, M)
    positions = np.where(counts > 0, np.floor(rng.random(counts.shape) * np.maximum(counts, 1)).astype(int), -1)
    propensity = np.prod(np.where(counts > 0, 1.0 / np.maximum(counts, 1), 1.0), axis=1)
    return positions, propensity


class RandomPolicy(Policy):
    """Uniform random exposure: the floor every other policy is measured against."""

    name = "random"

    def fit(self, logs: EncodedRows) -> "RandomPolicy":
        return self

    def choose(self, requests: EncodedRows, *, greedy: bool = True, seed: int = 0) -> Choices:
        positions, propensity = uniform_positions(requests, np.random.default_rng(seed))
        return choices(requests, positions, propensity=propensity)


def request_counts(requests: EncodedRows) -> np.ndarray:
    """(n, M) candidate count of every component of every request (0 where the request lacks it)."""
    return np.stack([requests.candidate_counts(name) for name in requests.schema.components], axis=1)


def combinations_of(counts: np.ndarray, limit: int, rng: np.random.Generator) -> tuple[np.ndarray, bool]:
    """The combinations of one request as positions (C, M), -1 for absent components.

    Every combination when there are at most `limit`; otherwise `limit` drawn uniformly at random (the
    second value says so). Policies that must enumerate (whole-combination bandits, AutoCO) cost the
    product of the pool sizes per request: this is where they stop being affordable.
    """
    sizes = np.where(counts > 0, counts, 1)
    total = int(np.prod(sizes, dtype=np.float64)) if np.prod(sizes, dtype=np.float64) < 2**62 else 2**62
    if total <= limit:
        grids = np.meshgrid(*[np.arange(s) for s in sizes], indexing="ij")
        combos = np.stack([g.ravel() for g in grids], axis=1)
        sampled = False
    else:
        combos = np.floor(rng.random((limit, len(sizes))) * sizes).astype(np.int64)
        sampled = True
    combos[:, counts == 0] = -1
    return combos, sampled


def element_keys(data: EncodedRows, component: str) -> list[str]:
    """Element ids of the element table of `component` (entries differ between EncodedRows; ids do not)."""
    return data.element_ids[component]


@contextmanager
def torch_threads(threads: int | None) -> Iterator[None]:
    """Run with `threads` torch intra-op threads, then restore the previous setting (None: leave it alone).

    The baselines' tensors are small, so extra threads mostly wait on each other: on a busy 2-core machine
    two threads made an AutoCO-lite epoch about 25 times slower than one.
    """
    if threads is None:
        yield
        return
    previous = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        yield
    finally:
        torch.set_num_threads(previous)
