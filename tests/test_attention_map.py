"""Where cross-component attention looks (genco.attention_map), and the model without any cross-component vector."""

from __future__ import annotations

import numpy as np
import torch

from genco.attention_map import attention_map
from genco.data import collate, encode
from genco.model import GenCO, ModelConfig
from tests.test_model import _rows


def _model(**config) -> tuple[GenCO, object]:
    torch.manual_seed(0)
    data = encode(_rows(n=12))
    return GenCO(data.schema, ModelConfig(dim=8, heads=2, hidden=8, **config)), data


def test_uniform_attention_is_one_everywhere_pools_of_any_size():
    model, data = _model(attention=False)
    amap = attention_map(model, data)
    for grid in (amap.reward, amap.generator):
        defined = np.isfinite(grid)
        assert defined.sum() == len(amap.components) * (len(amap.components) - 1), "every pair of components met somewhere"
        np.testing.assert_allclose(grid[defined], 1.0, rtol=1e-5)
        assert np.isnan(np.diag(grid)).all(), "a component never attends to itself"


def test_a_favoured_pair_of_components_stands_out():
    model, data = _model()
    names = data.schema.components
    title, image = names.index("title"), names.index("image")
    with torch.no_grad():
        for attention in (model.bag_attention, model.generator_attention):
            attention.pair_bias[:, title, image] = 4.0  # titles look at images
    amap = attention_map(model, data)
    for which in ("reward", "generator"):
        grid = getattr(amap, which)
        others = [grid[title, j] for j in range(len(names)) if j not in (title, image) and np.isfinite(grid[title, j])]
        # 2 where a badge is there too (fair share 1/2), 1 where the image is the only partner
        assert grid[title, image] > 1.3 and max(others) < 0.3, which
        assert amap.partner_ratio([("title", "image")], which) > 1.3
    assert 0.5 < amap.partner_ratio([("image", "badge")]) < 2, "an untouched pair stays near its fair share"


def test_without_cross_component_every_element_is_scored_alone():
    model, data = _model(cross_component=False)
    model.eval()
    batch = collate(data, np.arange(len(data)))
    enc = model.encode(batch)
    names = data.schema.components
    title, image = names.index("title"), names.index("image")
    a, b = enc.slices[image]
    scores = model.policy_scores(enc)
    enc.e = enc.e.clone()
    enc.e[:, a:b] += 3.0  # every image changes
    after = model.policy_scores(enc)
    t0, t1 = enc.slices[title]
    torch.testing.assert_close(after[:, t0:t1], scores[:, t0:t1], msg="titles' preferences do not depend on the images")
    enc = model.encode(batch)
    first, second = torch.zeros(len(data), 1, len(names), dtype=torch.long), torch.zeros(len(data), 1, len(names), dtype=torch.long)
    second[:, 0, image] = batch.mask[:, a:b].sum(dim=1) - 1  # another image where there is one
    _, instance_first, _ = model.reward(enc, first)
    _, instance_second, _ = model.reward(enc, second)
    torch.testing.assert_close(instance_first[..., title], instance_second[..., title], msg="a title's score ignores its image")
