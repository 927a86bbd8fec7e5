"""Worlds whose synergy lives in other forms (issue 13): dense pairs, gated pairs, a table over whole
combinations; elements known by id alone or by noisy features. Each oracle is exact (checked by brute force),
the table's variance splits as asked, and a world round-trips through its folder."""

from __future__ import annotations

import itertools
import json

import numpy as np
import pytest

from genco.table_world import variance_split_table
from genco.world import World, WorldConfig, fresh_requests
from tests.conftest import run_genco


def _brute_force_best(world: World, request: dict) -> float:
    names = list(request["components"])
    combos = list(itertools.product(*[[c["id"] for c in request["components"][n]] for n in names]))
    return float(world.click_probability_dicts([request] * len(combos), [dict(zip(names, c)) for c in combos]).max())


@pytest.mark.parametrize("form", ["tree", "dense", "gated", "table"])
def test_the_oracle_is_exact(form):
    world = World.generate(WorldConfig(seed=3, ads=20, interaction_form=form, max_candidates=5, interaction=2.0))
    requests = fresh_requests(world, 25, 3)
    selections, p = world.oracle_dicts(requests)
    assert np.allclose(world.click_probability_dicts(requests, selections), p), "the oracle's P is its selection's"
    for request, best in zip(requests, p):
        assert best == pytest.approx(_brute_force_best(world, request), abs=1e-12)
    additive = world.click_probability_dicts(requests, world.additive_best_dicts(requests))
    assert additive.mean() < p.mean(), "interactions leave the additive choice short"


@pytest.mark.parametrize("split", [(0.1, 0.3, 0.6), (1.0, 0.0, 0.0), (0.0, 0.0, 1.0), (0.2, 0.8, 0.0)])
def test_the_table_splits_its_variance_as_asked(split):
    sizes = (2, 5, 4, 5)
    mains, rest = variance_split_table(sizes, split, 0.5, np.random.default_rng(0))
    grid = [m.reshape([-1 if j == k else 1 for j in range(len(sizes))]) for k, m in enumerate(mains)]
    main = sum(grid) + np.zeros(sizes)
    effect = main + rest
    assert effect.std() == pytest.approx(0.5)
    assert main.var() / effect.var() == pytest.approx(split[0] / sum(split), abs=1e-9)
    # pairs: the rest's projection on pairs of components; higher orders what is left
    pair_part = np.zeros(sizes)
    for a, b in itertools.combinations(range(4), 2):
        others = tuple(j for j in range(4) if j not in (a, b))
        pair_part = pair_part + rest.mean(axis=others, keepdims=True)
    assert pair_part.var() / effect.var() == pytest.approx(split[1] / sum(split), abs=1e-9)
    assert abs(rest.mean()) < 1e-12 and all(abs(m.mean()) < 1e-12 for m in mains)


def test_a_table_of_two_components_has_no_higher_orders():
    mains, rest = variance_split_table((3, 4), (0.1, 0.3, 0.6), 1.0, np.random.default_rng(1))
    total = (mains[0][:, None] + mains[1][None, :] + rest).var()
    assert total == pytest.approx(1.0) and (mains[0][:, None] + mains[1][None, :]).var() == pytest.approx(0.25)


def test_features_none_partial_full():
    worlds = {f: World.generate(WorldConfig(seed=4, ads=30, features=f)) for f in ("full", "partial", "none")}
    assert all(t.features.shape[1] == 0 for t in worlds["none"].components.values())
    full, partial = worlds["full"].components["highlight"], worlds["partial"].components["highlight"]
    def fit(truth):  # how much of an element's quality its features explain (least squares, R^2)
        x = np.column_stack([truth.features, np.ones(len(truth.ids))])
        residual = truth.quality - x @ np.linalg.lstsq(x, truth.quality, rcond=None)[0]
        return 1 - residual.var() / truth.quality.var()
    assert fit(full) > fit(partial) + 0.2, (fit(full), fit(partial))
    assert np.array_equal(full.quality, worlds["none"].components["highlight"].quality), "the same world, other views"


def test_gated_features_show_whom_an_element_cares_for():
    world = World.generate(WorldConfig(seed=5, ads=200, interaction_form="gated"))
    truth = world.components["highlight"]
    x = np.column_stack([truth.features, np.ones(len(truth.ids))])
    target = truth.partner.argmax(axis=1) == truth.partner.argmax(axis=1)[0]
    predicted = x @ np.linalg.lstsq(x, target.astype(float), rcond=None)[0]
    assert np.corrcoef(predicted, target)[0, 1] > 0.3


@pytest.mark.parametrize("form", ["dense", "gated", "table"])
def test_worlds_round_trip_through_their_folder_and_the_command_line(tmp_path, form):
    out = tmp_path / "w"
    result = run_genco("simulate", "--out", out, "--interaction-form", form, "--features", "none", "--ads", "20",
                       "--impressions", "300", "--requests", "40", "--quiet")
    assert result.returncode == 0, result.stderr
    row = json.loads(open(out / "logs.jsonl").readline())
    assert all(e["features"] == [] for cands in row["components"].values() for e in cands)
    loaded = World.load(out)
    requests = [json.loads(line) for line in open(out / "requests.jsonl")]
    again = World.generate(loaded.config)
    assert np.allclose(loaded.oracle_dicts(requests)[1], again.oracle_dicts(requests)[1])
    (tmp_path / "s.jsonl").write_text("".join(json.dumps({"request_id": r["request_id"], "selection": s}) + "\n"
                                              for r, s in zip(requests, loaded.oracle_dicts(requests)[0])))
    figures = json.loads(run_genco("evaluate", "--world", out, "--selections", tmp_path / "s.jsonl").stdout)
    assert figures["frac_of_oracle_lift"] == pytest.approx(1.0)


def test_form_options_are_checked():
    from genco.options import OptionError

    for bad in ({"interaction_form": "cubic"}, {"features": "some"}, {"interaction_form": "dense", "max_candidates": 40},
                {"variance_split": (0.5, 0.5)}, {"variance_split": (-1.0, 1.0, 1.0)}, {"table_sizes": (1, 3)},
                {"table_sizes": (100, 100, 100)}):
        with pytest.raises(OptionError):
            WorldConfig(**bad)
