"""`genco bench`: its result rows, its summaries and its command line, on tiny worlds with cheap policies."""

from __future__ import annotations

import json

import pytest

from genco import bench
from genco.world import WorldConfig

from .conftest import run_genco

TINY = WorldConfig(seed=2, ads=40, impressions=2_000, requests=100, max_candidates=6)
REQUIRED = {"policy", "scenario", "seed", "ctr", "random_ctr", "oracle_ctr", "frac_of_oracle_lift", "fit_seconds",
            "select_seconds_per_1k"}


def test_offline_rows_carry_the_required_fields_and_the_oracle_scores_one():
    rows = bench.offline(["random", "oracle", "counting"], TINY, [1, 2])
    assert len(rows) == 6
    for row in rows:
        assert REQUIRED <= row.keys()
    oracle = [r for r in rows if r["policy"] == "oracle"]
    assert all(r["frac_of_oracle_lift"] == pytest.approx(1.0) for r in oracle)
    # each seed draws its own world: the oracle CTRs differ
    assert oracle[0]["oracle_ctr"] != oracle[1]["oracle_ctr"]


def test_the_additive_oracle_is_the_oracle_without_interactions_and_falls_short_with_them():
    rows = bench.sweep(["oracle-additive"], TINY, [1], "interaction", [0.0, 2.0], "interaction")
    share = {r["setting"]: r["frac_of_oracle_lift"] for r in rows}
    assert share[0.0] == pytest.approx(1.0), "in an additive world the best elements make the best combination"
    assert share[2.0] < 0.8, "with interactions, the best elements alone miss part of the lift"


def test_fixed_world_keeps_the_world_and_summaries_give_mean_and_spread():
    rows = bench.offline(["oracle", "counting"], TINY, [1, 2], vary_world=False)
    assert len({r["oracle_ctr"] for r in rows}) == 1
    summary = {s["policy"]: s for s in bench.summarise(rows)}
    assert summary["counting"]["seeds"] == 2
    assert summary["oracle"]["frac_of_oracle_lift_std"] == pytest.approx(0.0)
    table = bench.markdown(bench.summarise(rows))
    assert "| offline |" in table and "counting" in table
    undefined = bench.summarise([{**row, "attention_partner_ratio": float("nan")} for row in rows])
    assert "nan" not in bench.markdown(undefined)  # a figure with no meaning on this world is left blank


def test_identical_fits_are_reused_within_a_run_and_relabelled(monkeypatch):
    fits = []
    real = bench.fit_and_score
    monkeypatch.setattr(bench, "fit_and_score", lambda name, *a, **k: fits.append(name) or real(name, *a, **k))
    with bench.reusing_identical_fits():
        first = bench.offline(["counting"], TINY, [1])
        swept = bench.sweep(["counting"], TINY, [1], "interaction", [TINY.interaction, 0.0], "interaction")
    assert fits == ["counting", "counting"]  # the sweep's first setting is the offline world: fitted once
    assert swept[0]["scenario"] == "interaction" and swept[0]["setting"] == TINY.interaction
    assert swept[0]["frac_of_oracle_lift"] == first[0]["frac_of_oracle_lift"] and first[0]["scenario"] == "offline"
    bench.offline(["counting"], TINY, [1])  # outside the block: fitted again
    assert len(fits) == 3


def test_scaling_reports_pool_sums_and_products():
    rows = bench.scaling(["counting"], [3, 6], impressions=1_000, requests=50)
    small, large = sorted(rows, key=lambda r: r["max_candidates"])
    assert small["mean_pool_sum"] < large["mean_pool_sum"]
    assert small["mean_combinations"] < large["mean_combinations"]
    assert "seconds per 1,000 requests" in bench.scaling_markdown(rows)


def test_cli_writes_json_rows_and_a_report(tmp_path):
    out, rows_path = tmp_path / "report", tmp_path / "rows.json"
    result = run_genco("bench", "--quick", "--policies", "random,counting,oracle", "--scenarios", "offline,cold-start",
                       "--seeds", "1", "--out", out, "--json", rows_path, "--quiet")
    assert result.returncode == 0, result.stderr
    rows = json.loads(rows_path.read_text())
    assert {r["scenario"] for r in rows} == {"offline", "cold-start"}
    assert all(REQUIRED <= r.keys() for r in rows)
    assert (out / "results.md").exists() and json.loads((out / "results.json").read_text()) == rows


def test_cli_names_an_unknown_policy_and_exits_2(tmp_path):
    result = run_genco("bench", "--quick", "--policies", "random,nonesuch", "--out", tmp_path / "r")
    assert result.returncode == 2
    assert "nonesuch" in result.stderr


def test_structure_scenario_runs_every_form_with_its_oracle():
    rows = bench.structure(["oracle", "counting", "combination-ts"], TINY, [1], list(bench.STRUCTURES))
    assert {r["setting"] for r in rows} == set(bench.STRUCTURES)
    assert all(r["scenario"] == "structure" for r in rows)
    for row in rows:
        if row["policy"] == "oracle":
            assert row["frac_of_oracle_lift"] == pytest.approx(1.0)
