"""Combination Thompson sampling ("N^D-MAB"): one Beta-Bernoulli arm per (ad, combination)."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from genco.baselines.base import request_counts
from genco.baselines.combination_ts import CombinationTS, _PriorMax

from .conftest import assert_valid_choices




@pytest.fixture(scope="module")
def fitted(easy_world) -> CombinationTS:
    return CombinationTS().fit(easy_world.logs)


def test_beats_random(easy_world, fitted):
    random = easy_world.random_frac
    frac = easy_world.frac(fitted.choose(easy_world.requests))
    assert frac > random + 0.1, (frac, random)


@pytest.mark.parametrize("greedy", [True, False])
def test_choices_are_valid(easy_world, fitted, greedy):
    assert_valid_choices(fitted.choose(easy_world.requests, greedy=greedy, seed=5), easy_world.requests, greedy=greedy)


def test_greedy_serves_the_best_logged_arm(easy_world, fitted):
    """Where an ad's best arm with data beats the prior mean and is among the candidates, greedy serves it."""
    choices = fitted.choose(easy_world.requests)
    a0, b0 = fitted.prior
    served_known = 0
    for r, selection in enumerate(choices.selections):
        arms = fitted.arms.get(easy_world.requests.ad_ids[r])
        if arms is None:
            continue
        means = (a0 + arms.clicks) / (a0 + b0 + arms.shows)
        if means.max() > a0 / (a0 + b0):
            assert np.isclose(choices.score[r], means.max())
            served_known += 1
    assert served_known > 0


def test_refit_starts_from_scratch_and_is_deterministic(easy_world, fitted):
    flipped = dataclasses.replace(easy_world.logs, click=1 - easy_world.logs.click)
    refitted = CombinationTS().fit(flipped).fit(easy_world.logs)
    for greedy in (True, False):
        a = fitted.choose(easy_world.requests, greedy=greedy, seed=2)
        b = refitted.choose(easy_world.requests, greedy=greedy, seed=2)
        assert np.array_equal(a.positions, b.positions)
        assert np.allclose(a.propensity, b.propensity)


def test_more_combinations_than_the_limit(easy_world):
    limited = CombinationTS(max_combinations=10).fit(easy_world.logs)
    totals = np.prod(np.maximum(request_counts(easy_world.requests), 1), axis=1)
    assert (totals > 10).any()
    for greedy in (True, False):
        assert_valid_choices(limited.choose(easy_world.requests, greedy=greedy, seed=1), easy_world.requests, greedy=greedy)


def test_prior_max_matches_brute_force():
    rng = np.random.default_rng(0)
    a, b = 0.1, 1.9
    fast = _PriorMax(a, b).draw(500, rng, 4000)
    brute = rng.beta(a, b, size=(4000, 500)).max(axis=1)
    assert abs(np.median(fast) - np.median(brute)) < 0.02
    assert abs(np.quantile(fast, 0.1) - np.quantile(brute, 0.1)) < 0.03
