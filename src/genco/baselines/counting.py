"""Per-element counting and independent Thompson sampling per component ("D-MABs", Hill et al. 2017).

Every element is an arm of its component's bandit, credited with the clicks of every combination it was
shown in. Elements are keyed by (component, id), so shared highlights, tags and CTAs pool their evidence
across products. Estimates are Beta posteriors whose prior has the logs' mean CTR and `prior_strength`
pseudo-impressions: a rarely shown element stays near the mean instead of winning on one lucky click.
Greedy mode picks the highest posterior mean; explore mode is Thompson sampling.
"""

from __future__ import annotations

from collections import defaultdict

import numpy as np

from genco.baselines.base import Policy, choices, shown_entries
from genco.data import EncodedRows
from genco.select import Choices


class ElementCounting(Policy):
    def __init__(self, prior_strength: float = 20.0, thompson: bool = False, propensity_draws: int = 64):
        self.prior_strength = prior_strength
        self.thompson = thompson
        self.propensity_draws = propensity_draws
        self.name = "independent-ts" if thompson else "counting"
        self.clicks: dict[tuple[str, str], float] = defaultdict(float)
        self.shows: dict[tuple[str, str], float] = defaultdict(float)
        self.mean_ctr = 0.05

    def fit(self, logs: EncodedRows) -> "ElementCounting":
        self.clicks.clear()
        self.shows.clear()
        self.mean_ctr = float(logs.click.mean()) if len(logs) else 0.05
        for name in logs.schema.components:
            rows, entries = shown_entries(logs, name)
            ids = logs.element_ids[name]
            for entry, click in zip(entries, logs.click[rows]):
                key = (name, ids[entry])
                self.shows[key] += 1
                self.clicks[key] += click
        return self

    def _posterior(self, name: str, element_ids: list[str]) -> tuple[np.ndarray, np.ndarray]:
        a0 = self.prior_strength * self.mean_ctr
        b0 = self.prior_strength * (1 - self.mean_ctr)
        clicks = np.array([self.clicks.get((name, i), 0.0) for i in element_ids])
        shows = np.array([self.shows.get((name, i), 0.0) for i in element_ids])
        return a0 + clicks, b0 + shows - clicks

    def choose(self, requests: EncodedRows, *, greedy: bool = True, seed: int = 0) -> Choices:
        rng = np.random.default_rng(seed)
        n, M = len(requests), len(requests.schema.components)
        positions = np.full((n, M), -1)
        propensity = np.ones(n)
        explore = self.thompson and not greedy
        for m, name in enumerate(requests.schema.components):
            column = requests.columns[name]
            ids = requests.element_ids[name]
            offsets, members = column["offsets"], column["members"]
            alpha, beta = self._posterior(name, ids)  # per element-table entry
            for r in range(n):
                a, b = offsets[r], offsets[r + 1]
                if b == a:
                    continue
                entries = members[a:b]
                if explore:
                    draws = rng.beta(alpha[entries], beta[entries], size=(self.propensity_draws, b - a))
                    winners = draws.argmax(axis=1)
                    positions[r, m] = winners[0]
                    propensity[r] *= np.mean(winners == winners[0])  # Monte Carlo estimate of P(this arm)
                else:
                    positions[r, m] = int(np.argmax(alpha[entries] / (alpha[entries] + beta[entries])))
        return choices(requests, positions, propensity=propensity)
