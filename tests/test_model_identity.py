"""Element identity in GenCO's interaction channel (issue 13): id vectors shrunk by how often an id was shown,
a shrunk effect per whole combination, and the reward model's exact argmax on small pools."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
import torch

from genco.data import collate, encode
from genco.model import GenCO, ModelConfig, combination_bucket
from genco.select import SelectConfig, choose, exact_argmax
from tests.test_model import _rows


@pytest.fixture()
def model_and_data():
    torch.manual_seed(0)
    data = encode(_rows(12, seed=3))
    return GenCO(data.schema, ModelConfig(dim=8, heads=2, hidden=8)), data


def test_counts_are_impressions_per_id_and_per_combination(model_and_data):
    model, data = model_and_data
    rows = np.arange(len(data))
    model.count_ids(data, rows)
    for name in data.schema.components:
        column = data.columns[name]
        has = column["shown"] >= 0
        entries = column["members"][column["offsets"][rows[has]] + column["shown"][has]]
        buckets, counts = np.unique(column["table_bucket"][entries], return_counts=True)
        assert np.array_equal(model.id_counts[torch.from_numpy(buckets)].numpy(), counts)
    assert model.combination_counts.sum() == len(data), "one combination per row"
    assert model.id_counts.sum() == sum(int((data.columns[n]["shown"] >= 0).sum()) for n in data.schema.components)


def test_an_unseen_id_is_what_its_features_say_and_a_seen_one_moves(model_and_data):
    model, data = model_and_data
    batch = collate(data, np.arange(len(data)))
    with torch.no_grad():
        model.id_vector.weight.normal_()  # as if trained
        before = model.encode(batch).e.clone()  # counts all zero: no id has been shown
        model.count_ids(data, np.arange(len(data)))
        after = model.encode(batch).e
    shown = model.id_counts[batch.element_bucket] > 0
    assert torch.equal(before[~shown & batch.mask], after[~shown & batch.mask]), "unseen ids keep the feature embedding"
    assert (before[shown] != after[shown]).any(dim=-1).all(), "seen ids add their own vector"
    model.config.id_vectors = False
    assert torch.allclose(model.encode(batch).e, before), "without id vectors the embedding is features + component"


def test_combination_buckets_are_deterministic_order_aware_and_ignore_absent_components():
    buckets = torch.tensor([[5, 9, 2], [5, 9, 2], [9, 5, 2], [5, 9, 7]])
    present = torch.tensor([[True, True, True]] * 3 + [[True, True, False]])
    out = combination_bucket(buckets, present, 1 << 20)
    assert out[0] == out[1] and out[0] != out[2]
    assert out[3] == combination_bucket(torch.tensor([[5, 9, 123]]), torch.tensor([[True, True, False]]), 1 << 20)[0]
    assert ((out >= 0) & (out < 1 << 20)).all()


@torch.no_grad()
def test_small_pools_get_the_reward_models_exact_argmax(model_and_data):
    model, data = model_and_data
    model.count_ids(data, np.arange(len(data)))
    model.combination_effect.weight.normal_()  # effects no local search anticipates
    model.eval()
    batch = collate(data, np.arange(len(data)))
    enc = model.encode(batch)
    combo, best = exact_argmax(model, enc)
    for r in range(len(data)):
        pools = [range(int(batch.mask[r, a:b].sum())) or [-1] for a, b in batch.slices]
        every = torch.tensor(list(itertools.product(*pools)))[None]  # (1, C, M)
        scores, _, _ = model.reward(enc.rows(torch.tensor([r])), every)
        assert best[r] == pytest.approx(float(scores.max()), abs=1e-5)
        assert torch.equal(combo[r], every[0, int(scores.argmax())])
    chosen = choose(model, data, greedy=True, config=SelectConfig(enumerate_up_to=4096))
    assert np.array_equal(chosen.positions, combo.numpy())


@torch.no_grad()
def test_context_aware_attention_gives_each_bag_its_own_requests_context():
    torch.manual_seed(0)
    data = encode(_rows(12, seed=3))
    model = GenCO(data.schema, ModelConfig(dim=8, heads=2, hidden=8, context_attention=True)).eval()
    for attention in (model.bag_attention, model.generator_attention):
        attention.context_query.weight.normal_()  # starts at zero: make the context matter
    enc = model.encode(collate(data, np.arange(len(data))))
    combos = model.sample(model.log_pi(model.policy_scores(enc), enc), enc, 5, torch.Generator().manual_seed(1))  # (B, 5, M)
    together, _, _ = model.reward(enc, combos)  # (B, 5)
    for r in range(len(data)):
        alone, _, _ = model.reward(enc.rows(torch.tensor([r])), combos[r : r + 1])
        assert torch.allclose(together[r], alone[0], atol=1e-5)
    model.bag_attention.context_query.weight.zero_()
    assert not torch.allclose(model.reward(enc, combos)[0], together), "the context moved the scores"
