"""Simulated creative worlds whose true click probability of every combination is known.

No public log of creative combinations can be reached, so quality is measured the way AutoCO, AES and
Amazon's MVT bandit measure it: on a simulator with ground truth. A world has

- ads (products) with their own appeal, drawn with a strong popularity bias (Zipf exposure, and popular
  products are also more appealing), and ad features that partly predict that appeal;
- six components; titles and images are ad-specific, highlights, tags, badges and calls to action come from
  shared catalogs and recur across ads; some ads lack some components; candidate counts vary per ad, up to
  `max_candidates`;
- hidden element attributes: a quality, a style vector and a personalisation vector. Element features are a
  noisy linear view of part of them (so cold start is learnable) and miss an idiosyncratic part of quality
  (so ids still matter);
- the click logit

      base + appeal[ad] + sum_m (w_m * quality[e_m] + user . pers[e_m])
           + interaction * sum_{(m, m') in TREE} style[e_m]^T C_mm' style[e_m']

  The pairwise terms follow a tree over the components (image at the root), which keeps the oracle exact:
  max-sum dynamic programming over the tree, O(sum over edges of n_m * n_m'), never the product of pools.

That is the default form (`interaction_form="tree"`, `features="full"`). Synergy lives in other forms in real
catalogues, and `docs/worlds.md` gives each form's logit: `dense` (every pair of components interacts),
`gated` (which partner matters depends on the element's content and on the user), `table` (one shared set of
small pools and a random effect per whole combination, with a chosen split of its variance between main
effects, pairs and higher orders; genco.table_world). `features="partial"` makes element features a much
noisier view, `"none"` leaves elements known by id alone (`features: []`).

Logs are collected under uniform random exposure, with the propensity of the shown combination.
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from genco.contract import DEFAULT_MAX_CANDIDATES, Request
from genco.errors import GencoInputError
from genco.files import AtomicWriter, atomic_write_bytes, atomic_write_json
from genco.options import OptionError, bounded, check_options, seed_field

WORLD_VERSION = 1


@dataclass(frozen=True)
class ComponentSpec:
    name: str
    shared: bool  # from a catalog shared across ads (True) or made for each ad (False)
    feature_dim: int
    weight: float  # scale of the element quality in the logit
    min_count: int
    max_share: float  # candidate counts reach max_share * max_candidates
    presence: float  # share of ads that have this component
    catalog: int = 0  # shared catalogs: at least this many elements


COMPONENTS: tuple[ComponentSpec, ...] = (
    ComponentSpec("title", False, 8, 0.16, 2, 1.0, 1.0),
    ComponentSpec("image", False, 12, 0.2, 2, 0.7, 1.0),
    ComponentSpec("highlight", True, 6, 0.12, 2, 0.8, 0.9, catalog=60),
    ComponentSpec("tag", True, 4, 0.08, 2, 0.5, 0.7, catalog=40),
    ComponentSpec("badge", True, 3, 0.07, 2, 0.4, 0.6, catalog=15),
    ComponentSpec("cta", True, 3, 0.08, 2, 0.35, 1.0, catalog=10),
)
# Pairwise interactions: child -> parent. A tree, so the oracle is an exact max-sum DP.
TREE: dict[str, str] = {"title": "image", "highlight": "image", "badge": "image", "cta": "image", "tag": "title"}
STYLE_DIM = 3

COMPONENT_INDEX = {spec.name: m for m, spec in enumerate(COMPONENTS)}
FEATURES = ("full", "partial", "none")
FORMS = ("tree", "dense", "gated", "table")
#: The dense and gated forms' oracle enumerates all pools but the largest: pools up to this size keep it cheap.
DENSE_MAX_CANDIDATES = 15
#: Partial features: the noise added to the feature view, against `feature_noise` for full features.
PARTIAL_FEATURE_NOISE = 1.0


@dataclass
class WorldConfig:
    seed: int = seed_field(1)
    ads: int = bounded(500, ge=1, le=1_000_000)
    impressions: int = bounded(20_000, ge=0, le=100_000_000)
    requests: int = bounded(1_000, ge=0, le=10_000_000)
    interaction: float = bounded(1.0, ge=0, le=100)
    max_candidates: int = bounded(15, ge=2, le=DEFAULT_MAX_CANDIDATES)
    user_dim: int = bounded(4, ge=0, le=1024)
    ad_dim: int = bounded(3, ge=0, le=1024)
    revenue: bool = False
    cold_share: float = bounded(0.0, ge=0, lt=1)  # share of elements never shown in the logs (they appear in requests only)
    base_logit: float = bounded(-3.7, ge=-20, le=20)
    popularity_exponent: float = bounded(1.0, ge=0, le=10)
    feature_noise: float = bounded(0.2, ge=0, le=100)
    idiosyncratic_share: float = bounded(0.2, ge=0, le=1)  # share of quality variance that features cannot see
    personalisation: float = bounded(0.08, ge=0, le=100)
    edge_scale: float = bounded(0.1, ge=0, le=100)
    features: str = "full"  # full | partial | none (elements known by id alone)
    interaction_form: str = "tree"  # tree | dense | gated | table (docs/worlds.md)
    variance_split: tuple[float, ...] = (0.1, 0.3, 0.6)  # table form: main effects, pairs, higher orders
    table_sizes: tuple[int, ...] = (2, 5, 4, 5)  # table form: the pools every ad shares
    table_scale: float = bounded(0.3, ge=0, le=10)  # table form: sd of the creative logit over the combinations

    def __post_init__(self) -> None:
        check_options(self)
        self.variance_split = tuple(float(v) for v in self.variance_split)  # a list when read back from world.json
        self.table_sizes = tuple(self.table_sizes)
        if self.features not in FEATURES:
            raise OptionError("features", f"one of {', '.join(FEATURES)}", self.features)
        if self.interaction_form not in FORMS:
            raise OptionError("interaction_form", f"one of {', '.join(FORMS)}", self.interaction_form)
        if self.interaction_form in ("dense", "gated") and self.max_candidates > DENSE_MAX_CANDIDATES:
            raise OptionError("max_candidates", f"<= {DENSE_MAX_CANDIDATES} with the {self.interaction_form} form "
                                                "(its exact oracle enumerates the pools)", self.max_candidates)
        split = self.variance_split
        if len(split) != 3 or not all(isinstance(v, float) and math.isfinite(v) and v >= 0 for v in split) or sum(split) <= 0:
            raise OptionError("variance_split", "three non-negative numbers (main, pairs, higher orders), not all 0", split)
        sizes = self.table_sizes
        if not 1 <= len(sizes) <= len(COMPONENTS) or not all(isinstance(n, int) and not isinstance(n, bool) and n >= 2 for n in sizes) \
                or math.prod(sizes) > 20_000:
            raise OptionError("table_sizes", f"1 to {len(COMPONENTS)} pool sizes >= 2 with at most 20000 combinations", sizes)

    def validate(self) -> None:
        """Check again (a config loaded from a world folder, or one whose fields were set after construction)."""
        check_options(self)


@dataclass
class ComponentTruth:
    ids: list[str]
    features: np.ndarray  # (E, F) what rows show
    quality: np.ndarray  # (E,) true quality (already times the component weight)
    style: np.ndarray  # (E, STYLE_DIM)
    pers: np.ndarray  # (E, U) user . pers[e] is the personal preference
    cold: np.ndarray  # (E,) bool, never shown in logs
    partner: np.ndarray | None = None  # gated form: (E, M) how much the element cares for each component as partner
    index: dict[str, int] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.index = {element_id: i for i, element_id in enumerate(self.ids)}


@dataclass
class World:
    """Ground truth of one simulated world, and everything that can be computed from it."""

    config: WorldConfig
    ad_ids: list[str]
    ad_popularity: np.ndarray  # (A,) sampling probability of each ad
    ad_appeal: np.ndarray  # (A,) logit offset of the product itself
    ad_features: np.ndarray  # (A, ad_dim)
    ad_cpc: np.ndarray  # (A,) revenue of a click
    ad_candidates: list[dict[str, np.ndarray]]  # per ad: component -> element indices (absent: no component)
    components: dict[str, ComponentTruth]
    interactions: dict[tuple[str, str], np.ndarray]  # (child, parent) -> (S, S), already times `interaction`
    user_gates: dict[tuple[str, str], np.ndarray] = field(default_factory=dict)  # gated form: pair -> (U,)
    table: np.ndarray | None = None  # table form: (n_1, ..., n_K) pair and higher-order effect per combination
    _ad_index: dict[str, int] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self._ad_index = {a: i for i, a in enumerate(self.ad_ids)}

    # -- generation ------------------------------------------------------------------------------------------

    @classmethod
    def generate(cls, config: WorldConfig) -> "World":
        config.validate()
        rng = np.random.default_rng([config.seed, 0x9E3779B9])
        forms_rng = np.random.default_rng([config.seed, 0x5EED, FORMS.index(config.interaction_form)])  # apart, so
        # that a tree world with full features is the same world it always was
        n_ads, U = config.ads, config.user_dim
        popularity = 1.0 / np.arange(1, n_ads + 1) ** config.popularity_exponent
        popularity = rng.permutation(popularity)
        popularity /= popularity.sum()
        # Popularity bias: the products people see most are also the ones they like most.
        log_pop = (np.log(popularity) - np.log(popularity).mean()) / np.log(popularity).std().clip(1e-9)
        appeal = 0.25 * log_pop + 0.35 * rng.standard_normal(n_ads)
        ad_features = np.column_stack(
            [appeal + 0.3 * rng.standard_normal(n_ads)] + [rng.standard_normal(n_ads) for _ in range(config.ad_dim - 1)]
        )[:, : config.ad_dim]
        cpc = np.exp(0.5 * rng.standard_normal(n_ads))
        noise = config.feature_noise if config.features == "full" else PARTIAL_FEATURE_NOISE

        def make_elements(spec: ComponentSpec, ids: list[str]) -> ComponentTruth:
            n = len(ids)
            hidden = 1 + STYLE_DIM + U  # what features are a noisy view of
            seen_quality = rng.standard_normal(n) * np.sqrt(1 - config.idiosyncratic_share)
            quality = seen_quality + rng.standard_normal(n) * np.sqrt(config.idiosyncratic_share)
            style = rng.standard_normal((n, STYLE_DIM))
            pers = rng.standard_normal((n, U)) * config.personalisation / np.sqrt(U)
            mixing = rng.standard_normal((hidden, spec.feature_dim)) / np.sqrt(hidden)
            view = np.column_stack([seen_quality, style, pers / max(config.personalisation, 1e-9) * np.sqrt(U)])
            features = view @ mixing + noise * rng.standard_normal((n, spec.feature_dim))
            return ComponentTruth(ids, features, spec.weight * quality, style, pers, np.zeros(n, bool))

        table = None
        if config.interaction_form == "table":
            components, ad_candidates, table = _table_components(config, forms_rng, noise)
        else:
            components, ad_candidates = _catalog_components(config, rng, make_elements)
        if config.cold_share > 0:
            for name, truth in components.items():
                # Any element can be new, except one per ad and component, so that every logged row is complete.
                protected = {int(c[name][0]) for c in ad_candidates if name in c}
                cold = rng.random(len(truth.ids)) < config.cold_share
                cold[list(protected)] = False
                truth.cold = cold
        world = cls(
            config=config,
            ad_ids=[f"ad-{a}" for a in range(n_ads)],
            ad_popularity=popularity,
            ad_appeal=appeal,
            ad_features=np.round(ad_features, 4),
            ad_cpc=np.round(cpc, 4),
            ad_candidates=ad_candidates,
            components=components,
            interactions={},
            table=table,
        )
        if config.interaction_form == "tree":
            # Interaction matrices: scaled so that one edge's term has standard deviation ~ edge_scale * interaction.
            world.interactions = {
                (child, parent): config.interaction * config.edge_scale * rng.standard_normal((STYLE_DIM, STYLE_DIM)) / STYLE_DIM
                for child, parent in TREE.items()
            }
        elif config.interaction_form in ("dense", "gated"):
            _dense_interactions(world, forms_rng)
        for truth in components.values():
            if config.features == "none":
                truth.features = np.zeros((len(truth.ids), 0))
            truth.features = np.round(truth.features, 4)
        return world

    # -- rows ------------------------------------------------------------------------------------------------

    def sample_contexts(self, n: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
        """n (ad index, user features) pairs: ads by popularity, users standard normal."""
        ads = rng.choice(len(self.ad_ids), size=n, p=self.ad_popularity)
        users = np.round(rng.standard_normal((n, self.config.user_dim)), 4)
        return ads, users

    def request_dicts(
        self, n: int, rng: np.random.Generator, *, prefix: str = "r", first: int = 0, include_cold: bool = True
    ) -> list[dict[str, Any]]:
        """n fresh request rows (candidate order shuffled per request) as plain dicts."""
        ads, users = self.sample_contexts(n, rng)
        rows = []
        for k, (a, u) in enumerate(zip(ads, users)):
            comps = {}
            for name, idx in self.ad_candidates[a].items():
                truth = self.components[name]
                if not include_cold:
                    idx = idx[~truth.cold[idx]]
                idx = rng.permutation(idx)
                comps[name] = [{"id": truth.ids[e], "features": truth.features[e].tolist()} for e in idx]
            rows.append(
                {
                    "request_id": f"{prefix}-{first + k:07d}",
                    "ad_id": self.ad_ids[a],
                    "user": u.tolist(),
                    "ad": self.ad_features[a].tolist(),
                    "components": comps,
                }
            )
        return rows

    def log_dicts(self, requests: list[dict[str, Any]], choose: "Chooser | None", rng: np.random.Generator) -> list[dict[str, Any]]:
        """Serve `requests` (uniformly at random when `choose` is None), draw clicks, return log rows."""
        if choose is None:
            served = [uniform_choice(req, rng) for req in requests]
        else:
            served = list(choose(requests))
        rows = [{**req, "shown": shown, "propensity": propensity} for req, (shown, propensity) in zip(requests, served)]
        p = self.click_probability_dicts(rows, [r["shown"] for r in rows])
        clicks = rng.random(len(rows)) < p
        for row, click in zip(rows, clicks):
            row["click"] = int(click)
            if self.config.revenue:
                row["revenue"] = float(self.ad_cpc[self._ad_index[row["ad_id"]]])
        return rows

    # -- truth -----------------------------------------------------------------------------------------------

    def _ad(self, ad_id: str) -> int:
        try:
            return self._ad_index[ad_id]
        except KeyError:
            raise GencoInputError(f"ad_id {ad_id!r} is not an ad of this world") from None

    def _element(self, component: str, element_id: str) -> int:
        try:
            return self.components[component].index[element_id]
        except KeyError:
            raise GencoInputError(f"element {element_id!r} of {component!r} is not in this world") from None

    def _unary(self, component: str, elements: np.ndarray, user: np.ndarray) -> np.ndarray:
        truth = self.components[component]
        return truth.quality[elements] + truth.pers[elements] @ user

    def _pair(self, a: str, b: str, el_a: np.ndarray, el_b: np.ndarray, user: np.ndarray) -> np.ndarray:
        """Interaction term of every (a, b) element pair, (a, b) a key of `interactions`: (len(el_a), len(el_b))."""
        ta, tb = self.components[a], self.components[b]
        term = ta.style[el_a] @ self.interactions[(a, b)] @ tb.style[el_b].T
        if self.user_gates:  # gated: how much each cares for the other's component, and whether this user responds
            care = ta.partner[el_a, COMPONENT_INDEX[b]][:, None] + tb.partner[el_b, COMPONENT_INDEX[a]][None, :]
            gate = 1.0 / (1.0 + np.exp(-(user @ self.user_gates[(a, b)])))
            term = term * care * gate
        return term

    def _creative(self, pools: dict[str, np.ndarray], picks: dict[str, np.ndarray], user: np.ndarray) -> np.ndarray:
        """The creative part of the logit (everything but base and appeal) of combinations: picks[name] (C,)
        positions within pools[name] (element indices) -> (C,)."""
        total = 0.0
        for name, elements in pools.items():
            total = total + self._unary(name, elements, user)[picks[name]]
        for a, b in self.interactions:
            if a in pools and b in pools:
                total = total + self._pair(a, b, pools[a], pools[b], user)[picks[a], picks[b]]
        if self.table is not None:
            total = total + self.table[tuple(pools[name][picks[name]] for name in self.components)]
        return np.broadcast_to(total, next(iter(picks.values())).shape) if picks else np.zeros(1)

    def _logit_offset(self, req: dict[str, Any]) -> float:
        return self.config.base_logit + self.ad_appeal[self._ad(req["ad_id"])]

    def interaction_part(self, req: dict[str, Any], rng: np.random.Generator, n: int) -> np.ndarray:
        """The pairwise part of the logit of n uniformly random combinations of a request: (n,)."""
        user, pools = np.asarray(req["user"], dtype=float), self._pools(req)
        picks = {name: rng.integers(len(el), size=n) for name, el in pools.items()}
        total = np.zeros(n)
        for a, b in self.interactions:
            if a in pools and b in pools:
                total += self._pair(a, b, pools[a], pools[b], user)[picks[a], picks[b]]
        return total

    def click_probability_dicts(self, requests: list[dict[str, Any]], selections: list[dict[str, str]]) -> np.ndarray:
        """True P(click) of each (request, selection) pair."""
        logits = np.empty(len(requests))
        for k, (req, sel) in enumerate(zip(requests, selections)):
            pools = {name: np.array([self._element(name, eid)]) for name, eid in sel.items()}
            picks = {name: np.zeros(1, dtype=int) for name in sel}
            logits[k] = self._logit_offset(req) + self._creative(pools, picks, np.asarray(req["user"], dtype=float))[0]
        return 1.0 / (1.0 + np.exp(-logits))

    def click_probability(self, requests: list[Request], selections: list[dict[str, str]]) -> np.ndarray:
        return self.click_probability_dicts([_as_dict(r) for r in requests], selections)

    def _pools(self, req: dict[str, Any]) -> dict[str, np.ndarray]:
        return {name: np.array([self._element(name, c["id"]) for c in cands]) for name, cands in req["components"].items()}

    def oracle_dicts(self, requests: list[dict[str, Any]]) -> tuple[list[dict[str, str]], np.ndarray]:
        """The best combination of each request and its P(click), exactly: max-sum dynamic programming over the
        tree (tree form), enumeration of every pool but the largest, maximised in closed form (dense, gated),
        enumeration of the table (table)."""
        selections, probs = [], np.empty(len(requests))
        for k, req in enumerate(requests):
            user = np.asarray(req["user"], dtype=float)
            pools = self._pools(req)
            if self.config.interaction_form == "tree":
                choice, value = self._tree_argmax(pools, user)
            else:
                choice, value = self._enumerated_argmax(pools, user)
            selections.append({name: req["components"][name][j]["id"] for name, j in choice.items()})
            probs[k] = 1.0 / (1.0 + np.exp(-(self._logit_offset(req) + value)))
        return selections, probs

    def _tree_argmax(self, pools: dict[str, np.ndarray], user: np.ndarray) -> tuple[dict[str, int], float]:
        """Max-sum DP over the interaction tree: (position per component, creative logit of that combination)."""
        best = {name: self._unary(name, el, user) for name, el in pools.items()}  # (n_m,) running scores
        back: dict[str, np.ndarray] = {}
        for child in _leaves_first(pools):
            parent = TREE.get(child)
            if parent not in pools:
                continue
            pair = self._pair(child, parent, pools[child], pools[parent], user)  # (n_child, n_parent)
            total = pair + best[child][:, None]
            back[child] = total.argmax(axis=0)  # best child position for each parent position
            best[parent] = best[parent] + total.max(axis=0)
        choice: dict[str, int] = {}
        value = 0.0
        for name in reversed(_leaves_first(pools)):  # roots first
            parent = TREE.get(name)
            if parent in pools:
                choice[name] = int(back[name][choice[parent]])
            else:
                choice[name] = int(best[name].argmax())
                value += best[name][choice[name]]
        return choice, float(value)

    def _enumerated_argmax(self, pools: dict[str, np.ndarray], user: np.ndarray) -> tuple[dict[str, int], float]:
        """Every combination of every pool but the largest is scored; the largest pool's best answer to each is
        taken in closed form. Exact for any pairwise logit (and for the table, whose pools are all small)."""
        names = list(pools)
        last = max(names, key=lambda n: len(pools[n])) if self.table is None else None
        others = [n for n in names if n != last]
        grids = np.meshgrid(*[np.arange(len(pools[n])) for n in others], indexing="ij")
        picks = {n: g.ravel() for n, g in zip(others, grids)}
        if last is None:  # the table: every combination at once
            total = self._creative(pools, picks, user)
            at = int(total.argmax())
            return {n: int(picks[n][at]) for n in names}, float(total[at])
        base = self._creative({n: pools[n] for n in others}, picks, user) if others else np.zeros(1)  # (P,)
        answer = np.broadcast_to(self._unary(last, pools[last], user), (len(base), len(pools[last]))).copy()  # (P, n_last)
        for a, b in self.interactions:
            if last in (a, b) and a in pools and b in pools:
                other = b if a == last else a
                pair = self._pair(a, b, pools[a], pools[b], user)
                pair = pair if b == last else pair.T  # (n_other, n_last)
                answer += pair[picks[other]] if others else pair
        total = base[:, None] + answer
        at = np.unravel_index(int(total.argmax()), total.shape)
        choice = {n: int(picks[n][at[0]]) for n in others}
        choice[last] = int(at[1])
        return choice, float(total[at])

    def additive_best_dicts(self, requests: list[dict[str, Any]]) -> list[dict[str, str]]:
        """Per component, the element with the best effect of its own (quality and personalisation), blind to
        the interactions: what a perfectly informed additive model would choose. Its share of the oracle's lift
        is the part of the lift that needs no interaction at all (1 at interaction 0)."""
        selections = []
        for req in requests:
            user = np.asarray(req["user"], dtype=float)
            selections.append({name: req["components"][name][int(self._unary(name, el, user).argmax())]["id"]
                               for name, el in self._pools(req).items()})
        return selections

    def oracle(self, requests: list[Request]) -> tuple[list[dict[str, str]], np.ndarray]:
        return self.oracle_dicts([_as_dict(r) for r in requests])

    def random_ctr_dicts(self, requests: list[dict[str, Any]], samples: int = 2048, exact_up_to: int = 4096) -> np.ndarray:
        """Expected P(click) of each request under uniform random exposure.

        Exact (every combination) when there are at most `exact_up_to` combinations; otherwise the mean over
        `samples` uniformly drawn combinations, with a generator seeded by the request id (reproducible).
        """
        out = np.empty(len(requests))
        for k, req in enumerate(requests):
            pools = self._pools(req)
            names = list(pools)
            sizes = [len(pools[n]) for n in names]
            if math.prod(sizes) <= exact_up_to:
                grids = np.meshgrid(*[np.arange(s) for s in sizes], indexing="ij")
                picks = {n: g.ravel() for n, g in zip(names, grids)}
            else:
                rng = np.random.default_rng(_seed_of(req["request_id"]))
                picks = {n: rng.integers(s, size=samples) for n, s in zip(names, sizes)}
            logit = self._logit_offset(req) + self._creative(pools, picks, np.asarray(req["user"], dtype=float))
            out[k] = np.mean(1.0 / (1.0 + np.exp(-logit)))
        return out

    def random_ctr(self, requests: list[Request]) -> np.ndarray:
        return self.random_ctr_dicts([_as_dict(r) for r in requests])

    def revenue_of(self, requests: list[dict[str, Any]]) -> np.ndarray:
        return np.array([self.ad_cpc[self._ad(r["ad_id"])] for r in requests])

    # -- persistence -----------------------------------------------------------------------------------------

    def save(self, directory: str | Path) -> None:
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        arrays: dict[str, np.ndarray] = {
            "ad_popularity": self.ad_popularity,
            "ad_appeal": self.ad_appeal,
            "ad_features": self.ad_features,
            "ad_cpc": self.ad_cpc,
        }
        for name, t in self.components.items():
            for key in ("features", "quality", "style", "pers", "cold"):
                arrays[f"{name}.{key}"] = getattr(t, key)
            if t.partner is not None:
                arrays[f"{name}.partner"] = t.partner
        for (child, parent), matrix in self.interactions.items():
            arrays[f"interaction.{child}.{parent}"] = matrix
        for (a, b), gate in self.user_gates.items():
            arrays[f"user_gate.{a}.{b}"] = gate
        if self.table is not None:
            arrays["table"] = self.table
        meta = {
            "version": WORLD_VERSION,
            "config": asdict(self.config),
            "ad_ids": self.ad_ids,
            "element_ids": {name: t.ids for name, t in self.components.items()},
            "ad_candidates": [{n: v.tolist() for n, v in c.items()} for c in self.ad_candidates],
        }
        import io

        buffer = io.BytesIO()
        np.savez_compressed(buffer, **arrays)
        atomic_write_bytes(directory / "truth.npz", buffer.getvalue())
        atomic_write_json(directory / "world.json", meta, indent=None)

    @classmethod
    def load(cls, directory: str | Path) -> "World":
        directory = Path(directory)
        try:
            meta = json.loads((directory / "world.json").read_text())
            arrays = dict(np.load(directory / "truth.npz"))
        except (OSError, ValueError) as exc:
            raise GencoInputError(f"{directory}: not a genco world folder (world.json + truth.npz): {exc}") from None
        if not isinstance(meta, dict) or meta.get("version") != WORLD_VERSION:
            version = meta.get("version") if isinstance(meta, dict) else None
            raise GencoInputError(f"{directory}: world version {version} is not {WORLD_VERSION}")
        try:
            return cls._from_files(meta, arrays)
        except (KeyError, TypeError, ValueError, IndexError) as exc:  # OptionError too: a hand-edited config
            raise GencoInputError(f"{directory}: world.json or truth.npz is incomplete or invalid ({exc})") from None

    @classmethod
    def _from_files(cls, meta: dict[str, Any], arrays: dict[str, np.ndarray]) -> "World":
        components = {
            name: ComponentTruth(
                ids,
                arrays[f"{name}.features"],
                arrays[f"{name}.quality"],
                arrays[f"{name}.style"],
                arrays[f"{name}.pers"],
                arrays[f"{name}.cold"],
                arrays.get(f"{name}.partner"),
            )
            for name, ids in meta["element_ids"].items()
        }

        def pairs(prefix: str) -> dict[tuple[str, str], np.ndarray]:
            return {(key.split(".")[1], key.split(".")[2]): value for key, value in arrays.items() if key.startswith(prefix)}
        interactions, user_gates = pairs("interaction."), pairs("user_gate.")
        return cls(
            config=WorldConfig(**meta["config"]),
            ad_ids=meta["ad_ids"],
            ad_popularity=arrays["ad_popularity"],
            ad_appeal=arrays["ad_appeal"],
            ad_features=arrays["ad_features"],
            ad_cpc=arrays["ad_cpc"],
            ad_candidates=[{n: np.asarray(v, dtype=np.int64) for n, v in c.items()} for c in meta["ad_candidates"]],
            components=components,
            interactions=interactions,
            user_gates=user_gates,
            table=arrays.get("table"),
        )


Chooser = Any  # callable(list of request dicts) -> iterable of (selection, propensity)


def _catalog_components(config: WorldConfig, rng: np.random.Generator, make_elements):
    """The six components of the tree, dense and gated forms: per-ad titles and images, shared catalogs of the
    rest, candidate counts up to max_candidates, some components absent for some ads."""
    K, n_ads = config.max_candidates, config.ads
    components: dict[str, ComponentTruth] = {}
    ad_candidates: list[dict[str, np.ndarray]] = [{} for _ in range(n_ads)]
    for spec in COMPONENTS:
        hi = max(spec.min_count, min(K, int(round(spec.max_share * K))))
        counts = rng.integers(min(spec.min_count, hi), hi + 1, size=n_ads)
        has = rng.random(n_ads) < spec.presence
        if spec.shared:
            catalog = max(spec.catalog, 2 * hi)
            truth = make_elements(spec, [f"{spec.name}-{k}" for k in range(catalog)])
            for a in range(n_ads):
                if has[a]:
                    ad_candidates[a][spec.name] = rng.choice(catalog, size=counts[a], replace=False)
        else:
            ids, start = [], 0
            for a in range(n_ads):
                if has[a]:
                    ids += [f"{spec.name}-{a}-{k}" for k in range(counts[a])]
                    ad_candidates[a][spec.name] = np.arange(start, start + counts[a])
                    start += counts[a]
            truth = make_elements(spec, ids)
        components[spec.name] = truth
    return components, ad_candidates


def _table_components(config: WorldConfig, rng: np.random.Generator, noise: float):
    """The table form's components: one shared pool per component (sizes config.table_sizes) that every ad
    shows whole, and the combination effect of genco.table_world. Element quality is its main effect; the
    pairs and higher orders go to the world's `table`. Features (full, partial) are a noisy view of the main
    effect and of nothing else: no content predicts a combination's own effect."""
    from genco.table_world import variance_split_table

    mains, rest = variance_split_table(config.table_sizes, config.variance_split, config.table_scale, rng)
    components: dict[str, ComponentTruth] = {}
    for spec, n, main in zip(COMPONENTS, config.table_sizes, mains):
        hidden = 1 + STYLE_DIM
        scaled = main / (main.std() + 1e-12)
        view = np.column_stack([scaled, rng.standard_normal((n, STYLE_DIM))])
        features = view @ (rng.standard_normal((hidden, spec.feature_dim)) / np.sqrt(hidden))
        features = features + noise * rng.standard_normal((n, spec.feature_dim))
        components[spec.name] = ComponentTruth([f"{spec.name}-{k}" for k in range(n)], features, main,
                                               np.zeros((n, STYLE_DIM)), np.zeros((n, config.user_dim)), np.zeros(n, bool))
    pools = {name: np.arange(len(t.ids)) for name, t in components.items()}
    return components, [dict(pools) for _ in range(config.ads)], rest


def _dense_interactions(world: "World", rng: np.random.Generator) -> None:
    """Every pair of components interacts (dense), each through its own bilinear form over the style vectors;
    gated: each term is also weighted by how much the two elements care for each other's component and by a
    user gate. Scaled so that the interaction part of the logit has the standard deviation the tree's has
    (edge_scale * sqrt(5) at interaction 1), measured on uniformly random combinations."""
    config, names = world.config, [spec.name for spec in COMPONENTS]
    world.interactions = {(a, b): rng.standard_normal((STYLE_DIM, STYLE_DIM)) / STYLE_DIM
                          for i, a in enumerate(names) for b in names[i + 1:]}
    if config.interaction_form == "gated":
        U = config.user_dim
        for m, (name, truth) in enumerate(world.components.items()):
            logits = 3.0 * rng.standard_normal((len(truth.ids), len(names)))
            logits[:, m] = -np.inf  # an element's partners are the other components
            truth.partner = np.exp(logits - logits.max(axis=1, keepdims=True))
            truth.partner /= truth.partner.sum(axis=1, keepdims=True)  # mostly one partner per element
            # content shows whom an element cares for (a noisy view, as for its quality and style)
            mixing = rng.standard_normal((len(names), truth.features.shape[1])) * 2.0 / np.sqrt(len(names))
            truth.features = truth.features + (truth.partner - 1.0 / (len(names) - 1)) @ mixing
        world.user_gates = {pair: 2.0 * rng.standard_normal(U) / np.sqrt(max(U, 1)) for pair in world.interactions}
    sample = world.request_dicts(500, rng)
    spread = np.concatenate([world.interaction_part(req, rng, 8) for req in sample]).std()
    scale = config.interaction * config.edge_scale * np.sqrt(len(TREE)) / max(spread, 1e-12)
    world.interactions = {pair: matrix * scale for pair, matrix in world.interactions.items()}


def uniform_choice(request: dict[str, Any], rng: np.random.Generator) -> tuple[dict[str, str], float]:
    """One combination drawn uniformly at random, and its propensity (the product of 1 / pool size)."""
    shown = {name: cands[rng.integers(len(cands))]["id"] for name, cands in request["components"].items()}
    return shown, float(np.prod([1.0 / len(c) for c in request["components"].values()]))


def _as_dict(row: Request | dict[str, Any]) -> dict[str, Any]:
    return row if isinstance(row, dict) else row.model_dump()


def _seed_of(text: str) -> int:
    from genco.data import stable_hash

    return stable_hash(text)


def _leaves_first(pools: dict[str, np.ndarray]) -> list[str]:
    """The components of a request ordered so that every child comes before its parent."""
    def depth(name: str) -> int:
        d = 0
        while name in TREE:
            name = TREE[name]
            d += 1
        return d

    return sorted(pools, key=depth, reverse=True)


def random_exposure_logs(world: World, n: int, seed: int, chunk: int = 5000):
    """n log rows (dicts) of uniform random exposure, generated chunk by chunk. Cold elements are never shown."""
    rng = np.random.default_rng([seed, 1])
    for start in range(0, n, chunk):
        requests = world.request_dicts(min(chunk, n - start), rng, prefix="l", first=start, include_cold=False)
        yield from world.log_dicts(requests, None, rng)


def fresh_requests(world: World, n: int, seed: int) -> list[dict[str, Any]]:
    """n request rows (dicts) to select for and evaluate on; they include cold elements."""
    return world.request_dicts(n, np.random.default_rng([seed, 2]))


def simulate(config: WorldConfig, out: str | Path) -> World:
    """Generate a world and write DIR/logs.jsonl (random exposure), DIR/requests.jsonl and the ground truth."""
    out = Path(out)
    world = World.generate(config)
    world.save(out)
    with AtomicWriter(out / "logs.jsonl", "logs") as writer:
        writer.write_all(random_exposure_logs(world, config.impressions, config.seed))
    with AtomicWriter(out / "requests.jsonl", "requests") as writer:
        writer.write_all(fresh_requests(world, config.requests, config.seed))
    return world


def simulate_in_memory(config: WorldConfig):
    """The same world, logs and requests as `simulate`, without files: (world, encoded logs, typed requests)."""
    from genco.contract import LogRow
    from genco.data import encode

    world = World.generate(config)
    logs = encode(LogRow.model_validate(row) for row in random_exposure_logs(world, config.impressions, config.seed))
    requests = [Request.model_validate(row) for row in fresh_requests(world, config.requests, config.seed)]
    return world, logs, requests
