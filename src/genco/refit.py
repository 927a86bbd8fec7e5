"""The reward model's id tables refitted exactly: a MAP logistic regression on top of the trained network.

Stage 1 trains every parameter by stochastic steps and stops on held-out log loss. For the tables keyed by
id (each element's own effect, each product's appeal, each whole combination's effect) that is a poor
estimator: a row of such a table holds a handful of clicks, single steps are noisy, and the epoch at which
held-out log loss turns is one crude regulariser for ids seen ten times and ids seen ten thousand times.
With the network frozen, the click logit of a logged combination is linear in those tables,

    logit_i = o_i + sum_m alpha_im w[element_im] + v[product_i] + t_i u[combination_i]

(o: everything else the network says; alpha: the MIL pooling weights; t: the combination's trust, see
GenCO.bag_terms), so their MAP under Gaussian priors N(0, 1 / lambda) is a convex logistic regression. It
is solved to convergence here (full-batch L-BFGS, diagonally preconditioned), the way MVT (Hill et al. 2017)
fits its first-order terms. A Gaussian prior shrinks by information, not by impressions: an id seen 1,000
times with 15 clicks stays near what its features say, where shrinkage by impressions would trust it. The
prior centre, zero, is what the network's features and embeddings already predict.

A table per pair of element ids (MVT's pairwise terms) fitted the same way was tried and not kept: on the
id-only tree and dense worlds it lowered the share of the oracle lift (three seeds each, see the README).

The precisions are chosen by the member's own held-out log loss, one table at a time over a small grid
(starting from the strongest prior of each), and the refit is kept only when it beats the stochastically
trained tables there.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from genco.data import EncodedRows, batch_indices, collate
from genco.model import GenCO

#: Prior precisions tried per table (1 / variance of the N(0, .) prior on its log-odds effects).
PRECISIONS = {"ids": (3.0, 10.0, 30.0, 100.0), "combinations": (10.0, 30.0, 100.0, 1000.0)}


@dataclass
class LinearView:
    """n logged rows as a logistic regression in the id tables (see the module doc)."""

    offset: torch.Tensor  # (n,) the logit without the tables' contributions
    alpha: torch.Tensor  # (n, M) pooling weight of each shown element (0: absent)
    element: torch.Tensor  # (n, M) element id bucket (-1: absent)
    product: torch.Tensor  # (n,) ad bucket
    trust: torch.Tensor  # (n,) weight of the combination's own effect (0 without combination effects)
    combination: torch.Tensor  # (n,) combination bucket
    click: torch.Tensor  # (n,)

    def tabled(self, element: torch.Tensor, product: torch.Tensor, combination: torch.Tensor) -> torch.Tensor:
        """The tables' part of every row's logit (n,), given full-size tables."""
        return ((self.alpha * element[self.element.clamp(min=0)]).sum(dim=1) + product[self.product]
                + self.trust * combination[self.combination])

    def logloss(self, *tables: torch.Tensor) -> float:
        return float(F.binary_cross_entropy_with_logits(self.offset + self.tabled(*tables), self.click))


@torch.no_grad()
def linear_view(model: GenCO, data: EncodedRows, rows: np.ndarray, batch_size: int = 2048) -> LinearView:
    """The logged combinations of `rows` as a LinearView of the model (eval mode: no dropout)."""
    model.eval()
    current = tables(model)
    parts: list[LinearView] = []
    for idx in batch_indices(len(rows), batch_size):
        batch = collate(data, rows[idx])
        enc = model.encode(batch)
        terms = model.bag_terms(enc, batch.shown[:, None, :])  # (B, 1, ...)
        present, B = terms.present[:, 0], batch.size  # (B, M)
        view = LinearView(
            offset=enc.appeal + terms.creative[:, 0], alpha=terms.alpha[:, 0], element=torch.where(present, terms.bucket[:, 0], -1),
            product=batch.ad_bucket, trust=terms.trust[:, 0] if terms.trust is not None else torch.zeros(B),
            combination=terms.combination[:, 0] if terms.combination is not None else torch.zeros(B, dtype=torch.long),
            click=batch.click)
        view.offset = view.offset - view.tabled(*current)
        parts.append(view)
    return LinearView(**{k: torch.cat([getattr(v, k) for v in parts]) for k in LinearView.__dataclass_fields__})


def _used_tables(model: GenCO) -> list[tuple[torch.nn.Embedding, bool]]:
    c = model.config
    return [(model.element_effect, c.element_ids), (model.ad_appeal, c.ad_ids), (model.combination_effect, c.combination_effects)]


def tables(model: GenCO) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The current element, product and combination tables (zeros where the model does not use one)."""
    return tuple(table.weight[:, 0].detach().clone() if used else torch.zeros(table.num_embeddings)
                 for table, used in _used_tables(model))


def _set_tables(model: GenCO, *values: torch.Tensor) -> None:
    for (table, used), value in zip(_used_tables(model), values):
        if used:
            table.weight[:, 0] = value


class _Problem:
    """The regression on the ids the training rows touch: each table's touched ids renumbered into one vector x,
    in blocks (elements and products: "ids"; "combinations")."""

    def __init__(self, view: LinearView, model: GenCO):
        n = len(view.click)
        present = view.element >= 0
        shown = (view.element[present], view.product, view.combination)  # the ids of each table the rows touch
        touched = [torch.unique(ids) if used else torch.zeros(0, dtype=torch.long)
                   for ids, (_, used) in zip(shown, _used_tables(model))]
        self.touched = touched
        starts = np.cumsum([0] + [len(t) for t in touched])
        self.size = int(starts[-1])
        self.block = np.repeat(np.array(["ids", "ids", "combinations"]), [len(t) for t in touched])
        # every row's nonzeros (n, M + 2): its M elements, its product, its combination; weight 0 where unused
        keys = [view.element.clamp(min=0), view.product[:, None], view.combination[:, None]]
        weights = [view.alpha.masked_fill(~present, 0.0), torch.ones(n, 1), view.trust[:, None]]
        self.columns = torch.cat([start + torch.searchsorted(t, key).clamp(max=len(t) - 1) if len(t) else torch.zeros_like(key)
                                  for t, key, start in zip(touched, keys, starts)], dim=1)
        self.weights = torch.cat([w.double() if len(t) else torch.zeros(w.shape, dtype=torch.float64)
                                  for t, w in zip(touched, weights)], dim=1)
        self.offset, self.click = view.offset.double(), view.click.double()

    def logit(self, x: torch.Tensor) -> torch.Tensor:
        return self.offset + (self.weights * x[self.columns]).sum(dim=1)

    def solve(self, precision: torch.Tensor, start: torch.Tensor, max_iter: int = 200) -> torch.Tensor:
        """argmin_x  sum_i BCE(logit_i(x), y_i) + 1/2 sum_j precision_j x_j^2, by L-BFGS in x / sqrt(curvature)."""
        p = torch.sigmoid(self.logit(start))
        curvature = precision.clone()
        curvature.index_add_(0, self.columns.reshape(-1), ((p * (1 - p))[:, None] * self.weights ** 2).reshape(-1))
        scale = curvature.rsqrt()  # x = scale * z: each coordinate's curvature about 1 at the start
        z = (start / scale).clone().requires_grad_(True)
        optimizer = torch.optim.LBFGS([z], lr=1.0, max_iter=max_iter, tolerance_grad=1e-7, tolerance_change=1e-10,
                                      history_size=20, line_search_fn="strong_wolfe")

        def closure() -> torch.Tensor:
            optimizer.zero_grad()
            x = scale * z
            loss = F.binary_cross_entropy_with_logits(self.logit(x), self.click, reduction="sum") + 0.5 * (precision * x * x).sum()
            loss.backward()
            return loss

        optimizer.step(closure)
        return (scale * z).detach()

    def full_tables(self, model: GenCO, x: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """Full-size tables from a solution: ids the training rows never touched sit at the prior's centre, 0."""
        out = [torch.zeros(table.num_embeddings) for table, _ in _used_tables(model)]
        start = 0
        for table, t in zip(out, self.touched):
            table[t] = x[start:start + len(t)].float()
            start += len(t)
        return tuple(out)


@dataclass
class RefitOutcome:
    kept: bool
    precisions: dict[str, float]  # the chosen prior precision of each refitted table
    heldout_logloss_before: float
    heldout_logloss_after: float


@torch.no_grad()
def refit_id_tables(model: GenCO, data: EncodedRows, rows: np.ndarray, heldout: np.ndarray) -> RefitOutcome:
    """Replace the model's id tables by their MAP given the rest of the network, in place (see the module doc).
    rows: the member's training rows; heldout: its held-out rows (they choose the priors)."""
    if len(rows) == 0:
        return RefitOutcome(False, {}, float("nan"), float("nan"))
    train, judge = linear_view(model, data, rows), linear_view(model, data, heldout)
    problem = _Problem(train, model)
    before = judge.logloss(*tables(model))
    blocks = [b for b in PRECISIONS if (problem.block == b).any()]
    if not blocks:
        return RefitOutcome(False, {}, before, before)
    block_of = {b: torch.from_numpy(problem.block == b) for b in blocks}

    def fit(chosen: dict[str, float], start: torch.Tensor) -> tuple[float, torch.Tensor]:
        precision = torch.zeros(problem.size, dtype=torch.float64)
        for b, value in chosen.items():
            precision[block_of[b]] = value
        with torch.enable_grad():
            x = problem.solve(precision, start)
        return judge.logloss(*problem.full_tables(model, x)), x

    chosen = {b: max(PRECISIONS[b]) for b in blocks}  # the strongest prior of each table first
    loss, x = fit(chosen, torch.zeros(problem.size, dtype=torch.float64))
    for b in blocks:  # then each table's precision in turn, warm-started from the best solution so far
        for value in sorted(PRECISIONS[b], reverse=True)[1:]:
            trial_loss, trial = fit({**chosen, b: value}, x)
            if trial_loss < loss - 1e-7:
                loss, x, chosen = trial_loss, trial, {**chosen, b: value}
    if not loss < before:
        return RefitOutcome(False, chosen, before, before)
    _set_tables(model, *problem.full_tables(model, x))
    return RefitOutcome(True, chosen, before, loss)
