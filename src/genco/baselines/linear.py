"""Linear contextual bandits over combination features: LinUCB (Li, Chu, Langford, Schapire, WWW 2010) and
linear Thompson sampling (Agrawal & Goyal, ICML 2013), the `linucb` and `ts` baselines of AutoCO's code.

A combination of a request is the vector

    x = [1, user (U), ad (A)] + for each component m: [present, element features (F_m), user x element features (U * F_m)]

with zeros in a component's block where the request lacks it. The user x element-feature products are on by
default (`user_cross=False` drops them): they are what lets a linear model personalise, and they helped on
every world tried. Elements are known by their features only (no per-id terms), as in AutoCO's baselines.
The click model is ridge regression on the click: A = ridge * I + X^T X, b = X^T y, theta_hat = A^-1 b,
refitted from scratch on every `fit`. The logs' noise scale sigma = sqrt(ctr (1 - ctr)) turns A^-1 into a
posterior covariance sigma^2 A^-1 (Bayesian linear regression); both exploration parameters are in its units.

- greedy mode (both): the posterior mean x . theta_hat. The model is additive across components, so the
  argmax is exact and per component. Propensity 1.
- LinTS explore mode: theta ~ N(theta_hat, (exploration * sigma)^2 A^-1), drawn once per request; the argmax
  again decomposes per component. The propensity of the served combination is estimated by Monte Carlo: the
  share of `propensity_draws` draws (the served one included, so never 0) whose argmax is the same whole
  combination (the components share one draw of theta, so their choices are not independent). An estimate
  with resolution 1 / propensity_draws, not an exact probability.
- LinUCB explore mode: x . theta_hat + alpha * sigma * sqrt(x^T A^-1 x). The bonus is not additive across
  components, so it is maximised by coordinate ascent: start from the per-component argmax of the mean,
  re-choose one component at a time given the others, for at most `passes` passes. Deterministic:
  propensity 1.
"""

from __future__ import annotations

import numpy as np
import torch

from genco.baselines.base import Policy, choices, shown_entries, torch_threads
from genco.data import Batch, EncodedRows, batch_indices, collate
from genco.select import Choices

Candidates = tuple[torch.Tensor | None, torch.Tensor, slice | None]  # (block (B, N_m, w_m), valid (B, N_m), columns of x)


class _RidgeBandit(Policy):
    """Ridge regression on combination features; subclasses say how to explore."""

    def __init__(self, *, ridge: float = 100.0, user_cross: bool = True, chunk: int = 512, threads: int | None = 1):
        self.ridge = ridge
        self.user_cross = user_cross
        self.chunk = chunk
        self.threads = threads
        self.theta: torch.Tensor | None = None  # (d,) posterior mean
        self.a_inv: torch.Tensor | None = None  # (d, d)

    # -- layout ----------------------------------------------------------------------------------------------

    def _layout(self, data: EncodedRows) -> None:
        """Where each block lives in x: the context in [0, 1 + U + A), then component m in self.blocks[m]."""
        U, A = data.user.shape[1], data.ad.shape[1]
        self.user_dim, self.ad_dim = U, A
        self.components = list(data.schema.components)
        self.feature_dims = dict(data.schema.feature_dims)
        at = 1 + U + A
        self.blocks: dict[str, slice] = {}
        for name in self.components:
            F = self.feature_dims[name]
            width = 1 + F + (U * F if self.user_cross else 0)
            self.blocks[name] = slice(at, at + width)
            at += width
        self.dim = at

    @staticmethod
    def _context(user: torch.Tensor, ad: torch.Tensor) -> torch.Tensor:
        """(n, 1 + U + A): the block every combination of a request shares."""
        return torch.cat([torch.ones(len(user), 1, dtype=user.dtype), user, ad], dim=1)

    def _element_block(self, user: torch.Tensor, features: torch.Tensor) -> torch.Tensor:
        """[1, f, u x f] of elements: user (n, U), features (n, ..., F) -> (n, ..., 1 + F (+ U * F))."""
        parts = [torch.ones(*features.shape[:-1], 1, dtype=features.dtype), features]
        if self.user_cross:
            u = user.reshape(len(user), *([1] * (features.dim() - 2)), user.shape[1], 1)  # (n, 1.., U, 1)
            parts.append((u * features[..., None, :]).flatten(-2))
        return torch.cat(parts, dim=-1)

    # -- fit -------------------------------------------------------------------------------------------------

    def fit(self, logs: EncodedRows) -> "_RidgeBandit":
        with torch_threads(self.threads):
            self._fit(logs)
        return self

    def _fit(self, logs: EncodedRows) -> None:
        self._layout(logs)
        n = len(logs)
        shown: dict[str, tuple[torch.Tensor, torch.Tensor]] = {}  # component -> shown features (n, F_m), present (n,)
        for name in self.components:
            rows, entries = shown_entries(logs, name)
            features = np.zeros((n, self.feature_dims[name]))
            features[rows] = logs.columns[name]["table_features"][entries]
            present = np.zeros(n)
            present[rows] = 1.0
            shown[name] = torch.from_numpy(features), torch.from_numpy(present)
        user, ad = torch.from_numpy(logs.user.astype(np.float64)), torch.from_numpy(logs.ad.astype(np.float64))
        click = torch.from_numpy(logs.click.astype(np.float64)) if logs.click is not None else torch.zeros(n, dtype=torch.float64)
        gram = self.ridge * torch.eye(self.dim, dtype=torch.float64)  # A = ridge * I + X^T X
        moment = torch.zeros(self.dim, dtype=torch.float64)  # b = X^T y
        for start in range(0, n, 16384):
            part = slice(start, start + 16384)
            x = torch.zeros(len(user[part]), self.dim, dtype=torch.float64)  # (rows, d): the logged combinations
            x[:, : 1 + self.user_dim + self.ad_dim] = self._context(user[part], ad[part])
            for name in self.components:
                features, present = shown[name]
                x[:, self.blocks[name]] = self._element_block(user[part], features[part]) * present[part, None]
            gram += x.T @ x
            moment += x.T @ click[part]
        self.a_inv = torch.linalg.inv(gram)
        self.a_inv = (self.a_inv + self.a_inv.T) / 2
        self.theta = self.a_inv @ moment
        ctr = float(click.mean().clamp(1e-4, 1 - 1e-4)) if n else 0.05
        self.sigma = float(np.sqrt(ctr * (1 - ctr)))

    # -- choose ----------------------------------------------------------------------------------------------

    def choose(self, requests: EncodedRows, *, greedy: bool = True, seed: int = 0) -> Choices:
        assert self.theta is not None, "fit first"
        with torch_threads(self.threads):
            generator = torch.Generator().manual_seed(seed)
            n, M = len(requests), len(requests.schema.components)
            positions = np.full((n, M), -1, dtype=np.int64)
            score = np.full(n, np.nan)
            propensity = np.ones(n)
            for idx in batch_indices(n, self.chunk):
                context, components = self._candidates(requests, collate(requests, idx))
                if greedy:
                    chosen, predicted = self._argmax_mean(context, components)
                    score[idx] = predicted.numpy()
                else:
                    chosen, p = self._explore(context, components, generator)
                    propensity[idx] = p.numpy()
                positions[idx] = chosen.numpy()
        return choices(requests, positions, score=score, propensity=propensity)

    def _candidates(self, requests: EncodedRows, batch: Batch) -> tuple[torch.Tensor, list[Candidates]]:
        """context (B, 1 + U + A), and per component of the requests: candidate blocks (B, N_m, w_m), valid
        (B, N_m), and the columns of x the block fills. Block and columns are None for a component the model
        never saw: all its candidates then score the same (the first is taken)."""
        user = batch.user.double()
        context = self._context(user, batch.ad.double())
        components: list[Candidates] = []
        for m, name in enumerate(requests.schema.components):
            valid = batch.mask[:, slice(*batch.slices[m])]  # (B, N_m)
            if name in self.blocks:
                block = self._element_block(user, batch.features[m].double()) * valid[..., None]
                components.append((block, valid, self.blocks[name]))
            else:
                components.append((None, valid, None))
        return context, components

    def _argmax_mean(self, context: torch.Tensor, components: list[Candidates]) -> tuple[torch.Tensor, torch.Tensor]:
        """Per-component argmax of x . theta_hat (exact: the mean is additive). Positions (B, M), predicted CTR (B,)."""
        B = len(context)
        positions = torch.full((B, len(components)), -1, dtype=torch.long)
        mean = context @ self.theta[: context.shape[1]]
        for m, (block, valid, columns) in enumerate(components):
            if valid.shape[1] == 0:
                continue
            present = valid.any(1)
            if block is None:
                positions[:, m] = torch.where(present, 0, -1)
                continue
            value = (block @ self.theta[columns]).masked_fill(~valid, float("-inf"))  # (B, N_m)
            best, pick = value.max(1)
            positions[:, m] = torch.where(present, pick, -1)
            mean += torch.where(present, best, 0.0)
        return positions, mean.clamp(0.0, 1.0)

    def _explore(self, context: torch.Tensor, components: list[Candidates],
                 generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        """Explore-mode positions (B, M) and their propensities (B,)."""
        raise NotImplementedError


class LinTS(_RidgeBandit):
    name = "lints"

    def __init__(self, *, ridge: float = 100.0, user_cross: bool = True, exploration: float = 1.0,
                 propensity_draws: int = 32, chunk: int = 256, threads: int | None = 1):
        """ridge: the lambda of A = lambda I + X^T X. exploration: v / sigma, the scale of the posterior draw.
        propensity_draws: Monte Carlo draws per request for the explore-mode propensity. chunk: requests
        scored at once. threads: torch intra-op threads (None: leave torch's setting alone)."""
        super().__init__(ridge=ridge, user_cross=user_cross, chunk=chunk, threads=threads)
        self.exploration = exploration
        self.propensity_draws = propensity_draws

    def _fit(self, logs: EncodedRows) -> None:
        super()._fit(logs)
        # theta_hat + L z with z ~ N(0, I) and L L^T = A^-1 has covariance A^-1.
        self.root = torch.linalg.cholesky(self.a_inv)  # (d, d)

    def _explore(self, context: torch.Tensor, components: list[Candidates],
                 generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        B, M, D = len(context), len(components), max(1, self.propensity_draws)
        z = torch.randn(B, D, self.dim, generator=generator, dtype=torch.float64)
        theta = self.theta + self.exploration * self.sigma * z @ self.root.T  # (B, D, d): D draws per request
        picks = torch.full((B, D, M), -1, dtype=torch.long)
        for m, (block, valid, columns) in enumerate(components):
            if valid.shape[1] == 0:
                continue
            present = valid.any(1)[:, None]  # (B, 1)
            if block is None:
                picks[:, :, m] = torch.where(present, 0, -1)
                continue
            value = theta[:, :, columns] @ block.transpose(1, 2)  # (B, D, N_m)
            value = value.masked_fill(~valid[:, None, :], float("-inf"))
            picks[:, :, m] = torch.where(present, value.argmax(2), -1)
        served = picks[:, 0]  # (B, M): the first draw is served; all D estimate its propensity
        return served, (picks == served[:, None, :]).all(2).double().mean(1)


class LinUCB(_RidgeBandit):
    name = "linucb"

    def __init__(self, *, ridge: float = 100.0, user_cross: bool = True, alpha: float = 1.0, passes: int = 3,
                 chunk: int = 512, threads: int | None = 1):
        """ridge: the lambda of A = lambda I + X^T X. alpha: width of the upper confidence bound in posterior
        standard deviations (bonus alpha * sigma * sqrt(x^T A^-1 x)). passes: coordinate-ascent passes.
        chunk: requests scored at once. threads: torch intra-op threads (None: leave torch's setting alone)."""
        super().__init__(ridge=ridge, user_cross=user_cross, chunk=chunk, threads=threads)
        self.alpha = alpha
        self.passes = passes

    def _explore(self, context: torch.Tensor, components: list[Candidates],
                 generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        B = len(context)
        positions, _ = self._argmax_mean(context, components)  # start: the best mean, per component
        rows = torch.arange(B)
        x = torch.zeros(B, self.dim, dtype=torch.float64)  # (B, d): every request's current combination
        x[:, : context.shape[1]] = context
        for m, (block, valid, columns) in enumerate(components):
            if block is not None and valid.shape[1]:
                x[:, columns] = block[rows, positions[:, m].clamp(min=0)] * (positions[:, m] >= 0)[:, None]
        for _ in range(max(0, self.passes)):
            changed = False
            for m, (block, valid, columns) in enumerate(components):
                if block is None or valid.shape[1] <= 1:
                    continue
                rest = x.clone()
                rest[:, columns] = 0.0  # (B, d): the combination without component m
                y = rest @ self.a_inv  # (B, d)
                # x^T A^-1 x = rest^T A^-1 rest + 2 x_m . (A^-1 rest)_m + x_m^T (A^-1)_mm x_m, for every candidate
                own = ((block @ self.a_inv[columns, columns]) * block).sum(2)  # (B, N_m)
                quad = (rest * y).sum(1, keepdim=True) + 2 * (block @ y[:, columns, None])[..., 0] + own
                value = block @ self.theta[columns] + self.alpha * self.sigma * quad.clamp(min=0.0).sqrt()
                pick = torch.where(valid.any(1), value.masked_fill(~valid, float("-inf")).argmax(1), -1)
                changed |= bool((pick != positions[:, m]).any())
                positions[:, m] = pick
                x[:, columns] = block[rows, pick.clamp(min=0)] * (pick >= 0)[:, None]
            if not changed:
                break
        return positions, torch.ones(B, dtype=torch.float64)
