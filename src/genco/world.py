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

Logs are collected under uniform random exposure, with the propensity of the shown combination.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from genco.contract import DEFAULT_MAX_CANDIDATES, Request
from genco.errors import GencoInputError
from genco.files import AtomicWriter, atomic_write_bytes, atomic_write_json
from genco.options import bounded, check_options, seed_field

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

    def __post_init__(self) -> None:
        check_options(self)

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
    _ad_index: dict[str, int] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self._ad_index = {a: i for i, a in enumerate(self.ad_ids)}

    # -- generation ------------------------------------------------------------------------------------------

    @classmethod
    def generate(cls, config: WorldConfig) -> "World":
        config.validate()
        rng = np.random.default_rng([config.seed, 0x9E3779B9])
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
        hidden = 1 + STYLE_DIM + U  # what features are a noisy view of

        def make_elements(spec: ComponentSpec, ids: list[str]) -> ComponentTruth:
            n = len(ids)
            seen_quality = rng.standard_normal(n) * np.sqrt(1 - config.idiosyncratic_share)
            quality = seen_quality + rng.standard_normal(n) * np.sqrt(config.idiosyncratic_share)
            style = rng.standard_normal((n, STYLE_DIM))
            pers = rng.standard_normal((n, U)) * config.personalisation / np.sqrt(U)
            mixing = rng.standard_normal((hidden, spec.feature_dim)) / np.sqrt(hidden)
            view = np.column_stack([seen_quality, style, pers / max(config.personalisation, 1e-9) * np.sqrt(U)])
            features = view @ mixing + config.feature_noise * rng.standard_normal((n, spec.feature_dim))
            return ComponentTruth(ids, np.round(features, 4), spec.weight * quality, style, pers, np.zeros(n, bool))

        K = config.max_candidates
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
        if config.cold_share > 0:
            for name, truth in components.items():
                # Any element can be new, except one per ad and component, so that every logged row is complete.
                protected = {int(c[name][0]) for c in ad_candidates if name in c}
                cold = rng.random(len(truth.ids)) < config.cold_share
                cold[list(protected)] = False
                truth.cold = cold
        # Interaction matrices: scaled so that one edge's term has standard deviation ~ edge_scale * interaction.
        interactions = {
            (child, parent): config.interaction * config.edge_scale * rng.standard_normal((STYLE_DIM, STYLE_DIM)) / STYLE_DIM
            for child, parent in TREE.items()
        }
        return cls(
            config=config,
            ad_ids=[f"ad-{a}" for a in range(n_ads)],
            ad_popularity=popularity,
            ad_appeal=appeal,
            ad_features=np.round(ad_features, 4),
            ad_cpc=np.round(cpc, 4),
            ad_candidates=ad_candidates,
            components=components,
            interactions=interactions,
        )

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

    def _pair(self, child: str, parent: str, child_el: np.ndarray, parent_el: np.ndarray) -> np.ndarray:
        """Interaction term for every (child, parent) element pair: (len(child_el), len(parent_el))."""
        c = self.components[child].style[child_el]
        p = self.components[parent].style[parent_el]
        return c @ self.interactions[(child, parent)] @ p.T

    def click_probability_dicts(self, requests: list[dict[str, Any]], selections: list[dict[str, str]]) -> np.ndarray:
        """True P(click) of each (request, selection) pair."""
        logits = np.empty(len(requests))
        for k, (req, sel) in enumerate(zip(requests, selections)):
            user = np.asarray(req["user"], dtype=float)
            chosen = {name: np.array([self._element(name, eid)]) for name, eid in sel.items()}
            logit = self.config.base_logit + self.ad_appeal[self._ad(req["ad_id"])]
            for name, el in chosen.items():
                logit += self._unary(name, el, user)[0]
                parent = TREE.get(name)
                if parent in chosen:
                    logit += self._pair(name, parent, el, chosen[parent])[0, 0]
            logits[k] = logit
        return 1.0 / (1.0 + np.exp(-logits))

    def click_probability(self, requests: list[Request], selections: list[dict[str, str]]) -> np.ndarray:
        return self.click_probability_dicts([_as_dict(r) for r in requests], selections)

    def _pools(self, req: dict[str, Any]) -> dict[str, np.ndarray]:
        return {name: np.array([self._element(name, c["id"]) for c in cands]) for name, cands in req["components"].items()}

    def oracle_dicts(self, requests: list[dict[str, Any]]) -> tuple[list[dict[str, str]], np.ndarray]:
        """The best combination of each request and its P(click): exact max-sum DP over the interaction tree."""
        selections, probs = [], np.empty(len(requests))
        for k, req in enumerate(requests):
            user = np.asarray(req["user"], dtype=float)
            pools = self._pools(req)
            best = {name: self._unary(name, el, user) for name, el in pools.items()}  # (n_m,) running scores
            back: dict[str, np.ndarray] = {}
            for child in _leaves_first(pools):
                parent = TREE.get(child)
                if parent not in pools:
                    continue
                pair = self._pair(child, parent, pools[child], pools[parent])  # (n_child, n_parent)
                total = pair + best[child][:, None]
                back[child] = total.argmax(axis=0)  # best child position for each parent position
                best[parent] = best[parent] + total.max(axis=0)
            choice: dict[str, int] = {}
            logit = self.config.base_logit + self.ad_appeal[self._ad(req["ad_id"])]
            for name in reversed(_leaves_first(pools)):  # roots first
                parent = TREE.get(name)
                if parent in pools:
                    choice[name] = int(back[name][choice[parent]])
                else:
                    choice[name] = int(best[name].argmax())
                    logit += best[name][choice[name]]
            selections.append({name: req["components"][name][j]["id"] for name, j in choice.items()})
            probs[k] = 1.0 / (1.0 + np.exp(-logit))
        return selections, probs

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
            user = np.asarray(req["user"], dtype=float)
            pools = self._pools(req)
            names = list(pools)
            sizes = [len(pools[n]) for n in names]
            total = int(np.prod(sizes))
            if total <= exact_up_to:
                grids = np.meshgrid(*[np.arange(s) for s in sizes], indexing="ij")
                picks = {n: g.ravel() for n, g in zip(names, grids)}
            else:
                rng = np.random.default_rng(_seed_of(req["request_id"]))
                picks = {n: rng.integers(s, size=samples) for n, s in zip(names, sizes)}
            logit = self.config.base_logit + self.ad_appeal[self._ad(req["ad_id"])]
            for n in names:
                logit = logit + self._unary(n, pools[n], user)[picks[n]]
                parent = TREE.get(n)
                if parent in pools:
                    pair = self._pair(n, parent, pools[n], pools[parent])
                    logit = logit + pair[picks[n], picks[parent]]
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
        for (child, parent), matrix in self.interactions.items():
            arrays[f"interaction.{child}.{parent}"] = matrix
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
            )
            for name, ids in meta["element_ids"].items()
        }
        interactions = {
            (key.split(".")[1], key.split(".")[2]): value for key, value in arrays.items() if key.startswith("interaction.")
        }
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
        )


Chooser = Any  # callable(list of request dicts) -> iterable of (selection, propensity)


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
