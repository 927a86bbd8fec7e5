"""AutoCO-lite (FM + variational posterior + Thompson sampling over enumerated combinations)."""

from __future__ import annotations

import copy
import dataclasses

import numpy as np
import pytest

from genco.baselines.autoco import AutoCOLite
from genco.baselines.base import request_counts

from .conftest import assert_valid_choices




@pytest.fixture(scope="module")
def fitted(easy_world) -> AutoCOLite:
    return AutoCOLite(seed=0).fit(easy_world.logs)


def test_beats_random(easy_world, fitted):
    random = easy_world.random_frac
    frac = easy_world.frac(fitted.choose(easy_world.requests))
    assert frac > random + 0.1, (frac, random)


@pytest.mark.parametrize("greedy", [True, False])
def test_choices_are_valid(easy_world, fitted, greedy):
    choices = fitted.choose(easy_world.requests, greedy=greedy, seed=5)
    assert_valid_choices(choices, easy_world.requests, greedy=greedy)
    assert np.all((choices.score > 0) & (choices.score < 1))


def test_refit_starts_from_scratch_and_is_deterministic(easy_world, fitted):
    flipped = dataclasses.replace(easy_world.logs, click=1 - easy_world.logs.click)
    refitted = AutoCOLite(seed=0, epochs=2).fit(flipped)
    refitted.epochs = fitted.epochs
    refitted.fit(easy_world.logs)
    for greedy in (True, False):
        a = fitted.choose(easy_world.requests, greedy=greedy, seed=2)
        b = refitted.choose(easy_world.requests, greedy=greedy, seed=2)
        assert np.array_equal(a.positions, b.positions)
        assert np.allclose(a.propensity, b.propensity)


def test_more_combinations_than_the_limit(easy_world, fitted):
    limited = copy.copy(fitted)
    limited.max_combinations = 10
    totals = np.prod(np.maximum(request_counts(easy_world.requests), 1), axis=1)
    assert (totals > 10).any()
    for greedy in (True, False):
        assert_valid_choices(limited.choose(easy_world.requests, greedy=greedy, seed=1), easy_world.requests, greedy=greedy)
