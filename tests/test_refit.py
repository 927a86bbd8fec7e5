"""The id tables' MAP refit: the linear view is the model's own logit, the solve reaches the MAP, and the refit
only replaces tables when it helps on held-out rows."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from genco.data import collate
from genco.model import GenCO, ModelConfig
from genco.refit import _Problem, linear_view, refit_id_tables, tables
from genco.train import split
from genco.world import WorldConfig, simulate_in_memory


@pytest.fixture(scope="module")
def logs():
    _, data, _ = simulate_in_memory(WorldConfig(seed=5, ads=40, impressions=3000, requests=0, max_candidates=6))
    return data


def _model(data, **options) -> GenCO:
    torch.manual_seed(0)
    model = GenCO(data.schema, ModelConfig(dim=8, heads=2, hidden=8, **options)).eval()
    with torch.no_grad():  # tables away from zero, as training leaves them
        for table in (model.element_effect, model.ad_appeal, model.combination_effect):
            table.weight.normal_(0, 0.3)
    model.count_ids(data, np.arange(len(data)))
    return model


@pytest.mark.parametrize("options", [{}, {"attention": False}, {"combination_effects": False, "ad_ids": False}])
def test_the_linear_view_is_the_models_click_logit(logs, options):
    model = _model(logs, **options)
    rows = np.arange(0, len(logs), 7)
    view = linear_view(model, logs, rows)
    batch = collate(logs, rows)
    with torch.no_grad():
        logit = model.click_logit(model.encode(batch), batch.shown[:, None, :])[:, 0]
    element, product, combination = tables(model)
    tabled = (view.alpha * element[view.element.clamp(min=0)]).sum(1) + product[view.product] + view.trust * combination[view.combination]
    assert torch.allclose(view.offset + tabled, logit, atol=1e-5)
    assert torch.allclose(view.offset + view.tabled(element, product, combination), logit, atol=1e-5)
    assert (view.alpha[view.element < 0] == 0).all()


def test_the_solve_reaches_the_map(logs):
    model = _model(logs)
    view = linear_view(model, logs, np.arange(len(logs)))
    problem = _Problem(view, model)
    precision = torch.from_numpy(np.where(problem.block == "ids", 10.0, 100.0))
    x = problem.solve(precision, torch.zeros(problem.size, dtype=torch.float64)).requires_grad_(True)
    loss = F.binary_cross_entropy_with_logits(problem.logit(x), view.click.double(), reduction="sum") + 0.5 * (precision * x * x).sum()
    (gradient,) = torch.autograd.grad(loss, x)
    assert gradient.abs().max() < 1e-3
    assert x.abs().max() > 1e-3  # the data moved it off the prior's centre


def test_refit_keeps_only_what_helps_on_held_out_rows(logs):
    model = _model(logs)
    rows, heldout = split(len(logs), 0.2, 0)
    before = [t.clone() for t in tables(model)]
    outcome = refit_id_tables(model, logs, rows, heldout)
    assert outcome.kept  # random tables at sd 0.3 are worse than their MAP
    assert outcome.heldout_logloss_after < outcome.heldout_logloss_before
    after = tables(model)
    assert not torch.equal(after[0], before[0])
    assert set(outcome.precisions) == {"ids", "combinations"}
    assert linear_view(model, logs, heldout).logloss(*after) == pytest.approx(outcome.heldout_logloss_after, abs=1e-5)
    # refitting the refitted model finds nothing better: it keeps the tables as they are
    again = refit_id_tables(model, logs, rows, heldout)
    assert again.heldout_logloss_after <= outcome.heldout_logloss_after + 1e-6


def test_refit_with_no_tables_is_a_no_op(logs):
    model = _model(logs, element_ids=False, ad_ids=False, combination_effects=False)
    outcome = refit_id_tables(model, logs, *split(len(logs), 0.2, 0))
    assert not outcome.kept
