"""The reward model's wide part fitted exactly: a MAP logistic regression given the rest of the network.

Stochastic steps with early stopping are a poor estimator of the parameters that each hold a handful of clicks
(each element's own effect, each product's appeal, each whole combination's effect) and of the linear effects
of features, which a logistic regression estimates well from few clicks: single steps are noisy, and the
epoch at which held-out log loss turns is one crude regulariser for ids seen ten times and ids seen ten
thousand times. With the network frozen, the click logit of a logged combination is linear in those parts,

    logit_i = o_i + [1, u_i, z_i] . b + v[product_i]
              + sum_m alpha_im (w[element_im] + u_i . g[element_im] + [1, u_i] . W_m . x_im) + t_i c[combination_i]
              + sum_{m < m'} r[pair_imm']

(o: everything else the network says; u_i, z_i: user and ad features, b the appeal's linear layer;
alpha: the MIL pooling weights; g: each element id's weights on the user features, `ModelConfig.user_id_effects`,
the MVT paper's context x widget terms; x_im: the shown element's features, W_m the wide feature term of
`ModelConfig.feature_effects`; t: the combination's trust, see GenCO.bag_terms; r: the effect of each pair of
element ids, `ModelConfig.pair_effects`, MVT's pairwise terms), so their MAP under Gaussian priors
N(0, 1 / lambda) is a convex logistic regression. It is solved to convergence here (full-batch L-BFGS,
diagonally preconditioned), the way MVT (Hill et al. 2017) fits its first-order terms. A Gaussian prior
shrinks by information, not by impressions: an id seen 1,000 times with 15 clicks stays near what its features
say, where shrinkage by impressions would trust it. The prior centre, zero, is what the network already
predicts.

Training uses it twice (genco.train): before stage 1, on a network whose output is zero and on each member's
training rows, so that the network learns what the wide part cannot say (and is kept only where that helps on
held-out rows); and after it, given the trained network, on every row: once the held-out rows have judged the
priors and the network, they are clicks the wide part should not go without (the wide part alone on 25
table-form logs of 200,000 impressions: 0.749 of the oracle's lift solved on the 90% of rows its priors were
chosen on, 0.787 solved on every row; benchmarks/table_form.py).

The precisions are chosen once for all the members of an ensemble (choose_priors), one of three ways
(TrainConfig.wide_priors). By the evidence (type-II maximum likelihood, choose_by_evidence): the precisions
under which the training rows are most likely, each order sized by what the lower orders leave unexplained;
on a table of combinations it recovers the split of the variance between main effects, pairs and higher
orders, and it needs no held-out rows. The default, "evidence", pools each block and counts the
well-determined coordinates from the Hessian's diagonal, which shrinks the pairs of ids too hard; "ard" gives
each component and each pair of components its own precision and counts them with the posterior's own
covariance. Or by
the held-out log loss, one block at a time over a
small grid (starting from a moderate prior of each), summed over the members' held-out rows: a tenth of a
small log is a noisy judge (on one log of 10,000 impressions with 5 candidates per component it let the user x
element weights and the combination effects loose, precisions 100 and 10 where the evidence says 1,500 and
100, and lost 0.13 of the oracle's lift), and members that chose apart averaged into a model worse than each.
"""

from __future__ import annotations

from dataclasses import dataclass, fields

import numpy as np
import torch
import torch.nn.functional as F

from genco.data import EncodedRows, batch_indices, collate
from genco.model import GenCO, component_pairs

#: Prior precisions tried per block (1 / variance of the N(0, .) prior on its log-odds weights), the first of each
#: the one a block keeps unless held-out rows say otherwise: a moderate prior, since on small logs the held-out
#: rows say little and neither extreme is a safe default.
PRECISIONS = {"features": (10.0, 1.0, 100.0, 1000.0), "user x features": (1000.0, 10.0, 100.0, 10000.0),
              "context": (10.0, 1.0, 100.0), "products": (10.0, 1.0, 3.0, 30.0, 100.0),
              "elements": (10.0, 3.0, 30.0, 100.0), "user x elements": (1000.0, 100.0, 10000.0), "pairs": (1000.0, 300.0, 3000.0),
              "combinations": (100.0, 10.0, 30.0, 1000.0)}
#: Training rows the priors are chosen on (each choice is a solve); the chosen priors are then solved on every row.
SELECT_ROWS = 20_000
#: The appeal's bias has no prior to speak of: it is the overall click rate.
FLAT = 1e-6
#: How the precisions are chosen (choose_priors's `priors`), and the training rows the evidence is measured on.
PRIORS = ("evidence", "ard", "heldout")
EVIDENCE_ROWS = 50_000
#: Fixed-point rounds per block of choose_by_evidence, the range its precisions are kept in, and the precision
#: that holds a block not yet switched on at zero.
EVIDENCE_ROUNDS = 4
EVIDENCE_RANGE = (1e-2, 1e6)
OFF = 1e8
#: Hutchinson probes of _Problem.well_determined, and its conjugate gradients' steps and tolerance (of the residual).
PROBES = 16
CG_STEPS = 100
CG_TOLERANCE = 1e-3


@dataclass
class Wide:
    """The wide part's parameters, full size."""

    element: torch.Tensor  # (id buckets,) each element's own effect
    product: torch.Tensor  # (ad buckets,) each product's appeal
    combination: torch.Tensor  # (combination buckets,) each whole combination's effect
    pair: torch.Tensor  # (pair buckets,) each pair of element ids' effect
    user_element: torch.Tensor  # (id buckets * U,) g, each element id's weights on the user features, flattened (empty: unused)
    feature: torch.Tensor  # (M, 1 + U, F) W_m, zero-padded to the widest feature vector
    appeal: torch.Tensor  # (1 + U + A,) the appeal's bias, then its weights on user and ad features

    def tables(self) -> tuple[torch.Tensor, ...]:
        """The id tables, in TABLES order."""
        return self.element, self.product, self.combination, self.pair, self.user_element


@dataclass
class LinearView:
    """n logged rows as a logistic regression in the wide part (see the module doc)."""

    offset: torch.Tensor  # (n,) the logit without the wide part's contribution
    alpha: torch.Tensor  # (n, M) pooling weight of each shown element (0: absent)
    element: torch.Tensor  # (n, M) element id bucket (-1: absent)
    product: torch.Tensor  # (n,) ad bucket
    trust: torch.Tensor  # (n,) weight of the combination's own effect (0 without combination effects)
    combination: torch.Tensor  # (n,) combination bucket
    pair: torch.Tensor  # (n, P) pair bucket of each pair of components
    pair_present: torch.Tensor  # (n, P) both elements of the pair shown (False everywhere without pair effects)
    features: torch.Tensor  # (n, M, F) features of each shown element, zero-padded (zeros: absent)
    context: torch.Tensor  # (n, 1 + U) [1, user]
    appeal_in: torch.Tensor  # (n, 1 + U + A) [1, user, ad]
    click: torch.Tensor  # (n,)

    def wide_logit(self, wide: Wide) -> torch.Tensor:
        """The wide part of every row's logit (n,)."""
        per_element = torch.einsum("nmf,mcf,nc->nm", self.features, wide.feature.to(self.features.dtype), self.context)
        user = self.context[:, 1:]  # (n, U)
        if len(wide.user_element):
            per_element = per_element + (wide.user_element[user_element_keys(self.element, user.shape[1])] * user[:, None, :]).sum(dim=2)
        return ((self.alpha * (wide.element[self.element.clamp(min=0)] + per_element)).sum(dim=1)
                + wide.product[self.product] + self.trust * wide.combination[self.combination]
                + (wide.pair[self.pair] * self.pair_present).sum(dim=1)
                + self.appeal_in @ wide.appeal.to(self.appeal_in.dtype))

    def logloss(self, wide: Wide) -> float:
        return float(F.binary_cross_entropy_with_logits(self.offset + self.wide_logit(wide), self.click))


def user_element_keys(element: torch.Tensor, U: int) -> torch.Tensor:
    """Where each shown element's user weights sit in the flattened table g: element buckets (n, M), -1 absent
    (read as bucket 0, which the pooling weight 0 then silences) -> (n, M, U)."""
    return element.clamp(min=0)[..., None] * U + torch.arange(U)


@torch.no_grad()
def linear_view(model: GenCO, data: EncodedRows, rows: np.ndarray, batch_size: int = 2048) -> LinearView:
    """The logged combinations of `rows` as a LinearView of the model (eval mode: no dropout)."""
    model.eval()
    current = wide_of(model)
    parts: list[LinearView] = []
    for idx in batch_indices(len(rows), batch_size):
        batch = collate(data, rows[idx])
        enc = model.encode(batch)
        terms = model.bag_terms(enc, batch.shown[:, None, :])  # (B, 1, ...)
        present, B = terms.present[:, 0], batch.size  # (B, M)
        P = len(component_pairs(present.shape[1])[0])
        shown = torch.zeros(B, len(batch.features), current.feature.shape[-1])  # (B, M, F)
        for m, f in enumerate(batch.features):
            if f.shape[-1] and f.shape[1]:
                at = batch.shown[:, m].clamp(min=0)
                shown[:, m, :f.shape[-1]] = torch.where(present[:, m, None], f[torch.arange(B), at], 0.0)
        view = LinearView(
            offset=enc.appeal + terms.creative[:, 0], alpha=terms.alpha[:, 0], element=torch.where(present, terms.bucket[:, 0], -1),
            product=batch.ad_bucket, trust=terms.trust[:, 0] if terms.trust is not None else torch.zeros(B),
            combination=terms.combination[:, 0] if terms.combination is not None else torch.zeros(B, dtype=torch.long),
            pair=terms.pair[:, 0] if terms.pair is not None else torch.zeros(B, P, dtype=torch.long),
            pair_present=terms.pair_present[:, 0] if terms.pair is not None else torch.zeros(B, P, dtype=torch.bool),
            features=shown, context=torch.cat([torch.ones(B, 1), batch.user], dim=1),
            appeal_in=torch.cat([torch.ones(B, 1), batch.user, batch.ad], dim=1), click=batch.click)
        view.offset = view.offset - view.wide_logit(current)
        parts.append(view)
    return LinearView(**{f.name: torch.cat([getattr(v, f.name) for v in parts]) for f in fields(LinearView)})


#: The id tables, in Wide's order and with their blocks' names.
TABLES = ("elements", "products", "combinations", "pairs", "user x elements")


def _used_tables(model: GenCO) -> list[tuple[torch.Tensor, bool]]:
    """The id tables (TABLES) as vectors (views of the model's), and whether the model uses each."""
    c, schema = model.config, model.schema
    user_ids = model.user_id_effect
    return [(model.element_effect.weight[:, 0], c.element_ids), (model.ad_appeal.weight[:, 0], c.ad_ids),
            (model.combination_effect.weight[:, 0], c.combination_effects),
            (model.pair_effect if model.pair_effect is not None else torch.zeros(schema.pair_buckets), model.pair_effect is not None),
            (user_ids.view(-1) if user_ids is not None else torch.zeros(0), user_ids is not None)]  # unused: empty, not id buckets x U zeros


def wide_of(model: GenCO) -> Wide:
    """The model's wide part as it stands (zeros where the model does not use a table)."""
    tables = (table.detach().clone() if used else torch.zeros(len(table)) for table, used in _used_tables(model))
    appeal = torch.cat([model.appeal.bias.detach(), model.appeal.weight.detach()[0]])
    feature = model.feature_effect.detach().clone() if model.config.feature_effects else torch.zeros(model.feature_effect.shape)
    return Wide(*tables, feature, appeal)


def _set_wide(model: GenCO, wide: Wide) -> None:
    for (table, used), value in zip(_used_tables(model), wide.tables()):
        if used:
            table.copy_(value)
    if model.config.feature_effects:
        model.feature_effect.copy_(wide.feature)
    model.appeal.bias.copy_(wide.appeal[:1])
    model.appeal.weight.copy_(wide.appeal[None, 1:])


class _Problem:
    """The regression on the ids the training rows touch: one vector x holding each table's touched ids
    renumbered (TABLES), then, with feature effects, W flattened ("features"
    for its first row, "user x features" for the rest), then the appeal's bias ("bias") and weights ("context")."""

    def __init__(self, view: LinearView, model: GenCO):
        n = len(view.click)
        present = view.element >= 0
        user = view.context[:, 1:] if model.user_id_effect is not None else view.context[:, :0]  # (n, U); (n, 0) unused
        user_keys = user_element_keys(view.element, user.shape[1])  # (n, M, U)
        shown = (view.element[present], view.product, view.combination, view.pair[view.pair_present], user_keys[present])  # what the rows touch
        self.touched = [torch.unique(ids) if used else torch.zeros(0, dtype=torch.long)
                        for ids, (_, used) in zip(shown, _used_tables(model))]
        starts = np.cumsum([0] + [len(t) for t in self.touched])
        self.tabled_size = int(starts[-1])
        self.feature_shape = model.feature_effect.shape if model.config.feature_effects else (0, 0, 0)  # (M, 1 + U, F)
        feature_rows = np.broadcast_to(np.arange(self.feature_shape[1])[None, :, None], self.feature_shape).reshape(-1)
        self.appeal_at = self.tabled_size + len(feature_rows)
        appeal_size = view.appeal_in.shape[1]
        self.size = self.appeal_at + appeal_size
        self.block = np.concatenate([np.repeat(np.array(TABLES), [len(t) for t in self.touched]),
                                     np.where(feature_rows == 0, "features", "user x features"),
                                     ["bias"] + ["context"] * (appeal_size - 1)])
        # each coordinate's group for ARD (choose_by_evidence): its block, split by component for the element
        # tables and by pair of components for the pairs ("elements title", "pairs title x image")
        group = self.block.astype(object)
        components, M, P = model.schema.components, view.element.shape[1], view.pair.shape[1]
        pair_names = [f"{components[a]} x {components[b]}" for a, b in zip(*(c.tolist() for c in component_pairs(M)))]
        component = torch.arange(M).expand(n, M)  # (n, M)
        where_from = (component[present], None, None, torch.arange(P).expand(n, P)[view.pair_present],
                      component[:, :, None].expand(n, M, user.shape[1])[present])  # the component (pair) of each shown id
        for table, t, ids, origin, start in zip(TABLES, self.touched, shown, where_from, starts):
            if origin is not None and len(t):
                of = torch.zeros(len(t), dtype=torch.long)
                of[torch.searchsorted(t, ids)] = origin
                names = pair_names if table == "pairs" else components
                group[start:start + len(t)] = [f"{table} {names[i]}" for i in of.tolist()]
        self.group = group.astype(str)  # fixed-width text: compared in C, as often as precision() is called
        # every row's nonzeros in the id tables (n, M + 2 + P + M U): its M elements, its product, its combination,
        # its P pairs, its M elements' U user weights; weight 0 where unused
        alpha = view.alpha.masked_fill(~present, 0.0)  # (n, M)
        keys = [view.element.clamp(min=0), view.product[:, None], view.combination[:, None], view.pair, user_keys.reshape(n, -1)]
        weights = [alpha, torch.ones(n, 1), view.trust[:, None], view.pair_present.double(),
                   (alpha[..., None] * user[:, None, :]).reshape(n, -1)]
        self.columns = torch.cat([start + torch.searchsorted(t, key).clamp(max=len(t) - 1) if len(t) else torch.zeros_like(key)
                                  for t, key, start in zip(self.touched, keys, starts)], dim=1)
        self.weights = torch.cat([w.double() if len(t) else torch.zeros(w.shape, dtype=torch.float64)
                                  for t, w in zip(self.touched, weights)], dim=1)
        self.alpha = weights[0].double()  # (n, M)
        self.features, self.context = view.features.double(), view.context.double()  # (n, M, F), (n, 1 + U)
        self.shown_features = (self.alpha[..., None] * self.features).flatten(1)  # (n, M F): each element's pooled features
        self.appeal_in = view.appeal_in.double()  # (n, 1 + U + A)
        self.offset, self.click = view.offset.double(), view.click.double()

    def precision(self, chosen: dict[str, float]) -> torch.Tensor:
        """The prior precision of every coordinate (size,): each block's chosen value, FLAT elsewhere."""
        precision = torch.full((self.size,), FLAT, dtype=torch.float64)
        for block, value in chosen.items():
            precision[torch.from_numpy((self.block == block) | (self.group == block))] = value
        return precision

    def feature_weights(self, x: torch.Tensor) -> torch.Tensor:
        """W (M, 1 + U, F) of a solution x."""
        return x[self.tabled_size:self.appeal_at].view(self.feature_shape)

    def logit(self, x: torch.Tensor) -> torch.Tensor:
        logit = self.offset + (self.weights * x[self.columns]).sum(dim=1) + self.appeal_in @ x[self.appeal_at:]
        if self.appeal_at > self.tabled_size:
            per_element = torch.einsum("nmf,mcf,nc->nm", self.features, self.feature_weights(x), self.context)
            logit = logit + (self.alpha * per_element).sum(dim=1)
        return logit

    def curvature(self, x: torch.Tensor) -> torch.Tensor:
        """The diagonal of the log-likelihood's Hessian at x: (size,)."""
        p = torch.sigmoid(self.logit(x))
        s = p * (1 - p)  # (n,)
        curvature = torch.zeros(self.size, dtype=torch.float64)
        curvature.index_add_(0, self.columns.reshape(-1), (s[:, None] * self.weights ** 2).reshape(-1))
        if self.appeal_at > self.tabled_size:
            curvature[self.tabled_size:self.appeal_at] = torch.einsum(
                "n,nm,nc,nmf->mcf", s, self.alpha ** 2, self.context ** 2, self.features ** 2).reshape(-1)
        curvature[self.appeal_at:] = s @ self.appeal_in ** 2
        return curvature

    def times(self, v: torch.Tensor) -> torch.Tensor:
        """J v for K directions at once, J the logit's Jacobian (n, size): v (size, K) -> (n, K)."""
        out = (self.weights[..., None] * v[self.columns]).sum(dim=1) + self.appeal_in @ v[self.appeal_at:]
        if self.appeal_at > self.tabled_size:
            M, C, Fw = self.feature_shape
            W = v[self.tabled_size:self.appeal_at].view(M, C, Fw, -1).transpose(1, 2).reshape(M * Fw, -1)  # (M F, (1 + U) K)
            by_context = (self.shown_features @ W).view(len(out), C, -1)  # (n, 1 + U, K)
            out = out + (by_context * self.context[:, :, None]).sum(dim=1)
        return out

    def transposed_times(self, u: torch.Tensor) -> torch.Tensor:
        """J^T u: u (n, K) -> (size, K)."""
        K = u.shape[1]
        out = torch.zeros(self.size, K, dtype=torch.float64)
        out.index_add_(0, self.columns.reshape(-1), (self.weights[..., None] * u[:, None, :]).reshape(-1, K))
        if self.appeal_at > self.tabled_size:
            by_context = (self.context[:, :, None] * u[:, None, :]).flatten(1)  # (n, (1 + U) K)
            M, C, Fw = self.feature_shape
            out[self.tabled_size:self.appeal_at] = (self.shown_features.T @ by_context).view(M, Fw, C, K).transpose(1, 2).reshape(-1, K)
        out[self.appeal_at:] = self.appeal_in.T @ u
        return out

    def well_determined(self, x: torch.Tensor, precision: torch.Tensor, mask: torch.Tensor,
                        probes: int = PROBES) -> torch.Tensor:
        """How far the rows determine each coordinate in `mask` (size,; 0 elsewhere), between 0 (the prior alone)
        and 1: the diagonal of Sigma H = 1 - precision_j Sigma_jj, H = J^T S J the likelihood's Hessian at x
        (S = p(1 - p)), Sigma = (H + diag(precision))^-1 the Laplace posterior's covariance. Exact (one unit probe
        per coordinate) where `mask` holds at most `probes` coordinates, else Hutchinson's unbiased estimate from
        `probes` Rademacher vectors (its sum over many coordinates is what is accurate), each system solved by
        conjugate gradients. It is solved as Sigma (H v), not as 1 - precision (Sigma v): where the prior
        dominates, the latter is a small difference of numbers near 1 that the solver's error swamps. Unlike
        h_j / (h_j + precision_j) from the Hessian's diagonal, it knows that the coordinates one row touches share
        that row's information: fifteen pairs of ids seen together in one impression are not fifteen
        well-determined weights."""
        p = torch.sigmoid(self.logit(x))
        s = p * (1 - p)  # (n,)
        at = torch.nonzero(mask).squeeze(1)
        exact = len(at) <= probes
        if exact:
            v = torch.zeros(self.size, len(at), dtype=torch.float64)
            v[at, torch.arange(len(at))] = 1.0
        else:
            signs = torch.randint(0, 2, (len(at), probes), generator=torch.Generator().manual_seed(len(at)))
            v = torch.zeros(self.size, probes, dtype=torch.float64)
            v[at] = signs.double() * 2 - 1
        likelihood = lambda w: self.transposed_times(s[:, None] * self.times(w))  # noqa: E731  H w
        w = conjugate_gradients(lambda w: likelihood(w) + precision[:, None] * w, likelihood(v), self.curvature(x) + precision)
        return (v * w).sum(dim=1) / (1 if exact else probes)

    def solve(self, precision: torch.Tensor, start: torch.Tensor, max_iter: int = 200) -> torch.Tensor:
        """argmin_x  sum_i BCE(logit_i(x), y_i) + 1/2 sum_j precision_j x_j^2, by L-BFGS in x / sqrt(curvature)."""
        scale = (precision + self.curvature(start)).rsqrt()  # x = scale * z: each coordinate's curvature about 1 at the start
        z = (start / scale).clone().requires_grad_(True)
        optimizer = torch.optim.LBFGS([z], lr=1.0, max_iter=max_iter, tolerance_grad=1e-5, tolerance_change=1e-9,
                                      history_size=20, line_search_fn="strong_wolfe")

        def closure() -> torch.Tensor:
            optimizer.zero_grad()
            x = scale * z
            loss = F.binary_cross_entropy_with_logits(self.logit(x), self.click, reduction="sum") + 0.5 * (precision * x * x).sum()
            loss.backward()
            return loss

        optimizer.step(closure)
        return (scale * z).detach()

    def start(self, wide: Wide) -> torch.Tensor:
        """x of a wide part: the ids the rows touch, W and the appeal as they stand."""
        parts = [table[t].double() for table, t in zip(wide.tables(), self.touched)]
        feature = wide.feature.double().reshape(-1) if self.appeal_at > self.tabled_size else torch.zeros(0, dtype=torch.float64)
        return torch.cat([*parts, feature, wide.appeal.double()])

    def full(self, model: GenCO, x: torch.Tensor) -> Wide:
        """The full-size wide part of a solution: ids the training rows never touched sit at the prior's centre, 0."""
        tables = [torch.zeros(len(table)) for table, _ in _used_tables(model)]
        start = 0
        for table, t in zip(tables, self.touched):
            table[t] = x[start:start + len(t)].float()
            start += len(t)
        feature = (self.feature_weights(x).float() if self.appeal_at > self.tabled_size
                   else torch.zeros(model.feature_effect.shape))
        return Wide(*tables, feature, x[self.appeal_at:].float())


def conjugate_gradients(apply, b: torch.Tensor, diagonal: torch.Tensor, steps: int = CG_STEPS,
                        tolerance: float = CG_TOLERANCE) -> torch.Tensor:
    """A^-1 b for K right-hand sides at once, A symmetric positive definite given as a function (size, K) ->
    (size, K), by conjugate gradients preconditioned by A's diagonal (size,), until every column's residual
    is under `tolerance` of its right-hand side."""
    x = torch.zeros_like(b)
    r = b.clone()
    z = r / diagonal[:, None]
    d = z.clone()
    rz = (r * z).sum(dim=0)  # (K,)
    goal = tolerance * b.norm(dim=0)
    for _ in range(steps):
        if (r.norm(dim=0) <= goal).all():
            break
        Ad = apply(d)
        step = rz / (d * Ad).sum(dim=0).clamp(min=1e-300)
        x = x + step * d
        r = r - step * Ad
        z = r / diagonal[:, None]
        rz_next = (r * z).sum(dim=0)
        d = z + (rz_next / rz.clamp(min=1e-300)) * d
        rz = rz_next
    return x


GROUPED = ("elements", "user x elements", "pairs")


def choose_by_evidence(problem: _Problem, blocks: list[str], start: torch.Tensor, first: dict[str, float],
                       rounds: int = EVIDENCE_ROUNDS, ard: bool = False) -> dict[str, float]:
    """Each block's precision as the one that maximises the evidence (type-II maximum likelihood, MacKay's
    fixed point  lambda_b <- gamma_b / |x_b|^2,  gamma_b = sum_j (1 - lambda_b Sigma_jj)  the block's number
    of well-determined coordinates, Sigma the Laplace posterior's covariance at the MAP), blocks in
    PRECISIONS order, lower orders first: each block is switched on with the blocks after it held at zero,
    so that it is sized by what the blocks before it leave unexplained (jointly, the richest block, whole
    combinations, which can fit every row's mean on its own, would swallow the others).

    Without `ard`, each coordinate's term is taken as h_j / (h_j + lambda_b), h the diagonal of the likelihood's
    Hessian: cheap, and blind to coordinates that share rows, so it overcounts the well-determined ones and
    shrinks too hard where many share few rows (the pairs of ids). With `ard` (automatic relevance
    determination), the terms are the posterior's own (_Problem.well_determined), and the blocks in GROUPED get a precision per
    component (elements, user x elements) or pair of components (pairs): an image's effects and a call to
    action's need not share one spread, nor do the pairs that interact and those that do not. Each grouped
    block also keeps its pooled precision, for a group the rows at hand never touched. Returns the chosen
    precisions (solve_wide then fits under them)."""
    chosen, x = dict(first), start
    for at, block in enumerate(blocks):
        held_at_zero = {later: OFF for later in blocks[at + 1:]}
        in_block = problem.block == block
        groups = sorted(set(problem.group[in_block].tolist())) if ard and block in GROUPED else []
        for _ in range(rounds):
            precision = problem.precision({**chosen, **held_at_zero})
            with torch.enable_grad():
                x = problem.solve(precision, x)
            if ard:
                determined = problem.well_determined(x, precision, torch.from_numpy(in_block))
            else:
                curvature = problem.curvature(x)
                determined = curvature / (curvature + precision)
            for name in [block, *groups]:
                mask = torch.from_numpy((problem.block == name) | (problem.group == name))
                gamma = float(determined[mask].sum())
                chosen[name] = float(np.clip(max(gamma, 1e-6) / max(float((x[mask] ** 2).sum()), 1e-12), *EVIDENCE_RANGE))
    return chosen


def _blocks_and_first(problem: _Problem) -> tuple[list[str], dict[str, float]]:
    blocks = [b for b in PRECISIONS if (problem.block == b).any()]
    return blocks, {b: PRECISIONS[b][0] for b in blocks}


@dataclass
class _Fold:
    """One member's regression for choosing priors: its (sampled) training rows, judged on its held-out rows."""

    problem: _Problem
    judge: LinearView
    model: GenCO

    def heldout_logloss(self, x: torch.Tensor) -> float:
        return self.judge.logloss(self.problem.full(self.model, x))


@torch.no_grad()
def choose_priors(models: list[GenCO], data: EncodedRows, splits: list[tuple[np.ndarray, np.ndarray]], *,
                  priors: str = "evidence", select_rows: int = SELECT_ROWS, evidence_rows: int = EVIDENCE_ROWS) -> dict[str, float]:
    """The prior precisions of the wide part, one set for every model given (the members of an ensemble, each
    with its own (training rows, held-out rows) split). "evidence" and "ard" (ard=True): choose_by_evidence on the
    first member's training rows, at most `evidence_rows` of them (each fixed-point round is a solve; on the seed-1 world at
    200,000 impressions, 50,000 rows chose priors as good as all 180,000 did, 0.548 and 0.545 of the oracle's
    lift, and the whole run took 72% of the time). "heldout": each grid trial is solved for every member on at
    most `select_rows` of its training rows and judged by the sum of their held-out log losses, a
    cross-validation over the members' splits; one split's tenth of a small log is a noisy judge, and members
    that choose apart (combination precisions 10, 100 and 1000 on one log) average into a model worse than
    each of them."""
    if priors not in PRIORS:
        raise ValueError(f"priors must be one of {PRIORS}, not {priors!r}")
    if priors in ("evidence", "ard"):
        model, (rows, _) = models[0], splits[0]
        problem = _Problem(linear_view(model, data, _sample(rows, evidence_rows)), model)
        blocks, first = _blocks_and_first(problem)
        return choose_by_evidence(problem, blocks, problem.start(wide_of(model)), first, ard=priors == "ard")
    folds = []
    for model, (rows, heldout) in zip(models, splits):
        folds.append(_Fold(_Problem(linear_view(model, data, _sample(rows, select_rows)), model), linear_view(model, data, heldout), model))
    blocks, first = _blocks_and_first(folds[0].problem)
    return choose_by_heldout(folds, blocks, first)


def _sample(rows: np.ndarray, at_most: int) -> np.ndarray:
    """At most `at_most` of the rows, the same ones for the same rows (sorted, so row order is kept)."""
    if len(rows) <= at_most:
        return rows
    return np.sort(np.random.default_rng(len(rows)).choice(rows, at_most, replace=False))


def choose_by_heldout(folds: list[_Fold], blocks: list[str], first: dict[str, float]) -> dict[str, float]:
    """Each block's precision from its grid in PRECISIONS by the held-out log loss summed over the folds, one
    block at a time, each trial warm-started from the best solutions so far."""

    def fit(chosen: dict[str, float], starts: list[torch.Tensor]) -> tuple[float, list[torch.Tensor]]:
        with torch.enable_grad():
            xs = [fold.problem.solve(fold.problem.precision(chosen), start) for fold, start in zip(folds, starts)]
        return sum(fold.heldout_logloss(x) for fold, x in zip(folds, xs)), xs

    chosen = dict(first)
    loss, xs = fit(chosen, [fold.problem.start(wide_of(fold.model)) for fold in folds])
    for b in blocks:
        for value in PRECISIONS[b][1:]:
            trial_loss, trial = fit({**chosen, b: value}, xs)
            if trial_loss < loss - 1e-7:
                loss, xs, chosen = trial_loss, trial, {**chosen, b: value}
    return chosen


@torch.no_grad()
def solve_wide(model: GenCO, data: EncodedRows, rows: np.ndarray, precisions: dict[str, float]) -> None:
    """Replace the model's wide part, in place, by its MAP on `rows` under the given prior precisions (blocks
    not named keep the first of their grid), given the rest of the network."""
    if len(rows) == 0:
        return
    problem = _Problem(linear_view(model, data, rows), model)
    blocks, first = _blocks_and_first(problem)
    with torch.enable_grad():
        x = problem.solve(problem.precision({**first, **precisions}),
                          problem.start(wide_of(model)))
    _set_wide(model, problem.full(model, x))


def described(precisions: dict[str, float]) -> str:
    return ", ".join(f"{block} {value:.4g}" for block, value in precisions.items())
