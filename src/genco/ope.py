"""Off-policy evaluation on the user's own logs: what CTR (and RPM) a target policy would get before it goes live.

`estimate_model(logs, model, config)` and `estimate_named(logs, name, config)` are the Python API (both on
`estimate_view`); `genco ope` is their command line. Four steps:

1. **What the target would do** with each logged impression (`TargetView`): q, its probability of serving
   the logged combination; q_k, of serving the logged element of component k; and S draws of what it would
   serve. A greedy target is an indicator (S = 1). GenCO's explore policy is exact: pi, mixed with the uniform
   share epsilon, is a product over components, so q and q_k are read off it. Any other stochastic policy is
   estimated from S of its own draws: the share of draws equal to the log is an unbiased estimate of q, so
   IPS stays unbiased (its variance grows a little).
2. **What the logging policy did**: p is each row's `propensity`. The per-component p_k that the
   pseudo-inverse needs are not in the contract's rows; they are known for uniform exposure alone (p equal to
   the product of 1 / n_k, which the logs prove row by row), so PI and DR-PI exist for such logs only.
3. **A reward model** of P(click) for the direct method and the doubly robust correction: GenCO's multi-instance
   reward model (the target's own when the target is a GenCO model, otherwise one fitted on the fit share of
   the logs, or any model folder the user gives: `reward_model`). An ensemble's members' spread widens DM's
   interval. For RPM the model's click probability is multiplied by what a click on that product earns,
   estimated from the logs' clicked rows (`revenue_per_click`): a click's revenue is taken to depend on the
   product, not on the creative.
4. **The estimators** of genco.estimators on those arrays, with warnings when propensities are missing,
   support is poor or weights are extreme, and the recommended one (`recommend`) for these logs.

A named policy (`genco bench --list`) is fitted on a random `fit_share` of the logs and judged on the rest,
so that the estimate is out of sample. A model folder is judged on every row: give it logs it was not trained
on. On its own training logs its choices follow that log's click noise, and every estimator flatters it.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np
import torch

from genco import estimators as est
from genco.baselines.base import Policy, request_counts
from genco.data import EncodedRows, batch_indices, collate, request_dict, selections_at
from genco.ensemble import member_encodings, reward_models
from genco.errors import GencoInputError
from genco.model import GenCO, mix_uniform
from genco.options import OptionError, bounded, check_options, seed_field
from genco.select import SelectConfig, choose

MODES = ("greedy", "explore")

#: Below this many impressions whose served combination the target could also have served (q > 0), the
#: whole-combination estimators rest on too few rows to be read.
MIN_SUPPORT_ROWS = 30

#: Without uniform logging, SNIPS is recommended when its weights are worth at least this many equally
#: weighted impressions: its delta interval covered then (benchmarks/ope_validation.py: 95-100% of 20 seeds at
#: an effective sample size of 500), and it needs neither a model nor additivity.
RECOMMEND_SNIPS_ESS = 300


@dataclass
class OPEConfig:
    mode: str = "greedy"  # the target's answers: greedy (its best guess) or explore (sampled, with epsilon)
    epsilon: float = bounded(0.05, ge=0, le=1)  # explore: uniform share per component (GenCO targets)
    samples: int = bounded(32, ge=1, le=1024)  # draws per impression of a stochastic target (DM, replay, q of non-GenCO)
    fit_share: float = bounded(0.5, gt=0, lt=1)  # named targets: share of the logs they (and DM's model) are fitted on
    seed: int = seed_field()
    epochs: int = bounded(30, ge=1, le=10_000)  # at most this many epochs for a GenCO fitted here
    assume_uniform: bool = False  # rows without a propensity were served uniformly at random

    def __post_init__(self) -> None:
        check_options(self)
        if self.mode not in MODES:
            raise OptionError("mode", " or ".join(repr(m) for m in MODES), self.mode)


@dataclass
class TargetView:
    combo: np.ndarray  # (n,) q: the target's probability of the logged combination
    marginal: np.ndarray  # (n, M) q_k: of the logged element of component k (1 where the row lacks k)
    draws: np.ndarray  # (n, S, M) positions the target would serve, -1 absent


@dataclass
class OPEResult:
    policy: str
    mode: str
    rows: int  # impressions judged on
    fit_rows: int  # impressions the target (or DM's reward model) was fitted on here
    logged_ctr: float
    estimates: list[est.Estimate]
    recommended: str | None
    reward_model: str  # what the direct method used
    rpm: list[est.Estimate] = field(default_factory=list)
    unavailable: dict[str, str] = field(default_factory=dict)  # estimator -> why it is not computed
    warnings: list[dict[str, str]] = field(default_factory=list)  # {"rule", "message"}
    truth: float | None = None  # the target's true CTR on these rows (a simulated world given)
    truth_rpm: float | None = None  # and its true RPM (a world that logs revenue)

    def estimate(self, name: str) -> est.Estimate | None:
        return next((e for e in self.estimates if e.estimator == name), None)

    def to_dict(self) -> dict[str, Any]:
        return {
            "policy": self.policy, "mode": self.mode, "rows": self.rows, "fit_rows": self.fit_rows,
            "logged_ctr": self.logged_ctr, "recommended": self.recommended, "reward_model": self.reward_model,
            "estimates": [e.to_dict() for e in self.estimates], "rpm": [e.to_dict() for e in self.rpm],
            "unavailable": self.unavailable, "warnings": self.warnings, "truth": self.truth, "truth_rpm": self.truth_rpm,
        }


# -- 1. the target ---------------------------------------------------------------------------------------------

def _exact_generator(model) -> GenCO | None:
    """The GenCO whose non-autoregressive pi generates for `model`, if its explore policy has that exact form."""
    generator = getattr(model, "primary", model)
    return generator if type(generator) is GenCO else None


def view_from_draws(draws: np.ndarray, shown: np.ndarray) -> TargetView:
    """q and q_k as the shares of S draws (n, S, M) equal to the logged positions (n, M)."""
    equal = draws == shown[:, None, :]  # (n, S, M)
    return TargetView(equal.all(axis=2).mean(axis=1), equal.mean(axis=1), draws)


@torch.inference_mode()
def _exact_explore_view(model, data: EncodedRows, config: OPEConfig) -> TargetView:
    """GenCO's explore policy, exactly: q_k = the mixed pi of the logged element, q = their product."""
    generator = _exact_generator(model)
    torch_generator = torch.Generator().manual_seed(config.seed)
    shown = data.shown_positions()
    combo, marginal, draws = [], [], []
    for idx in batch_indices(len(data), 1024):
        batch = collate(data, idx)
        enc = model.encode(batch)
        own = member_encodings(enc)[0]  # the generating member's
        log_pi = mix_uniform(generator.log_pi(generator.policy_scores(own), own), own, config.epsilon)  # (B, T)
        logged = torch.from_numpy(shown[idx])[:, None, :]  # (B, 1, M)
        slot, present = GenCO.slots(logged, own)
        per_component = log_pi.gather(1, slot[:, 0]).masked_fill(~present[:, 0], 0.0)  # (B, M)
        marginal.append(per_component.exp().double().numpy())
        combo.append(per_component.sum(dim=1).exp().double().numpy())
        draws.append(GenCO.sample(log_pi, own, config.samples, torch_generator).numpy())  # (B, S, M)
    return TargetView(np.concatenate(combo), np.concatenate(marginal), np.concatenate(draws))


def model_view(model, data: EncodedRows, config: OPEConfig, select_config: SelectConfig) -> TargetView:
    """A GenCO model (or ensemble) as the target."""
    if config.mode == "greedy":
        chosen = choose(model, data, greedy=True, config=select_config)
        return view_from_draws(chosen.positions[:, None, :], data.shown_positions())
    if _exact_generator(model) is not None:
        return _exact_explore_view(model, data, config)
    explore = replace(select_config, epsilon=config.epsilon)
    draws = [choose(model, data, greedy=False, config=explore, seed=config.seed + s).positions for s in range(config.samples)]
    return view_from_draws(np.stack(draws, axis=1), data.shown_positions())


def policy_view(policy: Policy, data: EncodedRows, config: OPEConfig) -> TargetView:
    """Any policy of the shared interface as the target: its greedy answer, or S of its explore draws."""
    if config.mode == "greedy":
        draws = [policy.choose(data, greedy=True, seed=config.seed).positions]
    else:
        draws = [policy.choose(data, greedy=False, seed=config.seed + s).positions for s in range(config.samples)]
    return view_from_draws(np.stack(draws, axis=1).astype(np.int64), data.shown_positions())


# -- 2. the logging policy -------------------------------------------------------------------------------------

@dataclass
class LoggingView:
    propensity: np.ndarray  # (n,) p, NaN where unknown
    marginal: np.ndarray | None  # (n, M) p_k under uniform exposure, None when the logs are not uniform
    present: np.ndarray  # (n, M) bool: components the row has
    missing: int  # rows that carried no propensity
    assumed: int  # of them, rows given the uniform one by assume_uniform


def logging_view(data: EncodedRows, assume_uniform: bool) -> LoggingView:
    counts = request_counts(data)  # (n, M)
    present = counts > 0
    uniform = np.prod(np.where(present, 1.0 / np.maximum(counts, 1), 1.0), axis=1)  # (n,)
    p = data.propensity.astype(np.float64)
    missing = np.isnan(p)
    if assume_uniform:
        p = np.where(missing, uniform, p)
    known = ~np.isnan(p)
    # propensities are stored as float32: equal to the uniform one within that precision
    is_uniform = bool(known.any()) and bool(np.allclose(p[known], uniform[known], rtol=1e-5, atol=0))
    marginal = np.where(present, 1.0 / np.maximum(counts, 1), 1.0) if is_uniform else None
    return LoggingView(p, marginal, present, int(missing.sum()), int(missing.sum()) if assume_uniform else 0)


# -- 3. the reward model ---------------------------------------------------------------------------------------

@torch.inference_mode()
def member_logits(model, data: EncodedRows, combos: np.ndarray) -> np.ndarray:
    """Click logits of combinations (n, C, M) by every reward model of `model`: (members, n, C)."""
    model.eval()
    members = reward_models(model)
    out = []
    for idx in batch_indices(len(data), 1024):
        encs = member_encodings(model.encode(collate(data, idx)))
        combo = torch.from_numpy(combos[idx])
        out.append(torch.stack([m.click_logit(e, combo) for m, e in zip(members, encs)]).double().numpy())
    return np.concatenate(out, axis=1)


@dataclass
class RewardModel:
    """What DM and DR read: a GenCO model or ensemble, and how a result names it."""

    model: Any
    name: str


def check_reward_model(reward_model: RewardModel, data: EncodedRows, where: str | None = None) -> None:
    """A reward model must read the logs as they were encoded (the same components, feature lengths and hash
    sizes): its predictions index the same candidates. Raises GencoInputError naming `where` (default: the
    model's name) and what differs."""
    mine, theirs = reward_model.model.schema, data.schema
    if mine != theirs:
        differ = ", ".join(key for key, value in mine.to_dict().items() if value != theirs.to_dict().get(key))
        raise GencoInputError(f"{where or reward_model.name}: it was trained on rows of another form than these logs "
                              f"(different {differ}), so it cannot score their candidates")


@dataclass
class Predictions:
    """The reward model's expected reward per row: P(click), or after `scaled`, P(click) times a reward per click."""

    logged: np.ndarray  # (n,) of the served combination
    target: np.ndarray  # (n,) mean over the target's draws
    member_target: np.ndarray  # (members, n) the same by each reward model alone

    def scaled(self, per_click: np.ndarray) -> "Predictions":
        """Expected reward when a click on row i earns per_click[i] (n,)."""
        return Predictions(self.logged * per_click, self.target * per_click, self.member_target * per_click)

    def member_spread(self) -> float:
        """Standard deviation of the members' DM estimates (0 for one reward model): DM's model uncertainty."""
        values = self.member_target.mean(axis=1)
        return float(np.std(values, ddof=1)) if len(values) > 1 else 0.0


def predictions(model, data: EncodedRows, view: TargetView) -> Predictions:
    combos = np.concatenate([data.shown_positions()[:, None, :], view.draws], axis=1)  # (n, 1 + S, M)
    logits = member_logits(model, data, combos)  # (members, n, 1 + S)
    mean = 1 / (1 + np.exp(-logits.mean(axis=0)))  # the ensemble's P(click): sigmoid of the mean logit
    each = 1 / (1 + np.exp(-logits[:, :, 1:]))
    return Predictions(mean[:, 0], mean[:, 1:].mean(axis=1), each.mean(axis=2))


def revenue_per_click(data: EncodedRows) -> np.ndarray:
    """(n,) what a click on each row's product earns: the mean revenue of that product's clicked rows, with one
    pseudo-click at the mean of all clicked rows (so a product clicked once is not taken at its one price,
    and one never clicked gets the overall mean). Rows must carry revenue where clicked."""
    clicked = data.click > 0
    revenue = np.nan_to_num(data.revenue.astype(np.float64))
    overall = float(revenue[clicked].mean()) if clicked.any() else 0.0
    products, row_product = np.unique(np.asarray(data.ad_ids, dtype=object), return_inverse=True)
    clicks = np.bincount(row_product, weights=clicked.astype(np.float64), minlength=len(products))
    earned = np.bincount(row_product, weights=np.where(clicked, revenue, 0.0), minlength=len(products))
    return ((earned + overall) / (clicks + 1))[row_product]


# -- 4. the estimates ------------------------------------------------------------------------------------------

def _estimates(reward: np.ndarray, view: TargetView, logging: LoggingView, known: np.ndarray,
               pred: Predictions | None) -> tuple[list[est.Estimate], dict[str, np.ndarray]]:
    """DM (with predictions: of every row), then IPS, SNIPS, PI, SNPI and, with predictions, DR and DR-PI on
    the rows with a propensity; and the weights."""
    out = [est.direct(pred.target, model_sd=pred.member_spread())] if pred is not None else []
    weights: dict[str, np.ndarray] = {}
    if not known.any():
        return out, weights
    r, p, q = reward[known], logging.propensity[known], view.combo[known]
    weights["ips"] = est.importance_weights(p, q)
    out += [est.ips(r, p, q), est.snips(r, p, q)]
    if logging.marginal is not None:
        p_k, q_k, present = logging.marginal[known], view.marginal[known], logging.present[known]
        weights["pi"] = est.pseudo_inverse_weights(p_k, q_k, present)
        out += [est.pseudo_inverse(r, p_k, q_k, present), est.self_normalised_pseudo_inverse(r, p_k, q_k, present)]
    if pred is not None:
        logged, target = pred.logged[known], pred.target[known]
        out.append(est.doubly_robust(r, logged, target, weights["ips"], name="dr"))
        if "pi" in weights:
            out.append(est.doubly_robust(r, logged, target, weights["pi"], name="dr-pi"))
    return out, weights


def recommend(estimates: list[est.Estimate]) -> str | None:
    """The estimator to read first on these logs (README, *Off-policy estimates*, has the measurements):
    SNPI where the logs are uniform exposure: over 20 seeds it covered the truth in 90-100% of them for every
    target measured, greedy or explore, additive world or not, with the lowest RMSE or close to it; its
    weights grow with the sum of the pools, so it stays usable for greedy targets over large combination
    spaces, where whole-combination weights are almost all zero. Otherwise SNIPS when its weights are worth
    RECOMMEND_SNIPS_ESS impressions (no model, no additivity assumed), then DR, then DM. DM and the DR forms
    are never first on uniform logs: a model judging its own argmax is optimistic (winner's curse: +2 points
    of CTR for GenCO's greedy policy), and DR-PI's correction does not remove that."""
    by_name = {e.estimator: e for e in estimates if np.isfinite(e.value)}
    if "snpi" in by_name:
        return "snpi"
    snips = by_name.get("snips")
    if snips is not None and snips.ess >= RECOMMEND_SNIPS_ESS:
        return "snips"
    return next((name for name in ("dr", "dm", "snips", "ips", "replay") if name in by_name), None)


def _support_warnings(view: TargetView, logging: LoggingView, known: np.ndarray, weights: dict[str, np.ndarray]) -> list[dict[str, str]]:
    warnings = []
    if "ips" in weights:
        w = weights["ips"]
        supported = int((view.combo[known] > 0).sum())
        mean, se = float(w.mean()), float(w.std(ddof=1) / np.sqrt(len(w))) if len(w) > 1 else float("inf")
        if supported < MIN_SUPPORT_ROWS:
            warnings.append({"rule": "poor-support", "message": (
                f"the target could have served the logged combination in only {supported} of {len(w)} impressions: "
                "IPS, SNIPS and DR rest on those rows" + ("; read pi / dr-pi (uniform logging) or dm" if logging.marginal is not None else "; read dm"))})
        elif mean + 3 * se < 1:
            warnings.append({"rule": "poor-support", "message": (
                f"mean importance weight {mean:.3f} (+-{se:.3f}), not 1: the target chooses combinations the logs "
                "rarely or never showed, and the weighting estimators miss their clicks")})
    for name, w in weights.items():
        total = float(np.abs(w).sum())
        share = float(np.abs(w).max() / total) if total > 0 else 0.0
        ess = est.effective_sample_size(w)
        if total > 0 and (share > 0.1 or ess < max(MIN_SUPPORT_ROWS, 0.01 * len(w))):
            warnings.append({"rule": "extreme-weights", "message": (
                f"{name} weights: effective sample size {ess:.0f} of {len(w)} impressions, the largest weight "
                f"{share:.1%} of their sum: its interval is unreliable")})
    return warnings


def _truth(world, data: EncodedRows, view: TargetView) -> tuple[float, float | None]:
    """The target's true CTR on these rows, and its true RPM where the world logs revenue."""
    requests = [request_dict(data, r) for r in range(len(data))]
    rows = np.arange(len(data))
    p = np.mean([world.click_probability_dicts(requests, selections_at(data, rows, view.draws[:, s]))
                 for s in range(view.draws.shape[1])], axis=0)  # (n,) P(click) averaged over the target's draws
    rpm = float(1000 * np.mean(p * world.revenue_of(requests))) if world.config.revenue else None
    return float(p.mean()), rpm


def estimate_view(data: EncodedRows, view: TargetView, config: OPEConfig, *, reward_model: RewardModel | None = None,
                  policy: str = "target", fit_rows: int = 0, world=None) -> OPEResult:
    """Every estimate of the target's CTR (and RPM) from its view of the logged rows `data`; DM and DR with
    `reward_model` (None: not computed)."""
    if reward_model is not None:
        check_reward_model(reward_model, data)
    logging = logging_view(data, config.assume_uniform)
    known = ~np.isnan(logging.propensity)
    click = data.click.astype(np.float64)
    warnings: list[dict[str, str]] = []
    unavailable: dict[str, str] = {}
    if logging.missing and not config.assume_uniform:
        what = ("no row carries" if logging.missing == len(data) else f"{logging.missing} of {len(data)} rows carry no")
        warnings.append({"rule": "missing-propensities", "message": (
            f"{what} propensity: IPS, SNIPS, PI and DR " + ("are not computed" if not known.any() else "use the other rows")
            + " (--assume-uniform if the logs were served uniformly at random)")})
    elif logging.assumed:
        warnings.append({"rule": "assumed-uniform", "message": f"{logging.assumed} rows without a propensity were taken as uniform exposure"})
    if logging.marginal is None:
        reason = "the logging policy is not uniform exposure, so its per-component probabilities are unknown"
        unavailable.update({"pi": reason, "snpi": reason, "dr-pi": reason})
        if known.any():
            warnings.append({"rule": "not-uniform", "message": f"PI, SNPI and DR-PI need uniform logging: {reason}"})
    if not known.any():
        for name in ("ips", "snips", "dr"):
            unavailable[name] = "no propensities in the logs"
    pred = predictions(reward_model.model, data, view) if reward_model is not None else None
    estimates, weights = _estimates(click, view, logging, known, pred)
    if pred is None:
        unavailable.update({"dm": "no reward model", "dr": "no reward model", "dr-pi": "no reward model"})
    matched = (view.draws[:, 0] == data.shown_positions()).all(axis=1)
    estimates.append(est.replay(click, matched))
    if logging.marginal is None:
        warnings.append({"rule": "replay-assumes-uniform", "message": (
            "replay (sCTR) is unbiased under uniform logging only, and these logs do not show it")})
    if int(matched.sum()) < MIN_SUPPORT_ROWS:
        warnings.append({"rule": "few-matches", "message": (
            f"the target's choice matches the logged one in {int(matched.sum())} impressions: replay rests on those")})
    warnings += _support_warnings(view, logging, known, weights)
    if not any(np.isfinite(e.value) for e in estimates):
        raise GencoInputError("no estimate is possible: " + "; ".join(w["message"] for w in warnings))
    result = OPEResult(policy, config.mode, len(data), fit_rows, float(click.mean()), estimates, recommend(estimates),
                       reward_model.name if reward_model is not None else "none", unavailable=unavailable, warnings=warnings)
    result.rpm = _rpm_estimates(data, view, logging, known, pred, result)
    if world is not None:
        result.truth, result.truth_rpm = _truth(world, data, view)
    return result


def _rpm_estimates(data: EncodedRows, view: TargetView, logging: LoggingView, known: np.ndarray, pred: Predictions | None,
                   result: OPEResult) -> list[est.Estimate]:
    """Revenue per mille by every estimator but replay, when every clicked row says what its click earned:
    the weighting ones on 1000 x the revenue earned; DM and DR with the reward model's P(click) times
    1000 x revenue_per_click."""
    revenue = data.revenue.astype(np.float64)
    clicked = data.click > 0
    if np.isnan(revenue).all():
        return []
    if np.isnan(revenue[clicked]).any():
        result.warnings.append({"rule": "revenue-missing", "message": (
            f"{int(np.isnan(revenue[clicked]).sum())} clicked rows carry no revenue: RPM is not estimated")})
        return []
    earned = 1000 * np.where(clicked, np.nan_to_num(revenue), 0.0)
    scaled = pred.scaled(1000 * revenue_per_click(data)) if pred is not None else None
    return _estimates(earned, view, logging, known, scaled)[0]


# -- the whole job ---------------------------------------------------------------------------------------------

def _fit_split(n: int, share: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    order = np.random.default_rng(seed).permutation(n)
    n_fit = int(round(share * n))
    if n_fit < 1 or n - n_fit < 1:
        raise GencoInputError(f"{n} impressions: too few to fit the target on a share of {share:g} and judge it on the rest")
    return np.sort(order[:n_fit]), np.sort(order[n_fit:])


def estimate_named(logs: EncodedRows, name: str, config: OPEConfig, *, world=None, reward_model: RewardModel | None = None,
                   **policy_options: Any) -> OPEResult:
    """A policy of `genco bench --list`, fitted on the fit share of the logs and judged on the rest.
    `reward_model` (a model and what to call it) replaces the one DM and DR would use otherwise.
    `policy_options` go to a GenCO variant's configs by field name (genco.policies.make_genco)."""
    from genco.bench import WORLD_POLICIES, OraclePolicy
    from genco.policies import GenCOPolicy, make_policy, policy_names

    fit_rows, judge_rows = _fit_split(len(logs), config.fit_share, config.seed)
    fit, judged = logs.take(fit_rows), logs.take(judge_rows)
    if name in WORLD_POLICIES:
        if world is None:
            raise GencoInputError(f"--policy {name}: reads a simulated world's truth; give the world with --world")
        target: Any = OraclePolicy(world, additive=name == "oracle-additive")
    elif name in policy_names():
        if fit.click.sum() == 0:
            raise GencoInputError(f"no clicks in the {len(fit)} impressions of the fit share: nothing to fit {name} on")
        target = make_policy(name, seed=config.seed, genco_settings={"epochs": config.epochs, **policy_options})
        target.fit(fit)
    else:
        raise GencoInputError(f"--policy {name!r}: neither a model folder nor a policy name; known: "
                              + ", ".join([*WORLD_POLICIES, *policy_names()]))
    if isinstance(target, GenCOPolicy):  # its own reward model, and its exact explore policy
        view = model_view(target.model, judged, config, target.select_config)
        reward_model = reward_model or RewardModel(target.model, f"{name}'s own reward model (fitted on the fit share)")
    else:
        view = policy_view(target, judged, config)
        reward_model = reward_model or RewardModel(_fitted_reward_model(fit, config, policy_options),
                                                   "a GenCO reward model fitted on the fit share")
    return estimate_view(judged, view, config, reward_model=reward_model, policy=name, fit_rows=len(fit), world=world)


def _fitted_reward_model(fit: EncodedRows, config: OPEConfig, options: dict[str, Any]):
    """GenCO's reward model (no policy gradient: only the reward model is read) on the fit share; None without clicks."""
    from genco.policies import make_genco

    if fit.click.sum() == 0:
        return None
    return make_genco("genco", seed=config.seed, **{"epochs": config.epochs, **options, "rl": False}).fit(fit).model


def estimate_model(logs: EncodedRows, model, config: OPEConfig, select_config: SelectConfig | None = None, *,
                   name: str = "model", world=None, reward_model: RewardModel | None = None) -> OPEResult:
    """A trained GenCO model as the target, judged on every row of `logs` (encoded with the model's schema).
    DM and DR read the model's own reward model unless `reward_model` gives another."""
    view = model_view(model, logs, config, select_config or SelectConfig())
    reward_model = reward_model or RewardModel(model, "the model's own reward model (optimistic on rows it was trained on)")
    return estimate_view(logs, view, config, reward_model=reward_model, policy=name, world=world)

