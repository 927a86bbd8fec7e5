"""`genco demo`: the main job, end to end, on the built-in simulated world.

1. simulate the default world and log uniform random exposure;
2. fit the policies: random, per-element counting, GenCO and its three ablations;
3. select (greedy) for fresh requests and score every selection against the world's ground truth;
4. print one table and write a report folder: results (JSON, Markdown), a bar chart, GenCO's model folder,
   training curves, the element attribution of its reward models against the world's truth and where its
   cross-component attention looks, and the element report `genco report` writes (element-report/report.html).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from rich import box
from rich.table import Table

from genco import console
from genco.bench import score_policy
from genco.data import encode
from genco.evaluate import Evaluator
from genco.files import atomic_write_bytes, atomic_write_json, load_requests
from genco.plots import attention_maps, bars, training_curve
from genco.plots import attribution as attribution_plot
from genco.policies import GenCOPolicy, make_policy
from genco.report import build_report, write_report
from genco.train import read_logs, save_trained
from genco.world import TREE, WorldConfig, simulate

DEMO_POLICIES = ["random", "counting", "genco", "genco-no-attention", "genco-no-mil", "genco-no-rl"]


# Markdown column -> terminal header, in short lines: the table fits an 80-column terminal, figures never cut.
COLUMNS = {"policy": "policy", "true CTR": "true\nCTR", "lift vs random": "lift vs\nrandom",
           "frac of oracle lift": "frac of\noracle\nlift", "sampled only": "sampled\nonly", "attribution": "attri-\nbution",
           "fit s": "fit s", "select s / 1k": "select\ns / 1k"}


@dataclass
class DemoSize:
    impressions: int
    requests: int
    epochs: int  # reward-model epochs at most
    rl_epochs: int  # generator epochs


# Sized for 2 cores: four GenCO fits (three reward models each) in under 5 minutes. `genco bench` measures
# at larger scale.
FULL = DemoSize(impressions=40_000, requests=2_000, epochs=6, rl_epochs=1)
QUICK = DemoSize(impressions=8_000, requests=400, epochs=2, rl_epochs=1)


def run_demo(out: Path, *, quick: bool = False, seed: int = 1) -> list[dict]:
    size = QUICK if quick else FULL
    out.mkdir(parents=True, exist_ok=True)
    world_dir = out / "world"
    config = WorldConfig(seed=seed, impressions=size.impressions, requests=size.requests)
    console.note(f"simulating a world: {config.ads} products, {size.impressions} random-exposure impressions, interaction {config.interaction}")
    world = simulate(config, world_dir)
    logs, _ = read_logs(world_dir / "logs.jsonl")
    requests = load_requests(world_dir / "requests.jsonl")
    request_data = encode(requests, logs.schema)
    evaluator = Evaluator(world, requests)
    console.note(f"{len(logs)} impressions, {int(logs.click.sum())} clicks; evaluating on {len(requests)} fresh requests")
    rows = []
    for name in DEMO_POLICIES:
        policy = make_policy(name, seed=seed, genco_settings={"epochs": size.epochs, "rl_epochs": size.rl_epochs})
        console.note(f"[bold]{name}[/bold]: fitting")
        rows.append(score_policy(policy, seed, logs, request_data, evaluator))
        if isinstance(policy, GenCOPolicy):
            model_dir = out / "models" / name
            save_trained(policy.result, model_dir, policy.train_config, attention=policy.attention)
            training_curve(policy.result.history, out / f"training_curve_{name}.png", title=f"{name} training")
            if name == "genco":
                attribution_plot(policy.attribution, out / "attribution.png",
                                 title="genco: element attribution, reward models against the world's truth")
                attention_maps(policy.attention, out / "attention.png", partners=list(TREE.items()),
                               title="genco: cross-component attention against the world's interacting pairs")
                console.note("[bold]genco[/bold]: element report")
                write_report(build_report(policy.model, logs, model_version=name), out / "element-report")
    _report(rows, out, config)
    return rows


def _report(rows: list[dict], out: Path, config: WorldConfig) -> None:
    oracle, random_ctr = rows[0]["oracle_ctr"], rows[0]["random_ctr"]
    table = Table(title=f"genco demo: interaction world (seed {config.seed}), {config.impressions} logged impressions",
                  caption=f"random exposure CTR {random_ctr:.4f}, oracle CTR {oracle:.4f}", box=box.SIMPLE_HEAD,
                  pad_edge=False, show_edge=False, collapse_padding=True)
    for header in COLUMNS.values():
        table.add_column(header, justify="left" if header == "policy" else "right", no_wrap=True,
                         min_width=max(map(len, header.split("\n"))))
    lines = ["| " + " | ".join(COLUMNS) + " |", "|---" * len(COLUMNS) + "|"]
    for r in rows:
        own = {key: f"{r[key]:.3f}" if key in r else "" for key in ("frac_sampling_alone", "attribution_corr")}  # GenCO only
        cells = [r["policy"], f"{r['ctr']:.4f}", f"{r['lift_vs_random']:+.1%}", f"{r['frac_of_oracle_lift']:.3f}",
                 own["frac_sampling_alone"], own["attribution_corr"], f"{r['fit_seconds']:.1f}", f"{r['select_seconds_per_1k']:.2f}"]
        table.add_row(*cells, style="bold" if r["policy"] == "genco" else None)
        lines.append("| " + " | ".join(cells) + " |")
    console.out.print(table)
    atomic_write_json(out / "results.json", rows)
    atomic_write_bytes(out / "results.md", ("\n".join(lines) + "\n").encode())
    bars({r["policy"]: r["frac_of_oracle_lift"] for r in rows}, out / "frac_of_oracle_lift.png",
         ylabel="fraction of the oracle's lift", title="Share of the oracle's CTR lift over random, captured")
    console.out.print(f"report: {out}/ (results.md, results.json, frac_of_oracle_lift.png, attribution.png, attention.png, training curves, models/, element-report/)")
