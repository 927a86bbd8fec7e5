"""The `genco` command (CONTRACT.md section 2).

Exit status: 0 on success, 2 on bad input or usage (with a message naming file, line and rule), 1 on an
internal failure (a bug: please report it with the traceback printed).
"""

from __future__ import annotations

import json
import sys
import traceback
from enum import Enum
from pathlib import Path
from typing import Annotated, Optional

import click
import typer
from rich.markup import escape
from rich.table import Table

from genco import console
from genco.console import err, note, out
from genco.errors import GencoInputError

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


class KindChoice(str, Enum):
    requests = "requests"
    logs = "logs"
    selections = "selections"


Quiet = Annotated[bool, typer.Option("--quiet", "-q", help="No progress bars or notes on stderr.")]
OnBadRow = Annotated[
    OnBadRowChoice,
    typer.Option("--on-bad-row", help="[b]error[/b]: stop at the first bad row (exit 2); [b]skip[/b]: skip and count bad rows."),
]


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
    )
    run(config, out_dir)
    note(f"wrote {out_dir}/logs.jsonl ({impressions} impressions), {out_dir}/requests.jsonl ({requests} requests), ground truth")


@app.command()
def validate(
    path: Annotated[Path, typer.Argument(help="A .jsonl, .jsonl.gz or .parquet file, or a folder of them.")],
    kind: Annotated[Optional[KindChoice], typer.Option(help="What the rows are; detected from the first row when not given.")] = None,
    on_bad_row: OnBadRow = OnBadRowChoice.error,
    max_candidates: Annotated[int, typer.Option(help="Largest candidate pool a row may have.")] = 4096,
    as_json: Annotated[bool, typer.Option("--json", help="Print the summary as one JSON object.")] = False,
) -> None:
    """Check every row against the contract (CONTRACT.md section 1) and summarise the data set."""
    from genco.validate import summarise_path

    summary = summarise_path(path, kind.value if kind else None, on_bad_row=on_bad_row.value, max_candidates=max_candidates)
    data = summary.to_dict()
    if as_json:
        out.print_json(json.dumps(data))
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
    print(json.dumps(figures))


def main() -> None:
    """Console-script entry: runs the app and turns errors into the contract's exit statuses."""
    try:
        app(standalone_mode=False)
    except click.exceptions.Exit as exc:
        sys.exit(exc.exit_code)
    except click.exceptions.Abort:
        err.print("aborted")
        sys.exit(130)
    except click.ClickException as exc:
        exc.show()
        sys.exit(2)
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
