"""The wide part's exact fit: the linear view is the model's own logit, the solve reaches the MAP, and the fit
only replaces the wide part when it helps on held-out rows."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from genco.data import collate
from genco.model import GenCO, ModelConfig
from genco.refit import Wide, _Problem, _set_wide, linear_view, refit_wide, wide_of
from genco.train import split
from genco.world import WorldConfig, simulate_in_memory

FIRST_ORDER = {"feature_effects": False, "pair_effects": False}  # ids, products and combinations only


@pytest.fixture(scope="module")
def logs():
    _, data, _ = simulate_in_memory(WorldConfig(seed=5, ads=40, impressions=3000, requests=0, max_candidates=6))
    return data


def _model(data, **options) -> GenCO:
    torch.manual_seed(0)
    model = GenCO(data.schema, ModelConfig(dim=8, heads=2, hidden=8, **options)).eval()
    with torch.no_grad():  # the wide part away from zero, as training leaves it
        for table in (model.element_effect, model.ad_appeal, model.combination_effect):
            table.weight.normal_(0, 0.3)
        model.feature_effect.normal_(0, 0.1)
        if model.pair_effect is not None:
            model.pair_effect.normal_(0, 0.3)
    model.count_ids(data, np.arange(len(data)))
    return model


@pytest.mark.parametrize("options", [FIRST_ORDER, {**FIRST_ORDER, "attention": False},
                                     {**FIRST_ORDER, "combination_effects": False, "ad_ids": False}, {}])
def test_the_linear_view_is_the_models_click_logit_whatever_its_wide_part(logs, options):
    model = _model(logs, **options)
    rows = np.arange(0, len(logs), 7)
    view = linear_view(model, logs, rows)
    batch = collate(logs, rows)

    def logit() -> torch.Tensor:
        with torch.no_grad():
            return model.click_logit(model.encode(batch), batch.shown[:, None, :])[:, 0]

    wide = wide_of(model)
    assert torch.allclose(view.offset + view.wide_logit(wide), logit(), atol=1e-5)
    assert (view.alpha[view.element < 0] == 0).all()
    assert view.pair_present.any() == model.config.pair_effects
    assert wide.feature.any() == model.config.feature_effects  # a part the model does not use is zero
    # another wide part in the model: its logit is still the view's offset plus the new part's contribution
    generator = torch.Generator().manual_seed(1)
    moved = Wide(*(value + 0.2 * torch.randn(value.shape, generator=generator) for value in
                   (wide.element, wide.product, wide.combination, wide.pair, wide.feature, wide.appeal)))
    with torch.no_grad():
        _set_wide(model, moved)
    assert torch.allclose(view.offset + view.wide_logit(wide_of(model)), logit(), atol=1e-4)
    assert not torch.allclose(view.wide_logit(wide_of(model)), view.wide_logit(wide), atol=1e-3)


@pytest.mark.parametrize("options", [FIRST_ORDER, {}])
def test_the_solve_reaches_the_map(logs, options):
    model = _model(logs, **options)
    view = linear_view(model, logs, np.arange(len(logs)))
    problem = _Problem(view, model)
    assert (problem.block == "user x features").any() == model.config.feature_effects
    assert (problem.block == "pairs").any() == model.config.pair_effects
    precision = torch.from_numpy(np.where(problem.block == "elements", 10.0, 100.0))
    x = problem.solve(precision, torch.zeros(problem.size, dtype=torch.float64)).requires_grad_(True)
    loss = F.binary_cross_entropy_with_logits(problem.logit(x), view.click.double(), reduction="sum") + 0.5 * (precision * x * x).sum()
    (gradient,) = torch.autograd.grad(loss, x)
    assert gradient.abs().max() < 1e-3
    assert x.abs().max() > 1e-3  # the data moved it off the prior's centre


def test_the_start_is_the_model_as_it_stands(logs):
    model = _model(logs)
    view = linear_view(model, logs, np.arange(len(logs)))
    problem = _Problem(view, model)
    full = problem.full(model, problem.start(wide_of(model)))
    wide = wide_of(model)
    assert torch.allclose(view.wide_logit(full), view.wide_logit(wide), atol=1e-5)


def test_refit_keeps_only_what_helps_on_held_out_rows(logs):
    model = _model(logs, **FIRST_ORDER)
    rows, heldout = split(len(logs), 0.2, 0)
    before = wide_of(model)
    outcome = refit_wide(model, logs, rows, heldout)
    assert outcome.kept  # random tables at sd 0.3 are worse than their MAP
    assert outcome.heldout_logloss_after < outcome.heldout_logloss_before
    after = wide_of(model)
    assert not torch.equal(after.element, before.element)
    assert set(outcome.precisions) == {"elements", "products", "combinations", "context"}  # nothing for unused parts
    assert linear_view(model, logs, heldout).logloss(after) == pytest.approx(outcome.heldout_logloss_after, abs=1e-5)
    # refitting the refitted model finds nothing better: it keeps the wide part as it is
    again = refit_wide(model, logs, rows, heldout)
    assert again.heldout_logloss_after <= outcome.heldout_logloss_after + 1e-6


def test_a_model_without_id_tables_still_fits_its_appeal(logs):
    model = _model(logs, **FIRST_ORDER, element_ids=False, ad_ids=False, combination_effects=False)
    with torch.no_grad():
        model.appeal.bias.fill_(2.0)  # far from the logs' click rate
    outcome = refit_wide(model, logs, *split(len(logs), 0.2, 0))
    assert outcome.kept
    assert set(outcome.precisions) == {"context"}
    assert float(model.appeal.bias.detach()) < 0  # a few percent of clicks


def test_refit_sets_the_feature_and_pair_effects(logs):
    model = _model(logs)
    with torch.no_grad():
        model.feature_effect.zero_()
        model.pair_effect.zero_()
    outcome = refit_wide(model, logs, *split(len(logs), 0.2, 0))
    assert outcome.kept
    assert {"features", "user x features", "pairs"} <= set(outcome.precisions)
    assert model.feature_effect.abs().max() > 0 and model.pair_effect.abs().max() > 0


def test_priors_chosen_on_a_sample_are_then_solved_on_every_training_row(logs):
    """With more training rows than select_rows the grid runs on a sample, but what is kept is the MAP of the
    chosen priors on all the rows: the full objective's gradient is zero there."""
    model = _model(logs)
    rows, heldout = split(len(logs), 0.2, 0)
    outcome = refit_wide(model, logs, rows, heldout, must_improve=False, select_rows=500)
    problem = _Problem(linear_view(model, logs, rows), model)
    x = problem.start(wide_of(model)).requires_grad_(True)
    precision = problem.precision(outcome.precisions)
    loss = F.binary_cross_entropy_with_logits(problem.logit(x), problem.click, reduction="sum") + 0.5 * (precision * x * x).sum()
    (gradient,) = torch.autograd.grad(loss, x)
    assert gradient.abs().max() < 1e-2  # (the model's tables are float32: the MAP to float precision)
    assert linear_view(model, logs, heldout).logloss(wide_of(model)) == pytest.approx(outcome.heldout_logloss_after, abs=1e-5)


def _evidence_precisions(split_of_variance: tuple[float, float, float]) -> dict[str, float]:
    """The wide part's precisions chosen by the evidence on a table world (one creative, 40 combinations,
    its creative logit's variance split between main effects, pairs and higher orders as given)."""
    world = WorldConfig(seed=3, ads=1, impressions=20_000, requests=0, interaction_form="table", features="none",
                        table_sizes=(2, 4, 5), table_scale=1.0, variance_split=split_of_variance)
    _, data, _ = simulate_in_memory(world)
    model = GenCO(data.schema, ModelConfig(dim=8, heads=2, hidden=8, feature_effects=False))
    model.count_ids(data, np.arange(len(data)))
    model.silence_network()
    outcome = refit_wide(model, data, *split(len(data), 0.1, 0), priors="evidence", must_improve=False)
    assert outcome.kept
    return outcome.precisions


@pytest.mark.parametrize("order, split_of_variance", [("elements", (1.0, 0.0, 0.0)), ("pairs", (0.0, 1.0, 0.0)),
                                                       ("combinations", (0.0, 0.0, 1.0))])
def test_the_evidence_finds_the_order_that_holds_the_variance(order, split_of_variance):
    """A creative whose clicks vary only by main effects, only by pairs or only by higher orders: the evidence
    gives the order that holds the variance the weakest prior (its precision is 1 / the variance it believes
    that order has), the others at least five times stronger."""
    precisions = _evidence_precisions(split_of_variance)
    assert precisions[order] < 10  # the true sd of that order's effects is about 0.5 here
    for other in ("elements", "pairs", "combinations"):
        if other != order:
            assert precisions[other] > 5 * precisions[order]
