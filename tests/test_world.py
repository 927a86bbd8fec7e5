"""Simulated worlds: reproducible, exact oracle, exact random CTR, and `genco evaluate` figures."""

from __future__ import annotations

import itertools
import json

import numpy as np
import pytest

from genco.evaluate import Evaluator
from genco.files import read_rows
from genco.world import STYLE_DIM, ComponentTruth, World, WorldConfig, simulate
from tests.conftest import run_genco, write_jsonl


def _requests(world_dir):
    return [json.loads(line) for line in open(world_dir / "requests.jsonl")]


def test_same_seed_same_world_other_seed_other_world(tmp_path):
    config = dict(ads=30, impressions=400, requests=50, max_candidates=6)
    simulate(WorldConfig(seed=5, **config), tmp_path / "a")
    simulate(WorldConfig(seed=5, **config), tmp_path / "b")
    simulate(WorldConfig(seed=6, **config), tmp_path / "c")
    for name in ("logs.jsonl", "requests.jsonl", "world.json", "truth.npz"):
        assert (tmp_path / "a" / name).read_bytes() == (tmp_path / "b" / name).read_bytes(), name
    assert (tmp_path / "a" / "logs.jsonl").read_bytes() != (tmp_path / "c" / "logs.jsonl").read_bytes()


def test_logs_follow_the_contract_and_the_world(small_world):
    logs = list(read_rows(small_world / "logs.jsonl", "logs"))  # validates every rule
    assert len(logs) == 3000
    ctr = np.mean([r.click for r in logs])
    assert 0.01 < ctr < 0.10, "click rates of a few percent"
    for row in logs[:200]:
        assert row.propensity == pytest.approx(np.prod([1 / len(c) for c in row.components.values()]))
        assert row.revenue is not None and row.revenue > 0
    sizes = {len(c) for r in logs for c in r.components.values()}
    assert max(sizes) <= 8 and min(sizes) >= 2
    assert any(len(r.components) < 6 for r in logs), "some ads lack some components"
    shared = {e.id for r in logs for e in r.components.get("cta", [])}
    assert len(shared) <= 16, "calls to action come from a shared catalog"


def _brute_force(world, request):
    names = list(request["components"])
    combos = list(itertools.product(*[[c["id"] for c in request["components"][n]] for n in names]))
    selections = [dict(zip(names, combo)) for combo in combos]
    p = world.click_probability_dicts([request] * len(selections), selections)
    best = int(np.argmax(p))
    return selections[best], p[best], p.mean()


@pytest.mark.parametrize("interaction", [0.0, 1.0, 4.0])
def test_oracle_and_random_ctr_match_brute_force(tmp_path, interaction):
    simulate(WorldConfig(seed=11, ads=20, impressions=0, requests=25, max_candidates=5, interaction=interaction), tmp_path)
    world = World.load(tmp_path)
    requests = _requests(tmp_path)
    selections, oracle_p = world.oracle_dicts(requests)
    random_p = world.random_ctr_dicts(requests)
    for k, request in enumerate(requests):
        best, best_p, mean_p = _brute_force(world, request)
        assert oracle_p[k] == pytest.approx(best_p, rel=1e-12)
        assert world.click_probability_dicts([request], [selections[k]])[0] == pytest.approx(best_p, rel=1e-12)
        assert random_p[k] == pytest.approx(mean_p, rel=1e-12)


def test_random_ctr_estimate_on_large_pools_is_close(tmp_path):
    simulate(WorldConfig(seed=2, ads=5, impressions=0, requests=3, max_candidates=40), tmp_path)
    world = World.load(tmp_path)
    requests = _requests(tmp_path)
    estimate = world.random_ctr_dicts(requests)  # Monte Carlo: too many combinations
    exact = world.random_ctr_dicts(requests, exact_up_to=10**9)
    assert np.allclose(estimate, exact, rtol=0.03)


def _hand_world() -> World:
    """One ad, two titles, two images; title t0 and image i0 go together (+2 logits)."""
    style = np.zeros((2, STYLE_DIM))
    style[0, 0] = 1.0
    def truth(prefix, quality):
        return ComponentTruth([f"{prefix}0", f"{prefix}1"], np.zeros((2, 1)), np.array(quality), style.copy(), np.zeros((2, 1)), np.zeros(2, bool))
    C = np.zeros((STYLE_DIM, STYLE_DIM))
    C[0, 0] = 2.0
    return World(
        config=WorldConfig(base_logit=-2.0, user_dim=1, ad_dim=1),
        ad_ids=["ad-0"],
        ad_popularity=np.ones(1),
        ad_appeal=np.array([0.5]),
        ad_features=np.zeros((1, 1)),
        ad_cpc=np.ones(1),
        ad_candidates=[{"title": np.arange(2), "image": np.arange(2)}],
        components={"title": truth("t", [0.0, 1.0]), "image": truth("i", [0.0, 0.5])},
        interactions={("title", "image"): C},
    )


def test_evaluate_figures_on_a_hand_checked_world():
    world = _hand_world()
    request = {"request_id": "r", "ad_id": "ad-0", "user": [0.0], "ad": [0.0],
               "components": {"title": [{"id": "t0", "features": [0.0]}, {"id": "t1", "features": [0.0]}],
                              "image": [{"id": "i0", "features": [0.0]}, {"id": "i1", "features": [0.0]}]}}
    sig = lambda x: 1 / (1 + np.exp(-x))
    # logits: (t0,i0) -2+.5+2 = .5; (t0,i1) -1.5+.5 = -1; (t1,i0) -1.5+1 = -.5; (t1,i1) -1.5+1+.5 = 0
    random_ctr = (sig(0.5) + sig(-1.0) + sig(-0.5) + sig(0.0)) / 4
    evaluator = Evaluator(world, [request])
    assert evaluator.oracle_selection == [{"title": "t0", "image": "i0"}]
    figures = evaluator.score([{"title": "t1", "image": "i1"}])  # the additive choice: best parts, worst pair
    assert figures["ctr"] == pytest.approx(0.5)
    assert figures["random_ctr"] == pytest.approx(random_ctr)
    assert figures["oracle_ctr"] == pytest.approx(sig(0.5))
    assert figures["lift_vs_random"] == pytest.approx(0.5 / random_ctr - 1)
    assert figures["frac_of_oracle_lift"] == pytest.approx((0.5 - random_ctr) / (sig(0.5) - random_ctr))
    assert figures["frac_of_oracle_lift"] == pytest.approx(0.3205, abs=1e-3)
    assert figures["n"] == 1


def test_genco_evaluate_first_candidate_and_oracle(tmp_path):
    """The issue's check: seed 1, 20k impressions, 1k requests; first candidates ~ 0, the oracle's own picks 1.0."""
    world = tmp_path / "W"
    result = run_genco("simulate", "--out", world, "--impressions", "20000", "--requests", "1000", "--seed", "1")
    assert result.returncode == 0, result.stderr
    requests = _requests(world)
    first = [{"request_id": r["request_id"], "selection": {n: c[0]["id"] for n, c in r["components"].items()}} for r in requests]
    write_jsonl(tmp_path / "first.jsonl", first)
    result = run_genco("evaluate", "--world", world, "--selections", tmp_path / "first.jsonl")
    assert result.returncode == 0, result.stderr
    figures = json.loads(result.stdout.strip().splitlines()[-1])
    assert set(figures) >= {"ctr", "random_ctr", "oracle_ctr", "lift_vs_random", "frac_of_oracle_lift", "n"}
    assert figures["n"] == 1000
    assert abs(figures["frac_of_oracle_lift"]) < 0.1
    assert 0.01 < figures["random_ctr"] < 0.1 and figures["oracle_ctr"] > 1.5 * figures["random_ctr"]

    oracle, _ = World.load(world).oracle_dicts(requests)
    write_jsonl(tmp_path / "oracle.jsonl", [{"request_id": r["request_id"], "selection": s} for r, s in zip(requests, oracle)])
    figures = json.loads(run_genco("evaluate", "--world", world, "--selections", tmp_path / "oracle.jsonl").stdout)
    assert figures["frac_of_oracle_lift"] == pytest.approx(1.0)


@pytest.mark.parametrize(
    "bad,rule",
    [
        ({"request_id": "nope", "selection": {}}, "unknown-request"),
        ("MISSING", "selection-components"),
        ("WRONG", "selection-not-candidate"),
    ],
)
def test_evaluate_rejects_bad_selections(small_world, tmp_path, bad, rule):
    request = _requests(small_world)[0]
    good = {n: c[0]["id"] for n, c in request["components"].items()}
    if bad == "MISSING":
        bad = {"request_id": request["request_id"], "selection": dict(list(good.items())[1:])}
    elif bad == "WRONG":
        bad = {"request_id": request["request_id"], "selection": {**good, "title": "not-a-title"}}
    path = write_jsonl(tmp_path / "sel.jsonl", [bad])
    result = run_genco("evaluate", "--world", small_world, "--selections", path)
    assert result.returncode == 2
    assert f"{path}:1: rule {rule}" in result.stderr
