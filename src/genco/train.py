"""Training GenCO from logs: L = L_comb + mil_weight * L_elem + lambda * L_RL, top to bottom.

- L_comb: binary cross-entropy of the reward model's P(click) for the combination that was shown.
- L_elem: the multi-instance term; every shown element (instance) inherits its bag's click, judged on its
  own instance score from the shared phi.
- L_RL: REINFORCE. K combinations per context are sampled from pi, rewarded by the reward model's creative
  logit (product appeal left out), with the mean of the K as baseline. Its gradient trains the generator's
  own parameters; phi and the encoders reach the generator through the forward pass (see
  GenCO.policy_scores for why).

Clicks are sparse, so id and product embeddings overfit within a few epochs: ids are dropped out and decayed,
and training stops early on the held-out log loss, keeping the best epoch's weights.
"""

from __future__ import annotations

import copy
import time
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from genco import console
from genco.data import EncodedRows, FeatureSchema, batch_indices, collate
from genco.metrics import auc, log_loss
from genco.model import GenCO, ModelConfig


@dataclass
class TrainConfig:
    epochs: int = 12
    batch_size: int = 512  # at most; small logs get smaller batches (see min_steps)
    min_steps: int = 100  # optimizer steps per epoch at least: a small log still gets a real number of updates
    lr: float = 3e-3
    lr_decay: float = 0.5  # learning rate multiplied by this after every epoch: sparse clicks make late steps noisy
    weight_decay: float = 1e-4
    embedding_decay: float = 0.05  # decoupled decay of id embeddings: rare ids stay near zero
    holdout: float = 0.1  # share of logs held out for AUC / log loss and early stopping
    patience: int = 2  # epochs without held-out improvement before stopping
    seed: int = 0
    k: int = 16  # combinations sampled per context for the policy gradient
    rl_rows: int = 256  # contexts of each batch the policy gradient samples for (the costly part of a step)
    rl_weight: float = 0.15  # lambda
    mil_weight: float = 1.0
    mil: bool = True
    rl: bool = True
    threads: int = 0  # torch threads; 0: all cores

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class EpochRecord:
    epoch: int
    train_loss: float
    train_comb: float
    train_elem: float
    train_rl: float
    heldout_auc: float
    heldout_logloss: float
    seconds: float


@dataclass
class TrainResult:
    model: GenCO
    history: list[EpochRecord] = field(default_factory=list)
    best_epoch: int = 0
    seconds: float = 0.0
    impressions: int = 0

    @property
    def best(self) -> EpochRecord:
        return self.history[self.best_epoch - 1]

    def summary(self) -> dict[str, Any]:
        return {
            "best_epoch": self.best_epoch,
            "heldout_auc": self.best.heldout_auc,
            "heldout_logloss": self.best.heldout_logloss,
            "train_seconds": self.seconds,
            "impressions": self.impressions,
            "impressions_per_second": self.impressions * len(self.history) / max(self.seconds, 1e-9),
        }


def split(n: int, holdout: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    order = np.random.default_rng([seed, 7]).permutation(n)
    cut = int(round(n * holdout)) if n > 1 else 0
    return order[cut:], order[:cut]


def losses(model: GenCO, batch, config: TrainConfig, generator: torch.Generator) -> dict[str, torch.Tensor]:
    """The loss terms on one batch, each visible here (CleanRL style)."""
    enc = model.encode(batch)
    shown = batch.shown[:, None, :]  # (B, 1, M) the logged combination: the bag
    y = batch.click  # (B,)
    out: dict[str, torch.Tensor] = {}
    creative, instance, present = model.reward(enc, shown)  # (B, 1), (B, 1, M), (B, 1, M)
    # combination level: the bag's click
    out["comb"] = F.binary_cross_entropy_with_logits(enc.appeal + creative[:, 0], y)
    # element level (MIL): every shown element inherits its bag's click, judged on its own instance score
    if config.mil:
        element_logit = enc.appeal[:, None, None] + model.element_bias + instance  # (B, 1, M)
        labels = y[:, None, None].expand_as(element_logit)
        out["elem"] = F.binary_cross_entropy_with_logits(element_logit[present], labels[present])
    # policy gradient: K samples from pi, rewarded by the reward model's creative part, mean-of-K baseline
    if config.rl:
        enc = enc.rows(slice(0, config.rl_rows))  # the batch is shuffled: its first rows are a random subset
        combos, log_prob = model.generate(enc, config.k, generator, generator_only=True)  # (B', K, M), (B', K)
        with torch.no_grad():
            reward, _, _ = model.reward(enc, combos)  # (B', K) creative logit: appeal left out
            advantage = reward - reward.mean(dim=1, keepdim=True)
            advantage = advantage / (advantage.std(dim=1, keepdim=True) + 1e-3)  # scale-free step per context
        out["rl"] = -(advantage * log_prob).mean()
    out["total"] = out["comb"] + config.mil_weight * out.get("elem", 0.0) + config.rl_weight * out.get("rl", 0.0)
    return out


@torch.no_grad()
def predict_shown(model: GenCO, data: EncodedRows, rows: np.ndarray, batch_size: int = 2048) -> np.ndarray:
    """The reward model's P(click) of the logged combination of each row."""
    model.eval()
    out = []
    for idx in batch_indices(len(rows), batch_size):
        batch = collate(data, rows[idx])
        enc = model.encode(batch)
        out.append(torch.sigmoid(model.click_logit(enc, batch.shown[:, None, :])[:, 0]).numpy())
    return np.concatenate(out) if out else np.empty(0)


def _optimizer(model: GenCO, config: TrainConfig) -> torch.optim.Optimizer:
    sparse = ("element_id.weight", "element_effect.weight", "ad_embedding.weight", "ad_appeal.weight")
    embeddings = [p for n, p in model.named_parameters() if n in sparse]
    others = [p for n, p in model.named_parameters() if n not in sparse]
    return torch.optim.AdamW(
        [{"params": embeddings, "weight_decay": config.embedding_decay}, {"params": others, "weight_decay": config.weight_decay}],
        lr=config.lr,
    )


def train(data: EncodedRows, model_config: ModelConfig | None = None, config: TrainConfig | None = None,
          model: GenCO | None = None, model_class: type[GenCO] = GenCO) -> TrainResult:
    """Train on encoded logs; returns the best held-out epoch's model (in eval mode) and the history."""
    config = config or TrainConfig()
    if data.click is None:
        raise ValueError("training needs log rows (with shown and click)")
    if config.threads:
        torch.set_num_threads(config.threads)
    torch.manual_seed(config.seed)
    generator = torch.Generator().manual_seed(config.seed)
    if model is None:
        model = model_class(data.schema, model_config)
        rate = float(np.clip(data.click.mean(), 1e-4, 1 - 1e-4))
        with torch.no_grad():
            model.appeal.bias.fill_(float(np.log(rate / (1 - rate))))  # start at the logs' click rate
    optimizer = _optimizer(model, config)
    train_rows, heldout_rows = split(len(data), config.holdout, config.seed)
    if len(heldout_rows) == 0:
        heldout_rows = train_rows
    result = TrainResult(model=model, impressions=len(train_rows))
    best_loss, best_state, waited = float("inf"), None, 0
    start = time.perf_counter()
    for epoch in range(1, config.epochs + 1):
        began = time.perf_counter()
        for group in optimizer.param_groups:
            group["lr"] = config.lr * config.lr_decay ** (epoch - 1)
        model.train()
        sums = {"total": 0.0, "comb": 0.0, "elem": 0.0, "rl": 0.0}
        steps = 0
        batch_size = max(16, min(config.batch_size, -(-len(train_rows) // config.min_steps)))
        n_batches = -(-len(train_rows) // batch_size)
        with console.progress(f"epoch {epoch}/{config.epochs}", n_batches) as bar:
            for idx in batch_indices(len(train_rows), batch_size, shuffle=True, seed=config.seed * 1000 + epoch):
                batch = collate(data, train_rows[idx])
                terms = losses(model, batch, config, generator)
                optimizer.zero_grad(set_to_none=True)
                terms["total"].backward()
                torch.nn.utils.clip_grad_norm_(model.parameters(), 5.0)
                optimizer.step()
                for key, value in terms.items():
                    sums[key] += float(value.detach())
                steps += 1
                bar.advance()
                if steps % 20 == 0:
                    bar.update(status=f"loss {sums['total'] / steps:.4f}")
        p = predict_shown(model, data, heldout_rows)
        y = data.click[heldout_rows]
        record = EpochRecord(
            epoch=epoch,
            train_loss=sums["total"] / steps,
            train_comb=sums["comb"] / steps,
            train_elem=sums["elem"] / steps,
            train_rl=sums["rl"] / steps,
            heldout_auc=auc(y, p),
            heldout_logloss=log_loss(y, p),
            seconds=time.perf_counter() - began,
        )
        result.history.append(record)
        console.note(
            f"epoch {epoch:2d}  train loss {record.train_loss:.4f}  held-out AUC {record.heldout_auc:.4f}  "
            f"log loss {record.heldout_logloss:.5f}  ({record.seconds:.0f}s)"
        )
        if record.heldout_logloss < best_loss - 1e-6:
            best_loss, best_state, waited = record.heldout_logloss, copy.deepcopy(model.state_dict()), 0
            result.best_epoch = epoch
        else:
            waited += 1
            if waited >= config.patience:
                console.note(f"early stop: held-out log loss has not improved for {waited} epochs; keeping epoch {result.best_epoch}")
                break
    if best_state is not None:
        model.load_state_dict(best_state)
    model.eval()
    result.seconds = time.perf_counter() - start
    return result


def read_logs(path, *, on_bad_row: str = "error", max_candidates: int | None = None) -> tuple[EncodedRows, "ReadReport"]:
    """Stream, validate and encode a log file or folder (bad rows raise, or are skipped and counted)."""
    from genco.contract import DEFAULT_MAX_CANDIDATES
    from genco.data import encode
    from genco.files import ReadReport, read_rows

    report = ReadReport()
    rows = read_rows(path, "logs", on_bad_row=on_bad_row, max_candidates=max_candidates or DEFAULT_MAX_CANDIDATES, report=report)
    with console.progress("reading logs", None) as bar:
        def counted(rows):
            for row in rows:
                bar.advance()
                yield row
        data = encode(counted(rows))
    if report.skipped:
        console.note(report.summary())
    return data, report


def save_trained(result: TrainResult, out, train_config: TrainConfig, extra: dict[str, Any] | None = None) -> None:
    """The model folder: weights, config, schema, held-out metrics, history and the training-curve PNG."""
    import json
    from pathlib import Path

    from genco.checkpoint import save_model
    from genco.files import atomic_write_bytes
    from genco.plots import training_curve

    out = Path(out)
    save_model(result.model, out, {"train_config": train_config.to_dict(), "metrics": result.summary(), **(extra or {})})
    atomic_write_bytes(out / "history.json", json.dumps([asdict(r) for r in result.history], indent=1).encode())
    training_curve(result.history, out / "training_curve.png")
