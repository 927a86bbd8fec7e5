"""Thompson sampling over whole combinations: the "N^D-MAB" baseline of Hill et al., "An Efficient Bandit
Algorithm for Realtime Multivariate Optimization" (KDD 2017).

Each arm is one (ad id, combination of element ids) with its own Beta-Bernoulli posterior. Arms share
nothing: a click on one combination says nothing about another that differs in a single element. Arms are
keyed by strings built from (component, element id) pairs, so logs and requests match whatever the
positions and element tables of either. The prior is Beta with the logs' mean CTR and `prior_strength`
pseudo-impressions.

Selection enumerates the request's combinations with `combinations_of`. Beyond `max_combinations`, a
uniform sample of that many is used, so the arms outside the sample are not considered (the cost of
enumeration). Greedy mode takes the highest posterior mean, with ties broken uniformly at random. Explore
mode takes one Beta draw per arm and the argmax.

Arms without data all have the same prior, so sampling each one would be wasteful. The best of the K arms
without data is drawn in one step instead: its value is the maximum of K Beta draws, by inverse transform,
and which of them it is is uniform. This is exactly Thompson sampling, at a cost that grows with the arms
that have data.

The explore propensity is a Monte Carlo estimate: the share of draws that pick the served arm, counting the
served draw and `propensity_draws` extra draws. Under a sampled enumeration it is multiplied by the
probability that the arm is in the sample.

The baseline is expected to be weak: with thousands of combinations per ad, most arms never get data. That
is what it is here to show.
"""

from __future__ import annotations

import math
from collections import defaultdict
from dataclasses import dataclass

import numpy as np

from genco.baselines.base import Policy, choices, combinations_of, request_counts
from genco.data import EncodedRows
from genco.select import Choices

_PART = "\x1f"  # separates (component, element) pairs in an arm key
_EQ = "\x1e"  # separates a component from its element id
_AD = "\x1d"  # separates the ad id from the combination


def arm_key(ad_id: str, selection: dict[str, str]) -> str:
    """The string key of the arm (ad id, combination). Components are sorted by name, so any order matches."""
    return ad_id + _AD + _PART.join(f"{name}{_EQ}{selection[name]}" for name in sorted(selection))


class _PriorMax:
    """Draws the maximum of K iid Beta(a, b) variables by inverse transform: S(max) = 1 - U^(1/K).

    S, the survival function of Beta(a, b), is tabulated once on a grid in z = logit(x), where the density
    x^a (1 - x)^b is smooth, bounded and integrable for any a, b > 0. It is normalised with the exact Beta
    function.
    """

    def __init__(self, a: float, b: float, lo: float = -60.0, hi: float = 60.0, points: int = 24_001):
        z = np.linspace(lo, hi, points)
        log_x, log_1mx = -np.logaddexp(0.0, -z), -np.logaddexp(0.0, z)
        log_beta = math.lgamma(a) + math.lgamma(b) - math.lgamma(a + b)
        density = np.exp(a * log_x + b * log_1mx - log_beta)  # (points,) density of z
        cells = 0.5 * (density[1:] + density[:-1]) * (z[1] - z[0])
        survival = np.append(np.cumsum(cells[::-1])[::-1], 0.0)  # (points,) P(Z > z), summed from the tail
        with np.errstate(divide="ignore"):
            log_survival = np.log(survival)
        finite = np.isfinite(log_survival)
        z, log_survival = z[finite], log_survival[finite]
        keep = np.append(True, np.diff(log_survival) < 0)  # strictly decreasing, as np.interp needs
        self.z, self.log_survival = z[keep], log_survival[keep]

    def draw(self, k: int, rng: np.random.Generator, size: int) -> np.ndarray:
        """(size,) draws of the maximum of k iid Beta(a, b)."""
        u = rng.random(size)
        with np.errstate(divide="ignore"):
            target = np.log(-np.expm1(np.log(u) / k))  # log S(max)
        z = np.interp(-target, -self.log_survival, self.z)
        return 1.0 / (1.0 + np.exp(-z))


@dataclass
class _AdArms:
    """The arms of one ad that have data, as arrays: S arms over the logs' components."""

    elements: dict[str, list[str]]  # component -> element ids seen with this ad; `matrix` indexes into it
    matrix: np.ndarray  # (S, M_logs) element index per component, -1 where the arm lacks the component
    clicks: np.ndarray  # (S,)
    shows: np.ndarray  # (S,)
    keys: list[str]  # (S,) the arm keys, for reading


class CombinationTS(Policy):
    """An independent Beta-Bernoulli arm per (ad id, combination); see the module doc."""

    name = "combination-ts"

    def __init__(self, prior_strength: float = 2.0, max_combinations: int = 20_000, propensity_draws: int = 64):
        self.prior_strength = prior_strength
        self.max_combinations = max_combinations
        self.propensity_draws = propensity_draws
        self.mean_ctr = 0.05
        self.components: list[str] = []
        self.arms: dict[str, _AdArms] = {}  # ad id -> its arms with data
        self._prior_max: _PriorMax | None = None

    @property
    def prior(self) -> tuple[float, float]:
        return self.prior_strength * self.mean_ctr, self.prior_strength * (1.0 - self.mean_ctr)

    def fit(self, logs: EncodedRows) -> "CombinationTS":
        n = len(logs)
        self.components = list(logs.schema.components)
        self.mean_ctr = float(np.clip(logs.click.mean(), 1e-4, 1 - 1e-4)) if n else 0.05
        shown: list[dict[str, str]] = [{} for _ in range(n)]
        for name in self.components:
            column, ids = logs.columns[name], logs.element_ids[name]
            for r in np.flatnonzero(column["shown"] >= 0):
                shown[r][name] = ids[column["members"][column["offsets"][r] + column["shown"][r]]]
        clicks: dict[str, float] = defaultdict(float)
        shows: dict[str, float] = defaultdict(float)
        arm_of: dict[str, tuple[str, dict[str, str]]] = {}
        for ad_id, selection, click in zip(logs.ad_ids, shown, logs.click):
            key = arm_key(ad_id, selection)
            shows[key] += 1
            clicks[key] += float(click)
            arm_of.setdefault(key, (ad_id, selection))
        keys_of_ad: dict[str, list[str]] = defaultdict(list)
        for key, (ad_id, _) in arm_of.items():
            keys_of_ad[ad_id].append(key)
        self.arms = {}
        for ad_id, keys in keys_of_ad.items():
            index: dict[str, dict[str, int]] = {name: {} for name in self.components}
            matrix = np.full((len(keys), len(self.components)), -1, dtype=np.int64)
            for s, key in enumerate(keys):
                for m, (name, element_id) in enumerate((c, arm_of[key][1].get(c)) for c in self.components):
                    if element_id is not None:
                        matrix[s, m] = index[name].setdefault(element_id, len(index[name]))
            self.arms[ad_id] = _AdArms(
                elements={name: list(ids) for name, ids in index.items()},
                matrix=matrix,
                clicks=np.array([clicks[k] for k in keys]),
                shows=np.array([shows[k] for k in keys]),
                keys=keys,
            )
        self._prior_max = _PriorMax(*self.prior)
        return self

    def _observed(self, requests: EncodedRows, r: int, counts: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Arms with data that request r can serve: codes (mixed radix over its positions), clicks, shows.

        An arm qualifies when it has exactly the request's components and each of its elements is among
        the request's candidates.
        """
        empty = np.zeros(0, dtype=np.int64), np.zeros(0), np.zeros(0)
        arms = self.arms.get(requests.ad_ids[r])
        names = requests.schema.components
        if arms is None or any(counts[m] > 0 and name not in self.components for m, name in enumerate(names)):
            return empty
        strides = _strides(counts)
        valid = np.ones(len(arms.shows), dtype=bool)  # (S,)
        codes = np.zeros(len(arms.shows), dtype=np.int64)  # (S,)
        for m_logs, name in enumerate(self.components):
            element = arms.matrix[:, m_logs]  # (S,)
            m = names.index(name) if name in names else -1
            if m < 0 or counts[m] == 0:
                valid &= element < 0
                continue
            column, ids = requests.columns[name], requests.element_ids[name]
            entries = column["members"][column["offsets"][r]:column["offsets"][r + 1]]
            position = {ids[e]: j for j, e in enumerate(entries)}
            position_of = np.array([position.get(i, -1) for i in arms.elements[name]] + [-1])  # [-1]: index -1
            at = position_of[element]  # (S,) position in the request, -1 if not a candidate or absent
            valid &= at >= 0
            codes += np.maximum(at, 0) * strides[m]
        return codes[valid], arms.clicks[valid], arms.shows[valid]

    def choose(self, requests: EncodedRows, *, greedy: bool = True, seed: int = 0) -> Choices:
        if self._prior_max is None:
            raise RuntimeError("CombinationTS: call fit() before choose()")
        rng = np.random.default_rng(seed)
        a0, b0 = self.prior
        prior_mean = a0 / (a0 + b0)
        counts = request_counts(requests)  # (n, M)
        n = len(requests)
        positions = np.full(counts.shape, -1)
        score = np.full(n, prior_mean)
        propensity = np.ones(n)
        for r in range(n):
            if greedy:  # a sample of a huge pool and ties: keyed by the request, the same answer whatever the seed
                rng = np.random.default_rng(int(requests.row_key[r]))
            combos, sampled = combinations_of(counts[r], self.max_combinations, rng)  # (C, M)
            codes = np.where(combos >= 0, combos, 0) @ _strides(counts[r])  # (C,)
            codes, first = np.unique(codes, return_index=True)  # arms, deduplicated (a sample may repeat)
            combos = combos[first]
            arm_codes, clicks, shows = self._observed(requests, r, counts[r])
            where = np.searchsorted(codes, arm_codes)
            found = (where < len(codes)) & (codes[np.minimum(where, len(codes) - 1)] == arm_codes)
            seen_at, clicks, shows = where[found], clicks[found], shows[found]  # arms with data in the enumeration
            alpha, beta = a0 + clicks, b0 + shows - clicks  # (S,) posteriors of those arms
            unseen = len(codes) - len(seen_at)  # arms at the prior
            if greedy:
                means = np.full(len(codes), prior_mean)
                means[seen_at] = alpha / (alpha + beta)
                best = np.flatnonzero(means == means.max())
                pick = int(best[rng.integers(len(best))])
                p = 1.0
            else:
                draws = 1 + self.propensity_draws
                seen_draws = rng.beta(alpha, beta, size=(draws, len(seen_at)))  # (D, S)
                unseen_max = self._prior_max.draw(unseen, rng, draws) if unseen else np.full(draws, -np.inf)  # (D,)
                seen_best = seen_draws.argmax(axis=1) if len(seen_at) else np.zeros(draws, dtype=int)
                seen_value = seen_draws.max(axis=1) if len(seen_at) else np.full(draws, -np.inf)
                winner = np.where(unseen_max > seen_value, -1, seen_best)  # (D,) -1: an arm without data
                if winner[0] >= 0:
                    pick = int(seen_at[winner[0]])
                    p = float(np.mean(winner == winner[0]))
                else:
                    free = np.ones(len(codes), dtype=bool)
                    free[seen_at] = False
                    pick = int(rng.choice(np.flatnonzero(free)))
                    p = float(np.mean(winner == -1)) / unseen
                if sampled:
                    total = float(np.prod(np.maximum(counts[r], 1), dtype=np.float64))
                    p *= -math.expm1(self.max_combinations * math.log1p(-1.0 / total))  # P(in the sample)
            positions[r] = combos[pick]
            k = np.flatnonzero(seen_at == pick)
            score[r] = alpha[k[0]] / (alpha[k[0]] + beta[k[0]]) if len(k) else prior_mean
            propensity[r] = p
        return choices(requests, positions, score=score, propensity=propensity)


def _strides(counts: np.ndarray) -> np.ndarray:
    """(M,) mixed-radix strides of a request's positions, C order; absent components have size 1."""
    sizes = np.where(counts > 0, counts, 1).astype(np.int64)
    return np.append(np.cumprod(sizes[::-1])[::-1][1:], 1).astype(np.int64)
