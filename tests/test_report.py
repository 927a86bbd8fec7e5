"""`genco report`: the element report's page and files, its labelling rule, and its edges."""

from __future__ import annotations

import base64
import csv
import json
from html.parser import HTMLParser

import numpy as np
import pytest

from genco.policies import make_genco
from genco.report import LABELS, MIN_IMPRESSIONS, build_report, write_report
from genco.train import read_logs
from tests.conftest import write_jsonl


class _Page(HTMLParser):
    """Every tag of the page, and the src of every image (HTMLParser raises nothing: count what it saw)."""

    def __init__(self):
        super().__init__()
        self.tags, self.images, self.stack = [], [], []

    def handle_starttag(self, tag, attrs):
        self.tags.append(tag)
        if tag == "img":
            self.images.append(dict(attrs)["src"])


@pytest.fixture(scope="module")
def report(small_world, tmp_path_factory):
    logs, _ = read_logs(small_world / "logs.jsonl")
    model = make_genco("genco", seed=0, epochs=1, reward_models=2).fit(logs).model
    built = build_report(model, logs, max_rows=800, pair_rows_max=60, model_version="m@1")
    out = tmp_path_factory.mktemp("report")
    return built, write_report(built, out), logs


def test_the_page_is_self_contained_html_with_an_image_per_plot(report):
    built, files, _ = report
    page = _Page()
    page.feed(files["html"].read_text())
    components = {r.component for r in built.elements}
    assert page.tags.count("table") == len(components) + 2  # one per component, products, pairs
    assert len(page.images) == len(components) + 1
    for src in page.images:
        assert src.startswith("data:image/png;base64,")
        assert base64.b64decode(src.split(",", 1)[1])[:8] == b"\x89PNG\r\n\x1a\n"


def test_csv_files_hold_every_row(report):
    built, files, logs = report
    elements = list(csv.DictReader(files["elements"].open()))
    assert len(elements) == len(built.elements) == len({(c, i) for c, ids in logs.element_ids.items() for i in ids})
    assert set(elements[0]) >= {"component", "element", "impressions", "clicks", "ctr", "effect", "low", "high", "label"}
    assert sum(int(r["impressions"]) for r in elements if r["component"] == "title") == int((logs.columns["title"]["shown"] >= 0).sum())
    products = list(csv.DictReader(files["products"].open()))
    assert {r["ad_id"] for r in products} <= set(logs.ad_ids) and all(0 < float(r["best_ctr"]) < 1 for r in products)
    pairs = list(csv.DictReader(files["pairs"].open()))
    assert pairs and all(int(r["rows"]) >= 5 for r in pairs)
    strength = [abs(float(r["interaction"])) for r in pairs]
    assert strength == sorted(strength, reverse=True)


def test_labels_follow_the_documented_rule(report):
    built, _, _ = report
    assert {r.label for r in built.elements} <= set(LABELS)
    for r in built.elements:
        if r.label in ("good", "best"):
            assert r.low > 0 and r.impressions >= MIN_IMPRESSIONS
        elif r.label == "weak":
            assert r.high < 0 and r.impressions >= MIN_IMPRESSIONS
        else:
            assert r.impressions < MIN_IMPRESSIONS or not (r.low > 0 or r.high < 0) or not np.isfinite(r.low)
        assert r.low <= r.effect <= r.high or not np.isfinite(r.effect)
    for component in {r.component for r in built.elements}:
        best = [r for r in built.elements if r.component == component and r.label == "best"]
        good = [r for r in built.elements if r.component == component and r.label in ("good", "best")]
        assert len(best) == (1 if good else 0)
        if best:
            assert best[0].effect == max(r.effect for r in good)


def test_report_command_and_its_edges(small_world, tmp_path, genco_here):
    model = tmp_path / "model"
    assert genco_here("train", "--logs", small_world / "logs.jsonl", "--out", model, "--epochs", "1", "--reward-models", "1",
                      "-q").returncode == 0
    out = tmp_path / "report"
    done = genco_here("report", "--model", model, "--logs", small_world / "logs.jsonl", "--out", out, "--max-rows", "300",
                      "--pair-rows", "20")
    assert done.returncode == 0, done.stderr
    assert (out / "report.html").read_text().startswith("<!DOCTYPE html>") and "elements" in done.stderr
    zero = genco_here("report", "--model", model, "--logs", small_world / "logs.jsonl", "--out", out, "--max-rows", "0")
    assert zero.returncode == 2 and "--max-rows" in zero.stderr
    rows = [json.loads(line) for line in open(small_world / "logs.jsonl")][:3]
    rows[1]["components"]["extra"] = [{"id": "x", "features": []}]
    rows[1]["shown"]["extra"] = "x"
    alien = genco_here("report", "--model", model, "--logs", write_jsonl(tmp_path / "alien.jsonl", rows), "--out", out)
    assert alien.returncode == 2 and "alien.jsonl:2" in alien.stderr
    missing = genco_here("report", "--model", tmp_path / "nope", "--logs", small_world / "logs.jsonl", "--out", out)
    assert missing.returncode == 2 and "no such model folder" in missing.stderr


def test_report_on_the_contract_s_edge_rows():
    """No context, no features, single candidates, components missing from some rows: a report all the same."""
    from genco.contract import LogRow
    from genco.data import encode
    from genco.world import World, WorldConfig, random_exposure_logs
    from tests.test_every_policy import _blank

    world = World.generate(WorldConfig(seed=7, ads=25, max_candidates=4, user_dim=0, ad_dim=0))
    rows = [_blank(r) for r in random_exposure_logs(world, 800, 1)]
    rows[0]["components"] = {name: cands[:1] for name, cands in rows[0]["components"].items()}
    rows[0]["shown"] = {name: cands[0]["id"] for name, cands in rows[0]["components"].items()}
    logs = encode(LogRow.model_validate(r) for r in rows)
    model = make_genco("genco", seed=0, epochs=1, reward_models=1).fit(logs).model
    built = build_report(model, logs, max_rows=200, pair_rows_max=20)
    assert built.elements and built.products
    assert {r.label for r in built.elements} <= set(LABELS)
