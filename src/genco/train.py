"""Training GenCO from logs, top to bottom: L = L_comb + mil_weight * L_elem + lambda * L_RL.

- L_comb: binary cross-entropy of the reward model's P(click) for the combination that was shown.
- L_elem: the multi-instance term; every shown element (instance) inherits its bag's click, judged on its
  own instance score from the shared phi.
- L_RL: REINFORCE for the best of K. K combinations per context are sampled from pi and rewarded by the
  reward model's creative logit (product appeal left out). Serving answers the best of the K, so the
  objective is E[max_k R(c_k)], and each sample is credited with what it adds to that maximum
  (R_max - max of the others: the gap to the runner-up for the best sample, zero for every other one).
  The paper's mean-of-K baseline maximises E[R(c)] instead (`rl_objective="mean"`), and the policy
  collapses onto one combination (entropy 0.13 nats over six components on the seed-1 world, against 3.4
  for best of K; benchmarks/generator_objective.py): K copies of it, nothing left to choose among.

The policy gradient trains the generator's own parameters only; phi and the encoders reach the generator
through the forward pass (see GenCO.policy_scores for why). The reward model's parameters therefore see
L_comb + L_elem alone, and the loss is minimised in two stages that reach the same fixed point as the joint
sum but cost far less: (1) the reward model, until the held-out log loss stops improving; (2) the generator,
by policy gradient against the finished reward model (a fixed target rather than a moving one).

Clicks are sparse, so ids overfit and single steps are noisy: id effects learn at a tenth of the rate and
are decayed, the learning rate is cut whenever the held-out log loss stalls, the weights judged on held-out
logs are a moving average of the training weights, and the best epoch's are kept.
"""

from __future__ import annotations

import contextlib
import copy
import time
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
import torch.nn.functional as F

from genco import console
from genco.data import EncodedRows, FeatureSchema, batch_indices, collate
from genco.errors import GencoInputError
from genco.metrics import auc, log_loss
from genco.model import GenCO, ModelConfig
from genco.options import MAX_K, OptionError, bounded, check_options, seed_field
from genco.refit import PRIORS, choose_priors, described, solve_wide

if TYPE_CHECKING:
    from genco.ensemble import RewardEnsemble
    from genco.files import ReadReport


WIDE_FITS = ("first", "after", "none")
NETWORK_JUDGES = ("shrink", "bar", "keep")
#: The weights the network's part of the logit may be kept at, over the wide part (network_judge "shrink").
NETWORK_WEIGHTS = (0.0, 0.25, 0.5, 0.75, 1.0)


@dataclass
class TrainConfig:
    epochs: int = bounded(30, ge=1, le=10_000)  # reward-model epochs at most (early stopping usually ends sooner)
    batch_size: int = bounded(1024, ge=1, le=1 << 20)  # at most; small logs get smaller batches (see min_steps)
    min_steps: int = bounded(100, ge=1, le=1 << 20)  # optimizer steps per epoch at least: a small log still gets a real number of updates
    lr: float = bounded(0.01, gt=0, le=10)
    lr_cut: float = bounded(0.3, gt=0, le=1)  # the learning rate is multiplied by this after every epoch without held-out improvement
    patience: int = bounded(3, ge=1, le=10_000)  # epochs in a row without held-out improvement before stopping
    weight_decay: float = bounded(1e-4, ge=0, le=10)
    embedding_decay: float = bounded(0.05, ge=0, le=10)  # decoupled decay of id embeddings: rare ids stay near zero
    id_lr_scale: float = bounded(0.1, ge=0, le=100)  # learning rate of the id embeddings relative to lr
    ema: float = bounded(0.99, ge=0, lt=1)  # decay of the moving average of the reward model's weights (0: the last weights)
    holdout: float = bounded(0.1, ge=0, lt=1)  # share of logs held out for AUC / log loss and early stopping
    seed: int = seed_field()
    k: int = bounded(16, ge=2, le=MAX_K)  # combinations sampled per context for the policy gradient (it compares them)
    rl_epochs: int = bounded(3, ge=0, le=10_000)  # generator epochs (policy gradient) after the reward model, the best kept
    rl_lr: float = bounded(1e-2, gt=0, le=10)
    rl_weight: float = bounded(0.15, ge=0, le=1000)  # lambda
    mil_weight: float = bounded(1.0, ge=0, le=1000)
    mil: bool = True
    rl: bool = True
    wide_fit: str = "first"  # the wide part's exact MAP (genco.refit): "first" (before stage 1, and at the end on
    # every row given the network), "after" (at the end only) or "none"
    network_judge: str = "shrink"  # how much of the network stage 1 keeps over the wide part: "shrink" (its best
    # epoch at the weight in NETWORK_WEIGHTS with the least held-out log loss; with wide_fit "after" the wide part is
    # solved again at each weight), "bar" (wide part first: all of it if an epoch beats the wide part alone, else
    # none) or "keep" (its best epoch whatever); with wide_fit "none" the whole best epoch
    wide_priors: str = "evidence"  # how the wide fit chooses its prior precisions: "evidence" (type-II maximum
    # likelihood on the training rows, one per block, the Hessian's diagonal), "ard" (the same per component and
    # pair of components, the posterior's own variances) or "heldout" (a grid, by held-out log loss); genco.refit
    reward_models: int = bounded(3, ge=1, le=32)  # an ensemble: the served argmax is their mean's (see genco.ensemble)
    rl_objective: str = "best-of-k"  # or "mean": the paper's E[R] with the mean of the K as baseline
    threads: int = bounded(0, ge=0, le=1024)  # torch threads; 0: torch's default

    def __post_init__(self) -> None:
        check_options(self)
        if self.rl_objective not in ("best-of-k", "mean"):
            raise OptionError("rl_objective", "'best-of-k' or 'mean'", self.rl_objective)
        if self.wide_fit not in WIDE_FITS:
            raise OptionError("wide_fit", " or ".join(repr(w) for w in WIDE_FITS), self.wide_fit)
        if self.network_judge not in NETWORK_JUDGES:
            raise OptionError("network_judge", " or ".join(repr(j) for j in NETWORK_JUDGES), self.network_judge)
        if self.wide_priors not in PRIORS:
            raise OptionError("wide_priors", " or ".join(repr(p) for p in PRIORS), self.wide_priors)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class EpochRecord:
    epoch: int  # within its stage and member
    stage: str  # "reward" (L_comb + L_elem) or "generator" (L_RL)
    member: int  # which reward model of the ensemble (0 for the generator)
    train_loss: float
    train_comb: float
    train_elem: float
    train_rl: float
    heldout_auc: float
    heldout_logloss: float
    # mean creative logit of the best of greedy + K samples, held out; judged in the generator stage only (epoch 0:
    # before the policy gradient), since stage 1 does not train the generator and judging it is a quadratic
    # attention pass over every candidate: most of a reward-model epoch's time once pools reach 150
    heldout_generator_reward: float | None
    seconds: float
    lr: float


@dataclass
class TrainResult:
    model: GenCO
    history: list[EpochRecord] = field(default_factory=list)
    best_epoch: int = 0
    seconds: float = 0.0
    impressions: int = 0
    judgement: dict[str, Any] = field(default_factory=dict)  # what the held-out figures were measured on (see `judgement`)
    wide_priors: dict[str, float] = field(default_factory=dict)  # the wide part's prior precisions (genco.refit), every member's
    network_weights: list[float] = field(default_factory=list)  # per member, the network's weight over the wide part

    @property
    def best(self) -> EpochRecord:
        """The kept epoch of the first reward model."""
        return next(r for r in self.history if r.stage == "reward" and r.member == 0 and r.epoch == self.best_epoch)

    def summary(self) -> dict[str, Any]:
        return {
            "best_epoch": self.best_epoch,
            "heldout_auc": self.best.heldout_auc,
            "heldout_logloss": self.best.heldout_logloss,
            "train_seconds": self.seconds,
            "epochs": len(self.trained_epochs),
            "reward_models": len({r.member for r in self.history if r.stage == "reward"}),
            "impressions": self.impressions,
            "impressions_per_second": self.impressions * len(self.trained_epochs) / max(self.seconds, 1e-9),
            "wide_priors": self.wide_priors,
            "network_weights": self.network_weights,
            **self.judgement,
        }

    @property
    def trained_epochs(self) -> list[EpochRecord]:
        """Every epoch that trained something (the generator's epoch 0 is its judgement before training)."""
        return [r for r in self.history if r.epoch > 0]


def _batch_size(rows: int, config: TrainConfig) -> int:
    """config.batch_size, or smaller so that a small log still gets `min_steps` updates per epoch."""
    return max(16, min(config.batch_size, -(-rows // config.min_steps)))


def split(n: int, holdout: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Training rows and held-out rows; with nothing held out (holdout 0, one row) the training rows are judged."""
    order = np.random.default_rng([seed, 7]).permutation(n)
    cut = holdout_size(n, holdout)
    return order[cut:], (order[:cut] if cut else order)


def holdout_size(n: int, holdout: float) -> int:
    """How many of n rows `split` holds out (0: the training rows are judged instead)."""
    return int(round(n * holdout)) if n > 1 else 0


#: Fewer held-out clicks (or non-clicks) than this and held-out AUC / log loss are noise: say so.
MIN_HELDOUT_CLASS = 20


def judgement(data: EncodedRows, config: TrainConfig) -> dict[str, Any]:
    """What the held-out figures are measured on: rows, clicks, and a caveat when they cannot be trusted."""
    _, heldout = split(len(data), config.holdout, config.seed)
    clicks = int(data.click[heldout].sum())
    on_training = holdout_size(len(data), config.holdout) == 0
    caveat = None
    if on_training:
        caveat = ("nothing is held out (--holdout 0, or a single row): AUC, log loss and early stopping are measured "
                  "on the training rows, so they flatter the model")
    elif min(clicks, len(heldout) - clicks) < MIN_HELDOUT_CLASS:
        caveat = (f"only {len(heldout)} held-out row{'s' * (len(heldout) != 1)} with {clicks} click{'s' * (clicks != 1)}: "
                  "held-out AUC and log loss are noise at this "
                  f"size (fewer than {MIN_HELDOUT_CLASS} clicks or non-clicks); hold out more or log more")
    return {"judged_on": "training-rows" if on_training else "heldout", "heldout_rows": int(len(heldout)),
            "heldout_clicks": clicks, "caveat": caveat}


def reward_losses(model: GenCO, batch, config: TrainConfig) -> dict[str, torch.Tensor]:
    """L_comb and L_elem on one batch (stage 1), each visible here (CleanRL style)."""
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
    out["total"] = out["comb"] + config.mil_weight * out.get("elem", 0.0)
    return out


def best_of_k_advantage(reward: torch.Tensor) -> torch.Tensor:
    """Each sample's share of max_k R (B, K) -> (B, K): R_max - max of the others, so the gap to the runner-up
    for the best sample and zero for the rest (and for all copies of the best, when it was drawn twice).

    The others' maximum does not depend on the sample it is subtracted from, so it is a valid baseline and
    sum_k advantage_k * grad log pi(c_k) is an unbiased estimate of grad E[max_k R(c_k)].
    """
    top = reward.topk(min(2, reward.shape[1]), dim=1)  # values and indices (B, 2); (B, 1) for one sample
    gain = top.values[:, :1] - top.values[:, -1:]  # (B, 1); one sample: no gain over itself
    return torch.zeros_like(reward).scatter_(1, top.indices[:, :1], gain)


def policy_gradient_loss(model: GenCO, batch, config: TrainConfig, generator: torch.Generator) -> torch.Tensor:
    """lambda * L_RL on one batch (stage 2): K samples from pi, rewarded by the creative part, best-of-K credit."""
    with torch.no_grad():
        enc = model.encode(batch)
    combos, log_prob = model.generate(enc, config.k, generator, generator_only=True)  # (B, K, M), (B, K)
    with torch.no_grad():
        reward, _, _ = model.reward(enc, combos)  # (B, K) creative logit: appeal left out
        if config.rl_objective == "mean":  # the paper's: E[R], mean-of-K baseline, a scale-free step per context
            advantage = reward - reward.mean(dim=1, keepdim=True)
            advantage = advantage / (advantage.std(dim=1, keepdim=True) + 1e-3) / config.k
        else:
            advantage = best_of_k_advantage(reward)
            advantage = advantage / (advantage.sum(dim=1).mean() + 1e-6)  # scale-free: the batch's mean gain is 1
    return config.rl_weight * -(advantage * log_prob).sum(dim=1).mean()


def losses(model: GenCO, batch, config: TrainConfig, generator: torch.Generator) -> dict[str, torch.Tensor]:
    """Every term of L on one batch (the joint loss; training runs it in two stages, see the module doc)."""
    out = reward_losses(model, batch, config)
    if config.rl:
        out["rl"] = policy_gradient_loss(model, batch, config, generator) / config.rl_weight
        out["total"] = out["total"] + config.rl_weight * out["rl"]
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


def heldout_figures(model: GenCO | RewardEnsemble, data: EncodedRows, heldout: np.ndarray) -> tuple[float, float]:
    """AUC and log loss of the reward model on held-out rows. An ensemble's members hold out different rows,
    so only a member has honest held-out figures: the first (the generator stage leaves it unchanged)."""
    p = predict_shown(getattr(model, "primary", model), data, heldout)
    y = data.click[heldout]
    return auc(y, p), log_loss(y, p)


@torch.no_grad()
def generator_reward(model: GenCO, data: EncodedRows, rows: np.ndarray, k: int, batch_size: int = 2048) -> float:
    """Mean creative logit (by the reward model) of the best of the generator's greedy pick and K samples:
    what stage 2 maximises, and what serving by sampling alone would answer. Fixed seed: epochs compare."""
    model.eval()
    generator = torch.Generator().manual_seed(0)
    total = 0.0
    for idx in batch_indices(len(rows), batch_size):
        enc = model.encode(collate(data, rows[idx]))
        combos, _ = model.generate(enc, k, generator, with_greedy=True)  # (B, 1 + K, M)
        total += float(model.reward(enc, combos)[0].max(dim=1).values.sum())
    return total / max(len(rows), 1)


GENERATOR_PARAMETERS = ("generator_attention.", "policy_head.", "log_sharpness")
#: One row per id (element, product or combination): few clicks each, so they learn at id_lr_scale and decay
#: toward zero; id vectors at the full learning rate overfit (measured on the default world at 50,000 impressions).
SPARSE_TABLES = ("element_effect.weight", "id_vector.weight", "combination_effect.weight", "ad_embedding.weight",
                 "ad_appeal.weight")


#: The wide part's parameters (genco.refit fits them exactly); when it is fitted first no stochastic step moves them.
WIDE_PARAMETERS = ("element_effect.weight", "combination_effect.weight", "ad_appeal.weight", "appeal.weight", "appeal.bias")


def _optimizer(model: GenCO, config: TrainConfig) -> torch.optim.Optimizer:
    """The reward model's optimizer: everything but the generator's own parameters (stage 2 trains those)."""
    named = [(n, p) for n, p in model.named_parameters() if not n.startswith(GENERATOR_PARAMETERS)]
    if config.wide_fit == "first":
        named = [(n, p) for n, p in named if n not in WIDE_PARAMETERS]
    return torch.optim.AdamW(
        [{"params": [p for n, p in named if n in SPARSE_TABLES], "weight_decay": config.embedding_decay,
          "lr": config.lr * config.id_lr_scale},
         {"params": [p for n, p in named if n not in SPARSE_TABLES], "weight_decay": config.weight_decay}],
        lr=config.lr,
    )


class _Epochs:
    """The epoch loop both stages share: batches of the training rows, a held-out check, the best state kept.

    `step(batch) -> dict of loss terms` does one update. After every epoch the held-out rows are scored (for
    the reward model: log loss; for the generator: the creative logit of the best of its greedy pick and K
    samples); the state of the best epoch is kept, the learning rate is cut after an epoch without
    improvement, and `patience` of those in a row end the stage. `judge` wraps the held-out check (the reward
    model is judged on its averaged weights).
    """

    def __init__(self, data: EncodedRows, config: TrainConfig, history: list[EpochRecord], batch_size: int):
        self.data, self.config, self.history, self.batch_size = data, config, history, batch_size
        self.judged = "train-row" if judgement(data, config)["judged_on"] == "training-rows" else "held-out"

    def run(self, model, stage: str, member: int, rows: np.ndarray, heldout: np.ndarray, step, optimizer,
            max_epochs: int, seed: int, best_score: float = float("inf"), judge=contextlib.nullcontext):
        """Returns the best state (None if no epoch beat best_score) and its epoch number (0 if none)."""
        config, best_state, best_epoch, waited = self.config, None, 0, 0
        label = stage if member == 0 and stage == "generator" else f"{stage} {member + 1}"
        for epoch in range(1, max_epochs + 1):
            began = time.perf_counter()
            sums = {"total": 0.0, "comb": 0.0, "elem": 0.0, "rl": 0.0}
            steps = 0
            with console.progress(f"{label} epoch {epoch}", -(-len(rows) // self.batch_size)) as bar:
                for idx in batch_indices(len(rows), self.batch_size, shuffle=True, seed=seed * 1000 + epoch):
                    for key, value in step(collate(self.data, rows[idx])).items():
                        sums[key] += float(value)
                    steps += 1
                    bar.advance()
                    if steps % 20 == 0:
                        bar.update(status=f"loss {sums['total'] / steps:.4f}")
            with judge():
                heldout_auc, heldout_logloss = heldout_figures(model, self.data, heldout)
                record = EpochRecord(
                    epoch=epoch, stage=stage, member=member, train_loss=sums["total"] / steps,
                    train_comb=sums["comb"] / steps, train_elem=sums["elem"] / steps, train_rl=sums["rl"] / steps,
                    heldout_auc=heldout_auc, heldout_logloss=heldout_logloss,
                    heldout_generator_reward=generator_reward(model, self.data, heldout, config.k) if stage == "generator" else None,
                    seconds=time.perf_counter() - began, lr=float(optimizer.param_groups[-1]["lr"]),
                )
                score = record.heldout_logloss if stage == "reward" else -record.heldout_generator_reward
                improved = score < best_score - 1e-6
                if improved:
                    best_score, best_state, best_epoch, waited = score, copy.deepcopy(model.state_dict()), epoch, 0
            self.history.append(record)
            console.note(
                f"{label:10s} epoch {epoch:2d}  loss {record.train_loss:.4f}  {self.judged} AUC {record.heldout_auc:.4f}  "
                f"log loss {record.heldout_logloss:.5f}  "
                + (f"generator reward {record.heldout_generator_reward:+.3f}  " if stage == "generator" else "")
                + f"({record.seconds:.0f}s)"
            )
            if not improved:
                waited += 1
                for group in optimizer.param_groups:
                    group["lr"] *= config.lr_cut
                if waited >= config.patience:
                    console.note(f"early stop: no held-out improvement for {waited} epochs")
                    break
        return best_state, best_epoch


def start_at_click_rate(model: GenCO, data: EncodedRows) -> None:
    """A fresh reward model's appeal bias at the logs' click rate, so that its first logit is the base rate."""
    rate = float(np.clip(data.click.mean(), 1e-4, 1 - 1e-4))
    with torch.no_grad():
        model.appeal.bias.fill_(float(np.log(rate / (1 - rate))))


@dataclass
class _Member:
    """One reward model of the ensemble and its own held-out split."""

    model: GenCO
    seed: int
    rows: np.ndarray
    heldout: np.ndarray


def new_member(make_model, data: EncodedRows, config: TrainConfig, seed: int) -> _Member:
    torch.manual_seed(seed)
    model = make_model()
    start_at_click_rate(model, data)
    rows, heldout = split(len(data), config.holdout, seed)
    model.count_ids(data, rows)
    return _Member(model, seed, rows, heldout)


def member_priors(members: list[_Member], loop: _Epochs, when: str) -> dict[str, float]:
    """The wide part's prior precisions, chosen once for every member (genco.refit.choose_priors)."""
    precisions = choose_priors([m.model for m in members], loop.data, [(m.rows, m.heldout) for m in members],
                               priors=loop.config.wide_priors)
    console.note(f"wide part {when}: prior precisions {described(precisions)}")
    return precisions


def fit_wide_starts(members: list[_Member], loop: _Epochs) -> tuple[dict[str, float], list[tuple[float, dict]]]:
    """Before stage 1: every member's network silenced and its wide part fitted exactly on its own training
    rows (genco.refit), under priors chosen for all of them together, so that stage 1 trains each network on
    what the wide part cannot say. Returns the priors and, per member, the held-out log loss an epoch of stage
    1 must beat to be kept and the state to keep if none does (recorded as the member's epoch 0)."""
    for m in members:
        m.model.silence_network()
    precisions = member_priors(members, loop, "before the network")
    starts = []
    for index, m in enumerate(members):
        solve_wide(m.model, loop.data, m.rows, precisions)
        heldout_auc, heldout_logloss = heldout_figures(m.model, loop.data, m.heldout)
        loop.history.append(EpochRecord(epoch=0, stage="reward", member=index, train_loss=0.0, train_comb=0.0,
                                        train_elem=0.0, train_rl=0.0, heldout_auc=heldout_auc,
                                        heldout_logloss=heldout_logloss, heldout_generator_reward=None, seconds=0.0, lr=0.0))
        console.note(f"reward {index + 1}: wide part fitted alone, {loop.judged} AUC {heldout_auc:.4f}  log loss {heldout_logloss:.5f}")
        starts.append((heldout_logloss, copy.deepcopy(m.model.state_dict())))
    return precisions, starts


def fit_reward_model(member: _Member, loop: _Epochs, index: int, wide_start: tuple[float, dict | None]) -> tuple[int, float]:
    """Stage 1 for one reward model (L_comb + L_elem) on its own split, in place: the model keeps its best
    weights; returns the kept epoch and the weight its network is kept at (TrainConfig.network_judge).
    wide_start: the wide part alone, its held-out log loss and state (fit_wide_starts; inf and None without it).

    The learning rate is cut on plateaus, and an exponential moving average of the weights is what gets
    judged and kept: with a few clicks per element the last step's weights are noisy, the average much less
    so.
    """
    config = loop.config
    model, seed, rows, heldout = member.model, member.seed, member.rows, member.heldout
    wide_score, wide_state = wide_start
    torch.manual_seed(seed)
    optimizer = _optimizer(model, config)
    live = list(model.parameters())
    average = [p.detach().clone() for p in live]
    updates = 0

    @contextlib.contextmanager
    def averaged():
        """The averaged weights in the model while it is judged (and perhaps kept); the live ones afterwards."""
        def swap() -> None:
            with torch.no_grad():
                for p, a in zip(live, average):
                    held = p.detach().clone()
                    p.copy_(a)
                    a.copy_(held)
        if config.ema > 0:
            swap()
        try:
            yield
        finally:
            if config.ema > 0:
                swap()

    def step(batch) -> dict[str, torch.Tensor]:
        nonlocal updates
        model.train()
        terms = reward_losses(model, batch, config)
        optimizer.zero_grad(set_to_none=True)
        terms["total"].backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 5.0)
        optimizer.step()
        if config.ema > 0:
            updates += 1
            decay = min(config.ema, updates / (updates + 9))  # warm-up: early weights do not linger
            with torch.no_grad():
                for p, a in zip(live, average):
                    a.lerp_(p, 1 - decay)
        return {k: v.detach() for k, v in terms.items()}

    bar = wide_score if config.network_judge == "bar" else float("inf")
    best_state, best_epoch = loop.run(model, "reward", index, rows, heldout, step, optimizer, config.epochs, seed,
                                      best_score=bar, judge=averaged)
    if best_state is None:  # no epoch beat the wide part alone: the network stays silent
        best_state = wide_state
    if best_state is None:  # every epoch's held-out log loss was NaN: the weights diverged
        raise GencoInputError(f"reward model {index + 1}: training diverged (held-out log loss NaN in every epoch); "
                              f"lower --lr (now {config.lr:g})")
    model.load_state_dict(best_state)
    if best_epoch == 0:  # the wide part alone
        return 0, 0.0
    if config.network_judge == "shrink" and wide_state is not None:
        return best_epoch, shrink_network(member, loop.data, index)
    return best_epoch, 1.0


def shrink_network(member: _Member, data: EncodedRows, index: int, precisions: dict[str, float] | None = None) -> float:
    """Scale the network's part of the logit over the wide part (GenCO.scale_network) to the weight in
    NETWORK_WEIGHTS whose held-out log loss is least, in place; returns it. With `precisions` (the wide part
    not fitted first) the wide part is solved again on the member's training rows at each weight, given the
    network at that weight: a network trained together with the wide part holds first-order effects the wide
    part must take back as the network is scaled down.

    Between the wide part alone (0) and the network's best epoch (1): a network whose interactions are real
    but noisy at this log size is kept in part, where keeping all or nothing of it must pick one of two
    wrong answers (at interaction 2 the best epoch's log loss trails the wide part's, though it chooses far
    better; on small logs all of it would overfit)."""
    model = member.model
    kept = copy.deepcopy(model.state_dict())
    scores, best_score, best_state = [], float("inf"), None
    for weight in NETWORK_WEIGHTS:
        model.load_state_dict(kept)
        model.scale_network(weight)
        if precisions is not None:
            solve_wide(model, data, member.rows, precisions)
        score = heldout_figures(model, data, member.heldout)[1]
        scores.append(score)
        if not np.isnan(score) and (best_state is None or score < best_score):
            best_score, best_state = score, copy.deepcopy(model.state_dict())  # the best weight's solve is not run again
    best = int(np.nanargmin(scores))
    model.load_state_dict(best_state)
    console.note(f"reward {index + 1}: network kept at weight {NETWORK_WEIGHTS[best]:g} over the wide part "
                 f"(held-out log loss " + ", ".join(f"{w:g}: {s:.5f}" for w, s in zip(NETWORK_WEIGHTS, scores)) + ")")
    return NETWORK_WEIGHTS[best]


def finish_wide(members: list[_Member], loop: _Epochs, precisions: dict[str, float]) -> None:
    """After stage 1: every member's wide part solved exactly on every row, given its network, under the priors
    chosen for it. The held-out rows have judged the network (and, with the held-out grid, the priors) by now;
    their clicks are then data the wide part should have."""
    every_row = np.arange(len(loop.data))
    for m in members:
        solve_wide(m.model, loop.data, every_row, precisions)
    console.note(f"wide part solved on all {len(every_row)} rows given each network")


def train(data: EncodedRows, model_config: ModelConfig | None = None, config: TrainConfig | None = None,
          model_class: type[GenCO] = GenCO) -> TrainResult:
    """Train on encoded logs; returns the model (best held-out weights, eval mode) and the per-epoch history.

    With `reward_models` > 1 the result is a RewardEnsemble: member i is trained with seed + 1000 i (its own
    initialisation, batch order and held-out split; the wide part's priors are chosen for all of them
    together), and the generator of member 0 learns against their mean.
    """
    from genco.ensemble import RewardEnsemble

    config = config or TrainConfig()
    if data.click is None:
        raise ValueError("training needs log rows (with shown and click)")
    if config.threads:
        torch.set_num_threads(config.threads)
    train_rows, _ = split(len(data), config.holdout, config.seed)
    start = time.perf_counter()
    history: list[EpochRecord] = []
    loop = _Epochs(data, config, history, _batch_size(len(train_rows), config))

    members = [new_member(lambda: model_class(data.schema, model_config), data, config, config.seed + 1000 * i)
               for i in range(max(1, config.reward_models))]
    precisions, starts = None, [(float("inf"), None)] * len(members)
    if config.wide_fit == "first":
        precisions, starts = fit_wide_starts(members, loop)
    kept, weights = zip(*[fit_reward_model(m, loop, i, start) for i, (m, start) in enumerate(zip(members, starts))])
    if config.wide_fit == "after":
        precisions = member_priors(members, loop, "given the network")
        if config.network_judge == "shrink":
            weights = tuple(shrink_network(m, data, i, precisions) for i, m in enumerate(members))
    if config.wide_fit != "none":
        finish_wide(members, loop, precisions)
    models = [m.model for m in members]
    model = models[0] if len(models) == 1 else RewardEnsemble(models)
    result = TrainResult(model=model, history=history, best_epoch=kept[0], impressions=len(train_rows),
                         judgement=judgement(data, config), wide_priors=precisions or {}, network_weights=list(weights))

    if config.rl and config.rl_epochs > 0:  # stage 2
        train_generator(model, data, config, history)
    model.eval()
    result.seconds = time.perf_counter() - start
    return result


def train_generator(model: GenCO | RewardEnsemble, data: EncodedRows, config: TrainConfig,
                    history: list[EpochRecord] | None = None) -> None:
    """Stage 2, in place: the generator (the first member's) by policy gradient against the finished reward
    model(s), on the training rows of `split(config.seed)`. The epoch whose held-out best-of-K reward is highest
    is kept; none is if no epoch beats the generator it started from. Epoch records go to `history`.
    """
    rows, heldout = split(len(data), config.holdout, config.seed)
    loop = _Epochs(data, config, [] if history is None else history, _batch_size(len(rows), config))
    generator = torch.Generator().manual_seed(config.seed)
    own = getattr(model, "primary", model)
    optimizer = torch.optim.Adam([p for n, p in own.named_parameters() if n.startswith(GENERATOR_PARAMETERS)],
                                 lr=config.rl_lr)

    def step(batch) -> dict[str, torch.Tensor]:
        model.eval()  # the reward model is a fixed judge now: no dropout noise in its rewards
        loss = policy_gradient_loss(model, batch, config, generator)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        return {"total": loss.detach(), "rl": loss.detach() / config.rl_weight}

    began = time.perf_counter()
    before = generator_reward(model, data, heldout, config.k)
    heldout_auc, heldout_logloss = heldout_figures(model, data, heldout)
    loop.history.append(EpochRecord(  # epoch 0: the generator as stage 1 left it, judged before any update
        epoch=0, stage="generator", member=0, train_loss=0.0, train_comb=0.0, train_elem=0.0, train_rl=0.0,
        heldout_auc=heldout_auc, heldout_logloss=heldout_logloss, heldout_generator_reward=before,
        seconds=time.perf_counter() - began, lr=config.rl_lr))
    best_state, _ = loop.run(model, "generator", 0, rows, heldout, step, optimizer, config.rl_epochs, config.seed,
                             best_score=-before)
    if best_state is not None:
        model.load_state_dict(best_state)


def read_logs(path, *, on_bad_row: str = "error", max_candidates: int | None = None,
              schema: FeatureSchema | None = None) -> tuple[EncodedRows, ReadReport]:
    """Stream, validate and encode a log file or folder (bad rows raise, or are skipped and counted). With a
    model's `schema`, rows are encoded in it, and a row the model cannot read (an unknown component, other
    feature lengths) is a bad row naming its file and line."""
    from genco.contract import DEFAULT_MAX_CANDIDATES
    from genco.data import encode
    from genco.files import ReadReport, read_rows

    report = ReadReport()
    rows = read_rows(path, "logs", on_bad_row=on_bad_row, max_candidates=max_candidates or DEFAULT_MAX_CANDIDATES, report=report,
                     schema=schema)
    with console.progress("reading logs", None) as bar:
        def counted(rows):
            for row in rows:
                bar.advance()
                yield row
        data = encode(counted(rows), schema, checked=schema is not None)
    if report.skipped:
        console.note(report.summary())
    return data, report


def save_trained(result: TrainResult, out, train_config: TrainConfig, extra: dict[str, Any] | None = None,
                 attention=None) -> None:
    """The model folder: weights, config, schema, held-out metrics, history and the training-curve PNG, and
    where given (a genco.attention_map.AttentionMap), the attention map PNG."""
    from pathlib import Path

    from genco.checkpoint import save_model
    from genco.files import atomic_write_json
    from genco.plots import attention_maps, training_curve

    out = Path(out)
    save_model(result.model, out, {"train_config": train_config.to_dict(), "metrics": result.summary(), **(extra or {})})
    atomic_write_json(out / "history.json", [asdict(r) for r in result.history])
    training_curve(result.history, out / "training_curve.png")
    if attention is not None:
        attention_maps(attention, out / "attention.png")
