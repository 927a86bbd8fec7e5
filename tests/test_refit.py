"""The wide part's exact fit: the linear view is the model's own logit, the solve reaches the MAP, the priors
chosen on held-out rows beat a random wide part there, the evidence finds where a table's variance lives, and a
trained ensemble ends with its members' MAPs on every row."""

from __future__ import annotations

from dataclasses import astuple

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from genco.data import collate
from genco.model import GenCO, ModelConfig
from genco.refit import PRECISIONS, Wide, _Problem, _set_wide, choose_priors, linear_view, solve_wide, wide_of
from genco.train import TrainConfig, split, train
from genco.world import WorldConfig, simulate_in_memory

FIRST_ORDER = {"feature_effects": False, "pair_effects": False, "user_id_effects": False}  # ids, products and combinations only


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
        for table in (model.pair_effect, model.user_id_effect):
            if table is not None:
                table.normal_(0, 0.3)
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
    moved = Wide(*(value + 0.2 * torch.randn(value.shape, generator=generator) for value in astuple(wide)))
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
    assert (problem.block == "user x elements").any() == model.config.user_id_effects
    precision = torch.from_numpy(np.where(problem.block == "elements", 10.0, 100.0))
    x = problem.solve(precision, torch.zeros(problem.size, dtype=torch.float64)).requires_grad_(True)
    loss = F.binary_cross_entropy_with_logits(problem.logit(x), view.click.double(), reduction="sum") + 0.5 * (precision * x * x).sum()
    (gradient,) = torch.autograd.grad(loss, x)
    assert gradient.abs().max() < 1e-3
    assert x.abs().max() > 1e-3  # the data moved it off the prior's centre


@pytest.fixture(scope="module")
def posterior(logs):
    """A small regression at its MAP under weak priors (where the data's correlations matter), and how well its
    rows truly determine each coordinate: the diagonal of Sigma H, from the dense Hessian H = J^T S J and
    Sigma = (H + diag(precision))^-1."""
    model = _model(logs, feature_effects=False, user_id_effects=False)
    problem = _Problem(linear_view(model, logs, np.arange(0, len(logs), 5)), model)
    precision = torch.from_numpy(np.where(problem.block == "pairs", 3.0, 1.0))
    x = problem.solve(precision, problem.start(wide_of(model)))
    identity = torch.eye(problem.size, dtype=torch.float64)
    jacobian = torch.cat([problem.times(identity[:, at:at + 256]) for at in range(0, problem.size, 256)], dim=1)  # (n, size)
    p = torch.sigmoid(problem.logit(x))
    hessian = jacobian.T @ ((p * (1 - p))[:, None] * jacobian)
    truth = (torch.linalg.inv(hessian + torch.diag(precision)) @ hessian).diagonal()
    return problem, precision, x, truth


def test_the_jacobian_products_are_the_logits_derivatives(logs):
    model = _model(logs)  # every block, the feature terms too
    problem = _Problem(linear_view(model, logs, np.arange(0, len(logs), 5)), model)
    x = problem.start(wide_of(model))
    generator = torch.Generator().manual_seed(0)
    v = torch.randn(problem.size, 2, generator=generator, dtype=torch.float64)
    u = torch.randn(len(problem.click), 2, generator=generator, dtype=torch.float64)
    directional = torch.stack([torch.func.jvp(problem.logit, (x,), (v[:, k],))[1] for k in range(2)], dim=1)
    assert torch.allclose(problem.times(v), directional)  # J v
    assert torch.allclose((u * problem.times(v)).sum(dim=0), (problem.transposed_times(u) * v).sum(dim=0))  # J^T u


@pytest.mark.parametrize("block, probes", [("context", 16), ("elements", 16), ("elements", 1000), ("pairs", 16)])
def test_how_well_the_rows_determine_each_coordinate_is_the_posteriors_own(posterior, block, probes):
    """Exact on a block of at most `probes` coordinates, and Hutchinson's estimate summed over a block within a
    few percent."""
    problem, precision, x, truth = posterior
    mask = torch.from_numpy(problem.block == block)
    determined = problem.well_determined(x, precision, mask, probes=probes)
    assert (determined[~mask] == 0).all()
    if mask.sum() <= probes:
        assert torch.allclose(determined[mask], truth[mask], rtol=1e-2)  # the solver stops at 1e-3 of the residual
    else:
        assert float(determined[mask].sum()) == pytest.approx(float(truth[mask].sum()), rel=0.03)
    if block == "elements":  # each row shows six of them: the Hessian's own diagonal misses that they share it
        curvature = problem.curvature(x)[mask]
        by_the_diagonal = float((curvature / (curvature + precision[mask])).sum())
        assert by_the_diagonal > 1.5 * float(truth[mask].sum())


def test_the_start_is_the_model_as_it_stands(logs):
    model = _model(logs)
    view = linear_view(model, logs, np.arange(len(logs)))
    problem = _Problem(view, model)
    full = problem.full(model, problem.start(wide_of(model)))
    wide = wide_of(model)
    assert torch.allclose(view.wide_logit(full), view.wide_logit(wide), atol=1e-5)


def _map_gradient(model: GenCO, data, rows: np.ndarray, precisions: dict[str, float]) -> torch.Tensor:
    """The gradient of the wide part's MAP objective on `rows` at the model's wide part (zero at the MAP)."""
    problem = _Problem(linear_view(model, data, rows), model)
    x = problem.start(wide_of(model)).requires_grad_(True)
    precision = problem.precision(precisions)
    loss = F.binary_cross_entropy_with_logits(problem.logit(x), problem.click, reduction="sum") + 0.5 * (precision * x * x).sum()
    return torch.autograd.grad(loss, x)[0]


def test_the_chosen_priors_beat_a_random_wide_part_on_held_out_rows(logs):
    model = _model(logs, **FIRST_ORDER)
    rows, heldout = split(len(logs), 0.2, 0)
    judge = linear_view(model, logs, heldout)
    before = wide_of(model)
    precisions = choose_priors([model], logs, [(rows, heldout)])
    blocks = {name for name in precisions if name in PRECISIONS}
    assert blocks == {"elements", "products", "combinations", "context"}  # nothing for unused parts
    assert all(name in blocks or name.startswith("elements ") for name in precisions)  # ard: one per component
    solve_wide(model, logs, rows, precisions)
    after = wide_of(model)
    assert judge.logloss(after) < judge.logloss(before)  # random tables at sd 0.3 are worse than their MAP
    assert not torch.equal(after.element, before.element)


def test_a_model_without_id_tables_still_fits_its_appeal(logs):
    model = _model(logs, **FIRST_ORDER, element_ids=False, ad_ids=False, combination_effects=False)
    with torch.no_grad():
        model.appeal.bias.fill_(2.0)  # far from the logs' click rate
    rows, heldout = split(len(logs), 0.2, 0)
    precisions = choose_priors([model], logs, [(rows, heldout)])
    assert set(precisions) == {"context"}
    solve_wide(model, logs, rows, precisions)
    assert float(model.appeal.bias.detach()) < 0  # a few percent of clicks


def test_the_fit_sets_the_feature_pair_and_user_id_effects(logs):
    model = _model(logs)
    with torch.no_grad():
        for table in (model.feature_effect, model.pair_effect, model.user_id_effect):
            table.zero_()
    rows, heldout = split(len(logs), 0.2, 0)
    precisions = choose_priors([model], logs, [(rows, heldout)])
    assert {"features", "user x features", "pairs", "user x elements"} <= set(precisions)
    solve_wide(model, logs, rows, precisions)
    for table in (model.feature_effect, model.pair_effect, model.user_id_effect):
        assert table.abs().max() > 0
    never_shown = torch.ones(logs.schema.id_buckets, dtype=torch.bool)
    never_shown[model.id_counts > 0] = False
    assert (model.user_id_effect[never_shown] == 0).all()  # an id without impressions keeps the prior's centre


def test_priors_chosen_on_samples_are_then_solved_on_every_row(logs):
    """With more training rows than select_rows the grid runs on a sample of each member's rows, but the solve
    reaches the MAP of the chosen priors on all the rows given: the full objective's gradient is zero there."""
    model = _model(logs)
    splits = [split(len(logs), 0.2, seed) for seed in (0, 1)]
    precisions = choose_priors([model, _model(logs)], logs, splits, select_rows=500)
    solve_wide(model, logs, splits[0][0], precisions)
    assert _map_gradient(model, logs, splits[0][0], precisions).abs().max() < 1e-2  # (float32 tables: to float precision)
    assert _map_gradient(model, logs, np.arange(len(logs)), precisions).abs().max() > 1e-1  # (not the MAP on other rows)


def test_every_member_ends_with_one_set_of_priors_and_its_map_on_every_row(logs):
    """After training, each member's wide part is the MAP on every row (the held-out rows too) given its own
    network, under the one set of priors the members chose together."""
    config = TrainConfig(epochs=2, reward_models=2, rl=False, seed=3)
    result = train(logs, ModelConfig(dim=8, heads=2, hidden=8), config)
    assert set(result.wide_priors) >= {"elements", "products", "combinations", "pairs", "features"}
    assert result.summary()["wide_priors"] == result.wide_priors
    for member in result.model.members:
        assert _map_gradient(member, logs, np.arange(len(logs)), result.wide_priors).abs().max() < 1e-2


def _evidence_precisions(split_of_variance: tuple[float, float, float]) -> dict[str, float]:
    """The wide part's precisions chosen by the evidence on a table world (one creative, 40 combinations,
    its creative logit's variance split between main effects, pairs and higher orders as given)."""
    world = WorldConfig(seed=3, ads=1, impressions=20_000, requests=0, interaction_form="table", features="none",
                        table_sizes=(2, 4, 5), table_scale=1.0, variance_split=split_of_variance)
    _, data, _ = simulate_in_memory(world)
    model = GenCO(data.schema, ModelConfig(dim=8, heads=2, hidden=8, feature_effects=False))
    model.count_ids(data, np.arange(len(data)))
    model.silence_network()
    return choose_priors([model], data, [split(len(data), 0.1, 0)], priors="evidence")


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


def test_the_evidence_tells_a_component_that_matters_from_one_that_does_not():
    """ARD: on one creative whose clicks depend on one component's element alone, that component's elements get
    a weak prior (precision about 1 / the variance of their effects), the other's a prior that holds them at
    zero; the pooled evidence gives both one precision."""
    world = WorldConfig(seed=4, ads=1, impressions=20_000, requests=0, interaction_form="table", features="none",
                        table_sizes=(5, 5))
    _, data, _ = simulate_in_memory(world)
    first, second = data.schema.components
    column = data.columns[first]
    entry = column["members"][column["offsets"][:-1] + column["shown"]]  # (n,) the shown element's table entry
    names = np.array(data.element_ids[first])[entry]
    effects = dict(zip(sorted(set(names)), [-1.0, -0.5, 0.0, 0.5, 1.0]))  # sd 0.71
    p = 1 / (1 + np.exp(-(-2.0 + np.array([effects[name] for name in names]))))
    data.click = (np.random.default_rng(0).random(len(data)) < p).astype(np.float32)
    model = GenCO(data.schema, ModelConfig(dim=8, heads=2, hidden=8, feature_effects=False))
    model.count_ids(data, np.arange(len(data)))
    model.silence_network()
    precisions = choose_priors([model], data, [split(len(data), 0.1, 0)], priors="ard")
    assert 0.5 < precisions[f"elements {first}"] < 10
    assert precisions[f"elements {second}"] > 100
    assert f"elements {first}" not in choose_priors([model], data, [split(len(data), 0.1, 0)], priors="evidence")
