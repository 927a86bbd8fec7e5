"""The autoregressive variant of GenCO's generator: components decoded in turn, each seeing those chosen before."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from genco.autoregressive import AutoregressiveGenCO
from genco.data import collate
from genco.model import ModelConfig
from genco.policies import make_policy

from .conftest import assert_valid_choices


@pytest.fixture(scope="module")
def fitted(easy_world):
    return make_policy("genco-autoregressive", seed=0, epochs=3, reward_models=2).fit(easy_world.logs)


def test_beats_random(easy_world, fitted):
    frac = easy_world.frac(fitted.choose(easy_world.requests, greedy=True))
    assert frac > 0.2 and frac > easy_world.random_frac + 0.2, (frac, easy_world.random_frac)  # 0.23 here, 3 epochs


@pytest.mark.parametrize("greedy", [True, False])
def test_choices_are_valid(easy_world, fitted, greedy):
    assert_valid_choices(fitted.choose(easy_world.requests, greedy=greedy, seed=2), easy_world.requests, greedy=greedy)


def test_a_combination_is_drawn_with_the_probability_it_reports(easy_world):
    """log pi of a combination is the sum of the per-step terms, each seeing the elements chosen before: a fresh
    draw of the same row lands on a given combination as often as exp(log pi) says (explore-mode propensities)."""
    torch.manual_seed(0)
    model = AutoregressiveGenCO(easy_world.logs.schema, ModelConfig(dim=16, hidden=16))
    model.eval()
    with torch.no_grad():
        model.generator_attention.pair_bias.normal_()  # attention that is not uniform
        enc = model.encode(collate(easy_world.requests, np.arange(40)))
        combos, log_prob = model.generate(enc, 8, torch.Generator().manual_seed(0))  # (B, K, M), (B, K)
        assert combos.shape[:2] == log_prob.shape == (40, 8)
        assert torch.isfinite(log_prob).all() and (log_prob <= 0).all()
        row = int(log_prob[:, 0].argmax())  # a likely combination: its frequency is measurable
        draws, _ = model.generate(enc.rows(slice(row, row + 1)).repeat_rows(4000), 1, torch.Generator().manual_seed(1))
    hits = (draws[:, 0] == combos[row, 0]).all(dim=1).float().mean().item()
    p = float(log_prob[row, 0].exp())
    assert abs(hits - p) < 4 * np.sqrt(p * (1 - p) / 4000) + 1e-3, (hits, p)
