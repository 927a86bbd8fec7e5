"""`genco ope` and genco.ope: the target's probabilities are the true ones, the estimates follow, and every edge
(no propensities, no support, no estimate possible, bad input) is a warning or exit 2, never a traceback."""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import pytest

from genco.contract import LogRow
from genco.data import encode, request_dict, selections_at
from genco.errors import GencoInputError
from genco.ope import (MIN_SUPPORT_ROWS, OPEConfig, RewardModel, estimate_model, estimate_named, logging_view, model_view, revenue_per_click,
                       view_from_draws)
from genco.policies import make_genco
from genco.select import SelectConfig, choose
from genco.world import World, WorldConfig, random_exposure_logs
from tests.conftest import write_jsonl


@pytest.fixture(scope="module")
def world_and_model():
    """A small world, a GenCO fitted on one log of it, and a fresh log of the same world to judge it on."""
    world = World.generate(WorldConfig(seed=5, ads=40, impressions=3000, max_candidates=5))
    fit = encode(LogRow.model_validate(r) for r in random_exposure_logs(world, 3000, 1))
    model = make_genco("genco", seed=0, epochs=2, reward_models=2).fit(fit).model
    rows = list(random_exposure_logs(world, 3000, 2))
    judged = encode((LogRow.model_validate(r) for r in rows), model.schema)
    return world, model, judged, rows


def test_take_is_the_encoding_of_those_rows(world_and_model):
    _, model, judged, rows = world_and_model
    picked = np.array([7, 0, 2999, 15])
    alone = encode((LogRow.model_validate(rows[i]) for i in picked), model.schema)
    taken = judged.take(picked)
    assert taken.request_ids == alone.request_ids
    assert np.array_equal(taken.shown_positions(), alone.shown_positions())
    assert np.array_equal(taken.click, alone.click) and np.allclose(taken.propensity, alone.propensity)
    rows_ = np.arange(len(picked))
    assert selections_at(taken, rows_, taken.shown_positions()) == [rows[i]["shown"] for i in picked]


def test_exact_explore_probabilities_match_the_policy_s_own_draws(world_and_model):
    """q_k read off pi equal the shares of what choose(greedy=False) serves; q is their product."""
    _, model, judged, _ = world_and_model
    data = judged.take(np.arange(40))
    config = OPEConfig(mode="explore", epsilon=0.2, samples=8)
    view = model_view(model, data, config, SelectConfig())
    assert np.allclose(view.combo, view.marginal.prod(axis=1))
    explore = SelectConfig(epsilon=0.2)
    draws = np.stack([choose(model, data, greedy=False, config=explore, seed=s).positions for s in range(600)], axis=1)
    shares = view_from_draws(draws, data.shown_positions()).marginal
    assert np.abs(shares - view.marginal).max() < 0.08  # 600 draws: a share's sd is at most 0.02


def test_weights_times_true_click_probabilities_recover_the_true_ctr(world_and_model):
    """The whole chain without click noise: mean of (q / p) P_true(logged combination) is the target's true CTR
    (exactly so in expectation over the log), for the explore policy, with the world's own probabilities."""
    world, model, judged, rows = world_and_model
    view = model_view(model, judged, OPEConfig(mode="explore", epsilon=0.5, samples=16), SelectConfig())
    weights = view.combo / logging_view(judged, False).propensity
    requests = [request_dict(judged, i) for i in range(len(judged))]
    logged_truth = world.click_probability_dicts(requests, [r["shown"] for r in rows])
    truth = np.mean([world.click_probability_dicts(requests, selections_at(judged, np.arange(len(judged)), view.draws[:, s])).mean()
                     for s in range(16)])
    assert abs(weights.mean() - 1) < 0.05
    assert abs(np.mean(weights * logged_truth) - truth) < 0.1 * truth


def test_estimates_of_a_model_on_fresh_logs(world_and_model):
    world, model, judged, _ = world_and_model
    result = estimate_model(judged, model, OPEConfig(mode="explore", epsilon=0.5, samples=16), world=world)
    names = [e.estimator for e in result.estimates]
    assert names == ["dm", "ips", "snips", "pi", "snpi", "dr", "dr-pi", "replay"]
    assert result.estimate("dm").interval == "gaussian+ensemble"
    for name in ("ips", "snips", "dr"):  # epsilon 0.5 keeps the weights moderate: these cover the truth here
        e = result.estimate(name)
        assert e.low <= result.truth <= e.high, (name, e, result.truth)
    assert result.recommended in names
    json.dumps(result.to_dict(), allow_nan=True)
    greedy = estimate_model(judged, model, OPEConfig(mode="greedy"), world=world)
    assert greedy.estimate("ips").n == len(judged) and set(np.unique(greedy.estimate("ips").ess >= 0)) == {True}
    # a greedy target matches this uniform log's combination in about 30 of its 3,000 impressions: whether
    # that falls under MIN_SUPPORT_ROWS (poor-support) is chance, the extreme weights are not
    assert greedy.estimate("ips").ess < MIN_SUPPORT_ROWS
    rules = {w["rule"] for w in greedy.warnings}
    assert "extreme-weights" in rules and rules <= {"poor-support", "extreme-weights", "few-matches"}, greedy.warnings


def test_a_named_policy_is_fitted_on_one_share_and_judged_on_the_other(world_and_model):
    world, _, judged, _ = world_and_model
    result = estimate_named(judged, "counting", OPEConfig(fit_share=0.4, epochs=1), world=world, reward_models=1)
    assert (result.fit_rows, result.rows) == (1200, 1800)
    assert "fitted on the fit share" in result.reward_model
    oracle = estimate_named(judged, "oracle", OPEConfig(epochs=1), world=world, reward_models=1)
    assert oracle.truth > result.truth


def test_rpm_by_every_estimator_on_a_world_that_logs_revenue():
    """RPM: the weighting estimators on the revenue earned, DM and DR with P(click) times each product's revenue
    per click; the unbiased ones cover the true RPM of an explore target whose support the logs cover."""
    world = World.generate(WorldConfig(seed=6, ads=30, max_candidates=4, revenue=True))
    fit = encode(LogRow.model_validate(r) for r in random_exposure_logs(world, 3000, 1))
    model = make_genco("genco", seed=0, epochs=2, reward_models=2).fit(fit).model
    judged = encode((LogRow.model_validate(r) for r in random_exposure_logs(world, 6000, 2)), model.schema)
    per_click = revenue_per_click(judged)
    ads = np.array([world.ad_ids.index(a) for a in judged.ad_ids])
    clicks = np.bincount(ads, weights=judged.click, minlength=len(world.ad_ids))
    many = clicks[ads] >= 20
    assert np.allclose(per_click[many], world.ad_cpc[ads[many]], rtol=0.06)  # one pseudo-click among 20 or more
    never = clicks[ads] == 0
    assert np.allclose(per_click[never], judged.revenue[judged.click > 0].mean(), rtol=1e-6)
    result = estimate_model(judged, model, OPEConfig(mode="explore", epsilon=0.5, samples=16), world=world)
    assert [e.estimator for e in result.rpm] == ["dm", "ips", "snips", "pi", "snpi", "dr", "dr-pi"]
    ctr_dm, rpm_dm = result.estimate("dm"), result.rpm[0]
    assert rpm_dm.value != pytest.approx(1000 * ctr_dm.value * per_click.mean(), rel=1e-9)  # per row, not averaged
    for e in result.rpm:
        if e.estimator in ("ips", "snips", "dr"):
            assert e.low <= result.truth_rpm <= e.high, (e, result.truth_rpm)
    # DM's RPM errs as its CTR does: the revenue per click is right, what is left is the click model's bias
    assert rpm_dm.value / result.truth_rpm == pytest.approx(ctr_dm.value / result.truth, rel=0.08)


def test_a_given_reward_model_replaces_the_targets_own(world_and_model):
    world, model, judged, _ = world_and_model
    other = make_genco("genco", seed=3, epochs=1, reward_models=1, rl=False).fit(judged.take(np.arange(1500))).model
    own = estimate_model(judged, model, OPEConfig(mode="greedy"))
    given = estimate_model(judged, model, OPEConfig(mode="greedy"), reward_model=RewardModel(other, "another one"))
    assert given.reward_model == "another one" and "own" in own.reward_model
    assert given.estimate("dm").value != own.estimate("dm").value
    assert given.estimate("ips").value == own.estimate("ips").value  # the weighting estimators read no model
    named = estimate_named(judged, "counting", OPEConfig(epochs=1), reward_model=RewardModel(other, "another one"))
    assert named.reward_model == "another one" and named.estimate("dm") is not None
    other.schema = dataclasses.replace(other.schema, id_buckets=other.schema.id_buckets // 2)
    with pytest.raises(GencoInputError, match="another one: .*different id_buckets"):  # the API refuses it too
        estimate_model(judged, model, OPEConfig(mode="greedy"), reward_model=RewardModel(other, "another one"))


# -- the command line --------------------------------------------------------------------------------------------

def _no_propensities(src, dst):
    rows = [json.loads(line) for line in open(src)]
    for row in rows:
        row.pop("propensity", None)
    return write_jsonl(dst, rows)


def test_ope_command_on_logs_with_and_without_propensities(small_world, tmp_path, genco_here):
    logs = small_world / "logs.jsonl"
    result = genco_here("ope", "--logs", logs, "--policy", "counting", "--json", "--seed", "1", "--epochs", "1")
    assert result.returncode == 0, result.stderr
    data = json.loads(result.stdout)
    assert {e["estimator"] for e in data["estimates"]} >= {"ips", "snips", "pi", "snpi", "replay"}
    assert data["rpm"], "the world logs revenue: RPM is estimated"
    bare = _no_propensities(logs, tmp_path / "bare.jsonl")
    result = genco_here("ope", "--logs", bare, "--policy", "counting", "--json", "--epochs", "1")
    assert result.returncode == 0, result.stderr
    assert "missing-propensities" in result.stderr and "--assume-uniform" in result.stderr
    data = json.loads(result.stdout)
    assert {e["estimator"] for e in data["estimates"]} == {"dm", "replay"}
    assert set(data["unavailable"]) >= {"ips", "snips", "pi"}
    result = genco_here("ope", "--logs", bare, "--policy", "counting", "--json", "--assume-uniform", "--epochs", "1",
                        "--out", tmp_path / "ope.json")
    assert result.returncode == 0 and "ips" in {e["estimator"] for e in json.loads(result.stdout)["estimates"]}
    assert json.loads((tmp_path / "ope.json").read_text())["policy"] == "counting"


def test_ope_command_table_and_edges(small_world, tmp_path, genco_here):
    logs = small_world / "logs.jsonl"
    table = genco_here("ope", "--logs", logs, "--policy", "mvt", "--world", small_world, "--epochs", "1")
    assert table.returncode == 0, table.stderr
    assert "snips" in table.stdout and "true CTR" in table.stdout and "(recommended)" in table.stdout
    assert "poor-support" in table.stderr  # a greedy choice over thousands of combinations: few logged matches
    unknown = genco_here("ope", "--logs", logs, "--policy", "no-such-policy")
    assert unknown.returncode == 2 and "neither a model folder nor a policy name" in unknown.stderr
    oracle = genco_here("ope", "--logs", logs, "--policy", "oracle")
    assert oracle.returncode == 2 and "--world" in oracle.stderr
    rows = [json.loads(line) for line in open(logs)][:40]
    for row in rows:
        row["click"] = 0
        row.pop("propensity")
    no_clicks = write_jsonl(tmp_path / "no-clicks.jsonl", rows)
    nothing = genco_here("ope", "--logs", no_clicks, "--policy", "counting")
    assert nothing.returncode == 2 and "nothing to fit" in nothing.stderr and "Traceback" not in nothing.stderr
    bad = write_jsonl(tmp_path / "bad.jsonl", [rows[0], {**rows[1], "click": 3}])
    broken = genco_here("ope", "--logs", bad, "--policy", "counting")
    assert broken.returncode == 2 and "bad.jsonl:2" in broken.stderr and "click-not-binary" in broken.stderr
    tiny = genco_here("ope", "--logs", write_jsonl(tmp_path / "one.jsonl", rows[:1]), "--policy", "counting")
    assert tiny.returncode == 2 and "too few" in tiny.stderr
    share = genco_here("ope", "--logs", logs, "--policy", "counting", "--fit-share", "1")
    assert share.returncode == 2 and "--fit-share" in share.stderr


def test_ope_command_on_a_model_folder(train_world, tmp_path, genco_here):
    model = tmp_path / "model"
    trained = genco_here("train", "--logs", train_world / "logs.jsonl", "--out", model, "--epochs", "1",
                         "--reward-models", "1", "--quiet")
    assert trained.returncode == 0, trained.stderr
    result = genco_here("ope", "--logs", train_world / "logs.jsonl", "--policy", model, "--mode", "explore",
                        "--epsilon", "0.3", "--samples", "4", "--json")
    assert result.returncode == 0, result.stderr
    data = json.loads(result.stdout)
    assert data["policy"].startswith("model@") and data["fit_rows"] == 0 and "own reward model" in data["reward_model"]
    rows = [json.loads(line) for line in open(train_world / "logs.jsonl")][:5]
    rows[3]["components"]["extra"] = [{"id": "x", "features": []}]
    rows[3]["shown"]["extra"] = "x"
    alien = genco_here("ope", "--logs", write_jsonl(tmp_path / "alien.jsonl", rows), "--policy", model)
    assert alien.returncode == 2 and "alien.jsonl:4" in alien.stderr and "unknown-component" in alien.stderr
    scored = genco_here("ope", "--logs", train_world / "logs.jsonl", "--policy", "counting", "--reward-model", model, "--json")
    assert scored.returncode == 0, scored.stderr
    assert json.loads(scored.stdout)["reward_model"].startswith(f"the reward model of {model}")
    judged = genco_here("ope", "--logs", train_world / "logs.jsonl", "--policy", model, "--reward-model", model, "--json")
    assert judged.returncode == 0 and "the reward model of" in json.loads(judged.stdout)["reward_model"]
    other = tmp_path / "other-form"
    rows = [json.loads(line) for line in open(train_world / "logs.jsonl")][:400]
    for row in rows:
        row["user"] = row["user"][:1]
    trained = genco_here("train", "--logs", write_jsonl(tmp_path / "short-user.jsonl", rows), "--out", other, "--epochs", "1",
                         "--reward-models", "1", "--quiet")
    assert trained.returncode == 0, trained.stderr
    mismatch = genco_here("ope", "--logs", train_world / "logs.jsonl", "--policy", model, "--reward-model", other)
    assert mismatch.returncode == 2 and "--reward-model" in mismatch.stderr and "user_dim" in mismatch.stderr
    assert "Traceback" not in mismatch.stderr
