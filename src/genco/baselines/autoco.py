"""AutoCO-lite: AutoCO without its architecture search (Chen et al., "Automated Creative Optimization for
E-Commerce Advertising", WWW 2021; code: alimama-creative/AutoCO, `exp_simulate/fm_nas`).

A factorization machine (FM) scores whole creatives. A Gaussian posterior over its embeddings, learned by
stochastic variational inference, gives Thompson sampling. Selection enumerates the request's combinations
and takes the argmax of the score, as AutoCO's `recommend_batch` does.

Model. There is one field per input, and every field is a vector of width 1 + dim: a first-order weight and
an FM embedding.
- The user features, through a linear projection.
- The ad features, through a linear projection.
- The ad id, through an embedding.
- One field per component for the element shown: its id embedding plus a projection of its features. The
  field is zero when the row lacks the component.

    logit = bias + sum_f w_f + sum_{f < g} <v_f, v_g>

The pairwise sum is computed with the FM identity 0.5 * (|sum_f v_f|^2 - sum_f |v_f|^2).

What is kept from AutoCO:
- Uncertainty. The id embeddings and id first-order weights have a mean-field Gaussian posterior: softplus
  std, the reparameterisation trick, and a KL to a N(0, prior_std^2) prior (AutoCO uses 0.1). The loss is the
  negative ELBO: mean click BCE + KL / n_train, AutoCO's `loss_t + KL / len(loader)` up to a constant factor.
  The dense projections are point estimates, as AutoCO's dense feature fields are when `ts_trick=0`.
- Thompson sampling. One draw of the parameters serves a whole batch of `draw_every` requests (default 200,
  AutoCO's recommendation sub-batch `s_batch`). AutoCO's code draws its noise once per model
  (re-)initialisation and reuses it for every batch, so drawing per batch explores a little more within one
  call. `exploration_scale` multiplies the posterior std at draw time (AutoCO's `alpha`).
- Fitting starts from scratch on the logs given, as AutoCO's `update` re-initialises its model.

What differs:
- No architecture search. Every pair of fields interacts through the plain inner product. AutoCO searches,
  per pair of fields, over {multiply, plus, max, min, concat}. This is AutoCO's own "FM + TS" (`fmts`)
  configuration, fed with our fields.
- Id embeddings are looked up by (component, element id) string in a compact table built from the logs.
  This works like a hashed embedding without collisions, and it matches logs and requests whatever their
  element tables. Elements and ads absent from the logs get the prior: mean 0, std prior_std. Greedy mode
  then scores them by their features alone; Thompson sampling explores them.
- Enumeration stops at `max_combinations` per request (`combinations_of`). Beyond that, a uniform sample of
  that many combinations is scored, so the argmax is over a sample. This is the cost of enumeration, which
  grows with the product of the pool sizes.
- Explore-mode propensities are Monte Carlo estimates, since Thompson sampling has no closed form. The
  estimate is the share of draws that pick the served combination, counting the served draw and
  `propensity_draws` extra draws of the parameters. Under a sampled enumeration it is multiplied by the
  probability that the combination is in the sample. The result is an estimate, not an exact probability.
- Training uses Adam for a few epochs, checked on a held-out share (`validation_share`) of the logs.
  - Each epoch whose held-out BCE does not improve cuts the learning rate by `lr_decay`.
  - Training stops after `patience` such epochs in a row and keeps the best epoch.
  - AutoCO instead trains until its training loss stalls, for up to 200 epochs in its simulator.
  - On the checked world, the learning-rate cuts mattered: a fixed lr of 0.01 reached about 0.39 of the
    oracle lift on 200k logs, against about 0.60 with the cuts.
- Intra-op threads are capped at `threads` (default 1) during fit and choose, because the tensors are small.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from genco.baselines.base import Policy, choices, combinations_of, request_counts, shown_entries, torch_threads
from genco.data import EncodedRows
from genco.model import linear
from genco.select import Choices


def _inverse_softplus(x: float) -> float:
    return math.log(math.expm1(x))


@dataclass
class _Vocabulary:
    """Rows of the variational table: a block for ad ids, then one block per component.

    The first row of every block is "unknown": it is never trained and stays at the prior (mean 0).
    """

    ads: dict[str, int]  # ad id -> global row
    elements: dict[str, dict[str, int]]  # component -> element id -> global row
    unknown_ad: int
    unknown_element: dict[str, int]  # component -> global row of its unknown element
    size: int

    @classmethod
    def of_logs(cls, logs: EncodedRows) -> "_Vocabulary":
        row = 0
        unknown_ad, row = row, row + 1
        ads = {}
        for ad_id in logs.ad_ids:
            if ad_id not in ads:
                ads[ad_id], row = row, row + 1
        elements, unknown_element = {}, {}
        for name in logs.schema.components:
            unknown_element[name], row = row, row + 1
            ids = logs.element_ids[name]
            _, entries = shown_entries(logs, name)
            table: dict[str, int] = {}
            for entry in np.unique(entries):
                if ids[entry] not in table:
                    table[ids[entry]], row = row, row + 1
            elements[name] = table
        return cls(ads, elements, unknown_ad, unknown_element, row)

    def ad_rows(self, data: EncodedRows) -> np.ndarray:
        """(n,) global row of every row's ad id."""
        return np.array([self.ads.get(a, self.unknown_ad) for a in data.ad_ids], dtype=np.int64)

    def entry_rows(self, data: EncodedRows, name: str) -> np.ndarray:
        """(E,) global row of every entry of `data`'s element table of `name`."""
        table, unknown = self.elements[name], self.unknown_element[name]
        return np.array([table.get(i, unknown) for i in data.element_ids[name]], dtype=np.int64)


@dataclass
class _LogColumns:
    """The logs as model input. n rows, M known components."""

    user: torch.Tensor  # (n, U)
    ad: torch.Tensor  # (n, A)
    rows: torch.Tensor  # (n, 1 + M) table row of the ad id, then of each shown element (unknown where absent)
    present: torch.Tensor  # (n, M) 1.0 where the row has the component
    features: list[torch.Tensor]  # per component (n, F_m), zeros where absent
    click: torch.Tensor  # (n,)

    def take(self, idx: torch.Tensor) -> "_LogColumns":
        return _LogColumns(self.user[idx], self.ad[idx], self.rows[idx], self.present[idx],
                           [f[idx] for f in self.features], self.click[idx])


class _VariationalFM(nn.Module):
    """FM over fields, with a mean-field Gaussian posterior over the table of id vectors.

    Width W = 1 + dim: column 0 is a field's first-order weight, columns 1.. its FM embedding.
    """

    def __init__(self, user_dim: int, ad_dim: int, feature_dims: list[int], table_size: int, unknown_rows: list[int],
                 dim: int, prior_std: float, init_std: float):
        super().__init__()
        width = dim + 1
        self.prior_std = prior_std
        self.bias = nn.Parameter(torch.zeros(1))
        self.user = linear(user_dim, width, bias=False)
        self.ad = nn.Linear(ad_dim, width, bias=False) if ad_dim > 0 else None
        self.element = nn.ModuleList(linear(f, width, bias=False) for f in feature_dims)
        mean = 0.01 * torch.randn(table_size, width)
        rho = torch.full((table_size, width), _inverse_softplus(init_std))
        mean[unknown_rows] = 0.0
        rho[unknown_rows] = _inverse_softplus(prior_std)
        self.mean = nn.Parameter(mean)  # (R, W)
        self.rho = nn.Parameter(rho)  # (R, W); std = softplus(rho)

    def std(self) -> torch.Tensor:
        return F.softplus(self.rho)

    def kl(self) -> torch.Tensor:
        """KL(q || N(0, prior_std^2)) summed over the whole table."""
        std, s = self.std(), self.prior_std
        return (torch.log(s / std) + (std.pow(2) + self.mean.pow(2)) / (2 * s * s) - 0.5).sum()

    def draw_tables(self, draws: int, scale: float, generator: torch.Generator | None) -> torch.Tensor:
        """(D, R, W) parameter draws of the table; draws=0 gives the posterior mean alone, (1, R, W)."""
        if draws == 0:
            return self.mean[None]
        noise = torch.randn((draws, *self.mean.shape), generator=generator)
        return self.mean[None] + scale * self.std()[None] * noise

    def context(self, user: torch.Tensor, ad: torch.Tensor, ad_vectors: torch.Tensor) -> torch.Tensor:
        """(..., C, W) context fields: user, ad id and ad features (if any). ad_vectors: (..., W)."""
        fields = [self.user(user).expand_as(ad_vectors), ad_vectors]
        if self.ad is not None:
            fields.append(self.ad(ad).expand_as(ad_vectors))
        return torch.stack(fields, dim=-2)

    def forward(self, x: _LogColumns, sample: bool) -> torch.Tensor:
        """(B,) click logit; with sample=True the id vectors are drawn from q (reparameterisation)."""
        vectors = self.mean[x.rows]  # (B, 1 + M, W)
        if sample:
            vectors = vectors + self.std()[x.rows] * torch.randn_like(vectors)
        projected = torch.stack([proj(f) for proj, f in zip(self.element, x.features)], dim=1)  # (B, M, W)
        elements = (vectors[:, 1:] + projected) * x.present[..., None]  # (B, M, W)
        fields = torch.cat([self.context(x.user, x.ad, vectors[:, 0]), elements], dim=1)  # (B, Fd, W)
        return self.bias + fm_logit(fields)


def fm_logit(fields: torch.Tensor) -> torch.Tensor:
    """(..., Fd, W) fields -> (...) first-order sum + FM pairwise interactions (without the bias)."""
    v = fields[..., 1:]
    pairs = 0.5 * (v.sum(dim=-2).pow(2) - v.pow(2).sum(dim=-2)).sum(dim=-1)
    return fields[..., 0].sum(dim=-1) + pairs


class AutoCOLite(Policy):
    """FM + variational posterior + Thompson sampling over enumerated creatives (see the module doc)."""

    name = "autoco-lite"

    def __init__(self, dim: int = 8, prior_std: float = 0.1, init_std: float = 0.1, epochs: int = 40,
                 batch_size: int = 1024, learning_rate: float = 0.01, weight_decay: float = 1e-5,
                 validation_share: float = 0.1, patience: int = 3, lr_decay: float = 0.3, exploration_scale: float = 1.0,
                 max_combinations: int = 20_000, propensity_draws: int = 16, draw_every: int = 200, seed: int = 0,
                 threads: int | None = 1):
        self.dim = dim
        self.prior_std = prior_std
        self.init_std = init_std
        self.epochs = epochs
        self.batch_size = batch_size
        self.learning_rate = learning_rate
        self.weight_decay = weight_decay  # on the dense projections only; the id table is regularised by the KL
        self.validation_share = validation_share
        self.patience = patience
        self.lr_decay = lr_decay
        self.exploration_scale = exploration_scale
        self.max_combinations = max_combinations
        self.propensity_draws = propensity_draws
        self.draw_every = draw_every
        self.seed = seed
        self.threads = threads
        self.model: _VariationalFM | None = None
        self.vocabulary: _Vocabulary | None = None
        self.components: list[str] = []
        self.history: list[dict[str, float]] = []  # per epoch: train loss, validation BCE

    # -- fit ---------------------------------------------------------------------------------------------

    def _log_columns(self, logs: EncodedRows) -> _LogColumns:
        vocab = self.vocabulary
        rows = [vocab.ad_rows(logs)]
        present, features = [], []
        n = len(logs)
        for name in self.components:
            column = logs.columns[name]
            shown_rows, entries = shown_entries(logs, name)
            entry_rows = vocab.entry_rows(logs, name)
            r = np.full(n, vocab.unknown_element[name], dtype=np.int64)
            r[shown_rows] = entry_rows[entries]
            f = np.zeros((n, logs.schema.feature_dims[name]), dtype=np.float32)
            f[shown_rows] = column["table_features"][entries]
            p = np.zeros(n, dtype=np.float32)
            p[shown_rows] = 1.0
            rows.append(r)
            present.append(p)
            features.append(torch.from_numpy(f))
        return _LogColumns(
            user=torch.from_numpy(np.ascontiguousarray(logs.user, dtype=np.float32)),
            ad=torch.from_numpy(np.ascontiguousarray(logs.ad, dtype=np.float32)),
            rows=torch.from_numpy(np.stack(rows, axis=1)),
            present=torch.from_numpy(np.stack(present, axis=1)),
            features=features,
            click=torch.from_numpy(np.asarray(logs.click, dtype=np.float32)),
        )

    def fit(self, logs: EncodedRows) -> "AutoCOLite":
        if len(logs) == 0 or logs.click is None:
            raise ValueError("AutoCOLite.fit needs log rows with clicks")
        self.components = list(logs.schema.components)
        self.vocabulary = _Vocabulary.of_logs(logs)
        data = self._log_columns(logs)
        n = len(logs)
        rng = np.random.default_rng(self.seed)
        order = rng.permutation(n)
        n_valid = int(n * self.validation_share) if n * self.validation_share >= 200 else 0
        valid = data.take(torch.from_numpy(order[:n_valid])) if n_valid else None
        train_idx = order[n_valid:]
        self.history = []
        with torch_threads(self.threads), torch.random.fork_rng(devices=[]):
            torch.manual_seed(self.seed)
            vocab = self.vocabulary
            model = _VariationalFM(
                user_dim=logs.user.shape[1], ad_dim=logs.ad.shape[1],
                feature_dims=[logs.schema.feature_dims[c] for c in self.components], table_size=vocab.size,
                unknown_rows=[vocab.unknown_ad, *vocab.unknown_element.values()],
                dim=self.dim, prior_std=self.prior_std, init_std=self.init_std,
            )
            dense = [p for name, p in model.named_parameters() if name not in ("mean", "rho", "bias")]
            optimizer = torch.optim.Adam([
                {"params": dense, "weight_decay": self.weight_decay},
                {"params": [model.mean, model.rho, model.bias], "weight_decay": 0.0},
            ], lr=self.learning_rate)
            with torch.no_grad():  # start the bias at the logs' CTR
                ctr = float(data.click.mean().clamp(1e-4, 1 - 1e-4))
                model.bias.fill_(math.log(ctr / (1 - ctr)))
            kl_weight = 1.0 / max(len(train_idx), 1)
            best, best_state, stale = math.inf, None, 0
            for epoch in range(self.epochs):
                model.train()
                rng.shuffle(train_idx)
                total, steps = 0.0, 0
                for start in range(0, len(train_idx), self.batch_size):
                    batch = data.take(torch.from_numpy(train_idx[start:start + self.batch_size]))
                    logit = model(batch, sample=True)
                    loss = F.binary_cross_entropy_with_logits(logit, batch.click) + kl_weight * model.kl()
                    optimizer.zero_grad()
                    loss.backward()
                    optimizer.step()
                    total, steps = total + loss.item(), steps + 1
                record = {"epoch": epoch, "train_loss": total / max(steps, 1)}
                if valid is not None:
                    model.eval()
                    with torch.no_grad():
                        bce = float(F.binary_cross_entropy_with_logits(model(valid, sample=False), valid.click))
                    record["valid_bce"] = bce
                    if bce < best - 1e-6:
                        best, stale = bce, 0
                        best_state = {k: v.detach().clone() for k, v in model.state_dict().items()}
                    else:
                        stale += 1
                        for group in optimizer.param_groups:  # a plateau: smaller steps from here on
                            group["lr"] *= self.lr_decay
                    record["lr"] = optimizer.param_groups[0]["lr"]
                self.history.append(record)
                if valid is not None and stale >= self.patience:
                    break
            if best_state is not None:
                model.load_state_dict(best_state)
        model.eval()
        self.model = model
        return self

    # -- choose ------------------------------------------------------------------------------------------

    def choose(self, requests: EncodedRows, *, greedy: bool = True, seed: int = 0) -> Choices:
        with torch_threads(self.threads), torch.no_grad():
            return self._choose(requests, greedy, seed)

    def _choose(self, requests: EncodedRows, greedy: bool, seed: int) -> Choices:
        if self.model is None:
            raise RuntimeError("AutoCOLite: call fit() before choose()")
        model, vocab = self.model, self.vocabulary
        rng = np.random.default_rng(seed)
        generator = torch.Generator().manual_seed(seed)
        names = list(requests.schema.components)
        known = [name for name in names if name in vocab.elements]
        for name in known:
            if requests.schema.feature_dims[name] != model.element[self.components.index(name)].in_features:
                raise ValueError(f"component {name!r}: requests have {requests.schema.feature_dims[name]} features, "
                                 "the logs had a different number")
        n = len(requests)
        counts = request_counts(requests)  # (n, M_req)
        known_cols = [names.index(c) for c in known]
        # Components the logs never had carry no information: candidate 0 (greedy) or uniform (explore).
        positions = np.where(counts > 0, 0, -1)
        propensity = np.ones(n)
        score = np.full(n, np.nan)  # posterior-mean P(click) of the answer; NaN if no component is known
        if not greedy:
            for m, name in enumerate(names):
                if name not in vocab.elements:
                    has = counts[:, m] > 0
                    positions[has, m] = np.floor(rng.random(has.sum()) * counts[has, m]).astype(int)
                    propensity[has] /= counts[has, m]
        user = torch.from_numpy(np.ascontiguousarray(requests.user, dtype=np.float32))
        ad = torch.from_numpy(np.ascontiguousarray(requests.ad, dtype=np.float32))
        ad_rows = torch.from_numpy(vocab.ad_rows(requests))
        entry_rows = {name: torch.from_numpy(vocab.entry_rows(requests, name)) for name in known}
        entry_features = {name: torch.from_numpy(requests.columns[name]["table_features"]) for name in known}
        # draws: 0 = posterior mean (the reported score); explore: 1 = the served draw, 2.. propensity draws
        extra = 0 if greedy else 1 + self.propensity_draws
        for start in range(0, n, self.draw_every):
            batch = np.arange(start, min(n, start + self.draw_every))
            tables = model.draw_tables(0, 1.0, None)  # (D, R, W), D = 1 + extra
            if extra:
                tables = torch.cat([tables, model.draw_tables(extra, self.exploration_scale, generator)])
            # (D, E_m, W) every element of the requests' table under every draw
            elements = {name: tables[:, entry_rows[name]] + model.element[self.components.index(name)](entry_features[name])[None]
                        for name in known}
            context = model.context(user[batch][None], ad[batch][None], tables[:, ad_rows[batch]])  # (D, B, C, W)
            context_sum = context.sum(dim=2)  # (D, B, W)
            constant = model.bias + fm_logit(context)  # (D, B)
            for b, r in enumerate(batch):
                # greedy: the sample of a huge pool is keyed by the request, so the answer does not depend on the seed
                request_rng = np.random.default_rng(int(requests.row_key[r])) if greedy else rng
                combos, sampled, scores = self._score_request(requests, r, known, known_cols, counts[r], elements,
                                                              context_sum[:, b], constant[:, b], request_rng)
                if combos is None:
                    continue
                winners = scores.argmax(dim=1).numpy()  # (D,)
                pick = winners[0] if greedy else winners[1]
                positions[r, known_cols] = combos[pick][known_cols]
                score[r] = float(torch.sigmoid(scores[0, pick]))
                if not greedy:
                    p = float(np.mean(winners[1:] == pick))
                    if sampled:
                        total = float(np.prod(np.maximum(counts[r, known_cols], 1), dtype=np.float64))
                        p *= -math.expm1(len(combos) * math.log1p(-1.0 / total))  # P(in the sample)
                    propensity[r] *= p
        return choices(requests, positions, score=score, propensity=propensity)

    def _score_request(self, requests: EncodedRows, r: int, known: list[str], known_cols: list[int], counts: np.ndarray,
                       elements: dict[str, torch.Tensor], context_sum: torch.Tensor, constant: torch.Tensor,
                       rng: np.random.Generator) -> tuple[np.ndarray | None, bool, torch.Tensor | None]:
        """Enumerate request r's combinations of known components and score them under every draw.

        Returns combos (C, M_req) positions, whether they are a sample, and logits (D, C).
        logit = constant + sum_m a_m[j_m] + sum_{m < m'} <v_m[j_m], v_m'[j_m']>, with
        a_m[j] = w_m[j] + <context_sum, v_m[j]> (the FM identity split into context and element parts).
        """
        known_counts = np.zeros_like(counts)
        known_counts[known_cols] = counts[known_cols]
        if not known_counts.any():
            return None, False, None
        combos, sampled = combinations_of(known_counts, self.max_combinations, rng)  # (C, M_req)
        vectors, unary = [], []
        for name, m in zip(known, known_cols):
            if counts[m] == 0:
                continue
            column = requests.columns[name]
            entries = torch.from_numpy(column["members"][column["offsets"][r]:column["offsets"][r + 1]].astype(np.int64))
            v = elements[name][:, entries]  # (D, n_m, W)
            a = v[..., 0] + (v[..., 1:] * context_sum[:, None, 1:]).sum(-1)  # (D, n_m)
            vectors.append((m, v[..., 1:]))
            unary.append((m, a))
        logits = constant[:, None].expand(-1, len(combos)).clone()  # (D, C)
        for m, a in unary:
            logits += a[:, torch.from_numpy(combos[:, m])]
        for i in range(len(vectors)):
            m, vm = vectors[i]
            for j in range(i + 1, len(vectors)):
                k, vk = vectors[j]
                pair = torch.bmm(vm, vk.transpose(1, 2)).flatten(1)  # (D, n_m * n_k)
                flat = torch.from_numpy(combos[:, m] * vk.shape[1] + combos[:, k])
                logits += pair[:, flat]
        return combos, sampled, logits
