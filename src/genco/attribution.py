"""Element attribution: does the reward model know which element of a component is better, and by how much?

The paper's case for multi-instance learning is credit assignment: clicks observed on whole combinations
attributed to single elements. On a simulated world that can be checked against the truth (DESIGN.md
section 2, "element attribution error"). For every request and every component with two or more candidates,
the other components are held at the oracle's choice and each candidate of the component is swapped in; the
reward model's creative logit of every swap is set against the world's true click logit of the same swap.
Both are compared within the request, so the product's appeal and the user cancel out and what is left is
the element's own effect plus its interactions with the oracle's partners.

Per component:
- corr: Pearson correlation of model and truth over the candidates, averaged over requests;
- captured: the true gain of the model's favourite over the average candidate, as a share of the best
  candidate's gain (both summed over requests): the lift coordinate ascent would find on this component.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch

from genco.data import EncodedRows, batch_indices, collate, positions_of
from genco.evaluate import Evaluator
from genco.select import swap_scores


@dataclass
class ComponentAttribution:
    component: str
    requests: int = 0  # requests with two or more candidates of this component
    corr: float = 0.0
    captured: float = 0.0
    model: list[np.ndarray] = field(default_factory=list, repr=False)  # per request: model logits, centred
    truth: list[np.ndarray] = field(default_factory=list, repr=False)  # per request: true logits, centred


def _logit(p: np.ndarray) -> np.ndarray:
    return np.log(p) - np.log1p(-p)


@torch.no_grad()
def element_attribution(model, requests: EncodedRows, evaluator: Evaluator, batch_size: int = 256) -> list[ComponentAttribution]:
    """Model against truth for every single-element swap around the oracle's combination (see the module doc).

    model: a GenCO or a RewardEnsemble; requests: the evaluator's requests, encoded in the model's schema.
    """
    model.eval()
    names = requests.schema.components
    oracle = positions_of(requests, np.arange(len(requests)), evaluator.oracle_selection)  # (n, M)
    out = [ComponentAttribution(name) for name in names]
    gains, best_gains = np.zeros(len(names)), np.zeros(len(names))
    corr_sums = np.zeros(len(names))
    for idx in batch_indices(len(requests), batch_size):
        enc = model.encode(collate(requests, idx))
        combo = torch.as_tensor(oracle[idx])  # (B, M)
        for m, name in enumerate(names):
            a, b = enc.slices[m]
            if b - a <= 1:
                continue
            scores = swap_scores(model, enc, combo, m).numpy()  # (B, N_m)
            for k, row in enumerate(idx):
                n = int(enc.mask[k, a:b].sum())
                if n <= 1:
                    continue
                request = evaluator.requests[row]
                swaps = [{**evaluator.oracle_selection[row], name: c["id"]} for c in request["components"][name]]
                truth = _logit(evaluator.world.click_probability_dicts([request] * n, swaps))
                predicted = scores[k, :n]
                truth, predicted = truth - truth.mean(), predicted - predicted.mean()
                record = out[m]
                record.requests += 1
                record.model.append(predicted)
                record.truth.append(truth)
                if truth.std() > 0 and predicted.std() > 0:
                    corr_sums[m] += float(np.corrcoef(truth, predicted)[0, 1])
                gains[m] += truth[predicted.argmax()]
                best_gains[m] += truth.max()
    for m, record in enumerate(out):
        if record.requests:
            record.corr = float(corr_sums[m] / record.requests)
            record.captured = float(gains[m] / best_gains[m]) if best_gains[m] > 0 else 0.0
    return [r for r in out if r.requests]


def summary(attribution: list[ComponentAttribution]) -> dict[str, float]:
    """Request-weighted means over components: one corr and one captured share for a model."""
    weights = np.array([r.requests for r in attribution], dtype=float)
    if not weights.sum():
        return {}
    return {"attribution_corr": float(np.average([r.corr for r in attribution], weights=weights)),
            "attribution_captured": float(np.average([r.captured for r in attribution], weights=weights))}
