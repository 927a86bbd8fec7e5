"""LinUCB and LinTS over combination features: learn on the easy world, valid choices, refit from scratch."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from genco.baselines.linear import LinTS, LinUCB
from genco.data import collate
from genco.world import WorldConfig, simulate_in_memory

from .conftest import assert_valid_choices

POLICIES = {"linucb": LinUCB, "lints": LinTS}


@pytest.fixture(scope="module", params=list(POLICIES))
def fitted(request, easy_world):
    return POLICIES[request.param]().fit(easy_world.logs)




def test_beats_random(easy_world, fitted):
    random_frac = easy_world.random_frac
    frac = easy_world.frac(fitted.choose(easy_world.requests, greedy=True))
    assert frac > 0.15 and frac > random_frac + 0.1, (fitted.name, frac, random_frac)


@pytest.mark.parametrize("greedy", [True, False])
def test_choices_are_valid(easy_world, fitted, greedy):
    chosen = fitted.choose(easy_world.requests, greedy=greedy, seed=3)
    assert_valid_choices(chosen, easy_world.requests, greedy=greedy)
    if greedy or fitted.name == "linucb":
        assert (chosen.propensity == 1).all(), "greedy and UCB choices are deterministic"
    else:
        assert (chosen.propensity < 1).any(), "Thompson sampling explores"
    if not greedy:
        mean = fitted.choose(easy_world.requests, greedy=True)
        assert (chosen.positions != mean.positions).any(axis=1).mean() > 0.02, "explore mode departs from the mean"
        again = fitted.choose(easy_world.requests, greedy=False, seed=3)
        assert (again.positions == chosen.positions).all() and (again.propensity == chosen.propensity).all()


def test_greedy_modes_agree(easy_world):
    """Both are ridge regression on the same features: their posterior means choose the same."""
    a = LinUCB().fit(easy_world.logs).choose(easy_world.requests, greedy=True)
    b = LinTS().fit(easy_world.logs).choose(easy_world.requests, greedy=True)
    assert (a.positions == b.positions).all()


def test_ucb_coordinate_ascent_never_lowers_the_bound(easy_world):
    """The UCB choice scores at least as high as the per-component argmax of the mean it starts from."""
    policy = LinUCB().fit(easy_world.logs)
    requests = easy_world.requests
    context, components = policy._candidates(requests, collate(requests, np.arange(len(requests))))

    def bound(x):  # (n, d) -> (n,): x . theta + alpha sigma sqrt(x^T A^-1 x)
        return x @ policy.theta + policy.alpha * policy.sigma * ((x @ policy.a_inv) * x).sum(1).sqrt()

    def vector(positions):  # (n, M) -> (n, d)
        x = torch.zeros(len(context), policy.dim, dtype=torch.float64)
        x[:, : context.shape[1]] = context
        for m, (block, _, columns) in enumerate(components):
            pick = torch.as_tensor(positions[:, m])
            x[:, columns] = block[torch.arange(len(context)), pick.clamp(min=0)] * (pick >= 0)[:, None]
        return x

    start, _ = policy._argmax_mean(context, components)
    ucb, _ = policy._explore(context, components, torch.Generator())
    assert (bound(vector(ucb)) >= bound(vector(start)) - 1e-12).all()


def test_refit_starts_from_scratch(easy_world, fitted):
    _, other_logs, _ = simulate_in_memory(WorldConfig(seed=11, ads=8, impressions=400, requests=10, max_candidates=3))
    refitted = type(fitted)().fit(other_logs).fit(easy_world.logs)
    torch.testing.assert_close(refitted.theta, fitted.theta, rtol=0, atol=0)
    a, b = refitted.choose(easy_world.requests, greedy=False, seed=1), fitted.choose(easy_world.requests, greedy=False, seed=1)
    assert (a.positions == b.positions).all()
