"""Where cross-component attention looks: per pair of components, the weight an element puts on the other
component's items, relative to a uniform spread (1: its fair share; 2: twice it; 0: ignored).

The seed gives the attention mechanism a break condition: "if cross-component attention weights remain uniform
across different ads/contexts, the attention mechanism is not learning meaningful dependencies". This module
measures it, for both places GenCO attends:

- reward model: within a combination (the bag), every element attends to the other chosen elements. Bags are
  combinations drawn uniformly from each request's candidates, as in random-exposure logs; with an ensemble
  the map is the members' mean.
- generator: every candidate attends to every candidate of the other components of its request. A component's
  fair share there is its number of candidates over all the others' (a pool of 12 images is owed more of a
  title's attention than a pool of 3 badges).

On a simulated world the pairs that truly interact are known (World.interactions), and `partner_ratio` says
whether attention found them: the mean relative weight on true partners over that on the other pairs.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np
import torch

from genco.data import EncodedRows, batch_indices, collate
from genco.ensemble import reward_models
from genco.model import CrossAttention


@dataclass
class AttentionMap:
    components: list[str]
    reward: np.ndarray  # (M, M) row m attends to column n: relative weight, 1 = uniform; nan where never both present
    generator: np.ndarray  # (M, M) the same over all candidates of a request

    def partner_ratio(self, partners: Iterable[tuple[str, str]], which: str = "reward") -> float:
        """Mean relative weight on the given pairs (both directions) over the mean on every other pair."""
        grid = getattr(self, which)
        index = {name: i for i, name in enumerate(self.components)}
        on = {(index[a], index[b]) for a, b in partners if a in index and b in index}
        on |= {(j, i) for i, j in on}
        M = len(self.components)
        off = [(i, j) for i in range(M) for j in range(M) if i != j and (i, j) not in on]
        if not on or not off:  # every pair interacts (a dense world), or none: no contrast to measure
            return float("nan")
        on_mean, off_mean = np.nanmean([grid[p] for p in on]), np.nanmean([grid[p] for p in off])
        return float(on_mean / off_mean)


class _Accumulator:
    """Sums relative weights per (query component, key component) over valid query items."""

    def __init__(self, M: int):
        self.M = M
        self.total = np.zeros((M, M))
        self.count = np.zeros((M, M))

    def add(self, attention: CrossAttention, x: torch.Tensor, mask: torch.Tensor, component: torch.Tensor,
            context: torch.Tensor) -> None:
        """x (N, L, d) items, mask (N, L) valid, component (L,) of each item, context (n, C) per request."""
        weights, _ = attention.weights(x, mask, component, context)
        w = weights.mean(dim=1)  # (N, L, L) mean over heads
        onehot = torch.nn.functional.one_hot(component, self.M).to(w.dtype)  # (L, M)
        to_component = w @ onehot  # (N, L, M) weight each query item puts on each component
        items = mask.to(w.dtype) @ onehot  # (N, M) valid items per component
        others = items.sum(dim=1, keepdim=True) - items  # (N, M) valid items of the other components, per query component
        own = onehot[None].expand(x.shape[0], -1, -1)  # (N, L, M)
        fair = (items[:, None, :] / (own @ others[:, :, None]).clamp(min=1))  # (N, L, M) uniform share of each key component
        valid = mask[:, :, None] & (fair > 0) & (own == 0)  # a real query, a present key component that is not its own
        ratio = torch.where(valid, to_component / fair.clamp(min=1e-12), 0.0)
        self.total += torch.einsum("nlk,lm->mk", ratio, onehot).numpy()
        self.count += torch.einsum("nlk,lm->mk", valid.to(w.dtype), onehot).numpy()

    def grid(self) -> np.ndarray:
        with np.errstate(invalid="ignore"):
            return np.where(self.count > 0, self.total / np.maximum(self.count, 1), np.nan)


@torch.no_grad()
def attention_map(model, requests: EncodedRows, *, rows: np.ndarray | None = None, bags_per_request: int = 4,
                  seed: int = 0, batch_size: int = 256) -> AttentionMap:
    """The relative attention weights of a GenCO or a RewardEnsemble on the requests, or on the given rows of
    them (see the module doc). Log rows serve as well: only their candidates are used."""
    rows = np.arange(len(requests)) if rows is None else np.asarray(rows)
    members = reward_models(model)
    names = requests.schema.components
    M = len(names)
    bag, pool = [_Accumulator(M) for _ in members], _Accumulator(M)
    draw = torch.Generator().manual_seed(seed)
    for member in members:
        member.eval()
    for idx in batch_indices(len(rows), batch_size):
        batch = collate(requests, rows[idx])
        for k, member in enumerate(members):
            enc = member.encode(batch)
            if k == 0:
                pool.add(member.generator_attention, enc.e, enc.mask, enc.slot_component, enc.h)
                uniform = member.log_pi(torch.zeros_like(enc.effect), enc)  # (B, T) every candidate alike
                combos = member.sample(uniform, enc, bags_per_request, draw)  # (B, K, M)
            e, _, present = member.bags(enc, combos)  # (B, K, M, d), (B, K, M)
            bag[k].add(member.bag_attention, e.flatten(0, 1), present.flatten(0, 1), torch.arange(M), enc.h)
    return AttentionMap(list(names), np.mean([acc.grid() for acc in bag], axis=0), pool.grid())
