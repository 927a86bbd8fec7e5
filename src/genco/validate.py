"""`genco validate`: check every row of a data set and summarise what it holds.

The summary is what a user should look at before training: how many rows and clicks, which components
appear how often, how many candidates they have, and whether the logs carry the propensities that
off-policy evaluation needs.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from genco.contract import DEFAULT_MAX_CANDIDATES, DatasetShape, Kind, LogRow, Request, Selection
from genco.files import OnBadRow, ReadReport, data_files, detect_kind, read_rows


@dataclass
class Summary:
    kind: Kind
    files: int = 0
    rows: int = 0
    clicks: int = 0
    with_propensity: int = 0
    propensity_min: float = float("inf")
    propensity_max: float = 0.0
    with_revenue: int = 0
    revenue_total: float = 0.0
    ads: set[str] = field(default_factory=set)
    component_rows: Counter[str] = field(default_factory=Counter)
    candidate_counts: dict[str, Counter[int]] = field(default_factory=dict)
    elements: dict[str, set[str]] = field(default_factory=dict)
    lengths: dict[str, int] = field(default_factory=dict)
    report: ReadReport = field(default_factory=ReadReport)

    def add(self, row: Any) -> None:
        self.rows += 1
        if isinstance(row, Selection):
            for name in row.selection:
                self.component_rows[name] += 1
            return
        assert isinstance(row, Request)
        self.ads.add(row.ad_id)
        for name, candidates in row.components.items():
            self.component_rows[name] += 1
            self.candidate_counts.setdefault(name, Counter())[len(candidates)] += 1
            ids = self.elements.setdefault(name, set())
            ids.update(e.id for e in candidates)
        if isinstance(row, LogRow):
            self.clicks += row.click
            if row.propensity is not None:
                self.with_propensity += 1
                self.propensity_min = min(self.propensity_min, row.propensity)
                self.propensity_max = max(self.propensity_max, row.propensity)
            if row.revenue is not None:
                self.with_revenue += 1
                self.revenue_total += row.revenue * row.click

    def candidate_stats(self, name: str) -> dict[str, float]:
        counts = self.candidate_counts.get(name, Counter())
        values = np.repeat(np.fromiter(counts.keys(), int), np.fromiter(counts.values(), int))
        if not len(values):
            return {}
        return {
            "min": int(values.min()),
            "p50": float(np.percentile(values, 50)),
            "mean": float(values.mean()),
            "p90": float(np.percentile(values, 90)),
            "max": int(values.max()),
        }

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"kind": self.kind, "files": self.files, "rows": self.rows}
        if self.kind == "logs":
            out |= {
                "clicks": self.clicks,
                "ctr": self.clicks / self.rows if self.rows else 0.0,
                "propensity_coverage": self.with_propensity / self.rows if self.rows else 0.0,
                "propensity_range": [self.propensity_min, self.propensity_max] if self.with_propensity else None,
                "revenue_coverage": self.with_revenue / self.rows if self.rows else 0.0,
            }
        if self.kind != "selections":
            out["ads"] = len(self.ads)
            out["feature_lengths"] = self.lengths
        out["components"] = {
            name: {
                "rows": n,
                "share_of_rows": n / self.rows,
                **({"distinct_elements": len(self.elements[name]), "candidates": self.candidate_stats(name)} if name in self.elements else {}),
            }
            for name, n in sorted(self.component_rows.items(), key=lambda kv: -kv[1])
        }
        out["skipped"] = dict(self.report.skipped)
        return out


def summarise_path(
    path: str | Path, kind: Kind | None = None, *, on_bad_row: OnBadRow = "error", max_candidates: int = DEFAULT_MAX_CANDIDATES
) -> Summary:
    kind = kind or detect_kind(path)
    summary = Summary(kind=kind, files=len(data_files(path)))
    shape = DatasetShape()
    for row in read_rows(path, kind, on_bad_row=on_bad_row, max_candidates=max_candidates, report=summary.report, shape=shape):
        summary.add(row)
    summary.lengths = {key.replace("component:", ""): n for key, (n, _) in shape.lengths.items()}
    return summary
