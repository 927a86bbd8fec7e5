"""The table form of a simulated world: a random effect per whole combination, with a chosen split of its
variance between main effects, pairs of components and higher orders (docs/worlds.md).

Real tables of online CTRs over all compositions of one creative are like this: what an additive model
explains is a small part, pairs another, and the rest lives in higher orders. The effect is built from
independent parts that are orthogonal under uniform exposure (the functional ANOVA decomposition):

    effect(c) = scale * (sqrt(v_main) * main(c) + sqrt(v_pairs) * pairs(c) + sqrt(v_higher) * higher(c))

each part centred and of unit variance over the combinations, so that the variance of `effect` over uniformly
drawn combinations is scale**2, split exactly as (v_main, v_pairs, v_higher) / their sum. A part that cannot
exist (pairs with one component, higher orders with fewer than three) gets no variance, and the split is
shared among the others.
"""

from __future__ import annotations

import itertools

import numpy as np


def _centre(table: np.ndarray, axes: tuple[int, ...]) -> np.ndarray:
    """Remove from `table` every lower-order projection along `axes`: the result averages to zero over any one axis."""
    out = table
    for axis in axes:
        out = out - out.mean(axis=axis, keepdims=True)
    return out


def _higher_orders(x: np.ndarray) -> np.ndarray:
    """What is left of `x` once its grand mean, main effects and pair effects are removed (every order >= 3)."""
    K = x.ndim
    others = lambda *keep: tuple(j for j in range(K) if j not in keep)  # noqa: E731
    grand = x.mean()
    mains = {k: x.mean(axis=others(k), keepdims=True) - grand for k in range(K)}
    rest = x - grand - sum(mains.values())
    for a, b in itertools.combinations(range(K), 2):
        rest = rest - (x.mean(axis=others(a, b), keepdims=True) - mains[a] - mains[b] - grand)
    return rest


def _unit(part: np.ndarray) -> np.ndarray:
    sd = part.std()
    return part / sd if sd > 1e-12 else np.zeros_like(part)


def variance_split_table(sizes: tuple[int, ...], split: tuple[float, float, float], scale: float,
                         rng: np.random.Generator) -> tuple[list[np.ndarray], np.ndarray]:
    """(main effect of every element of every pool: K arrays (n_k,), the rest (pairs + higher orders) as a
    tensor of shape `sizes`). Their sum over a combination is effect(c) above."""
    K = len(sizes)
    grid = lambda k, values: values.reshape([-1 if j == k else 1 for j in range(K)])  # noqa: E731 (broadcast one axis)
    mains = [_centre(rng.standard_normal(n), (0,)) for n in sizes]
    main = sum(grid(k, m) for k, m in enumerate(mains)) + np.zeros(sizes)
    pairs = np.zeros(sizes)
    for a, b in itertools.combinations(range(K), 2):
        table = _centre(rng.standard_normal((sizes[a], sizes[b])), (0, 1))  # doubly centred: a pure pair effect
        shape = [sizes[j] if j in (a, b) else 1 for j in range(K)]
        pairs = pairs + table.reshape(shape)
    higher = _higher_orders(rng.standard_normal(sizes))
    parts = [_unit(main), _unit(pairs), _unit(higher)]
    weights = np.array([v if p.any() else 0.0 for v, p in zip(split, parts)])
    weights = weights / weights.sum() if weights.sum() > 0 else weights
    main_sd = main.std()
    element_mains = [scale * np.sqrt(weights[0]) * m / main_sd if main_sd > 1e-12 else np.zeros_like(m) for m in mains]
    rest = scale * (np.sqrt(weights[1]) * parts[1] + np.sqrt(weights[2]) * parts[2])
    return element_mains, rest
