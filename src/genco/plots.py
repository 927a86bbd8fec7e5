"""Pictures a person would rather look at than read: training curves, regret curves, bar charts."""

from __future__ import annotations

import io
from collections.abc import Sequence
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from genco.files import atomic_write_bytes  # noqa: E402


def _save(fig, path: str | Path) -> None:
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=110, bbox_inches="tight")
    plt.close(fig)
    atomic_write_bytes(path, buffer.getvalue())


def training_curve(history: Sequence, path: str | Path, title: str = "GenCO training") -> None:
    """Reward model: train and held-out log loss, held-out AUC. Generator: held-out reward of its greedy pick."""
    reward = [r for r in history if r.stage == "reward"]
    gen = [r for r in history if r.stage == "generator"]
    fig, axes = plt.subplots(1, 3, figsize=(14, 3.6))
    x = [r.epoch for r in reward]
    axes[0].plot(x, [r.train_comb for r in reward], "o-", label="train: combination BCE")
    axes[0].plot(x, [r.heldout_logloss for r in reward], "o-", label="held-out log loss")
    axes[0].set_ylabel("log loss")
    axes[0].legend()
    axes[1].plot(x, [r.heldout_auc for r in reward], "o-", color="tab:green")
    axes[1].set_ylabel("held-out AUC")
    best = min(reward, key=lambda r: r.heldout_logloss)
    for ax in axes[:2]:
        ax.axvline(best.epoch, color="grey", linestyle=":")
        ax.set_xlabel("reward-model epoch (dotted: kept)")
    axes[2].plot([r.epoch for r in history], [r.heldout_generator_reward for r in history], "o-", color="tab:purple")
    if gen:
        axes[2].axvspan(gen[0].epoch - 0.5, gen[-1].epoch + 0.5, color="tab:purple", alpha=0.08, label="policy gradient")
        axes[2].legend()
    axes[2].set_xlabel("epoch")
    axes[2].set_ylabel("creative logit of the generator's pick")
    for ax in axes:
        ax.grid(alpha=0.3)
    fig.suptitle(title)
    _save(fig, path)


def curves(series: dict[str, tuple[Sequence[float], Sequence[float]]], path: str | Path, *, xlabel: str, ylabel: str,
           title: str, bands: dict[str, tuple[Sequence[float], Sequence[float]]] | None = None) -> None:
    """Several named (x, y) lines on one chart, with optional shaded (low, high) bands."""
    fig, ax = plt.subplots(figsize=(7, 4))
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
