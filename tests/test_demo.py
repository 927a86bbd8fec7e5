"""`genco demo`, the main job, end to end on a world small enough for the test suite."""

from __future__ import annotations

import json

from genco import demo


def test_demo_writes_its_report_and_scores_every_policy(tmp_path, monkeypatch):
    monkeypatch.setattr(demo, "QUICK", demo.DemoSize(impressions=3_000, requests=150, epochs=1, rl_epochs=1))
    rows = demo.run_demo(tmp_path, quick=True)
    assert [r["policy"] for r in rows] == demo.DEMO_POLICIES
    assert json.loads((tmp_path / "results.json").read_text()) == rows
    genco = {r["policy"]: r for r in rows if r["policy"].startswith("genco")}
    assert all({"frac_sampling_alone", "attribution_corr", "attribution_captured"} <= r.keys() for r in genco.values())
    assert "attribution_corr" not in rows[1], "figures only GenCO has stay out of the baselines' rows"
    for name in ("results.md", "frac_of_oracle_lift.png", "attribution.png", "attention.png", "training_curve_genco.png",
                 "models/genco/model.safetensors", "models/genco-no-rl/genco.json", "element-report/report.html",
                 "element-report/elements.csv"):
        assert (tmp_path / name).stat().st_size > 0, name
    assert "| genco |" in (tmp_path / "results.md").read_text()
