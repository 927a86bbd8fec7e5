"""`genco bench`: policies side by side on simulated worlds, over several seeds, with numbers a skeptic can rerun.

Scenarios (every result row names its scenario):

- offline       fit on N random-exposure impressions, select greedily for fresh requests (the paper's setting)
- closed-loop   rounds of serve (explore) -> log -> retrain, as AutoCO and Amazon's MVT evaluate: served CTR and
                cumulative regret against the oracle per round, and a regret-curve PNG
- interaction   offline, sweeping the strength of element x element interactions (0: an additive world)
- candidates    offline, sweeping the candidates per component (5, 15, 50, 150)
- log-size      offline, sweeping the number of logged impressions
- cold-start    a share of elements never shown in the logs; scored on the requests that contain them
- scaling       selection time per 1,000 requests as pools grow: GenCO's cost follows the sum of the pool
                sizes, enumeration (AutoCO, whole-combination TS) follows their product

Every offline-style row carries at least policy, scenario, seed, ctr, random_ctr, oracle_ctr,
frac_of_oracle_lift, fit_seconds and select_seconds_per_1k; `summarise` gives mean and spread per
(scenario, policy).
"""

from __future__ import annotations

import contextlib
import time
from collections import defaultdict
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, replace
from typing import Any

import numpy as np

from genco import console
from genco.contract import LogRow, Request
from genco.data import EncodedRows, encode, positions_of, request_dict
from genco.evaluate import Evaluator
from genco.model import GenCO
from genco.policies import GENCO_SETTINGS, GENCO_VARIANTS, GenCOPolicy, make_policy
from genco.world import World, WorldConfig, random_exposure_logs, simulate_in_memory

SCENARIOS = ("offline", "closed-loop", "interaction", "candidates", "log-size", "cold-start", "structure", "scaling")


class Skip(Exception):
    """A policy that cannot run here (an optional dependency missing): reported, not fatal."""


WORLD_POLICIES = ("oracle", "oracle-additive")  # they read the world's truth; no log can train them


def build_policy(name: str, seed: int, world: World, **options: Any):
    """A policy by name. `options` are GenCO settings (every GenCO variant takes them all; a baseline none of
    them) and, for a baseline, its own constructor's keywords (`pair_prior` for mvt)."""
    if name in WORLD_POLICIES:
        return OraclePolicy(world, additive=name == "oracle-additive")
    genco_settings = {key: value for key, value in options.items() if key in GENCO_SETTINGS}
    own = {key: value for key, value in options.items() if key not in GENCO_SETTINGS}
    try:
        return make_policy(name, seed=seed, genco_settings=genco_settings, **own)
    except ImportError as exc:  # e.g. the vw extra is not installed
        raise Skip(f"{name}: skipped ({exc})") from None
    except RuntimeError as exc:
        if type(exc).__name__.endswith("Unavailable"):
            raise Skip(f"{name}: skipped ({exc})") from None
        raise


class OraclePolicy:
    """Knows the world: the best combination of every request (exact, see World.oracle_dicts); additive: the
    best element of every component by its own effect, blind to interactions (World.additive_best_dicts), the
    ceiling of any additive model and so the measure of how much of the lift needs interactions."""

    def __init__(self, world: World, additive: bool = False):
        self.world, self.additive = world, additive
        self.name = "oracle-additive" if additive else "oracle"

    def fit(self, logs: EncodedRows) -> "OraclePolicy":
        return self

    def choose(self, requests: EncodedRows, *, greedy: bool = True, seed: int = 0):
        from genco.baselines.base import choices

        rows = [request_dict(requests, r) for r in range(len(requests))]
        if self.additive:
            best = self.world.additive_best_dicts(rows)
            p = self.world.click_probability_dicts(rows, best)
        else:
            best, p = self.world.oracle_dicts(rows)
        return choices(requests, positions_of(requests, np.arange(len(requests)), best), score=p)


def fit_and_score(name: str, seed: int, world: World, logs: EncodedRows, requests: EncodedRows, evaluator: Evaluator,
                  rows: np.ndarray | None = None, **options: Any) -> dict[str, Any]:
    """Fit one policy on logs, choose greedily for requests, score on the world: one result row.

    rows: score only these requests (their selections are still made with the others, in one call).
    """
    return score_policy(build_policy(name, seed, world, **options), seed, logs, requests, evaluator, rows)


def score_policy(policy, seed: int, logs: EncodedRows, requests: EncodedRows, evaluator: Evaluator,
                 rows: np.ndarray | None = None) -> dict[str, Any]:
    """fit_and_score for a policy already built (the demo keeps its GenCO models)."""
    start = time.perf_counter()
    policy.fit(logs)
    fit_seconds = time.perf_counter() - start
    start = time.perf_counter()
    chosen = policy.choose(requests, greedy=True, seed=seed)
    select_seconds = time.perf_counter() - start
    rows = np.arange(len(requests)) if rows is None else rows
    figures = evaluator.score([chosen.selections[k] for k in rows], rows)
    return {"policy": policy.name, "seed": seed, **figures, "fit_seconds": fit_seconds,
            "select_seconds_per_1k": 1000 * select_seconds / max(len(requests), 1),
            **genco_figures(policy, requests, evaluator, rows, seed)}


def genco_figures(policy, requests: EncodedRows, evaluator: Evaluator, rows: np.ndarray, seed: int) -> dict[str, float]:
    """For a GenCO policy, what only it has:

    - frac_sampling_alone: the share of the oracle's lift its generator finds without the coordinate ascent
      (where the policy gradient shows, since the ascent can make up for a poor generator);
    - attribution_corr / attribution_captured: how well its reward models rank the candidates of each
      component against the world's truth (genco.attribution; where multi-instance learning should show);
    - heldout_auc / heldout_logloss: the first reward model's, at its kept epoch (combination level, beside
      attribution's element level: the seed's test of MIL is which of the two degrades without it);
    - attention_partner_ratio (reward model) / generator_attention_partner_ratio: the weight attention puts on
      the world's truly interacting pairs of components over the others (genco.attention_map; 1 = uniform).
    """
    from genco.attention_map import attention_map
    from genco.attribution import element_attribution, summary

    if not isinstance(policy, GenCOPolicy):
        return {}
    chosen = policy.choose_by_sampling(requests, seed=seed)
    sampled = evaluator.score([chosen.selections[k] for k in rows], rows)["frac_of_oracle_lift"]
    policy.attribution = element_attribution(policy.model, requests, evaluator)  # kept for plots (genco demo)
    figures = {"frac_sampling_alone": sampled, **summary(policy.attribution),
               "heldout_auc": policy.result.best.heldout_auc, "heldout_logloss": policy.result.best.heldout_logloss}
    if policy.model_config.cross_component and policy.model_class is GenCO:  # the AR generator attends otherwise
        policy.attention = attention_map(policy.model, requests, seed=seed)  # kept for plots (genco demo)
        partners = list(evaluator.world.interactions)  # the pairs of components that truly interact
        figures |= {"attention_partner_ratio": policy.attention.partner_ratio(partners),
                    "generator_attention_partner_ratio": policy.attention.partner_ratio(partners, "generator")}
    return figures


_reused: dict[tuple, dict[str, Any]] | None = None  # identical fits of this run, when reuse is on


@contextlib.contextmanager
def reusing_identical_fits() -> Iterator[None]:
    """Within the block, a policy fitted and scored on exactly the same world, logs, requests, seed and options
    as before is not fitted again: its row is copied. The full preset's interaction sweep at 1.0 and its log-size
    sweep at 50,000 are the offline scenario's seed-1 world; without this a full run would fit those policies
    three times over for the same figures."""
    global _reused
    _reused = {}
    try:
        yield
    finally:
        _reused = None


def _run_policies(policies: Sequence[str], scenario: str, seed: int, config: WorldConfig, world: World,
                  logs: EncodedRows, requests: EncodedRows, evaluator: Evaluator, rows: np.ndarray | None = None,
                  extra: dict[str, Any] | None = None, **options: Any) -> list[dict[str, Any]]:
    results = []
    for name in policies:
        key = (name, seed, repr(config), None if rows is None else tuple(rows), repr(sorted(options.items())))
        try:
            if _reused is not None and key in _reused:
                row = dict(_reused[key])
            else:
                row = fit_and_score(name, seed, world, logs, requests, evaluator, rows, **options)
                if _reused is not None:
                    _reused[key] = dict(row)
        except Skip as skipped:
            console.note(f"  {skipped}")
            continue
        row |= {"scenario": scenario, "impressions": config.impressions, "interaction": config.interaction,
                "max_candidates": config.max_candidates, **(extra or {})}
        console.note(f"  {scenario:12s} seed {seed}  {name:22s} frac of oracle lift {row['frac_of_oracle_lift']:+.3f}  "
                     f"fit {row['fit_seconds']:.1f}s")
        results.append(row)
    return results


def offline(policies: Sequence[str], world_config: WorldConfig, seeds: Iterable[int], *, vary_world: bool = True,
            scenario: str = "offline", extra: dict[str, Any] | None = None, **options: Any) -> list[dict[str, Any]]:
    """Fit every policy on random-exposure logs and score its greedy selections, once per seed.

    vary_world: each seed draws its own world and logs; otherwise the world of `world_config.seed` is kept
    and the seed moves only training and selection.
    """
    results = []
    for seed in seeds:
        config = replace(world_config, seed=seed) if vary_world else world_config
        world, logs, request_rows = simulate_in_memory(config)
        requests = encode(request_rows, logs.schema)
        evaluator = Evaluator(world, request_rows)
        results += _run_policies(policies, scenario, seed, config, world, logs, requests, evaluator, extra=extra, **options)
    return results


def sweep(policies: Sequence[str], base: WorldConfig, seeds: Iterable[int], field_name: str, values: Sequence[Any],
          scenario: str, **options: Any) -> list[dict[str, Any]]:
    """The offline scenario once per value of one world setting (interaction, max_candidates, impressions)."""
    results = []
    for value in values:
        config = replace(base, **{field_name: value})
        results += offline(policies, config, seeds, scenario=scenario, extra={"setting": value}, **options)
    return results


#: The structure scenario's worlds: where synergy lives (docs/worlds.md) and what element features show.
STRUCTURES: dict[str, dict[str, Any]] = {
    "tree, ids only": {"interaction_form": "tree", "features": "none"},
    "tree, partial features": {"interaction_form": "tree", "features": "partial"},
    "dense": {"interaction_form": "dense"},
    "dense, ids only": {"interaction_form": "dense", "features": "none"},
    "gated": {"interaction_form": "gated"},
    "gated, ids only": {"interaction_form": "gated", "features": "none"},
    # one creative shown whole, as in the published table of real CTRs the form is shaped after
    "table, one creative": {"interaction_form": "table", "features": "none", "ads": 1},
}


def structure(policies: Sequence[str], base: WorldConfig, seeds: Iterable[int], settings: Sequence[str],
              **options: Any) -> list[dict[str, Any]]:
    """The offline scenario on worlds whose synergy lives in other forms (STRUCTURES), one setting each."""
    results = []
    for label in settings:
        config = replace(base, **STRUCTURES[label])
        results += offline(policies, config, seeds, scenario="structure", extra={"setting": label}, **options)
    return results


def cold_start(policies: Sequence[str], base: WorldConfig, seeds: Iterable[int], share: float = 0.2, **options: Any) -> list[dict[str, Any]]:
    """Elements never shown in the logs: score on the fresh requests that contain at least one of them."""
    results = []
    for seed in seeds:
        config = replace(base, seed=seed, cold_share=share)
        world, logs, request_rows = simulate_in_memory(config)
        requests = encode(request_rows, logs.schema)
        evaluator = Evaluator(world, request_rows)
        with_cold = np.array([k for k, r in enumerate(request_rows)
                              if any(world.components[n].cold[world.components[n].index[e.id]] for n, c in r.components.items() for e in c)])
        results += _run_policies(policies, "cold-start", seed, config, world, logs, requests, evaluator, rows=with_cold,
                                 extra={"setting": share, "requests_with_cold": len(with_cold)}, **options)
    return results


@dataclass
class LoopConfig:
    warm_start: int = 5_000  # random-exposure impressions before the first round
    rounds: int = 8
    per_round: int = 5_000  # impressions served by the policy each round


def closed_loop(policies: Sequence[str], base: WorldConfig, seeds: Iterable[int], loop: LoopConfig,
                **options: Any) -> list[dict[str, Any]]:
    """Serve (explore) -> log -> retrain, round after round; one row per (policy, seed, round).

    Every round each policy serves `per_round` fresh requests with its explore mode; clicks are drawn from
    the world's truth; the served rows (with the policy's propensities) join the logs it retrains on.
    Rows carry the expected CTR of the served traffic and the regret against the oracle (expected clicks lost).
    """
    results = []
    for seed in seeds:
        config = replace(base, seed=seed, impressions=loop.warm_start)
        world = World.generate(config)
        warm = [LogRow.model_validate(r) for r in random_exposure_logs(world, loop.warm_start, seed)]
        rng = np.random.default_rng([seed, 99])
        round_requests = [world.request_dicts(loop.per_round, rng, prefix=f"round{k}") for k in range(loop.rounds)]
        for name in policies:
            try:
                policy = build_policy(name, seed, world, **options)
            except Skip as skipped:
                console.note(f"  {skipped}")
                break
            logs = list(warm)
            cumulative_regret, served_total, clicks_total = 0.0, 0, 0.0
            for k, requests in enumerate(round_requests):
                start = time.perf_counter()
                data = encode(logs)
                policy.fit(data)
                fit_seconds = time.perf_counter() - start
                request_data = encode([Request.model_validate(r) for r in requests], data.schema)
                chosen = policy.choose(request_data, greedy=False, seed=seed * 1000 + k)
                served = list(zip(chosen.selections, [float(p) for p in chosen.propensity]))
                rows = world.log_dicts(requests, lambda _: served, rng)
                p = world.click_probability_dicts(requests, chosen.selections)
                _, oracle_p = world.oracle_dicts(requests)
                regret = float((oracle_p - p).sum())
                cumulative_regret += regret
                served_total += len(requests)
                clicks_total += float(p.sum())
                logs += [LogRow.model_validate(r) for r in rows]
                results.append({"policy": name, "scenario": "closed-loop", "seed": seed, "round": k + 1,
                                "impressions_served": served_total, "ctr": float(p.mean()), "oracle_ctr": float(oracle_p.mean()),
                                "cumulative_ctr": clicks_total / served_total, "regret": regret,
                                "cumulative_regret": cumulative_regret, "fit_seconds": fit_seconds})
                console.note(f"  closed-loop seed {seed} {name:22s} round {k + 1}: served CTR {p.mean():.4f}  "
                             f"cumulative regret {cumulative_regret:.1f}")
    return results


def scaling(policies: Sequence[str], sizes: Sequence[int], *, impressions: int = 5_000, requests: int = 100,
            seed: int = 1, **options: Any) -> list[dict[str, Any]]:
    """Selection time per 1,000 requests as candidate pools grow (fit on a small log: cost, not quality)."""
    results = []
    for size in sizes:
        config = WorldConfig(seed=seed, impressions=impressions, requests=requests, max_candidates=size)
        world, logs, request_rows = simulate_in_memory(config)
        data = encode(request_rows, logs.schema)
        counts = np.stack([data.candidate_counts(n) for n in data.schema.components], axis=1)
        pool_sum = float(counts.sum(axis=1).mean())
        pool_product = float(np.exp(np.log(np.maximum(counts, 1)).sum(axis=1)).mean())
        for name in policies:
            try:
                policy = build_policy(name, seed, world, **options)
            except Skip as skipped:
                console.note(f"  {skipped}")
                continue
            policy.fit(logs)
            start = time.perf_counter()
            policy.choose(data, greedy=True, seed=seed)
            seconds = time.perf_counter() - start
            results.append({"policy": name, "scenario": "scaling", "max_candidates": size, "seed": seed,
                            "mean_pool_sum": pool_sum, "mean_combinations": pool_product,
                            "select_seconds_per_1k": 1000 * seconds / len(request_rows)})
            if isinstance(policy, GenCOPolicy):  # the same model without the coordinate ascent: the generator's cost
                start = time.perf_counter()
                policy.choose_by_sampling(data, seed=seed)
                results[-1]["sampled_select_seconds_per_1k"] = 1000 * (time.perf_counter() - start) / len(request_rows)
            console.note(f"  scaling {size:4d} candidates  {name:22s} {1000 * seconds / len(request_rows):8.2f} s / 1k requests")
    return results


def summarise(rows: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """Mean and standard deviation over seeds per (scenario, setting, policy), for the offline-style rows."""
    groups: dict[tuple, list[dict[str, Any]]] = defaultdict(list)
    for row in rows:
        if "frac_of_oracle_lift" in row:
            groups[(row["scenario"], row.get("setting"), row["policy"])].append(row)
    out = []
    for (scenario, setting, policy), members in groups.items():
        summary: dict[str, Any] = {"scenario": scenario, "setting": setting, "policy": policy, "seeds": len(members)}
        for key in ("ctr", "random_ctr", "oracle_ctr", "lift_vs_random", "frac_of_oracle_lift", "fit_seconds",
                    "select_seconds_per_1k", "frac_sampling_alone", "attribution_corr", "attribution_captured",
                    "heldout_auc", "heldout_logloss", "attention_partner_ratio", "generator_attention_partner_ratio"):
            if key not in members[0]:
                continue
            values = np.array([m[key] for m in members], dtype=float)
            summary[key] = float(values.mean())
            summary[f"{key}_std"] = float(values.std(ddof=1)) if len(values) > 1 else 0.0
        out.append(summary)
    return out


def markdown(summary: Sequence[dict[str, Any]]) -> str:
    lines = ["| scenario | setting | policy | true CTR | lift vs random | frac of oracle lift (mean ± sd) | "
             "sampled only | attribution corr | held-out log loss | attention on partners | fit s | select s / 1k |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for s in summary:
        setting = "" if s["setting"] is None else str(s["setting"])
        lines.append(
            f"| {s['scenario']} | {setting} | {s['policy']} | {s['ctr']:.4f} | {s['lift_vs_random']:+.1%} | "
            f"{_mean_sd(s, 'frac_of_oracle_lift')} | {_mean_sd(s, 'frac_sampling_alone')} | {_mean_sd(s, 'attribution_corr')} | "
            f"{_mean_sd(s, 'heldout_logloss', 4)} | {_mean_sd(s, 'attention_partner_ratio', 2)} | {s['fit_seconds']:.1f} | {s['select_seconds_per_1k']:.2f} |"
        )
    return "\n".join(lines) + "\n"


def _mean_sd(summary: dict[str, Any], key: str, digits: int = 3) -> str:
    """'mean ± sd' of one figure of a summary row; empty where the policy has no such figure, or where it is
    undefined (NaN: attention on partners in a world where every pair of components interacts)."""
    if key not in summary or np.isnan(summary[key]):
        return ""
    return f"{summary[key]:.{digits}f} ± {summary[key + '_std']:.{digits}f}"


def loop_markdown(rows: Sequence[dict[str, Any]]) -> str:
    """Final-round cumulative CTR and regret per policy, mean over seeds."""
    last: dict[str, list[dict[str, Any]]] = defaultdict(list)
    final_round = max((r["round"] for r in rows), default=0)
    for r in rows:
        if r["round"] == final_round:
            last[r["policy"]].append(r)
    lines = ["| policy | cumulative CTR | last-round CTR | oracle CTR | cumulative regret (clicks) |", "|---|---|---|---|---|"]
    for policy, members in last.items():
        mean = lambda key: float(np.mean([m[key] for m in members]))
        lines.append(f"| {policy} | {mean('cumulative_ctr'):.4f} | {mean('ctr'):.4f} | {mean('oracle_ctr'):.4f} | {mean('cumulative_regret'):.1f} |")
    return "\n".join(lines) + "\n"


def scaling_markdown(rows: Sequence[dict[str, Any]]) -> str:
    sizes = sorted({r["max_candidates"] for r in rows})
    by = {(r["policy"], r["max_candidates"]): r for r in rows}
    policies = list(dict.fromkeys(r["policy"] for r in rows))
    pool = {s: next(r for r in rows if r["max_candidates"] == s) for s in sizes}
    lines = ["| policy | " + " | ".join(f"{s} cand. (sum {pool[s]['mean_pool_sum']:.0f}, product {pool[s]['mean_combinations']:.2g})" for s in sizes) + " |",
             "|---|" + "---|" * len(sizes)]
    for p in policies:
        for key, label in (("select_seconds_per_1k", p), ("sampled_select_seconds_per_1k", f"{p}, sampled only")):
            if any(key in by[(p, s)] for s in sizes if (p, s) in by):
                lines.append(f"| {label} | " + " | ".join(f"{by[(p, s)][key]:.2f}" if key in by.get((p, s), {}) else "-"
                                                          for s in sizes) + " |")
    return "seconds per 1,000 requests\n\n" + "\n".join(lines) + "\n"
