"""True-CTR scoring of selections on a simulated world, against random exposure and the oracle.

`Evaluator` computes the random and oracle figures of a request set once, so that a benchmark can score
many policies (or many rounds) on the same requests cheaply; `evaluate_files` is `genco evaluate`.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from genco.contract import Request, combination_problem
from genco.errors import BadRowError, GencoInputError
from genco.files import OnBadRow, ReadReport, load_requests, read_located
from genco.world import World, _as_dict


class Evaluator:
    """Scores selections for a fixed list of requests of one world."""

    def __init__(self, world: World, requests: Sequence[Request | dict[str, Any]]):
        self.world = world
        self.requests = [_as_dict(r) for r in requests]
        self.index = {r["request_id"]: k for k, r in enumerate(self.requests)}
        self.oracle_selection, self.oracle_p = world.oracle_dicts(self.requests)
        self.random_p = world.random_ctr_dicts(self.requests)
        self.cpc = world.revenue_of(self.requests) if world.config.revenue else None

    def probabilities(self, selections: Sequence[dict[str, str]], rows: Sequence[int] | None = None) -> np.ndarray:
        rows = range(len(self.requests)) if rows is None else rows
        return self.world.click_probability_dicts([self.requests[k] for k in rows], list(selections))

    def score(self, selections: Sequence[dict[str, str]], rows: Sequence[int] | None = None) -> dict[str, float]:
        """The figures of CONTRACT.md section 2 for selections[i] answering requests[rows[i]] (all, in order, by default)."""
        rows = np.arange(len(self.requests)) if rows is None else np.asarray(rows)
        if len(selections) != len(rows):
            raise ValueError(f"{len(selections)} selections for {len(rows)} requests")
        if len(rows) == 0:
            raise GencoInputError("no selections to evaluate")
        p = self.probabilities(selections, rows)
        return summarise(p, self.random_p[rows], self.oracle_p[rows], None if self.cpc is None else self.cpc[rows])


def summarise(p: np.ndarray, random_p: np.ndarray, oracle_p: np.ndarray, cpc: np.ndarray | None = None) -> dict[str, float]:
    ctr, random_ctr, oracle_ctr = float(p.mean()), float(random_p.mean()), float(oracle_p.mean())
    out: dict[str, float] = {
        "ctr": ctr,
        "random_ctr": random_ctr,
        "oracle_ctr": oracle_ctr,
        "lift_vs_random": ctr / random_ctr - 1.0,
        "frac_of_oracle_lift": (ctr - random_ctr) / (oracle_ctr - random_ctr) if oracle_ctr > random_ctr else 0.0,
        "n": int(len(p)),
    }
    if cpc is not None:
        out["rpm"] = float(1000 * (p * cpc).mean())
        out["random_rpm"] = float(1000 * (random_p * cpc).mean())
    return out


def read_selections(path: str | Path, evaluator: Evaluator, on_bad_row: OnBadRow = "error") -> tuple[list[dict[str, str]], list[int]]:
    """Selection rows of a file, each checked against its request; returns (selections, request positions)."""
    selections, rows = [], []
    report = ReadReport()
    for location, row in read_located(path, "selections", on_bad_row=on_bad_row, report=report):
        k = evaluator.index.get(row.request_id)
        if k is None:
            problem = ("unknown-request", f"request_id {row.request_id!r} is not among the requests")
        else:
            candidates = {n: [c["id"] for c in cands] for n, cands in evaluator.requests[k]["components"].items()}
            problem = combination_problem(candidates, row.selection, "selection")
        if problem:
            error = BadRowError(location, *problem)
            if on_bad_row == "error":
                raise error
            report.skip(error)
            continue
        selections.append(row.selection)
        rows.append(k)
    return selections, rows


def evaluate_files(world_dir: str | Path, selections: str | Path, requests: str | Path | None = None) -> dict[str, float]:
    """`genco evaluate`: the JSON figures for a selections file on a world's requests."""
    world = World.load(world_dir)
    request_rows = load_requests(requests or Path(world_dir) / "requests.jsonl")
    evaluator = Evaluator(world, request_rows)
    chosen, rows = read_selections(selections, evaluator)
    return evaluator.score(chosen, rows)

