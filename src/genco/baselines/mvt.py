"""Amazon's multivariate-testing bandit ("MVT"): Hill, Nassif, Liu, Iyer, Vishwanathan, "An Efficient Bandit
Algorithm for Realtime Multivariate Optimization", KDD 2017 (arXiv 1810.09558).

Reward model: Bayesian logistic regression on the click of the whole combination, with features

- a bias, plus the ad's features and ad id (constant within a request: they only absorb the product's own
  appeal, so that the creative weights are not asked to explain it);
- first-order terms: one weight per (component, element id);
- pairwise terms: one weight per pair of chosen elements of two different components,
  (component a, id a, component b, id b). Pairs are keyed exactly (a sorted table of the pairs seen in the
  logs), not hashed: no collisions, and a pair never logged keeps its prior N(0, 1 / pair_prior);
- context terms (the paper's context x widget terms, which personalise): the user's features crossed with
  each component's element *features*, one (U, F_m) matrix per component (`context="features"`, the
  default). Crossing with element *ids* (`context="ids"`: U weights per element, the paper's form) is also
  available; on the simulated worlds it was no better and cost more, since most elements (titles, images)
  are shown too rarely to learn U weights each;
- element features (`element_features=True`, the default): the element's feature vector as first-order
  terms, one weight vector per component. This is an extension: the paper knew variations by id only.
  It lets the model rank elements it has rarely or never seen. `element_features=False` is the paper's
  model.

Posterior: a diagonal Gaussian by the Laplace approximation of Chapelle & Li 2011 ("An empirical evaluation
of Thompson sampling", algorithm 3): the MAP with the Gaussian prior as an L2 penalty, and the diagonal of the
Hessian, sum_i p_i (1 - p_i) x_ij^2 + prior precision, as the precision of each weight. The MAP is found by
full-batch L-BFGS, diagonally preconditioned by that same curvature taken at the starting point (so that
one L-BFGS step means the same for a weight seen twice and one seen ten thousand times). `fit` starts from
the prior every time: calling it again with more logs refits on those logs alone.

Choice: the argmax over combinations is the paper's greedy hill climbing: `restarts` random combinations,
each improved by re-choosing one component at a time given the others, for at most `passes` passes over
the components (stopping early when a pass changes nothing); the best of the restarts wins. The model is a
sum of per-element and per-pair scores, so each request's scores are tabulated once (unary (N_m,), pair
(N_a, N_b)) and hill climbing is pure gathers, batched over requests x restarts (x draws).

- greedy mode: the posterior mean; propensity 1.
- explore mode: Thompson sampling, with weights drawn once per request: each request draws the weights of
  its own candidates, of their pairs and of the dense feature blocks (`exploration` scales the posterior
  standard deviation). The served combination is the hill-climbing argmax under that draw. Its propensity
  has no closed form, so it is estimated by Monte Carlo: the share of `propensity_draws` independent draws
  (the served one included, so never 0), each with its own restarts, whose argmax is the same combination.
  An estimate with resolution 1 / propensity_draws, not an exact probability.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from genco.baselines.base import Policy, choices, element_keys, shown_entries, torch_threads
from genco.data import Batch, EncodedRows, batch_indices, collate
from genco.noise import RequestNoise
from genco.select import Choices


@dataclass
class _Design:
    """The logs as model input. n rows, M components, Q = M (M - 1) / 2 component pairs, D dense columns."""

    dense: torch.Tensor  # (n, D): ad features, then per component its element features and user x features
    ad: torch.Tensor  # (n,) long: ad index
    element: torch.Tensor  # (n, M) long: global element index of the shown element, V where absent
    pair: torch.Tensor  # (n, Q) long: index of the shown pair in the pair table, P where absent
    user: torch.Tensor  # (n, U)
    click: torch.Tensor  # (n,)


class MVTBandit(Policy):
    name = "mvt"

    def __init__(self, *, id_prior: float = 100.0, pair_prior: float = 100.0, context_prior: float = 1000.0,
                 feature_prior: float = 1.0, context: str = "features", element_features: bool = True,
                 restarts: int = 4, passes: int = 3, exploration: float = 1.0, propensity_draws: int = 16,
                 max_iter: int = 100, chunk: int = 1024, threads: int | None = 1):
        """Priors are precisions (1 / variance) of the N(0, .) priors on log-odds weights:

        id_prior: (component, element id) weights and ad ids; pair_prior: pairwise weights; context_prior:
        user x element features (or user x element id) weights; feature_prior: element-feature and
        ad-feature weights. restarts / passes: hill climbing (S and K of the paper). exploration: scale of
        the posterior standard deviation in Thompson sampling. propensity_draws: Monte Carlo draws per
        request for the explore-mode propensity. max_iter: L-BFGS iterations. chunk: request-draws scored
        at once (bounds memory). threads: torch intra-op threads while fitting and choosing (None: leave
        torch's setting alone); the tensors are small, and on a busy machine extra threads mostly wait.
        """
        if context not in ("features", "ids", "none"):
            raise ValueError(f"context must be 'features', 'ids' or 'none', not {context!r}")
        self.id_prior = id_prior
        self.pair_prior = pair_prior
        self.context_prior = context_prior
        self.feature_prior = feature_prior
        self.context = context
        self.element_features = element_features
        self.restarts = restarts
        self.passes = passes
        self.exploration = exploration
        self.propensity_draws = propensity_draws
        self.max_iter = max_iter
        self.chunk = chunk
        self.threads = threads
        self.mean: torch.Tensor | None = None  # (K,) posterior mean of every weight, laid out by self.blocks
        self.sd: torch.Tensor | None = None  # (K,) posterior standard deviation

    # -- fit -------------------------------------------------------------------------------------------------

    def fit(self, logs: EncodedRows) -> "MVTBandit":
        with torch_threads(self.threads):
            return self._fit(logs)

    def _fit(self, logs: EncodedRows) -> "MVTBandit":
        design = self._design(logs)
        prior = self._prior_precision()  # (K,)
        ctr = float(design.click.mean().clamp(1e-4, 1 - 1e-4)) if len(logs) else 0.05
        start = torch.zeros_like(prior)
        start[self.blocks["bias"]] = np.log(ctr / (1 - ctr))
        # Precondition: optimise v = w * sqrt(h0), h0 the Hessian diagonal at the start (every p = ctr).
        scale = (self._curvature(design, torch.full((len(logs),), ctr * (1 - ctr), dtype=torch.float64)) + prior).rsqrt()
        v = (start / scale).requires_grad_(True)
        optimizer = torch.optim.LBFGS([v], lr=1.0, max_iter=self.max_iter, history_size=20, tolerance_grad=1e-6,
                                      tolerance_change=1e-9, line_search_fn="strong_wolfe")

        def closure() -> torch.Tensor:
            optimizer.zero_grad()
            w = v * scale
            loss = torch.nn.functional.binary_cross_entropy_with_logits(self._logit(w, design), design.click, reduction="sum")
            value = loss + 0.5 * (prior * w * w).sum()
            value.backward()
            return value

        if len(logs):
            optimizer.step(closure)
        with torch.no_grad():
            self.mean = v.detach() * scale
            p = torch.sigmoid(self._logit(self.mean, design))
            self.sd = (self._curvature(design, p * (1 - p)) + prior).rsqrt()  # Laplace: diagonal precision
        return self

    def _design(self, logs: EncodedRows) -> _Design:
        """Vocabularies of the elements, pairs and ads seen in the logs, the weight layout, and the logs as tensors."""
        n, names = len(logs), list(logs.schema.components)
        M, U = len(names), logs.user.shape[1]
        self.components, self.user_dim, self.ad_dim = names, U, logs.ad.shape[1]
        self._user_x_ids = self.context == "ids" and U > 0  # user x element-id weights (none without user features)
        self.feature_dims = {name: logs.schema.feature_dims[name] for name in names}
        element = np.full((n, M), -1, dtype=np.int64)
        dense = [logs.ad.astype(np.float64)]
        self.dense_columns: dict[str, dict[str, slice]] = {}  # component -> {"features"/"user_x_features": columns}
        column = logs.ad.shape[1]
        self.vocab: dict[str, dict[str, int]] = {}  # component -> element id -> global element index
        total = 0
        for m, name in enumerate(names):
            rows, entries = shown_entries(logs, name)
            ids = element_keys(logs, name)
            # Only ids that were shown enter the vocabulary: an id that was only ever a candidate has no data.
            shown_ids = list(dict.fromkeys(ids[e] for e in np.unique(entries)))
            self.vocab[name] = {element_id: total + k for k, element_id in enumerate(shown_ids)}
            remap = np.array([self.vocab[name].get(element_id, -1) for element_id in ids], dtype=np.int64)
            element[rows, m] = remap[entries]
            total += len(shown_ids)
            F = self.feature_dims[name]
            features = np.zeros((n, F))  # (n, F_m): the shown element's features, zeros where absent
            features[rows] = logs.columns[name]["table_features"][entries]
            self.dense_columns[name] = {}
            if self.element_features:
                dense.append(features)
                self.dense_columns[name]["features"] = slice(column, column + F)
                column += F
            if self.context == "features" and U * F > 0:  # no user features or no element features: no cross terms
                dense.append((logs.user[:, :, None] * features[:, None, :]).reshape(n, U * F))  # (n, U * F_m)
                self.dense_columns[name]["user_x_features"] = slice(column, column + U * F)
                column += U * F
        self.n_elements = total
        pair_keys = self._pair_keys(element)  # (n, Q), -1 where a component is absent
        valid = pair_keys >= 0
        self.pair_table = np.unique(pair_keys[valid])  # (P,) sorted keys of the pairs seen in the logs
        pair = np.full(pair_keys.shape, len(self.pair_table), dtype=np.int64)
        pair[valid] = np.searchsorted(self.pair_table, pair_keys[valid])
        self.ad_vocab = {a: k for k, a in enumerate(dict.fromkeys(logs.ad_ids))}
        sizes = {"bias": 1, "dense": column, "ad_id": len(self.ad_vocab) + 1, "element": total + 1,
                 "pair": len(self.pair_table) + 1, "user_x_element": (total + 1) * U if self._user_x_ids else 0}
        self.blocks: dict[str, slice] = {}  # name -> its weights in the flat vector (last entry of a table: padding)
        at = 0
        for key, size in sizes.items():
            self.blocks[key] = slice(at, at + size)
            at += size
        self.n_weights = at
        return _Design(
            dense=torch.from_numpy(np.concatenate(dense, axis=1)),
            ad=torch.tensor([self.ad_vocab[a] for a in logs.ad_ids], dtype=torch.long),
            element=torch.from_numpy(np.where(element >= 0, element, total)),
            pair=torch.from_numpy(pair),
            user=torch.from_numpy(logs.user.astype(np.float64)),
            click=torch.from_numpy(logs.click.astype(np.float64)) if logs.click is not None else torch.zeros(n, dtype=torch.float64),
        )

    def _pair_keys(self, element: np.ndarray) -> np.ndarray:
        """(n, Q) key lo * V + hi of every component pair (lo < hi global indices), -1 where either is absent."""
        V, M = max(self.n_elements, 1), element.shape[1]
        keys = []
        for a in range(M):
            for b in range(a + 1, M):
                ea, eb = element[:, a], element[:, b]
                keys.append(np.where((ea >= 0) & (eb >= 0), np.minimum(ea, eb) * V + np.maximum(ea, eb), -1))
        return np.stack(keys, axis=1) if keys else np.zeros((len(element), 0), dtype=np.int64)

    def _prior_precision(self) -> torch.Tensor:
        """(K,) prior precision of every weight."""
        prior = torch.full((self.n_weights,), self.feature_prior, dtype=torch.float64)
        prior[self.blocks["bias"]] = 1e-6  # flat
        for key, value in (("ad_id", self.id_prior), ("element", self.id_prior), ("pair", self.pair_prior),
                           ("user_x_element", self.context_prior)):
            prior[self.blocks[key]] = value
        dense = self.blocks["dense"].start
        for columns in self.dense_columns.values():
            if "user_x_features" in columns:
                block = columns["user_x_features"]
                prior[dense + block.start: dense + block.stop] = self.context_prior
        return prior

    def _split(self, w: torch.Tensor) -> dict[str, torch.Tensor]:
        return {key: w[block] for key, block in self.blocks.items()}

    def _logit(self, w: torch.Tensor, d: _Design) -> torch.Tensor:
        """(n,) log-odds of click of each logged row; linear in the weights w (K,). Padding weights are
        masked out (they stay at 0 and keep their prior)."""
        b = self._split(w)
        present, paired = d.element < self.n_elements, d.pair < len(self.pair_table)
        logit = b["bias"] + d.dense @ b["dense"] + b["ad_id"][d.ad]
        logit = logit + (b["element"][d.element] * present).sum(1) + (b["pair"][d.pair] * paired).sum(1)
        if self._user_x_ids:
            per_element = b["user_x_element"].view(-1, self.user_dim)[d.element]  # (n, M, U)
            logit = logit + ((per_element * d.user[:, None, :]).sum(2) * present).sum(1)
        return logit

    def _curvature(self, d: _Design, s: torch.Tensor) -> torch.Tensor:
        """(K,) sum_i s_i x_ij^2 for every weight j: the data part of the Hessian diagonal when s = p (1 - p)."""
        out = torch.zeros(self.n_weights, dtype=torch.float64)
        out[self.blocks["bias"]] = s.sum()
        for start in range(0, len(s), 65536):  # (X^2)^T s, a chunk of rows at a time
            part = slice(start, start + 65536)
            out[self.blocks["dense"]] += d.dense[part].square().T @ s[part]
        out[self.blocks["ad_id"]] += torch.bincount(d.ad, s, minlength=len(self.ad_vocab) + 1)
        present, paired = d.element < self.n_elements, d.pair < len(self.pair_table)
        repeat = s[:, None].expand_as(d.element)
        out[self.blocks["element"]] += torch.bincount(d.element[present], repeat[present], minlength=self.n_elements + 1)
        out[self.blocks["pair"]] += torch.bincount(d.pair[paired], s[:, None].expand_as(d.pair)[paired],
                                                   minlength=len(self.pair_table) + 1)
        if self._user_x_ids:
            block = out[self.blocks["user_x_element"]].view(-1, self.user_dim)  # (V + 1, U)
            for k in range(self.user_dim):
                weight = (s * d.user[:, k] ** 2)[:, None].expand_as(d.element)
                block[:, k] += torch.bincount(d.element[present], weight[present], minlength=self.n_elements + 1)
        return out

    # -- choose ----------------------------------------------------------------------------------------------

    def choose(self, requests: EncodedRows, *, greedy: bool = True, seed: int = 0) -> Choices:
        assert self.mean is not None, "fit first"
        with torch_threads(self.threads):
            return self._choose(requests, greedy, seed)

    def _choose(self, requests: EncodedRows, greedy: bool, seed: int) -> Choices:
        generator = torch.Generator().manual_seed(seed)
        n, M = len(requests), len(requests.schema.components)
        draws = 1 if greedy else max(1, self.propensity_draws)
        global_index = {name: self._global_index(requests, name) for name in requests.schema.components}
        positions = np.full((n, M), -1, dtype=np.int64)
        score = np.full(n, np.nan)
        propensity = np.ones(n)
        for idx in batch_indices(n, max(1, self.chunk // draws)):
            batch = collate(requests, idx)
            unary, pair, valid = self._tables(requests, batch, global_index, draws, greedy, generator)
            R, S = len(idx) * draws, max(1, self.restarts)
            # greedy: restarts keyed by the request, so the answer does not depend on the seed or the batch
            starts = (RequestNoise(batch.row_key).uniform(S, M, stream=0).double() if greedy
                      else torch.rand((R, S, M), generator=generator, dtype=torch.float64))
            combo, value = hill_climb(unary, pair, valid, starts, self.passes)  # (B * D, M), (B * D,)
            combo = combo.view(len(idx), draws, M)
            served = combo[:, 0]  # (B, M): the first draw is served, the others estimate its propensity
            positions[idx] = served.numpy()
            propensity[idx] = (combo == served[:, None, :]).all(dim=2).double().mean(dim=1).numpy()
            if greedy:
                b = self._split(self.mean)
                unseen = len(self.ad_vocab)
                ad = torch.tensor([self.ad_vocab.get(requests.ad_ids[r], unseen) for r in idx], dtype=torch.long)
                base = b["bias"] + batch.ad.double() @ b["dense"][: self.ad_dim] + b["ad_id"][ad]
                score[idx] = torch.sigmoid(base + value.double()).numpy()
        return choices(requests, positions, score=score, propensity=propensity)

    def _global_index(self, requests: EncodedRows, name: str) -> np.ndarray:
        """(E,) global element index of each element-table entry of the requests, -1 if never shown in the logs."""
        vocab = self.vocab.get(name, {})
        return np.array([vocab.get(element_id, -1) for element_id in element_keys(requests, name)], dtype=np.int64)

    def _lookup(self, key: str, index: torch.Tensor, seen: torch.Tensor, draws: int, greedy: bool,
                generator: torch.Generator) -> torch.Tensor:
        """Weights of table `key` at index (B, ...) for every request-draw: (B * D, ...).

        The posterior mean in greedy mode; otherwise a draw, independent per request and per draw. Entries
        never in the logs (seen False) have the prior: mean 0, sd 1 / sqrt(prior) (the padding entry's).
        """
        table = self._split(self.mean)[key]
        mean = torch.where(seen, table[index.clamp(min=0)], 0.0).float()  # (B, ...)
        if greedy:
            return mean
        sd_table = self._split(self.sd)[key]
        sd = torch.where(seen, sd_table[index.clamp(min=0)], sd_table[-1]).float()
        noise = torch.randn((mean.shape[0], draws, *mean.shape[1:]), generator=generator)  # (B, D, ...)
        return (mean[:, None] + self.exploration * sd[:, None] * noise).flatten(0, 1)

    def _dense_weights(self, columns: slice, rows: int, greedy: bool, generator: torch.Generator) -> torch.Tensor:
        """A block of dense weights per request-draw: (rows, k); the same mean for all in greedy mode."""
        dense = self.blocks["dense"].start
        block = slice(dense + columns.start, dense + columns.stop)
        mean = self.mean[block].float()
        if greedy:
            return mean.expand(rows, -1)
        noise = torch.randn((rows, len(mean)), generator=generator)
        return mean + self.exploration * self.sd[block].float() * noise

    def _tables(self, requests: EncodedRows, batch: Batch, global_index: dict[str, np.ndarray], draws: int,
                greedy: bool, generator: torch.Generator):
        """Score tables per request-draw (R = B * D): unary[m] (R, N_m), pair[(a, b)] (R, N_a, N_b), valid[m] (R, N_m)."""
        R = batch.size * draws
        user = batch.user.float().repeat_interleave(draws, dim=0)  # (R, U)
        unary, valid, element = [], [], []
        for m, name in enumerate(requests.schema.components):
            entry = batch.element_index[m]  # (B, N_m), -1 on padding
            table = global_index[name]
            g = torch.from_numpy(table[np.maximum(entry, 0)] if len(table) else np.full(entry.shape, -1))
            g = torch.where(torch.from_numpy(entry >= 0), g, -1)  # (B, N_m) global element index, -1 unseen / padding
            score = self._lookup("element", g, g >= 0, draws, greedy, generator)  # (R, N_m)
            f = batch.features[m].repeat_interleave(draws, dim=0)  # (R, N_m, F_m)
            columns = self.dense_columns.get(name, {})
            if self._user_x_ids:
                index = g[..., None] * self.user_dim + torch.arange(self.user_dim)  # (B, N_m, U)
                w = self._lookup("user_x_element", index, (g >= 0)[..., None].expand_as(index), draws, greedy, generator)
                score = score + (w * user[:, None, :]).sum(2)
            if "features" in columns:
                w = self._dense_weights(columns["features"], R, greedy, generator)  # (R, F_m)
                score = score + (f * w[:, None, :]).sum(2)
            if "user_x_features" in columns:
                W = self._dense_weights(columns["user_x_features"], R, greedy, generator).view(R, self.user_dim, -1)  # (R, U, F_m)
                score = score + (torch.einsum("ru,ruf->rf", user, W)[:, None, :] * f).sum(2)
            unary.append(score)
            valid.append(batch.mask[:, slice(*batch.slices[m])].repeat_interleave(draws, dim=0))
            element.append(g)
        pair: dict[tuple[int, int], torch.Tensor] = {}
        V, known_pairs = max(self.n_elements, 1), torch.from_numpy(self.pair_table)
        for a in range(len(element)):
            for b in range(a + 1, len(element)):
                ga, gb = element[a][:, :, None], element[b][:, None, :]  # (B, N_a, 1), (B, 1, N_b)
                known = (ga >= 0) & (gb >= 0)
                key = torch.where(known, torch.minimum(ga, gb) * V + torch.maximum(ga, gb), -1)  # (B, N_a, N_b)
                if len(known_pairs):
                    at = torch.searchsorted(known_pairs, key).clamp(max=len(known_pairs) - 1)
                    seen = known & (known_pairs[at] == key)
                else:
                    at, seen = torch.zeros_like(key), torch.zeros_like(known)
                pair[(a, b)] = self._lookup("pair", at, seen, draws, greedy, generator)  # (R, N_a, N_b)
        return unary, pair, valid


def hill_climb(unary: list[torch.Tensor], pair: dict[tuple[int, int], torch.Tensor], valid: list[torch.Tensor],
               starts: torch.Tensor, passes: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Greedy hill climbing with random restarts on score(c) = sum_m unary[m][c_m] + sum_{a<b} pair[a, b][c_a, c_b].

    unary[m] (R, N_m), pair[(a, b)] (R, N_a, N_b), valid[m] (R, N_m) bool, real candidates first; starts (R, S, M)
    uniforms in [0, 1) that place the S restarts. Returns the best combination of each row (R, M), -1 where a
    row lacks the component, and its score (R,).
    """
    M, S = len(unary), starts.shape[1]
    R = unary[0].shape[0] if M else 0
    counts = torch.stack([v.sum(1) for v in valid], dim=1) if M else torch.zeros(R, 0, dtype=torch.long)  # (R, M)
    present = counts > 0
    start = (starts * counts[:, None, :]).long().clamp(max=(counts - 1).clamp(min=0)[:, None, :])
    combo = torch.where(present[:, None, :], start, -1)  # (R, S, M)

    def pair_given(m: int, other: int) -> torch.Tensor:
        """(R, S, N_m): pair score of every candidate of m with the current choice of `other`."""
        table = pair[(other, m)] if other < m else pair[(m, other)].transpose(1, 2)  # (R, N_other, N_m)
        choice = combo[:, :, other]  # (R, S)
        if table.shape[1] == 0:
            return torch.zeros(R, S, table.shape[2])
        gathered = torch.gather(table, 1, choice.clamp(min=0)[:, :, None].expand(R, S, table.shape[2]))
        return gathered * (choice >= 0)[:, :, None]

    for _ in range(max(0, passes)):
        changed = False
        for m in range(M):
            if unary[m].shape[1] == 0:
                continue
            score = unary[m][:, None, :].expand(R, S, -1).clone()  # (R, S, N_m)
            for other in range(M):
                if other != m:
                    score += pair_given(m, other)
            score.masked_fill_(~valid[m][:, None, :], float("-inf"))
            best = torch.where(present[:, None, m], score.argmax(dim=2), -1)  # (R, S)
            changed |= bool((best != combo[:, :, m]).any())
            combo[:, :, m] = best
        if not changed:
            break
    value = torch.zeros(R, S)
    for m in range(M):
        if unary[m].shape[1]:
            c = combo[:, :, m]
            value += torch.gather(unary[m], 1, c.clamp(min=0)) * (c >= 0)
    for (a, b), table in pair.items():
        if table.shape[1] and table.shape[2]:
            ca, cb = combo[:, :, a], combo[:, :, b]
            flat = table.reshape(R, -1)  # (R, N_a * N_b)
            value += torch.gather(flat, 1, ca.clamp(min=0) * table.shape[2] + cb.clamp(min=0)) * ((ca >= 0) & (cb >= 0))
    best_restart = value.argmax(dim=1)  # (R,)
    rows = torch.arange(R)
    return combo[rows, best_restart], value[rows, best_restart]
