"""Per-element counting and independent Thompson sampling per component: learn on the easy world, valid choices."""

from __future__ import annotations

import numpy as np
import pytest

from genco.baselines.counting import ElementCounting

from .conftest import assert_valid_choices


@pytest.mark.parametrize("thompson", [False, True])
def test_beats_random(easy_world, thompson):
    policy = ElementCounting(thompson=thompson).fit(easy_world.logs)
    frac = easy_world.frac(policy.choose(easy_world.requests, greedy=True))
    assert frac > 0.2 and frac > easy_world.random_frac + 0.2, (frac, easy_world.random_frac)


def test_explore_is_thompson_sampling_with_a_propensity(easy_world):
    policy = ElementCounting(thompson=True).fit(easy_world.logs)
    greedy = policy.choose(easy_world.requests, greedy=True)
    draws = [policy.choose(easy_world.requests, greedy=False, seed=s) for s in range(3)]
    for chosen in draws:
        assert_valid_choices(chosen, easy_world.requests, greedy=False)
        assert (chosen.propensity < 1).any(), "a sampled combination is not certain"
    assert any(not np.array_equal(d.positions, greedy.positions) for d in draws), "exploration explores"


def test_counting_credits_every_element_of_a_clicked_combination(easy_world):
    policy = ElementCounting().fit(easy_world.logs)
    logs = easy_world.logs
    assert sum(v for (name, _), v in policy.shows.items() if name == "title") == (logs.candidate_counts("title") > 0).sum()
    assert sum(v for (name, _), v in policy.clicks.items() if name == "title") == logs.click[logs.candidate_counts("title") > 0].sum()
