"""The MVT bandit (Hill et al. 2017): learns on the easy world, valid choices in both modes, refits from scratch."""

from __future__ import annotations

import itertools

import pytest
import torch

from genco.baselines.mvt import MVTBandit, hill_climb
from genco.world import WorldConfig, simulate_in_memory

from .conftest import assert_valid_choices


@pytest.fixture(scope="module")
def fitted(easy_world) -> MVTBandit:
    return MVTBandit().fit(easy_world.logs)




def test_beats_random(easy_world, fitted):
    random_frac = easy_world.random_frac
    frac = easy_world.frac(fitted.choose(easy_world.requests, greedy=True))
    assert frac > 0.25 and frac > random_frac + 0.2, (frac, random_frac)


@pytest.mark.parametrize("greedy", [True, False])
def test_choices_are_valid(easy_world, fitted, greedy):
    chosen = fitted.choose(easy_world.requests, greedy=greedy, seed=3)
    assert_valid_choices(chosen, easy_world.requests, greedy=greedy)
    if greedy:
        assert (chosen.propensity == 1).all()
        assert ((chosen.score > 0) & (chosen.score < 1)).all()
    else:
        assert (chosen.propensity < 1).any(), "Thompson sampling explores"
        again = fitted.choose(easy_world.requests, greedy=False, seed=3)
        assert (again.positions == chosen.positions).all() and (again.propensity == chosen.propensity).all()


def test_refit_starts_from_scratch(easy_world, fitted):
    _, other_logs, _ = simulate_in_memory(WorldConfig(seed=11, ads=8, impressions=400, requests=10, max_candidates=3))
    refitted = MVTBandit().fit(other_logs).fit(easy_world.logs)
    torch.testing.assert_close(refitted.mean, fitted.mean, rtol=0, atol=0)
    a, b = refitted.choose(easy_world.requests, seed=1), fitted.choose(easy_world.requests, seed=1)
    assert (a.positions == b.positions).all()


def test_hill_climbing_finds_the_best_combination_of_small_pools():
    generator = torch.Generator().manual_seed(0)
    R, sizes = 200, [3, 4, 2]
    unary = [torch.randn(R, n, generator=generator) for n in sizes]
    pair = {(a, b): 0.5 * torch.randn(R, sizes[a], sizes[b], generator=generator) for a, b in itertools.combinations(range(3), 2)}
    valid = [torch.ones(R, n, dtype=torch.bool) for n in sizes]
    combo, value = hill_climb(unary, pair, valid, torch.rand((R, 8, len(sizes)), generator=generator, dtype=torch.float64), passes=4)
    best = torch.full((R,), -float("inf"))
    for c in itertools.product(*[range(n) for n in sizes]):
        total = sum(unary[m][:, c[m]] for m in range(3)) + sum(t[:, c[a], c[b]] for (a, b), t in pair.items())
        best = torch.maximum(best, total)
    direct = sum(unary[m][torch.arange(R), combo[:, m]] for m in range(3)) \
        + sum(t[torch.arange(R), combo[:, a], combo[:, b]] for (a, b), t in pair.items())
    torch.testing.assert_close(direct, value)  # the reported score is the score of the returned combination
    assert (value <= best + 1e-5).all()
    assert (value >= best - 1e-5).float().mean() > 0.95  # a local search, but it rarely misses on small pools
