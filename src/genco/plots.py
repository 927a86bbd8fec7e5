"""Pictures a person would rather look at than read: training curves, regret curves, bar charts."""

from __future__ import annotations

import io
from collections.abc import Sequence
from pathlib import Path

import matplotlib
import numpy as np

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from genco.files import atomic_write_bytes  # noqa: E402


def _save(fig, path: str | Path) -> None:
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=110, bbox_inches="tight")
    plt.close(fig)
    atomic_write_bytes(path, buffer.getvalue())


def training_curve(history: Sequence, path: str | Path, title: str = "GenCO training") -> None:
    """Reward model(s): train and held-out log loss, held-out AUC, per member of the ensemble, the kept epoch
    marked. Generator: held-out reward of the best of its greedy pick and K samples, before and after each
    policy-gradient epoch."""
    reward = [r for r in history if r.stage == "reward"]
    gen = [r for r in history if r.stage == "generator"]
    fig, axes = plt.subplots(1, 3, figsize=(14, 3.6))
    for member in sorted({r.member for r in reward}):
        rows = [r for r in reward if r.member == member]
        x = [r.epoch for r in rows]
        name = f"reward model {member + 1}"
        color = f"C{member}"
        axes[0].plot(x, [r.train_comb for r in rows], "--", color=color, alpha=0.6, label=f"{name}: train BCE")
        axes[0].plot(x, [r.heldout_logloss for r in rows], "o-", color=color, label=f"{name}: held-out")
        axes[1].plot(x, [r.heldout_auc for r in rows], "o-", color=color, label=name)
        kept = min(rows, key=lambda r: r.heldout_logloss)
        axes[0].plot([kept.epoch], [kept.heldout_logloss], "*", color="black", markersize=12)
        axes[1].plot([kept.epoch], [kept.heldout_auc], "*", color="black", markersize=12)
    axes[0].set_ylabel("log loss")
    axes[0].legend(fontsize=7)
    axes[1].set_ylabel("held-out AUC")
    axes[1].legend(fontsize=7)
    for ax in axes[:2]:
        ax.set_xlabel("reward-model epoch (star: kept)")
    if gen:
        axes[2].plot([r.epoch for r in gen], [r.heldout_generator_reward for r in gen], "o-", color="tab:purple")
    else:
        axes[2].text(0.5, 0.5, "no policy gradient (--no-rl)", ha="center", va="center", transform=axes[2].transAxes)
    axes[2].set_xlabel("generator epoch (0: before the policy gradient)")
    axes[2].set_ylabel("held-out creative logit, best of 1 + K")
    for ax in axes:
        ax.grid(alpha=0.3)
    fig.suptitle(title)
    _save(fig, path)


def curves(series: dict[str, tuple[Sequence[float], Sequence[float]]], path: str | Path, *, xlabel: str, ylabel: str,
           title: str, bands: dict[str, tuple[Sequence[float], Sequence[float]]] | None = None, log: bool = False) -> None:
    """Several named (x, y) lines on one chart, with optional shaded (low, high) bands; log: both axes logarithmic."""
    fig, ax = plt.subplots(figsize=(7, 4))
    if log:
        ax.set_xscale("log")
        ax.set_yscale("log")
    for name, (x, y) in series.items():
        line = ax.plot(x, y, "o-", label=name, markersize=3)[0]
        if bands and name in bands:
            low, high = bands[name]
            ax.fill_between(x, low, high, alpha=0.15, color=line.get_color())
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    _save(fig, path)


def bars(values: dict[str, float], path: str | Path, *, ylabel: str, title: str, errors: dict[str, float] | None = None) -> None:
    fig, ax = plt.subplots(figsize=(max(5, 0.9 * len(values)), 3.8))
    names = list(values)
    ax.bar(names, [values[n] for n in names], yerr=[(errors or {}).get(n, 0.0) for n in names], capsize=3, color="tab:blue")
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    ax.grid(axis="y", alpha=0.3)
    plt.setp(ax.get_xticklabels(), rotation=30, ha="right")
    _save(fig, path)


def attribution(components: Sequence, path: str | Path, title: str = "Element attribution: reward model against the truth") -> None:
    """One panel per component: every candidate swapped into the oracle's combination, the reward model's
    creative logit against the world's true click logit, both centred within the request (genco.attribution)."""
    columns = min(3, len(components))
    rows = -(-len(components) // columns)
    fig, axes = plt.subplots(rows, columns, figsize=(3.6 * columns, 3.2 * rows), squeeze=False, layout="constrained")
    rng = np.random.default_rng(0)
    for ax in axes.flat[len(components):]:
        ax.set_visible(False)
    for ax, record in zip(axes.flat, components):
        truth, model = np.concatenate(record.truth), np.concatenate(record.model)
        keep = rng.permutation(len(truth))[:3000]  # enough points to see, few enough to draw
        ax.scatter(truth[keep], model[keep], s=4, alpha=0.3)
        ax.set_title(f"{record.component}\ncorr {record.corr:.2f}, captured {record.captured:.2f}", fontsize=9)
        ax.set_xlabel("true logit (centred)")
        ax.grid(alpha=0.3)
    for row in axes:
        row[0].set_ylabel("reward model logit (centred)")
    fig.suptitle(title)
    _save(fig, path)


def attention_maps(amap, path: str | Path, *, partners: Sequence[tuple[str, str]] = (),
                   title: str = "Where cross-component attention looks") -> None:
    """The two maps of a genco.attention_map.AttentionMap side by side (reward models, generator): the row
    component's weight on the column component relative to a uniform spread (1 = uniform, white); pairs that
    truly interact, where known, are framed."""
    grids = {"reward models: among a combination's elements": amap.reward,
             "generator: over every candidate of the request": amap.generator}
    components = amap.components
    fig, axes = plt.subplots(1, len(grids), figsize=(4.6 * len(grids), 4.2), squeeze=False, layout="constrained")
    index = {name: i for i, name in enumerate(components)}
    framed = {(index[a], index[b]) for a, b in partners if a in index and b in index}
    framed |= {(j, i) for i, j in framed}
    top = max(2.0, max(float(np.nanmax(g)) for g in grids.values()))
    for ax, (name, grid) in zip(axes[0], grids.items()):
        image = ax.imshow(grid, cmap="RdBu_r", norm=matplotlib.colors.TwoSlopeNorm(1.0, 0.0, top))
        for (i, j), value in np.ndenumerate(grid):
            if np.isfinite(value):
                ax.text(j, i, f"{value:.2f}", ha="center", va="center", fontsize=7)
            if (i, j) in framed:
                ax.add_patch(plt.Rectangle((j - 0.5, i - 0.5), 1, 1, fill=False, edgecolor="black", linewidth=1.6))
        ax.set_xticks(range(len(components)), components, rotation=45, ha="right", fontsize=8)
        ax.set_yticks(range(len(components)), components, fontsize=8)
        ax.set_title(name, fontsize=9)
        ax.set_xlabel("attends to")
    label = "weight relative to uniform" + (" (framed: truly interacting)" if framed else "")
    fig.colorbar(image, ax=axes[0].tolist(), shrink=0.8, label=label)
    fig.suptitle(title)
    _save(fig, path)
