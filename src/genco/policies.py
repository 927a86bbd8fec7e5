"""Every policy genco can run side by side, by name: GenCO, its ablations, and the baselines.

`make_policy("genco-no-rl", seed=1)` returns an object with the `Policy` interface (genco.baselines.base).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import fields, replace
from typing import Any

from genco.autoregressive import AutoregressiveGenCO
from genco.baselines.base import Policy, RandomPolicy
from genco.baselines.counting import ElementCounting
from genco.data import EncodedRows
from genco.model import GenCO, ModelConfig
from genco.select import Choices, SelectConfig, choose
from genco.train import TrainConfig, TrainResult, train


#: The bench measures GenCO and its variants at the most thorough search; serving defaults to the cheaper
#: best-of-k (README, *Serving*: what that costs in quality).
BENCH_SELECT = SelectConfig(mode="search")


class GenCOPolicy(Policy):
    """GenCO behind the shared interface: fit = train on the logs, choose = generate K, score, refine."""

    def __init__(self, name: str = "genco", model_config: ModelConfig | None = None, train_config: TrainConfig | None = None,
                 select_config: SelectConfig | None = None, model_class: type[GenCO] = GenCO):
        self.name = name
        self.model_class = model_class
        self.model_config = model_config or ModelConfig()
        self.train_config = train_config or TrainConfig()
        self.select_config = select_config or BENCH_SELECT
        self.model: GenCO | None = None
        self.result: TrainResult | None = None
        self.attribution: list | None = None  # per component, set when genco.bench scores it on a world
        self.attention = None  # a genco.attention_map.AttentionMap, set likewise

    def fit(self, logs: EncodedRows) -> "GenCOPolicy":
        self.result = train(logs, self.model_config, self.train_config, model_class=self.model_class)
        self.model = self.result.model
        return self

    def choose(self, requests: EncodedRows, *, greedy: bool = True, seed: int = 0) -> Choices:
        assert self.model is not None, "fit first"
        return choose(self.model, requests, greedy=greedy, config=self.select_config, seed=seed)

    def choose_by_sampling(self, requests: EncodedRows, *, seed: int = 0) -> Choices:
        """Greedy, but the best of the generator's 1 + K candidates as they come (mode best-of-k), without the
        coordinate ascent (or the enumeration of small pools) on the reward model: what the generator itself
        finds (the policy gradient's doing)."""
        assert self.model is not None, "fit first"
        alone = replace(self.select_config, mode="best-of-k", enumerate_up_to=0)
        return choose(self.model, requests, greedy=True, config=alone, seed=seed)


GENCO_VARIANTS: dict[str, dict] = {
    "genco": {},
    "genco-no-attention": {"attention": False},
    "genco-no-mil": {"mil": False},
    "genco-no-rl": {"rl": False},
    "genco-no-cross-component": {"cross_component": False},  # a diagnostic past the paper's ablations
    "genco-mean-baseline": {"rl_objective": "mean"},
    "genco-sampling-only": {"mode": "best-of-k", "enumerate_up_to": 0},  # the best of the generator's K alone
    "genco-argmax": {"mode": "argmax"},  # serving the generator's most likely combination alone
    "genco-one-reward-model": {"reward_models": 1},
    "genco-autoregressive": {"model_class": AutoregressiveGenCO},
}


#: Every setting a GenCO variant takes: a field of ModelConfig, TrainConfig or SelectConfig.
GENCO_SETTINGS = frozenset(f.name for c in (ModelConfig, TrainConfig, SelectConfig) for f in fields(c))


def make_genco(name: str, *, seed: int = 0, epochs: int | None = None, **overrides) -> GenCOPolicy:
    """A GenCO variant by name; `overrides` set ModelConfig / TrainConfig / SelectConfig fields by name."""
    settings = {**GENCO_VARIANTS[name], **overrides, **({} if epochs is None else {"epochs": epochs})}
    model_class = settings.pop("model_class", GenCO)
    configs = [ModelConfig(), TrainConfig(seed=seed), BENCH_SELECT]
    for key in settings:
        if key not in GENCO_SETTINGS:
            raise KeyError(f"unknown setting {key!r}")
    # replace() builds each config anew, so every value passes its range check (genco.options)
    model_config, train_config, select_config = (
        replace(c, **{k: v for k, v in settings.items() if k in {f.name for f in fields(c)}}) for c in configs)
    return GenCOPolicy(name, model_config, train_config, select_config, model_class)


def _lazy(module: str, cls: str) -> Callable[..., Policy]:
    """A baseline constructor that imports its module only when used (some need optional extras).

    The seed goes to the constructor of the baselines whose fit is random (initialisation, posterior
    noise); the others take their randomness from `choose(seed=...)` alone. Other options are the
    constructor's own keyword arguments (`mvt:pair_prior=1e12` in benchmarks/variants.py); an unknown one
    is an error, never silently dropped.
    """
    def make(seed: int = 0, **options) -> Policy:
        import importlib
        import inspect

        policy_class = getattr(importlib.import_module(f"genco.baselines.{module}"), cls)
        parameters = inspect.signature(policy_class).parameters
        unknown = sorted(set(options) - set(parameters))
        if unknown:
            raise KeyError(f"unknown setting {unknown[0]!r} for {cls}; it takes {', '.join(p for p in parameters if p != 'seed')}")
        return policy_class(**options, **({"seed": seed} if "seed" in parameters else {}))
    return make


BASELINES: dict[str, Callable[..., Policy]] = {
    "random": lambda seed=0, **options: RandomPolicy(**options),
    "counting": lambda seed=0, **options: ElementCounting(**options),
    "independent-ts": lambda seed=0, **options: ElementCounting(thompson=True, **options),
    "mvt": _lazy("mvt", "MVTBandit"),
    "linucb": _lazy("linear", "LinUCB"),
    "lints": _lazy("linear", "LinTS"),
    "autoco-lite": _lazy("autoco", "AutoCOLite"),
    "combination-ts": _lazy("combination_ts", "CombinationTS"),
    "vw-slates": _lazy("vw_slates", "VWSlates"),
}


def policy_names() -> list[str]:
    return list(BASELINES) + list(GENCO_VARIANTS)


def make_policy(name: str, *, seed: int = 0, genco_settings: dict[str, Any] | None = None, **options) -> Policy:
    """`options` go to the named policy and must be its own (unknown -> KeyError); `genco_settings` go to GenCO
    variants only, so one call can build any policy of a list with, say, a shared epoch budget."""
    if name in GENCO_VARIANTS:
        return make_genco(name, seed=seed, **(genco_settings or {}), **options)
    if name in BASELINES:
        return BASELINES[name](seed=seed, **options)
    raise KeyError(f"unknown policy {name!r}; known: {', '.join(policy_names())}")


def timed_fit(policy: Policy, logs: EncodedRows) -> float:
    start = time.perf_counter()
    policy.fit(logs)
    return time.perf_counter() - start

