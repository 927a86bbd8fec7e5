"""What `genco bench` runs (presets sized for 2 cores) and what it writes (tables, JSON, plots)."""

from __future__ import annotations

import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

from genco import bench, console
from genco.files import atomic_write_bytes, atomic_write_json
from genco.plots import curves
from genco.policies import policy_names
from genco.world import WorldConfig

# Every policy of the benchmark; the offline comparison runs all but the autoregressive variant, whose fit
# alone takes longer than the other eleven together (171-201 s at 50,000 impressions: its generator decodes
# the components one after another for every sample); it runs in the scaling scenario, and on demand
# (`--policies genco-autoregressive`). The sweeps and the loop use smaller sets (each fit costs).
ALL = ["random", "oracle", "oracle-additive", "counting", "independent-ts", "combination-ts", "mvt", "linucb", "lints", "autoco-lite",
       "vw-slates", "genco", "genco-autoregressive"]
OFFLINE = [p for p in ALL if p != "genco-autoregressive"]
SWEEP = ["random", "oracle-additive", "counting", "mvt", "autoco-lite", "vw-slates", "genco"]
STRUCTURE = [*SWEEP[:3], "combination-ts", *SWEEP[3:]]  # counting whole combinations matters on the table form
LOOP = ["random", "independent-ts", "mvt", "lints", "genco"]
SCALING = ["genco", "genco-autoregressive", "autoco-lite", "mvt"]


@dataclass
class BenchPlan:
    policies: list[str]
    scenarios: list[str]
    seeds: list[int]
    sweep_seeds: list[int]
    impressions: int
    requests: int
    interaction: list[float]
    candidates: list[int]
    log_sizes: list[int]
    loop: bench.LoopConfig
    scaling_sizes: list[int]
    candidates_impressions: int  # the candidates sweep logs this many and scores this many requests: pools of
    candidates_requests: int  # 150 make every row heavy (GenCO selects in 0.12 s per request there)
    scaling_impressions: int  # the scaling scenario measures selection cost: a small log is enough to fit on
    cold_start_seeds: list[int]
    structures: list[str]  # the structure scenario's worlds (bench.STRUCTURES)
    options: dict[str, Any] = field(default_factory=dict)  # passed to every GenCO variant (e.g. epochs)
    chosen_policies: bool = False  # the user named the policies: use them everywhere
    fixed_world: bool = False  # offline: every seed keeps the world of seed 1 (seeds move training and selection)

    @classmethod
    def make(cls, *, quick: bool, seeds: int, impressions: int | None, policies: list[str], scenarios: list[str],
             fixed_world: bool = False) -> "BenchPlan":
        from genco.errors import GencoInputError
        from genco.options import Range, check_value

        check_value("seeds", seeds, Range(1, 100), integer=True)
        if impressions is not None:
            check_value("impressions", impressions, Range(1, 100_000_000), integer=True)
        unknown = [p for p in policies if p not in (*bench.WORLD_POLICIES, *policy_names())]
        if unknown:
            raise GencoInputError(f"unknown policies {unknown}; `genco bench --list` names them")
        bad = [s for s in scenarios if s not in bench.SCENARIOS]
        if bad:
            raise GencoInputError(f"unknown scenarios {bad}; known: {', '.join(bench.SCENARIOS)}")
        if quick:
            return cls(policies=policies or ALL, scenarios=scenarios, seeds=list(range(1, min(seeds, 2) + 1)), sweep_seeds=[1],
                       impressions=impressions or 4_000, requests=300, interaction=[0.0, 2.0], candidates=[5, 30],
                       log_sizes=[2_000, 8_000], loop=bench.LoopConfig(warm_start=1_000, rounds=2, per_round=1_000),
                       scaling_sizes=[5, 30], candidates_impressions=impressions or 4_000, candidates_requests=300, scaling_impressions=2_000,
                       cold_start_seeds=[1], structures=["dense, ids only", "table, one creative"], options={"epochs": 2}, chosen_policies=bool(policies), fixed_world=fixed_world)
        return cls(policies=policies or ALL, scenarios=scenarios, seeds=list(range(1, seeds + 1)), sweep_seeds=[1],
                   impressions=impressions or 50_000, requests=1_000, interaction=[0.0, 1.0, 2.0],
                   candidates=[5, 15, 50, 150], log_sizes=[10_000, 50_000, 100_000],
                   loop=bench.LoopConfig(warm_start=5_000, rounds=4, per_round=5_000), scaling_sizes=[5, 15, 50, 150],
                   candidates_impressions=10_000, candidates_requests=400, scaling_impressions=2_000, cold_start_seeds=[1],
                   structures=list(bench.STRUCTURES), options={},
                   chosen_policies=bool(policies), fixed_world=fixed_world)

    def subset(self, default: list[str]) -> list[str]:
        return self.policies if self.chosen_policies else [p for p in default if p in self.policies]


def run_bench(plan: BenchPlan, out: Path, json_path: Path | None) -> list[dict[str, Any]]:
    out.mkdir(parents=True, exist_ok=True)
    rows: list[dict[str, Any]] = []
    started = time.perf_counter()
    sections: list[str] = []
    with bench.reusing_identical_fits():
        _run_scenarios(plan, out, rows, sections)
    summary = bench.summarise(rows)
    table = bench.markdown(summary)
    minutes = (time.perf_counter() - started) / 60
    text = f"# genco bench\n\n{len(rows)} result rows in {minutes:.1f} minutes\n\n## offline-style scenarios\n\n{table}\n" + "\n".join(sections)
    atomic_write_bytes(out / "results.md", text.encode())
    atomic_write_json(out / "results.json", rows)
    if json_path is not None:
        atomic_write_json(json_path, rows)
    for scenario, setting_name in (("interaction", "interaction strength"), ("candidates", "candidates per component"),
                                   ("log-size", "logged impressions")):
        _sweep_plot(summary, scenario, setting_name, out / f"sweep_{scenario}.png")
    console.out.print(text)
    console.out.print(f"report: {out}/")
    return rows


def _run_scenarios(plan: BenchPlan, out: Path, rows: list[dict[str, Any]], sections: list[str]) -> None:
    """Every scenario of the plan in turn; result rows and extra Markdown sections are appended."""
    base = WorldConfig(seed=1, impressions=plan.impressions, requests=plan.requests)
    opts = plan.options
    for scenario in plan.scenarios:
        console.note(f"[bold]scenario {scenario}[/bold]")
        if scenario == "offline":
            rows += bench.offline(plan.subset(OFFLINE), base, plan.seeds, vary_world=not plan.fixed_world, **opts)
        elif scenario == "interaction":
            rows += bench.sweep(plan.subset(SWEEP), base, plan.sweep_seeds, "interaction", plan.interaction, "interaction", **opts)
        elif scenario == "candidates":
            candidates_base = replace(base, impressions=plan.candidates_impressions, requests=plan.candidates_requests)
            rows += bench.sweep(plan.subset(SWEEP), candidates_base, plan.sweep_seeds,
                                "max_candidates", plan.candidates, "candidates", **opts)
        elif scenario == "log-size":
            rows += bench.sweep(plan.subset(SWEEP), base, plan.sweep_seeds, "impressions", plan.log_sizes, "log-size", **opts)
        elif scenario == "cold-start":
            rows += bench.cold_start(plan.subset(SWEEP), base, plan.cold_start_seeds, **opts)
        elif scenario == "structure":
            rows += bench.structure(plan.subset(STRUCTURE), base, plan.sweep_seeds, plan.structures, **opts)
        elif scenario == "closed-loop":
            loop_rows = bench.closed_loop(plan.subset(LOOP), base, plan.sweep_seeds, plan.loop, **opts)
            rows += loop_rows
            sections.append("## closed loop\n\n" + bench.loop_markdown(loop_rows))
            _regret_plot(loop_rows, out / "regret_curve.png")
        elif scenario == "scaling":
            scale_rows = bench.scaling(plan.subset(SCALING), plan.scaling_sizes, impressions=plan.scaling_impressions, **opts)
            rows += scale_rows
            sections.append("## selection cost vs candidates per component\n\n" + bench.scaling_markdown(scale_rows))
            _scaling_plot(scale_rows, out / "selection_cost.png")


def _sweep_plot(summary: list[dict[str, Any]], scenario: str, xlabel: str, path: Path) -> None:
    rows = [s for s in summary if s["scenario"] == scenario]
    if not rows:
        return
    series, bands = {}, {}
    for policy in dict.fromkeys(r["policy"] for r in rows):
        mine = sorted((r for r in rows if r["policy"] == policy), key=lambda r: r["setting"])
        x = [r["setting"] for r in mine]
        y = [r["frac_of_oracle_lift"] for r in mine]
        sd = [r["frac_of_oracle_lift_std"] for r in mine]
        series[policy] = (x, y)
        bands[policy] = (list(np.subtract(y, sd)), list(np.add(y, sd)))
    curves(series, path, xlabel=xlabel, ylabel="fraction of the oracle's lift", title=f"offline, sweeping {xlabel}", bands=bands)


def _regret_plot(rows: list[dict[str, Any]], path: Path) -> None:
    if not rows:
        return
    series = {}
    for policy in dict.fromkeys(r["policy"] for r in rows):
        rounds = sorted({r["round"] for r in rows if r["policy"] == policy})
        x = [float(np.mean([r["impressions_served"] for r in rows if r["policy"] == policy and r["round"] == k])) for k in rounds]
        y = [float(np.mean([r["cumulative_regret"] for r in rows if r["policy"] == policy and r["round"] == k])) for k in rounds]
        series[policy] = (x, y)
    curves(series, path, xlabel="impressions served", ylabel="cumulative regret (expected clicks lost)",
           title="closed loop: serve, log, retrain")


def _scaling_plot(rows: list[dict[str, Any]], path: Path) -> None:
    if not rows:
        return
    series = {}
    for policy in dict.fromkeys(r["policy"] for r in rows):
        mine = sorted((r for r in rows if r["policy"] == policy), key=lambda r: r["max_candidates"])
        series[policy] = ([r["max_candidates"] for r in mine], [r["select_seconds_per_1k"] for r in mine])
        if all("sampled_select_seconds_per_1k" in r for r in mine):
            series[f"{policy}, sampled only"] = ([r["max_candidates"] for r in mine],
                                                 [r["sampled_select_seconds_per_1k"] for r in mine])
    curves(series, path, xlabel="candidates per component (largest pool)", ylabel="seconds per 1,000 requests",
           title="selection cost as pools grow", log=True)
