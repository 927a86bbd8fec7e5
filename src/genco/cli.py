"""The `genco` command (CONTRACT.md section 2).

Exit status: 0 on success, 2 on bad input or usage (with a message naming file, line and rule), 1 on an
internal failure (a bug: please report it with the traceback printed).
"""

from __future__ import annotations

import sys
import traceback
from enum import Enum
from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.markup import escape
from rich.table import Table

from genco import console
from genco.console import err, note, out
from genco.contract import DEFAULT_MAX_CANDIDATES, Limits
from genco.errors import GencoInputError
from genco.files import json_text, output_folder
from genco.options import MAX_K, SEED_MAX, OptionError, Range, check_value
from genco.serve_config import ServeConfig

SEED_RANGE = Range(0, SEED_MAX)

app = typer.Typer(
    name="genco",
    help="Choose, per impression, the combination of ad creative elements most likely to be clicked (GenCO).",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
    rich_markup_mode="rich",
)


class OnBadRowChoice(str, Enum):
    error = "error"
    skip = "skip"


class RLObjectiveChoice(str, Enum):
    best_of_k = "best-of-k"
    mean = "mean"


class WideFitChoice(str, Enum):
    first = "first"
    after = "after"
    none = "none"


class NetworkJudgeChoice(str, Enum):
    shrink = "shrink"
    bar = "bar"
    keep = "keep"


class WidePriorsChoice(str, Enum):
    evidence = "evidence"
    ard = "ard"
    heldout = "heldout"


class FeaturesChoice(str, Enum):
    full = "full"
    partial = "partial"
    none = "none"


class FormChoice(str, Enum):
    tree = "tree"
    dense = "dense"
    gated = "gated"
    table = "table"


def numbers(text: str, flag: str, kind: type) -> tuple:
    """A comma-separated list of numbers (--variance-split 0.1,0.3,0.6); exit 2 naming the flag otherwise."""
    try:
        return tuple(kind(part) for part in text.split(","))
    except ValueError:
        raise GencoInputError(f"{flag}: expected comma-separated {kind.__name__}s, got {text!r}") from None


class KindChoice(str, Enum):
    requests = "requests"
    logs = "logs"
    selections = "selections"


Quiet = Annotated[bool, typer.Option("--quiet", "-q", help="No progress bars or notes on stderr (warnings and errors still show).")]
MaxCandidates = Annotated[int, typer.Option(help="Largest candidate pool a component of a row may have (more: a bad row, rule too-many-candidates).")]
OnBadRow = Annotated[
    OnBadRowChoice,
    typer.Option("--on-bad-row", help="[b]error[/b]: stop at the first bad row (exit 2); [b]skip[/b]: skip and count bad rows."),
]


@app.command()
def demo(
    quick: Annotated[bool, typer.Option("--quick", help="A small world and few epochs: under a minute, for CI.")] = False,
    out: Annotated[Path, typer.Option(help="Report folder.")] = Path("reports/demo"),
    seed: Annotated[int, typer.Option(help="World and training seed.")] = 1,
    quiet: Quiet = False,
) -> None:
    """The main job: simulate a world, log random exposure, train GenCO (and its ablations), compare with baselines."""
    from genco.demo import run_demo

    console.set_quiet(quiet)
    check_value("seed", seed, SEED_RANGE, integer=True)
    run_demo(output_folder(out), quick=quick, seed=seed)


@app.command()
def simulate(
    out_dir: Annotated[Path, typer.Option("--out", help="Folder to write logs.jsonl, requests.jsonl and the ground truth to.")],
    seed: Annotated[int, typer.Option(help="Random seed: the same seed gives the same world and logs.")] = 1,
    ads: Annotated[int, typer.Option(help="Number of products (ads).")] = 500,
    impressions: Annotated[int, typer.Option(help="Logged impressions, served uniformly at random.")] = 20_000,
    requests: Annotated[int, typer.Option(help="Fresh requests to select for and evaluate on.")] = 1_000,
    interaction: Annotated[float, typer.Option(help="Strength of element x element interactions (0: additive world).")] = 1.0,
    max_candidates: Annotated[int, typer.Option(help="Largest candidate pool of a component.")] = 15,
    revenue: Annotated[bool, typer.Option("--revenue", help="Give every ad a cost per click and log revenue.")] = False,
    cold_share: Annotated[float, typer.Option(help="Share of elements never shown in the logs (cold start).")] = 0.0,
    features: Annotated[FeaturesChoice, typer.Option(help="What element features show: full (a noisy view of quality, style and, gated, partners), partial (a much noisier one), none (elements known by id alone: features []).")] = "full",
    interaction_form: Annotated[FormChoice, typer.Option(help="Where synergy lives (docs/worlds.md): tree (pairs along a tree of components), dense (every pair), gated (which partner matters depends on content and user), table (small shared pools, a random effect per whole combination).")] = "tree",
    variance_split: Annotated[str, typer.Option(help="Table form: the split of the combination effect's variance between main effects, pairs and higher orders.")] = "0.1,0.3,0.6",
    table_sizes: Annotated[str, typer.Option(help="Table form: the pool size of each component (every ad shows these pools).")] = "2,5,4,5",
    quiet: Quiet = False,
) -> None:
    """Simulate a creative world: random-exposure logs, fresh requests, and the ground truth to evaluate against."""
    from genco.world import WorldConfig, simulate as run

    console.set_quiet(quiet)
    config = WorldConfig(
        seed=seed,
        ads=ads,
        impressions=impressions,
        requests=requests,
        interaction=interaction,
        max_candidates=max_candidates,
        revenue=revenue,
        cold_share=cold_share,
        features=FeaturesChoice(features).value,
        interaction_form=FormChoice(interaction_form).value,
        variance_split=numbers(variance_split, "--variance-split", float),
        table_sizes=numbers(table_sizes, "--table-sizes", int),
    )
    run(config, output_folder(out_dir))
    note(f"wrote {out_dir}/logs.jsonl ({impressions} impressions), {out_dir}/requests.jsonl ({requests} requests), ground truth")


@app.command()
def validate(
    path: Annotated[Path, typer.Argument(help="A .jsonl, .jsonl.gz or .parquet file, or a folder of them.")],
    kind: Annotated[Optional[KindChoice], typer.Option(help="What the rows are; detected from the first row when not given.")] = None,
    on_bad_row: OnBadRow = OnBadRowChoice.error,
    max_candidates: MaxCandidates = DEFAULT_MAX_CANDIDATES,
    as_json: Annotated[bool, typer.Option("--json", help="Print the summary as one JSON object.")] = False,
) -> None:
    """Check every row against the contract (CONTRACT.md section 1) and summarise the data set."""
    from genco.validate import summarise_path

    limits = Limits(max_candidates=max_candidates)
    summary = summarise_path(path, kind.value if kind else None, on_bad_row=on_bad_row.value, max_candidates=limits.max_candidates)
    data = summary.to_dict()
    if as_json:
        out.print_json(json_text(data))
        return
    head = f"[bold]{path}[/bold]: {data['rows']} valid {data['kind']} rows in {data['files']} file(s)"
    if summary.report.skipped:
        head += f"; [yellow]{summary.report.summary()}[/yellow]"
    out.print(head)
    if data["kind"] == "logs":
        coverage = data["propensity_coverage"]
        rng = data["propensity_range"]
        out.print(
            f"clicks {data['clicks']}  CTR {data['ctr']:.4%}  propensity on {coverage:.1%} of rows"
            + (f" (from {rng[0]:.3g} to {rng[1]:.3g})" if rng else "")
            + (f"  revenue on {data['revenue_coverage']:.1%}" if data["revenue_coverage"] else "")
        )
    if "ads" in data:
        lengths = ", ".join(f"{k} {v}" for k, v in data["feature_lengths"].items())
        out.print(f"ads {data['ads']}  feature lengths: {lengths}")
    table = Table("component", "rows", "share", "distinct elements", "candidates min / p50 / mean / p90 / max")
    for name, c in data["components"].items():
        stats = c.get("candidates")
        table.add_row(
            name,
            str(c["rows"]),
            f"{c['share_of_rows']:.1%}",
            str(c.get("distinct_elements", "")),
            f"{stats['min']} / {stats['p50']:g} / {stats['mean']:.1f} / {stats['p90']:g} / {stats['max']}" if stats else "",
        )
    out.print(table)
    for rule, first in summary.report.first_skipped.items():
        out.print(f"  first {rule}: {first}")


@app.command()
def evaluate(
    world: Annotated[Path, typer.Option(help="A world folder written by `genco simulate`.")],
    selections: Annotated[Path, typer.Option(help="Selection rows to score (one per request).")],
    requests: Annotated[Optional[Path], typer.Option(help="Requests the selections answer (default: WORLD/requests.jsonl).")] = None,
) -> None:
    """True CTR of selections on a simulated world, against random exposure and the oracle; prints one JSON line."""
    from genco.evaluate import evaluate_files

    figures = evaluate_files(world, selections, requests)
    print(json_text(figures))


@app.command()
def train(
    logs: Annotated[Path, typer.Option(help="Log rows (a file or a folder): impressions with shown and click.")],
    out: Annotated[Path, typer.Option(help="Model folder to write (weights, config, curves).")],
    epochs: Annotated[int, typer.Option(help="At most this many reward-model epochs (early stopping usually ends sooner).")] = 30,
    seed: Annotated[int, typer.Option(help="Random seed (split, initialisation, sampling).")] = 0,
    no_attention: Annotated[bool, typer.Option("--no-attention", help="Ablation: uniform cross-component attention.")] = False,
    no_cross_component: Annotated[bool, typer.Option("--no-cross-component", help="Diagnostic: no cross-component vector at all (every element scored alone; the paper's ablations keep it).")] = False,
    no_mil: Annotated[bool, typer.Option("--no-mil", help="Ablation: combination loss only, no element-level term.")] = False,
    no_rl: Annotated[bool, typer.Option("--no-rl", help="Ablation: no policy-gradient term.")] = False,
    id_shrinkage: Annotated[float, typer.Option(help="Impressions at which an element id's own vector counts half (n / (n + this)): rare ids stay at what their features say.")] = 10.0,
    combination_shrinkage: Annotated[float, typer.Option(help="Impressions at which a whole combination's own effect counts half.")] = 50.0,
    no_id_vectors: Annotated[bool, typer.Option("--no-id-vectors", help="Element ids give a scalar effect only, no vector in the embedding (ids cannot interact).")] = False,
    no_combination_effects: Annotated[bool, typer.Option("--no-combination-effects", help="No effect per whole combination: the bag logit is its instances' alone.")] = False,
    no_feature_effects: Annotated[bool, typer.Option("--no-feature-effects", help="No exactly fitted linear term in each element's features and user x features in the wide part.")] = False,
    no_pair_effects: Annotated[bool, typer.Option("--no-pair-effects", help="No exactly fitted effect per pair of element ids in the wide part.")] = False,
    no_user_id_effects: Annotated[bool, typer.Option("--no-user-id-effects", help="No exactly fitted user x element-id weights (which element suits whom, for elements known by id) in the wide part. They are left out anyway when users have more than 64 features.")] = False,
    wide_fit: Annotated[WideFitChoice, typer.Option(help="When the wide part (product appeal, element ids, features, pairs, combinations: a logistic regression) is fitted exactly, a MAP with priors chosen once for every reward model on their held-out rows: first (before the network, on each reward model's training rows; the network then learns what it cannot say, and --network-judge says how much of it is kept), after (the network and the wide part trained together by stochastic steps first) or none (stochastic steps only). Either way but none, training ends with the wide part solved on every row, the held-out ones too, given each network.")] = WideFitChoice.first,
    network_judge: Annotated[NetworkJudgeChoice, typer.Option(help="How much of the network each reward model keeps over its wide part: shrink (its best epoch at the weight 0, 0.25, 0.5, 0.75 or 1 whose held-out log loss is least; with --wide-fit after the wide part is solved again on the training rows at each weight), bar (with --wide-fit first: all of it if an epoch's held-out log loss beats the wide part alone, else none) or keep (its best epoch, whatever the wide part alone scored). With --wide-fit none the whole best epoch is kept.")] = NetworkJudgeChoice.shrink,
    wide_priors: Annotated[WidePriorsChoice, typer.Option(help="How the wide fit chooses each block's prior precision (how far element, pair and combination effects are shrunk): evidence (the precisions under which the training rows are most likely, lower orders first, one per block: no held-out rows needed), ard (the same, one per component and per pair of components, from the posterior's own variances: better on pairs of ids, three times the cost, not yet trusted on small logs) or heldout (a grid, by the held-out log loss). Either way every reward model gets the same priors.")] = WidePriorsChoice.evidence,
    batch_size: Annotated[int, typer.Option(help="Impressions per step (at most; small logs get smaller batches).")] = 1024,
    lr: Annotated[float, typer.Option(help="Learning rate of the reward model (cut by 0.3 whenever the held-out log loss stalls).")] = 0.01,
    k: Annotated[int, typer.Option("--k", help=f"Combinations sampled per context for the policy gradient (2 to {MAX_K}); each is credited with what it adds to the best of the K.")] = 16,
    rl_epochs: Annotated[int, typer.Option(help="Generator (policy-gradient) epochs after the reward model; the epoch whose held-out best-of-K reward is highest is kept.")] = 3,
    reward_models: Annotated[int, typer.Option(help="Reward models in the ensemble, each trained apart (seed, split); the served argmax is their mean's. 1: a single model.")] = 3,
    rl_weight: Annotated[float, typer.Option(help="lambda, the weight of the policy-gradient term.")] = 0.15,
    rl_objective: Annotated[RLObjectiveChoice, typer.Option(help="What the policy gradient maximises: best-of-k, the best of the K samples (what serving answers); mean, their mean reward with the mean of the K as baseline (the paper's; the policy collapses onto one combination).")] = RLObjectiveChoice.best_of_k,
    holdout: Annotated[float, typer.Option(help="Share of logs held out for AUC, log loss and early stopping (0: judge on the training rows, and say so).")] = 0.1,
    dim: Annotated[int, typer.Option(help="Element embedding width.")] = 32,
    context_dim: Annotated[int, typer.Option(help="Context embedding width (the paper uses 8).")] = 8,
    max_candidates: MaxCandidates = DEFAULT_MAX_CANDIDATES,
    on_bad_row: OnBadRow = OnBadRowChoice.error,
    quiet: Quiet = False,
) -> None:
    """Train the generator and the multi-instance reward model from logs; write a model folder."""
    from genco.attention_map import attention_map
    from genco.checkpoint import check_model_folder
    from genco.model import ModelConfig
    from genco.train import TrainConfig, judgement, read_logs, save_trained, split, train as run

    console.set_quiet(quiet)
    model_config = ModelConfig(dim=dim, context_dim=context_dim, attention=not no_attention,
                               cross_component=not no_cross_component, id_vectors=not no_id_vectors,
                               id_shrinkage=id_shrinkage, combination_effects=not no_combination_effects,
                               combination_shrinkage=combination_shrinkage, feature_effects=not no_feature_effects,
                               pair_effects=not no_pair_effects, user_id_effects=not no_user_id_effects)
    train_config = TrainConfig(epochs=epochs, seed=seed, batch_size=batch_size, lr=lr, k=k, rl_weight=rl_weight,
                               rl_epochs=rl_epochs, holdout=holdout, mil=not no_mil, rl=not no_rl,
                               reward_models=reward_models, rl_objective=rl_objective.value, wide_fit=wide_fit.value,
                               wide_priors=wide_priors.value, network_judge=network_judge.value)
    limits = Limits(max_candidates=max_candidates)
    check_model_folder(out)  # before hours of training, not after
    data, report = read_logs(logs, on_bad_row=on_bad_row.value, max_candidates=limits.max_candidates)
    if data.click.sum() == 0:
        raise GencoInputError(f"{logs}: no clicks in {len(data)} rows: nothing to learn from")
    note(f"training on {len(data)} impressions ({int(data.click.sum())} clicks), components: {', '.join(data.schema.components)}")
    caveat = judgement(data, train_config)["caveat"]
    if caveat:
        console.warn(caveat)
    result = run(data, model_config, train_config)
    attention = None
    if model_config.cross_component:  # drawn on held-out rows: which components the model lets interact
        _, heldout = split(len(data), train_config.holdout, train_config.seed)
        attention = attention_map(result.model, data, rows=heldout[:2000])
    save_trained(result, out, train_config, {"logs": str(logs), "skipped_rows": dict(report.skipped)}, attention)
    summary = result.summary()
    out_line = {k: summary[k] for k in ("best_epoch", "heldout_auc", "heldout_logloss", "judged_on", "heldout_rows",
                                        "heldout_clicks", "train_seconds", "impressions_per_second")}
    console.out.print(f"wrote {out}: " + json_text(out_line), soft_wrap=True)


SelectK = Annotated[int, typer.Option("--k", help=f"Combinations sampled and scored per request (greedy mode; 0 to {MAX_K}).")]
RefinePasses = Annotated[int, typer.Option(help="Coordinate-ascent passes on the reward model after sampling (greedy mode).")]
RefineStarts = Annotated[int, typer.Option(help="Greedy mode: coordinate ascent starts from this many of the best candidates.")]
Epsilon = Annotated[float, typer.Option(help="Explore mode: share of uniform exploration per component, in [0, 1].")]
EnumerateUpTo = Annotated[int, typer.Option(help="Search and best-of-k modes: requests whose pools make at most this many combinations get the reward model's exact argmax (0: never).")]


class ModeChoice(str, Enum):
    search = "search"
    best_of_k = "best-of-k"
    argmax = "argmax"


Mode = Annotated[ModeChoice, typer.Option(help="Greedy answers: search (best of the generator's 1 + K by the reward model, refined by coordinate ascent; the most thorough), best-of-k (no ascent; the default: about 0.002 of the oracle's lift below search, a fraction of its cost) or argmax (the generator's most likely combination alone; the fastest). README, *Serving*, gives each one's cost and quality.")]


class RuntimeChoice(str, Enum):
    auto = "auto"
    torch = "torch"
    onnx = "onnx"


Runtime = Annotated[RuntimeChoice, typer.Option(help="What runs greedy best-of-k and argmax answers: torch (the lean program, genco/lean.py), onnx (its ONNX export in ONNX Runtime, about twice as fast at batch 1; the export takes 10-25 s the first time a model layout is seen, then it is cached: $GENCO_CACHE, default ~/.cache/genco; a reload of a retrained model swaps its weights in) or auto (onnx where genco[onnx] is installed, else torch; serve's default). The same answers either way; search mode and explore answers use the full model.")]


@app.command()
def select(
    model: Annotated[Path, typer.Option(help="A model folder written by `genco train`.")],
    requests: Annotated[Path, typer.Option(help="Request rows (a file or a folder).")],
    out: Annotated[Path, typer.Option(help="Selection rows to write, one per request, same order.")],
    greedy: Annotated[bool, typer.Option("--greedy/--explore", help="Greedy: the best combination found, the same for the same request whatever the seed (propensity 1). Explore: a sample from the policy with its propensity.")] = False,
    mode: Mode = ModeChoice.best_of_k,
    runtime: Runtime = RuntimeChoice.torch,
    k: SelectK = 16,
    refine_passes: RefinePasses = 2,
    refine_starts: RefineStarts = 4,
    epsilon: Epsilon = 0.05,
    enumerate_up_to: EnumerateUpTo = 256,
    seed: Annotated[int, typer.Option(help="Random seed for sampling (explore mode; greedy answers do not depend on it).")] = 0,
    max_candidates: MaxCandidates = DEFAULT_MAX_CANDIDATES,
    on_bad_row: OnBadRow = OnBadRowChoice.error,
    quiet: Quiet = False,
) -> None:
    """Choose one combination per request: generate K, score with the reward model, answer the best (or explore)."""
    from genco.checkpoint import load_model
    from genco.lean import greedy_program
    from genco.select import SelectConfig, select_file

    console.set_quiet(quiet)
    config = SelectConfig(mode=mode.value, k=k, refine_passes=refine_passes, refine_starts=refine_starts, epsilon=epsilon,
                          enumerate_up_to=enumerate_up_to)
    check_value("seed", seed, SEED_RANGE, integer=True)
    limits = Limits(max_candidates=max_candidates)
    loaded, _ = load_model(model)
    program = greedy_program(loaded, config.mode, runtime.value) if greedy else None
    report = select_file(loaded, requests, out, greedy=greedy, config=config, seed=seed, on_bad_row=on_bad_row.value,
                         max_candidates=limits.max_candidates, program=program)
    note(f"wrote {report.rows} selections to {out}")


@app.command()
def serve(
    model: Annotated[Path, typer.Option(help="A model folder written by `genco train`. A new model written into it (genco train --out) is served without a restart.")],
    host: Annotated[str, typer.Option(help="Address to listen on.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Port to listen on (0: any free port, printed at start).")] = 8000,
    mode: Mode = ModeChoice.best_of_k,
    runtime: Runtime = RuntimeChoice.auto,
    k: SelectK = 16,
    refine_passes: RefinePasses = 2,
    refine_starts: RefineStarts = 4,
    epsilon: Epsilon = 0.05,
    enumerate_up_to: EnumerateUpTo = 256,
    max_candidates: MaxCandidates = DEFAULT_MAX_CANDIDATES,
    max_requests: Annotated[int, typer.Option(help="Request rows one POST /v1/select may hold (more: 413).")] = Limits.max_requests,
    max_body_bytes: Annotated[int, typer.Option(help="Largest request body in bytes (larger: 413, before it is read).")] = Limits.max_body_bytes,
    batch_window_ms: Annotated[float, typer.Option(help="Concurrent calls are answered together: once one is queued, wait this long for more (0: take only what is already waiting).")] = ServeConfig.batch_window_ms,
    max_batch: Annotated[int, typer.Option(help="Requests one batch gathers at most (a single call may hold more).")] = ServeConfig.max_batch,
    workers: Annotated[int, typer.Option(help="Server processes sharing the port, each with its own model copy and batcher.")] = ServeConfig.workers,
    threads: Annotated[int, typer.Option(help="Torch threads per process (0: the cores, divided among the workers).")] = ServeConfig.threads,
    reload_seconds: Annotated[float, typer.Option(help="How often the model folder is checked for a new model (0: never).")] = ServeConfig.reload_seconds,
    log_decisions: Annotated[Optional[Path], typer.Option(help="Write every served decision to this folder as a log row without its click (rotating files, each published whole); `genco join` adds the clicks.")] = None,
    rotate_rows: Annotated[int, typer.Option(help="Decision rows per file at most.")] = ServeConfig.rotate_rows,
    rotate_seconds: Annotated[float, typer.Option(help="A decision file is published once it is this old, full or not.")] = ServeConfig.rotate_seconds,
) -> None:
    """Serve selections over HTTP: POST /v1/select, GET /healthz, GET /metrics (CONTRACT.md section 3)."""
    from genco.select import SelectConfig
    from genco.serve import run_server

    config = ServeConfig(host=host, port=port, batch_window_ms=batch_window_ms, max_batch=max_batch, workers=workers,
                         threads=threads, reload_seconds=reload_seconds, runtime=runtime.value,
                         log_decisions=None if log_decisions is None else str(log_decisions),
                         rotate_rows=rotate_rows, rotate_seconds=rotate_seconds)
    select_config = SelectConfig(mode=mode.value, k=k, refine_passes=refine_passes, refine_starts=refine_starts, epsilon=epsilon,
                                 enumerate_up_to=enumerate_up_to)
    limits = Limits(max_candidates=max_candidates, max_requests=max_requests, max_body_bytes=max_body_bytes)
    run_server(model, config, select_config, limits)


@app.command()
def export(
    model: Annotated[Path, typer.Option(help="A model folder written by `genco train`.")],
    onnx: Annotated[Path, typer.Option("--onnx", help="The .onnx file to write: the greedy best-of-k program (argmax with K = 0) for ONNX Runtime or any ONNX runtime.")],
    quiet: Quiet = False,
) -> None:
    """Export the model's greedy program to ONNX, for ad servers that are not Python (inputs and outputs: README, *Serving*)."""
    from genco.checkpoint import load_model
    from genco.export import export_onnx, optimized
    from genco.files import atomic_write_bytes
    from genco.lean import LeanGreedy

    console.set_quiet(quiet)
    loaded, meta = load_model(model)
    if not LeanGreedy.supports(loaded):
        raise GencoInputError(f"--model {model}: a variant with a generator of its own ({type(loaded).__name__}); only GenCO's exports")
    with console.progress("exporting", None):
        atomic_write_bytes(onnx, optimized(export_onnx(loaded)))
    note(f"wrote {onnx} ({meta['model_version']})")


@app.command()
def join(
    decisions: Annotated[Path, typer.Option(help="A decision-log folder written by `genco serve --log-decisions` (or a file of decision rows).")],
    clicks: Annotated[Path, typer.Option(help="Click events: rows with the request_id of a served decision and optionally revenue (.jsonl, .jsonl.gz, .parquet, or a folder).")],
    out: Annotated[Path, typer.Option(help="Log rows to write, ready for `genco train`: click 1 where a click event names the decision, else 0.")],
    quiet: Quiet = False,
) -> None:
    """Join click events into served decisions: the log of what was served, for the next `genco train`."""
    from genco.decisions import join as join_decisions

    console.set_quiet(quiet)
    report = join_decisions(decisions, clicks, out)
    if report.unfinished_files:
        console.warn(f"{decisions}: {report.unfinished_files} decision file(s) still open (a running server's, or a "
                     "killed one's) were not read")
    console.out.print(f"wrote {out}: " + json_text(report.summary()), soft_wrap=True)


class OPEModeChoice(str, Enum):
    greedy = "greedy"
    explore = "explore"


@app.command()
def ope(
    logs: Annotated[Path, typer.Option(help="Log rows with propensities (a file or a folder): what was served, and clicked.")],
    policy: Annotated[str, typer.Option(help="The target: a model folder written by `genco train` (judged on every row: give it logs it was not trained on), or a policy name of `genco bench --list` (fitted on --fit-share of the logs, judged on the rest).")],
    mode: Annotated[OPEModeChoice, typer.Option(help="The target's answers: greedy (its best guess, as served by default) or explore (sampled, with --epsilon uniform exploration).")] = OPEModeChoice.greedy,
    select_mode: Annotated[ModeChoice, typer.Option(help="Greedy answers of a GenCO target: search, best-of-k or argmax (as `genco serve --mode`).")] = ModeChoice.best_of_k,
    epsilon: Epsilon = 0.05,
    samples: Annotated[int, typer.Option(help="Draws per impression of a stochastic target (its explore mode): the direct method averages them; for policies other than GenCO they also estimate the probability of the logged combination.")] = 32,
    fit_share: Annotated[float, typer.Option(help="A named target (and, for one that is not GenCO, the direct method's reward model) is fitted on this share of the logs.")] = 0.5,
    epochs: Annotated[int, typer.Option(help="At most this many epochs for a GenCO fitted here.")] = 30,
    assume_uniform: Annotated[bool, typer.Option("--assume-uniform", help="Rows without a propensity were served uniformly at random: give them the product of 1 / len(candidates).")] = False,
    world: Annotated[Optional[Path], typer.Option(help="A simulated world (`genco simulate`): also print the target's true CTR, and allow the oracle targets.")] = None,
    reward_model: Annotated[Optional[Path], typer.Option(help="A model folder whose reward model the direct method and DR read, instead of the target's own (a model judging its own argmax is optimistic) or one fitted here. It must have been trained on rows of the same form as these logs.")] = None,
    seed: Annotated[int, typer.Option(help="Random seed: the fit split, explore draws, fitting.")] = 0,
    out: Annotated[Optional[Path], typer.Option(help="Also write the result as one JSON object to this file.")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the result as one JSON object instead of a table.")] = False,
    max_candidates: MaxCandidates = DEFAULT_MAX_CANDIDATES,
    on_bad_row: OnBadRow = OnBadRowChoice.error,
    quiet: Quiet = False,
) -> None:
    """Estimate a policy's CTR (and RPM) from logs before it goes live: IPS, SNIPS, pseudo-inverse, direct, doubly robust, replay."""
    from genco.files import atomic_write_json
    from genco.checkpoint import load_model
    from genco.ope import OPEConfig, RewardModel, check_reward_model, estimate_model, estimate_named
    from genco.select import SelectConfig
    from genco.train import read_logs

    console.set_quiet(quiet)
    config = OPEConfig(mode=mode.value, epsilon=epsilon, samples=samples, fit_share=fit_share, seed=seed, epochs=epochs,
                       assume_uniform=assume_uniform)
    limits = Limits(max_candidates=max_candidates)
    truth = None
    if world is not None:
        from genco.world import World

        truth = World.load(world)
    reader = None
    if reward_model is not None:
        scorer, scorer_meta = load_model(reward_model)
        reader = RewardModel(scorer, f"the reward model of {reward_model} ({scorer_meta['model_version']})")
    target = Path(policy)
    if target.is_dir():
        model, meta = load_model(target)
        data, _ = read_logs(logs, on_bad_row=on_bad_row.value, max_candidates=limits.max_candidates, schema=model.schema)
        if reader is not None:
            check_reward_model(reader, data, f"--reward-model {reward_model}")  # before the target's draws
        with console.progress("estimating", None):
            result = estimate_model(data, model, config, SelectConfig(mode=select_mode.value, epsilon=epsilon),
                                    name=meta["model_version"], world=truth, reward_model=reader)
    else:  # with a reward model, the logs are read in its form: a row it cannot score is a bad row
        data, _ = read_logs(logs, on_bad_row=on_bad_row.value, max_candidates=limits.max_candidates,
                            schema=reader.model.schema if reader is not None else None)
        with console.progress(f"fitting {policy} and estimating", None):
            result = estimate_named(data, policy, config, world=truth, reward_model=reader)
    for warning in result.warnings:
        console.warn(f"{warning['rule']}: {warning['message']}")
    if out is not None:
        atomic_write_json(out, result.to_dict())
    if as_json:
        print(json_text(result.to_dict()))
        return
    _print_ope(result)


def _print_ope(result) -> None:
    head = (f"[bold]{escape(result.policy)}[/bold] ({result.mode}) judged on {result.rows} impressions"
            + (f", fitted on {result.fit_rows}" if result.fit_rows else "") + f"; logged CTR {result.logged_ctr:.4%}")
    if result.truth is not None:
        head += f"; true CTR {result.truth:.4%}"
    if result.truth_rpm is not None:
        head += f", true RPM {result.truth_rpm:.4g}"
    out.print(head, soft_wrap=True)
    for title, estimates, scale in (("CTR", result.estimates, 100.0), ("RPM", result.rpm, 1.0)):
        if not estimates:
            continue
        table = Table("estimator", title, "95% interval", "interval", "ESS", "n", title=title)
        for e in estimates:
            mark = " (recommended)" if title == "CTR" and e.estimator == result.recommended else ""
            unit = "%" if scale == 100.0 else ""
            table.add_row(e.estimator + mark, f"{scale * e.value:.4g}{unit}", f"{scale * e.low:.4g} to {scale * e.high:.4g}",
                          e.interval, f"{e.ess:.0f}", str(e.n))
        out.print(table)
    for name, why in result.unavailable.items():
        out.print(f"  {name}: not computed ({why})", soft_wrap=True)
    out.print(f"  dm and dr use {result.reward_model}", soft_wrap=True)


@app.command()
def report(
    model: Annotated[Path, typer.Option(help="A model folder written by `genco train`.")],
    logs: Annotated[Path, typer.Option(help="Log rows (a file or a folder) whose elements to report on.")],
    out: Annotated[Path, typer.Option(help="Folder to write report.html (self-contained) and elements.csv, products.csv, pairs.csv to.")],
    max_rows: Annotated[int, typer.Option(help="Logged impressions the reward model is asked about (a random sample; counts use every row).")] = 5000,
    pair_rows: Annotated[int, typer.Option(help="Of those, impressions whose pairs of components are scored in full (the cost grows with the product of two pools).")] = 300,
    seed: Annotated[int, typer.Option(help="Random seed of the sample.")] = 0,
    max_candidates: MaxCandidates = DEFAULT_MAX_CANDIDATES,
    on_bad_row: OnBadRow = OnBadRowChoice.error,
    quiet: Quiet = False,
) -> None:
    """Which elements work, apart from the product's appeal: per element counts, raw CTR, attributed effect, label; products; pairs."""
    from genco.checkpoint import load_model
    from genco.report import LABELS, build_report, write_report
    from genco.train import read_logs

    console.set_quiet(quiet)
    check_value("seed", seed, SEED_RANGE, integer=True)
    check_value("max_rows", max_rows, Range(1, 10_000_000), integer=True)
    check_value("pair_rows", pair_rows, Range(0, 10_000_000), integer=True)
    limits = Limits(max_candidates=max_candidates)
    loaded, meta = load_model(model)
    output_folder(out)
    data, _ = read_logs(logs, on_bad_row=on_bad_row.value, max_candidates=limits.max_candidates, schema=loaded.schema)
    with console.progress("attributing", None):
        built = build_report(loaded, data, max_rows=max_rows, pair_rows_max=pair_rows, seed=seed, model_version=meta["model_version"])
    files = write_report(built, out)
    labels = {name: sum(r.label == name for r in built.elements) for name in LABELS}
    note(f"wrote {files['html']} and 3 CSV files: {len(built.elements)} elements ("
         + ", ".join(f"{v} {k}" for k, v in labels.items()) + f"), {len(built.products)} products, {len(built.pairs)} pairs")


@app.command()
def bench(
    policies: Annotated[str, typer.Option(help="Comma-separated policy names (see --list); default: all.")] = "",
    scenarios: Annotated[str, typer.Option(help="Comma-separated: offline, closed-loop, interaction, candidates, log-size, cold-start, structure (synergy in other forms: docs/worlds.md), scaling.")] = "offline,closed-loop,interaction,candidates,log-size,cold-start,structure,scaling",
    seeds: Annotated[int, typer.Option(help="Seeds of the offline scenario (mean and spread); the sweeps, cold start and the loop use seed 1.")] = 3,
    quick: Annotated[bool, typer.Option("--quick", help="A small version of everything (CI): minutes, not half an hour.")] = False,
    impressions: Annotated[Optional[int], typer.Option(help="Logged impressions of the offline, interaction and cold-start worlds (default 50,000; quick 4,000); the candidates sweep logs 10,000 and scores 400 requests, the scaling scenario logs 2,000.")] = None,
    out: Annotated[Path, typer.Option(help="Report folder: results.md, results.json, plots.")] = Path("reports/bench"),
    json_path: Annotated[Optional[Path], typer.Option("--json", help="Also write every result row as a JSON list here.")] = None,
    fixed_world: Annotated[bool, typer.Option("--fixed-world", help="Offline: keep the world of seed 1 for every seed, so the spread is that of training and selection alone.")] = False,
    list_policies: Annotated[bool, typer.Option("--list", help="List the policy names and exit.")] = False,
    quiet: Quiet = False,
) -> None:
    """Run policies side by side on simulated worlds over several seeds; print one table (Markdown), write JSON and plots."""
    from genco.bench import WORLD_POLICIES
    from genco.bench_plan import BenchPlan, run_bench
    from genco.policies import policy_names

    console.set_quiet(quiet)
    if list_policies:
        console.out.print("\n".join([*WORLD_POLICIES, *policy_names()]))
        return
    output_folder(out)
    plan = BenchPlan.make(quick=quick, seeds=seeds, impressions=impressions,
                          policies=[p for p in policies.split(",") if p], scenarios=[s for s in scenarios.split(",") if s],
                          fixed_world=fixed_world)
    run_bench(plan, out, json_path)


def main(argv: list[str] | None = None) -> None:
    """Console-script entry: runs the app and turns errors into the contract's exit statuses."""
    try:
        app(args=argv, prog_name="genco")  # usage errors: typer prints them and exits 2 itself
    except OptionError as exc:
        err.print(f"[bold red]error:[/bold red] {escape(exc.for_command_line())}", soft_wrap=True)
        sys.exit(exc.exit_code)
    except GencoInputError as exc:
        err.print(f"[bold red]error:[/bold red] {escape(str(exc))}", soft_wrap=True)
        sys.exit(exc.exit_code)
    except KeyboardInterrupt:
        err.print("interrupted")
        sys.exit(130)
    except Exception:  # a bug: say so, show where, exit 1
        err.print("[bold red]internal error[/bold red] (a bug in genco; please report it with this traceback):")
        traceback.print_exc()
        sys.exit(1)


if __name__ == "__main__":
    main()
