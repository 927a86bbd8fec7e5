"""The element report against the truth: do the attributed effects rank the shared elements as the world does?

    python benchmarks/element_report.py                # the default world (genco simulate's defaults), GenCO and genco-no-mil
    python benchmarks/element_report.py --quick        # a small world, one epoch: for CI

For each model this trains on the world's random-exposure log, writes `genco report`'s folder (HTML and CSV),
and compares, per shared component (highlight, tag, badge, cta: the elements that recur across ads, whose
ranking a user acts on), the attributed effects with the true ones by Spearman rank correlation over the
elements the report labels (at least MIN_IMPRESSIONS impressions). The true effect is the same quantity in the
world's own click logit: each candidate swapped into the logged impression, centred within it, averaged
over the judged impressions where the element was a candidate. The raw CTR of each element (what a user
would rank by without genco) is ranked against the same truth, for comparison, and so are the first-order
weights of the MVT peer (its id and element-feature weights, an additive logistic regression with the
product's appeal apart, the way a user of that bandit would rank). It then opens the page in headless Chromium
(when installed: `apt-get install chromium`) and checks that it renders, with every plot an image.
"""

from __future__ import annotations

import argparse
import json
import re
import shutil
import subprocess
import tempfile
from collections import defaultdict
from pathlib import Path

import numpy as np

from genco import console
from genco.baselines.base import shown_entries
from genco.data import request_dict
from genco.policies import make_genco, make_policy
from genco.report import MIN_IMPRESSIONS, build_report, judged_rows, write_report
from genco.world import COMPONENTS, WorldConfig, simulate_in_memory

SHARED = [spec.name for spec in COMPONENTS if spec.shared]


def centred_means(candidate_sets) -> dict[tuple[str, str], float]:
    """(component, element) -> the mean of its value centred within each impression, over the impressions
    where it was a candidate. candidate_sets: (component, element ids, values (n,)) of one impression each."""
    sums: dict[tuple[str, str], list[float]] = defaultdict(lambda: [0.0, 0])
    for name, elements, values in candidate_sets:
        for element, value in zip(elements, values - values.mean()):
            total = sums[(name, element)]
            total[0] += value
            total[1] += 1
    return {key: s / n for key, (s, n) in sums.items()}


def true_effects(world, data, rows: np.ndarray) -> dict[tuple[str, str], float]:
    """(component, element) -> the world's mean centred swap logit over the judged rows."""
    shown = data.shown_positions()

    def candidate_sets():
        for r in rows:
            request = request_dict(data, r)
            logged = {}
            for m, name in enumerate(data.schema.components):
                if shown[r, m] >= 0:
                    logged[name] = request["components"][name][shown[r, m]]["id"]
            for name in SHARED:
                candidates = [c["id"] for c in request["components"].get(name, [])]
                if len(candidates) < 2:
                    continue
                p = world.click_probability_dicts([request] * len(candidates), [{**logged, name: c} for c in candidates])
                yield name, candidates, np.log(p) - np.log1p(-p)

    return centred_means(candidate_sets())


def served_enough(logs, truth: dict) -> list[tuple[str, str]]:
    """The shared elements judged and served at least MIN_IMPRESSIONS times in the logs (what the report labels)."""
    out = []
    for name in SHARED:
        _, entries = shown_entries(logs, name)
        counts = defaultdict(int)
        for entry in entries:
            counts[logs.element_ids[name][entry]] += 1
        out += [(name, e) for e, n in counts.items() if n >= MIN_IMPRESSIONS and (name, e) in truth]
    return out


def mvt_effects(logs, rows: np.ndarray, seed: int) -> dict[tuple[str, str], float]:
    """(component, element) -> the peer's answer to the same question: MVT's posterior-mean first-order weight
    on the click logit (its id weight plus its element-feature weights times the element's features), centred
    within each judged impression and averaged over those where the element was a candidate, as the truth is."""
    mvt = make_policy("mvt", seed=seed).fit(logs)
    weights = {key: w.numpy() for key, w in mvt._split(mvt.mean).items()}

    def candidate_sets():
        for name in SHARED:
            column, ids = logs.columns[name], logs.element_ids[name]
            effect = np.array([weights["element"][mvt.vocab[name][e]] if e in mvt.vocab[name] else 0.0 for e in ids])
            if "features" in mvt.dense_columns[name]:
                effect = effect + np.asarray(column["table_features"], np.float64) @ weights["dense"][mvt.dense_columns[name]["features"]]
            for r in rows:
                entries = column["members"][column["offsets"][r]:column["offsets"][r + 1]]
                if len(entries) >= 2:
                    yield name, [ids[e] for e in entries], effect[entries]

    return centred_means(candidate_sets())


def feature_fit(logs, truth: dict, keys: list) -> dict[tuple[str, str], float]:
    """The best linear map from an element's features to its true effect, per component, fitted on the truth:
    how much of the ranking the features can carry at all, however many clicks there are."""
    out = {}
    for name in SHARED:
        own = [k for k in keys if k[0] == name]
        if not own:
            continue
        entry = {e: i for i, e in enumerate(logs.element_ids[name])}
        features = np.asarray(logs.columns[name]["table_features"], dtype=np.float64)[[entry[e] for _, e in own]]
        design = np.column_stack([features, np.ones(len(own))])
        true = np.array([truth[k] for k in own])
        out.update(zip(own, design @ np.linalg.lstsq(design, true, rcond=None)[0]))
    return out


def known_rest_ceiling(world, logs, keys: list, features: bool) -> dict[tuple[str, str], float]:
    """What the log itself can say about the shared elements' ranking, at best: the posterior mean of each
    shared element's main effect (its quality) when everything else in the click logit is known exactly (the
    product's appeal, every other component, the user terms, the interactions), fitted by Newton's method.
    The prior is the world's own (quality ~ N(0, weight^2)), or with `features` the best linear map from the
    element's features to its quality, fitted on the true qualities of the whole catalogue, with its residual
    variance: an estimator no model fitted on the same clicks, without that knowledge, should beat but by luck."""
    shown = logs.shown_positions()
    requests = [request_dict(logs, r) for r in range(len(logs))]
    selections = [{name: request["components"][name][shown[r, m]]["id"]
                   for m, name in enumerate(logs.schema.components) if shown[r, m] >= 0}
                  for r, request in enumerate(requests)]
    p = world.click_probability_dicts(requests, selections)
    offset = np.log(p) - np.log1p(-p)  # (n,) the true logit, minus the shared elements' quality below
    columns = {key: j for j, key in enumerate(sorted({(name, sel[name]) for sel in selections for name in SHARED if name in sel}))}
    design = np.zeros((len(logs), len(columns)))  # (n, P) one-hot of the shown shared elements
    prior_mean, prior_var = np.zeros(len(columns)), np.empty(len(columns))
    weight = {spec.name: spec.weight for spec in COMPONENTS}
    for name in SHARED:
        truth = world.components[name]
        mean, var = np.zeros(len(truth.ids)), np.full(len(truth.ids), weight[name] ** 2)
        if features:
            x = np.column_stack([truth.features, np.ones(len(truth.ids))])
            mean = x @ np.linalg.lstsq(x, truth.quality, rcond=None)[0]
            var[:] = np.mean((truth.quality - mean) ** 2)
        for (component, element), j in columns.items():
            if component == name:
                prior_mean[j], prior_var[j] = mean[truth.index[element]], var[truth.index[element]]
    for r, sel in enumerate(selections):
        for name in SHARED:
            if name in sel:
                truth = world.components[name]
                offset[r] -= truth.quality[truth.index[sel[name]]]
                design[r, columns[(name, sel[name])]] = 1.0
    clicks, q = logs.click.astype(np.float64), prior_mean.copy()
    for _ in range(25):
        mu = 1.0 / (1.0 + np.exp(-(offset + design @ q)))
        gradient = design.T @ (clicks - mu) - (q - prior_mean) / prior_var
        hessian = (design * (mu * (1 - mu))[:, None]).T @ design + np.diag(1.0 / prior_var)
        q += np.linalg.solve(hessian, gradient)
    return {key: q[columns[key]] for key in keys if key in columns}


def spearman(a: np.ndarray, b: np.ndarray) -> float:
    rank = lambda x: np.argsort(np.argsort(x)).astype(float)  # noqa: E731 (no ties among continuous effects)
    return float(np.corrcoef(rank(a), rank(b))[0, 1]) if len(a) > 2 else float("nan")


def check_in_browser(page: Path) -> dict:
    """Open the page in headless Chromium: its DOM after load, and a screenshot."""
    browser = shutil.which("chromium") or shutil.which("chromium-browser") or shutil.which("google-chrome")
    if browser is None:
        return {"browser": None}
    flags = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage"]
    dom = subprocess.run([browser, *flags, "--dump-dom", page.resolve().as_uri()], capture_output=True, text=True, timeout=120).stdout
    with tempfile.TemporaryDirectory() as tmp:
        shot = Path(tmp) / "page.png"
        subprocess.run([browser, *flags, f"--screenshot={shot}", "--window-size=1200,2000", page.resolve().as_uri()],
                       capture_output=True, timeout=120)
        screenshot = shot.stat().st_size if shot.exists() else 0
    images = re.findall(r"<img [^>]*src=\"data:image/png;base64,", dom)
    return {"browser": Path(browser).name, "tables": dom.count("<table"), "images": len(images), "screenshot_bytes": screenshot}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--impressions", type=int, default=20_000)
    parser.add_argument("--epochs", type=int, default=30)
    parser.add_argument("--out", type=Path, default=Path("reports/element-report"))
    parser.add_argument("--models", default="genco,genco-no-mil,mvt", help="which of genco, genco-no-mil, mvt to measure (mvt also prints the features-alone ceiling)")
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args()
    models = args.models.split(",")
    config = WorldConfig(seed=args.seed, impressions=args.impressions, requests=0)
    variants = {"genco": {}, "genco-no-mil": {"mil": False}}
    if args.quick:
        config = WorldConfig(seed=args.seed, ads=80, impressions=4000, requests=0, max_candidates=8)
        args.epochs, variants = 1, {"genco": {"reward_models": 1}, "genco-no-mil": {"mil": False, "reward_models": 1}}
    console.set_quiet(True)
    world, logs, _ = simulate_in_memory(config)
    judged = judged_rows(len(logs), 5000, 0)
    truth = true_effects(world, logs, judged)
    for name, options in variants.items():
        if name not in models:
            continue
        model = make_genco("genco", seed=args.seed, epochs=args.epochs, **options).fit(logs).model
        report = build_report(model, logs, seed=0, model_version=name)
        folder = args.out / name
        folder.mkdir(parents=True, exist_ok=True)
        files = write_report(report, folder)
        rows = {(r.component, r.element): r for r in report.elements if r.component in SHARED
                and r.impressions >= MIN_IMPRESSIONS and np.isfinite(r.effect) and (r.component, r.element) in truth}
        browser = check_in_browser(files["html"])
        if browser["browser"] and (browser["tables"] == 0 or browser["images"] < len(SHARED) or not browser["screenshot_bytes"]):
            raise SystemExit(f"{files['html']}: did not render in {browser['browser']}: {browser}")
        print(json.dumps({
            "model": name, "impressions": len(logs),
            **rankings({key: r.effect for key, r in rows.items()}, truth, {key: r.ctr for key, r in rows.items()}),
            "labels": {k: sum(r.label == k for r in report.elements) for k in ("best", "good", "weak", "still learning")},
            "page": str(files["html"]), "browser": browser}), flush=True)
    if "mvt" not in models:
        return
    labelled = served_enough(logs, truth)
    peer = mvt_effects(logs, judged, args.seed)
    print(json.dumps({"model": "mvt (its posterior-mean first-order weights)", "impressions": len(logs),
                      **rankings({key: peer[key] for key in labelled if key in peer}, truth)}), flush=True)
    print(json.dumps({"model": "features alone (least squares on the truth itself: a ceiling)", "impressions": len(logs),
                      **rankings(feature_fit(logs, truth, labelled), truth)}), flush=True)
    for features, prior in ((False, "the world's prior"), (True, "the features' best map as prior")):
        print(json.dumps({"model": f"the log's ceiling (everything else in the logit known; {prior})", "impressions": len(logs),
                          **rankings(known_rest_ceiling(world, logs, labelled, features), truth)}), flush=True)


def rankings(attributed: dict, truth: dict, raw_ctr: dict | None = None) -> dict:
    """Spearman of attributed against true effects, pooled over the shared components and per component (and
    the same for raw CTR, when given)."""
    def rank(scores: dict, keys: list) -> float:
        return round(spearman(np.array([scores[k] for k in keys]), np.array([truth[k] for k in keys])), 3)
    out = {"spearman_shared": rank(attributed, list(attributed))}
    if raw_ctr is not None:
        out["raw_ctr_spearman_shared"] = rank(raw_ctr, list(attributed))
    by_component = {}
    for component in SHARED:
        keys = [k for k in attributed if k[0] == component]
        by_component[component] = {"elements": len(keys), "spearman": rank(attributed, keys)}
        if raw_ctr is not None:
            by_component[component]["raw_ctr_spearman"] = rank(raw_ctr, keys)
    return {**out, "by_component": by_component}


if __name__ == "__main__":
    main()
