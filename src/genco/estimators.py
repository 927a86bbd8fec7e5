"""Off-policy estimators of a target policy's CTR from logs with propensities: pure numpy, one function each.

Every estimator takes per-impression arrays and returns an `Estimate`: the value, a confidence interval
(which one is named), the effective sample size of its weights, and n. Notation, for impression i:

- r_i: the click (or any reward, e.g. click x revenue); p_i: the logging policy's probability of the
  combination it served; q_i: the target policy's probability of that same combination.
- per component k (slates): p_ik, q_ik, the two policies' marginal probabilities of the element served
  in component k, for a logging policy that chooses components independently (a product distribution).

Estimators (Swaminathan et al. 2017 for the pseudo-inverse; the others are textbook):

- `ips`: mean of (q/p) r. Unbiased wherever p > 0 covers q; variance grows with the product of the pools.
- `snips`: sum((q/p) r) / sum(q/p). Slightly biased, much lower variance; immune to a constant shift of r.
- `pseudo_inverse`: mean of (sum_k q_k/p_k - (K - 1)) r. Unbiased when the reward is additive over
  components; its weights grow with the sum of the pools, not their product.
- `self_normalised_pseudo_inverse`: the same weights, normalised by their sum.
- `direct`: mean of a reward model's prediction under the target. Low variance, as biased as the model.
- `doubly_robust`: the direct estimate plus a weighted correction w (r - prediction of what was served),
  with w the IPS or the PI weight: unbiased if either the model or the weights are right.
- `replay`: mean click of the impressions where a deterministic target would have served what was logged
  (sCTR, as the creative-optimisation literature reports); unbiased under uniform logging only.

Intervals: `gaussian` is the central limit theorem on the per-impression terms (`gaussian+ensemble` adds a
reward model ensemble's spread to the direct method's); `delta` the delta method
for a ratio (the self-normalised estimators); `wilson` the Wilson score interval for a proportion (replay).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np

#: Two-sided 95% normal quantile: every interval here is a 95% one unless `z` says otherwise.
Z95 = 1.959963984540054


@dataclass(frozen=True)
class Estimate:
    estimator: str
    value: float
    low: float
    high: float
    interval: str  # how (low, high) was computed: gaussian, gaussian+ensemble, delta or wilson
    ess: float  # effective sample size of the weights: (sum w)^2 / sum w^2; n for unweighted estimators
    n: int  # impressions the estimate used

    def to_dict(self) -> dict:
        return asdict(self)


def effective_sample_size(weights: np.ndarray) -> float:
    """(sum w)^2 / sum w^2: how many equally weighted impressions the weighted ones are worth."""
    w = np.asarray(weights, dtype=np.float64)
    square = float(np.sum(w * w))
    return float(np.sum(w)) ** 2 / square if square > 0 else 0.0


def _arrays(*values) -> list[np.ndarray]:
    arrays = [np.asarray(v, dtype=np.float64) for v in values]
    n = len(arrays[0])
    if n == 0:
        raise ValueError("no impressions to estimate from")
    if any(len(a) != n for a in arrays):
        raise ValueError("every per-impression array must have the same length")
    return arrays


def _mean_estimate(name: str, terms: np.ndarray, ess: float, z: float) -> Estimate:
    """The mean of per-impression terms with a CLT interval."""
    n = len(terms)
    value = float(terms.mean())
    half = z * float(terms.std(ddof=1)) / np.sqrt(n) if n > 1 else float("inf")
    return Estimate(name, value, value - half, value + half, "gaussian", ess, n)


def _ratio_estimate(name: str, reward: np.ndarray, weights: np.ndarray, z: float) -> Estimate:
    """sum(w r) / sum(w) with a delta-method interval; NaN when the weights sum to zero (no support)."""
    n, total = len(reward), float(weights.sum())
    if total == 0:
        return Estimate(name, float("nan"), float("nan"), float("nan"), "delta", 0.0, n)
    value = float(np.sum(weights * reward)) / total
    half = z * float(np.sqrt(np.sum(weights**2 * (reward - value) ** 2))) / abs(total)
    return Estimate(name, value, value - half, value + half, "delta", effective_sample_size(weights), n)


def importance_weights(p_log, p_target) -> np.ndarray:
    """q / p per impression: the whole combination's importance weight."""
    p, q = _arrays(p_log, p_target)
    if np.any(p <= 0):
        raise ValueError("logging propensities must be > 0")
    return q / p


def pseudo_inverse_weights(p_log, p_target, present=None) -> np.ndarray:
    """sum over the row's components of q_k / p_k, minus (K_i - 1): (n, K) marginals in, (n,) weights out.
    `present` (n, K) bool marks the components a row has (a row lacking one has fewer slots); default all."""
    p, q = np.asarray(p_log, dtype=np.float64), np.asarray(p_target, dtype=np.float64)
    if p.ndim != 2 or p.shape != q.shape:
        raise ValueError("per-component probabilities must be (impressions, components) arrays of one shape")
    present = np.ones(p.shape, bool) if present is None else np.asarray(present, bool)
    if np.any(p[present] <= 0):
        raise ValueError("logging propensities must be > 0")
    ratio = np.where(present, q / np.where(present, p, 1.0), 0.0)
    return ratio.sum(axis=1) - (present.sum(axis=1) - 1)


def ips(reward, p_log, p_target, *, z: float = Z95) -> Estimate:
    r, p, q = _arrays(reward, p_log, p_target)
    w = importance_weights(p, q)
    return _mean_estimate("ips", w * r, effective_sample_size(w), z)


def snips(reward, p_log, p_target, *, z: float = Z95) -> Estimate:
    r, p, q = _arrays(reward, p_log, p_target)
    return _ratio_estimate("snips", r, importance_weights(p, q), z)


def pseudo_inverse(reward, p_log, p_target, present=None, *, z: float = Z95) -> Estimate:
    r, p, q = _arrays(reward, p_log, p_target)
    w = pseudo_inverse_weights(p, q, present)
    return _mean_estimate("pi", w * r, effective_sample_size(w), z)


def self_normalised_pseudo_inverse(reward, p_log, p_target, present=None, *, z: float = Z95) -> Estimate:
    r, p, q = _arrays(reward, p_log, p_target)
    return _ratio_estimate("snpi", r, pseudo_inverse_weights(p, q, present), z)


def direct(predicted_target, *, model_sd: float = 0.0, z: float = Z95) -> Estimate:
    """Mean predicted reward of the target's choices. The `gaussian` interval covers the requests' sampling
    only, not the model's error: read it as a lower bound on the uncertainty. `model_sd`, a standard deviation
    of the estimate due to the model (the spread of an ensemble's members' estimates), widens it in quadrature
    (`gaussian+ensemble`); it still cannot see a bias the members share."""
    r_hat, = _arrays(predicted_target)
    sampling = _mean_estimate("dm", r_hat, float(len(r_hat)), z)
    if model_sd <= 0:
        return sampling
    half = float(np.hypot(sampling.high - sampling.value, z * model_sd))
    return Estimate("dm", sampling.value, sampling.value - half, sampling.value + half, "gaussian+ensemble",
                    sampling.ess, sampling.n)


def doubly_robust(reward, predicted_logged, predicted_target, weights, *, name: str = "dr", z: float = Z95) -> Estimate:
    """predicted_target + w (reward - predicted_logged), averaged; `weights` are IPS or PI weights."""
    r, logged, target, w = _arrays(reward, predicted_logged, predicted_target, weights)
    return _mean_estimate(name, target + w * (r - logged), effective_sample_size(w), z)


def replay(reward, matched, *, z: float = Z95) -> Estimate:
    """Mean reward of the impressions where the target's choice equals the logged one (sCTR), Wilson interval.
    For a 0/1 reward; NaN when nothing matched."""
    r, m = _arrays(reward, matched)
    m = m.astype(bool)
    n = int(m.sum())
    if n == 0:
        return Estimate("replay", float("nan"), float("nan"), float("nan"), "wilson", 0.0, 0)
    value = float(r[m].mean())
    centre = (value + z * z / (2 * n)) / (1 + z * z / n)
    half = z * np.sqrt(max(value * (1 - value), 0.0) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return Estimate("replay", value, float(centre - half), float(centre + half), "wilson", float(n), n)
