"""Which elements work, apart from the product's own appeal: `genco report --model M --logs P --out DIR`.

The reward model answers "what if this element had been shown instead?" for every logged impression: with
the other components held at what was served, each candidate of a component is swapped in, and the creative
logits of the swaps are centred within the impression. The product's appeal and the user's context are the
same for every swap, so they cancel: what is left is the element's effect on the click logit against the
average candidate it competed with (and its interactions with the partners it was shown with). An element's
**attributed effect** is the mean of that over the impressions where it was a candidate.

- **Interval** (95%): the impressions' spread (the effect varies with the context and partners) and, for an
  ensemble, the spread of its reward models' effects, added in quadrature.
- **Label**, by this rule: *still learning* when the element was shown fewer than `MIN_IMPRESSIONS` times or
  its interval contains 0 (the logs cannot tell it from the average candidate yet); otherwise *good* when the
  interval is above 0 and *weak* when it is below; the good element of highest effect in its component is
  *best*.
- **Products**: per ad, the model's appeal (its product-and-context logit, without any creative) apart from
  the creative: the predicted CTR of what the logs served (on random exposure, an average creative), and of
  the best combination the model finds for the ad's first logged request.
- **Pairs**: for two components, every pair of their candidates is scored with the rest held; the
  double-centred logit (what the pair adds beyond each element's own effect) is the pair's interaction,
  averaged over the impressions where both were candidates. The strongest, by size, are listed.

The HTML page is self-contained (plots inline as PNG), for people who do not run genco; the CSV files hold
every row.
"""

from __future__ import annotations

import base64
import csv
import html
import io
from collections import defaultdict
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch

from genco.baselines.base import shown_entries
from genco.data import EncodedRows, batch_indices, collate
from genco.ensemble import member_encodings, reward_models
from genco.estimators import Z95
from genco.files import atomic_write_bytes, output_folder
from genco.select import SelectConfig, choose, swap_scores

#: Impressions an element needs before it gets a label other than "still learning".
MIN_IMPRESSIONS = 30

LABELS = ("best", "good", "weak", "still learning")


@dataclass
class ElementRow:
    component: str
    element: str
    impressions: int  # times it was served
    clicks: int
    ctr: float  # raw CTR when served (NaN if never)
    candidate_rows: int  # judged impressions where it was a candidate
    effect: float  # attributed effect on the click logit, against the average candidate
    low: float
    high: float
    label: str = "still learning"


@dataclass
class ProductRow:
    ad_id: str
    impressions: int
    clicks: int
    ctr: float
    appeal: float  # the model's product-and-context logit, no creative
    served_ctr: float  # predicted CTR of what the logs served
    best_ctr: float  # predicted CTR of the model's best combination (the ad's first logged request)
    best: str  # that combination, "component=element; ..."


@dataclass
class PairRow:
    first: str  # "component=element"
    second: str
    rows: int  # judged impressions where both were candidates
    interaction: float  # mean double-centred logit


@torch.inference_mode()
def element_effects(model, data: EncodedRows, rows: np.ndarray) -> dict[str, dict[str, np.ndarray]]:
    """Per component: the sum over judged rows of each table entry's centred swap logit, per reward model
    (members, E), the sum of squares of the members' mean (E,), and the rows it was a candidate in (E,)."""
    members = reward_models(model)
    shown = data.shown_positions()
    out = {}
    for name in data.schema.components:
        E = len(data.element_ids[name])
        out[name] = {"sum": np.zeros((len(members), E)), "square": np.zeros(E), "count": np.zeros(E)}
    for idx in batch_indices(len(rows), 256):
        batch = collate(data, rows[idx])
        encs = member_encodings(model.encode(batch))
        combo = torch.from_numpy(shown[rows[idx]])  # (B, M)
        for m, name in enumerate(data.schema.components):
            a, b = encs[0].slices[m]
            if b - a <= 1:
                continue
            valid = encs[0].mask[:, a:b].numpy()  # (B, N)
            per_member = []
            for member, enc in zip(members, encs):
                s = swap_scores(member, enc, combo, m).numpy()  # (B, N), -inf on padding
                s = np.where(valid, s, 0.0)
                n = valid.sum(axis=1, keepdims=True)
                per_member.append(np.where(valid & (n > 1), s - s.sum(axis=1, keepdims=True) / np.maximum(n, 1), 0.0))
            entries = batch.element_index[m]  # (B, N) table entries, -1 on padding
            use = valid & (valid.sum(axis=1, keepdims=True) > 1)
            flat = entries[use]
            record = out[name]
            for j, centred in enumerate(per_member):
                np.add.at(record["sum"][j], flat, centred[use])
            mean = np.mean(per_member, axis=0)
            np.add.at(record["square"], flat, mean[use] ** 2)
            np.add.at(record["count"], flat, 1)
    return out


def label(row: ElementRow) -> str:
    if row.impressions < MIN_IMPRESSIONS or not np.isfinite(row.low) or row.low <= 0 <= row.high:
        return "still learning"
    return "good" if row.low > 0 else "weak"


def element_rows(model, data: EncodedRows, rows: np.ndarray) -> list[ElementRow]:
    """Every element of every component: counts from all logged rows, effects from the judged `rows`."""
    sums = element_effects(model, data, rows)
    out = []
    for name in data.schema.components:
        ids = data.element_ids[name]
        served_rows, served = shown_entries(data, name)
        record = sums[name]
        by_id: dict[str, dict] = defaultdict(lambda: {"entries": [], "impressions": 0, "clicks": 0})
        for entry, element in enumerate(ids):
            by_id[element]["entries"].append(entry)
        impressions = np.bincount(served, minlength=len(ids))  # per table entry
        clicks = np.bincount(served, weights=data.click[served_rows], minlength=len(ids))
        for element, group in by_id.items():
            group["impressions"] = int(impressions[group["entries"]].sum())
            group["clicks"] = int(round(clicks[group["entries"]].sum()))
        for element, group in by_id.items():
            entries = group["entries"]
            count = float(record["count"][entries].sum())
            if count == 0:
                effect = low = high = float("nan")
            else:
                member_effects = record["sum"][:, entries].sum(axis=1) / count  # (members,)
                effect = float(member_effects.mean())
                square = float(record["square"][entries].sum())
                spread_rows = np.sqrt(max(square / count - effect ** 2, 0.0) / max(count - 1, 1)) if count > 1 else float("inf")
                spread_members = float(np.std(member_effects, ddof=1)) if len(member_effects) > 1 else 0.0
                half = Z95 * float(np.hypot(spread_rows, spread_members))
                low, high = effect - half, effect + half
            impressions = group["impressions"]
            out.append(ElementRow(name, element, impressions, group["clicks"],
                                  group["clicks"] / impressions if impressions else float("nan"), int(count), effect, low, high))
    for row in out:
        row.label = label(row)
    for name in data.schema.components:
        good = [r for r in out if r.component == name and r.label == "good"]
        if good:
            max(good, key=lambda r: r.effect).label = "best"
    return out


@torch.inference_mode()
def product_rows(model, data: EncodedRows, rows: np.ndarray) -> list[ProductRow]:
    """Per ad among the judged rows: counts, the model's appeal, served and best predicted CTR."""
    appeal, served_p = np.empty(len(rows)), np.empty(len(rows))
    shown = data.shown_positions()
    for idx in batch_indices(len(rows), 1024):
        batch = collate(data, rows[idx])
        enc = model.encode(batch)
        appeal[idx] = enc.appeal.double().numpy()
        served_p[idx] = torch.sigmoid(model.click_logit(enc, torch.from_numpy(shown[rows[idx]])[:, None, :])[:, 0]).numpy()
    ads, ad_of_row = np.unique(np.asarray(data.ad_ids, dtype=object), return_inverse=True)  # every logged row's ad
    impressions = np.bincount(ad_of_row, minlength=len(ads))
    clicks = np.bincount(ad_of_row, weights=data.click, minlength=len(ads))
    judged_ad = ad_of_row[rows]  # (R,) the ad of every judged row
    present, first = np.unique(judged_ad, return_index=True)  # the judged ads and each one's first judged row
    appeal_sum = np.bincount(judged_ad, weights=appeal, minlength=len(ads))
    served_sum = np.bincount(judged_ad, weights=served_p, minlength=len(ads))
    judged = np.bincount(judged_ad, minlength=len(ads))
    best = choose(model, data.take(rows[first]), greedy=True, config=SelectConfig())
    out = []
    for a, score, selection in zip(present, best.score, best.selections):
        n, c = int(impressions[a]), int(round(clicks[a]))
        out.append(ProductRow(str(ads[a]), n, c, c / n, float(appeal_sum[a] / judged[a]), float(served_sum[a] / judged[a]),
                              float(score), "; ".join(f"{k}={e}" for k, e in selection.items())))
    return sorted(out, key=lambda r: -r.impressions)


@torch.inference_mode()
def pair_rows(model, data: EncodedRows, rows: np.ndarray, min_rows: int = 5) -> list[PairRow]:
    """The interaction of every pair of elements of two components that were candidates together in at least
    `min_rows` judged rows, strongest first."""
    names = data.schema.components
    shown = data.shown_positions()
    sums: dict[tuple[str, str], list[float]] = defaultdict(lambda: [0.0, 0])
    for idx in batch_indices(len(rows), 64):
        batch = collate(data, rows[idx])
        enc = model.encode(batch)
        base = torch.from_numpy(shown[rows[idx]])  # (B, M)
        mask = enc.mask.numpy()
        for i in range(len(names)):
            for j in range(i + 1, len(names)):
                (a0, a1), (b0, b1) = enc.slices[i], enc.slices[j]
                Na, Nb = a1 - a0, b1 - b0
                if Na <= 1 or Nb <= 1:
                    continue
                grid = base[:, None, :].repeat(1, Na * Nb, 1)  # (B, Na * Nb, M)
                grid[:, :, i] = torch.arange(Na).repeat_interleave(Nb)
                grid[:, :, j] = torch.arange(Nb).repeat(Na)
                creative, _, _ = model.reward(enc, grid)
                logits = creative.view(-1, Na, Nb).double().numpy()
                va, vb = mask[:, a0:a1], mask[:, b0:b1]
                both = va[:, :, None] & vb[:, None, :]
                for k in range(len(idx)):
                    na, nb = int(va[k].sum()), int(vb[k].sum())
                    if na < 2 or nb < 2 or not (base[k, i] >= 0 and base[k, j] >= 0):
                        continue
                    x = np.where(both[k], logits[k], 0.0)[:na, :nb]
                    centred = x - x.mean(axis=1, keepdims=True) - x.mean(axis=0, keepdims=True) + x.mean()
                    ea, eb = batch.element_index[i][k, :na], batch.element_index[j][k, :nb]
                    for p in range(na):
                        for q in range(nb):
                            key = (f"{names[i]}={data.element_ids[names[i]][ea[p]]}", f"{names[j]}={data.element_ids[names[j]][eb[q]]}")
                            total = sums[key]
                            total[0] += centred[p, q]
                            total[1] += 1
    out = [PairRow(a, b, int(n), s / n) for (a, b), (s, n) in sums.items() if n >= min_rows]
    return sorted(out, key=lambda r: -abs(r.interaction))


# -- writing ---------------------------------------------------------------------------------------------------

def _csv_bytes(rows: list) -> bytes:
    buffer = io.StringIO()
    if rows:
        writer = csv.DictWriter(buffer, fieldnames=list(asdict(rows[0])))
        writer.writeheader()
        for row in rows:
            writer.writerow({k: (f"{v:.6g}" if isinstance(v, float) else v) for k, v in asdict(row).items()})
    return buffer.getvalue().encode()


def _png(fig) -> str:
    from genco.plots import plt

    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=100, bbox_inches="tight")
    plt.close(fig)
    return base64.b64encode(buffer.getvalue()).decode()


def effect_plot(rows: list[ElementRow], component: str, top: int = 25) -> str:
    """Attributed effects with their intervals, coloured by label: a base64 PNG."""
    from genco.plots import plt  # the Agg backend, set once there

    chosen = sorted((r for r in rows if r.component == component and np.isfinite(r.effect)), key=lambda r: -r.effect)
    if len(chosen) > top:
        chosen = chosen[: top // 2] + chosen[-(top - top // 2):]
    colours = {"best": "#1a7f37", "good": "#4caf50", "weak": "#d1242f", "still learning": "#8c959f"}
    fig, ax = plt.subplots(figsize=(7, 0.28 * len(chosen) + 1.2))
    y = np.arange(len(chosen))[::-1]
    effect = np.array([r.effect for r in chosen])
    low = np.array([r.low for r in chosen])
    high = np.array([r.high for r in chosen])
    ax.barh(y, effect, color=[colours[r.label] for r in chosen])
    ax.errorbar(effect, y, xerr=[np.clip(effect - low, 0, 10), np.clip(high - effect, 0, 10)], fmt="none", ecolor="black", lw=0.8)
    ax.set_yticks(y, [r.element for r in chosen], fontsize=7)
    ax.axvline(0, color="black", lw=0.6)
    ax.set_xlabel("attributed effect on the click logit (vs the average candidate)")
    ax.set_title(f"{component}" + (f" (the {top // 2} strongest and weakest)" if len(chosen) == top else ""))
    return _png(fig)


def appeal_plot(products: list[ProductRow]) -> str:
    from genco.plots import plt  # the Agg backend, set once there

    fig, ax = plt.subplots(figsize=(6, 4))
    appeal = [p.appeal for p in products]
    ax.scatter(appeal, [p.served_ctr for p in products], s=10, label="what the logs served")
    ax.scatter(appeal, [p.best_ctr for p in products], s=10, label="the model's best combination")
    ax.set_xlabel("product appeal (logit, no creative)")
    ax.set_ylabel("predicted CTR")
    ax.legend()
    ax.set_title("Product appeal apart from the creative")
    return _png(fig)


def _table(rows: list, columns: list[str], limit: int | None = None) -> str:
    def cell(v):
        if isinstance(v, float):
            return "" if not np.isfinite(v) else f"{v:.4g}"
        return html.escape(str(v))
    head = "".join(f"<th>{html.escape(c)}</th>" for c in columns)
    body = []
    for row in rows[:limit]:
        values = asdict(row)
        klass = f' class="{values["label"].replace(" ", "-")}"' if "label" in values else ""
        body.append(f"<tr{klass}>" + "".join(f"<td>{cell(values[c])}</td>" for c in columns) + "</tr>")
    return f"<table><thead><tr>{head}</tr></thead><tbody>{''.join(body)}</tbody></table>"


STYLE = """body{font-family:system-ui,sans-serif;max-width:1100px;margin:2em auto;padding:0 1em;color:#1f2328}
table{border-collapse:collapse;font-size:13px;margin:0.5em 0 1.5em}td,th{border:1px solid #d0d7de;padding:3px 8px;text-align:right}
th{background:#f6f8fa}td:first-child,td:nth-child(2){text-align:left}tr.best td{background:#dafbe1}tr.good td{background:#f0fff4}
tr.weak td{background:#ffebe9}tr.still-learning td{color:#656d76}img{max-width:100%}"""


def render_html(title: str, summary: dict, elements: list[ElementRow], products: list[ProductRow], pairs: list[PairRow]) -> str:
    parts = [f"<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'><title>{html.escape(title)}</title>",
             f"<style>{STYLE}</style></head><body><h1>{html.escape(title)}</h1>",
             "<p>" + " &middot; ".join(f"{html.escape(k)}: <b>{html.escape(str(v))}</b>" for k, v in summary.items()) + "</p>",
             "<p>Effects are on the click logit, against the average candidate an element competed with, with the "
             "product's appeal and the user held fixed (a swap within each logged impression). Labels: "
             f"<i>still learning</i> when served fewer than {MIN_IMPRESSIONS} times or when the 95% interval contains 0; "
             "<i>good</i> above 0, <i>weak</i> below; the good element of highest effect in its component is <i>best</i>.</p>"]
    columns = ["element", "label", "impressions", "clicks", "ctr", "effect", "low", "high", "candidate_rows"]
    for component in dict.fromkeys(r.component for r in elements):
        rows = sorted((r for r in elements if r.component == component), key=lambda r: -np.nan_to_num(r.effect, nan=-1e9))
        counts = {name: sum(r.label == name for r in rows) for name in LABELS}
        parts.append(f"<h2>{html.escape(component)}</h2><p>{len(rows)} elements: "
                     + ", ".join(f"{v} {k}" for k, v in counts.items()) + "</p>")
        parts.append(f"<img alt='attributed effects of {html.escape(component)}' src='data:image/png;base64,{effect_plot(elements, component)}'>")
        parts.append(_table(rows, columns, limit=40))
    parts.append("<h2>Products: appeal apart from the creative</h2>")
    parts.append(f"<img alt='product appeal' src='data:image/png;base64,{appeal_plot(products)}'>")
    parts.append(_table(products, ["ad_id", "impressions", "clicks", "ctr", "appeal", "served_ctr", "best_ctr", "best"], limit=30))
    parts.append("<h2>Strongest element pairs</h2><p>What a pair adds to the click logit beyond each element's own "
                 "effect (double-centred swap logits), over the impressions where both were candidates.</p>")
    parts.append(_table(pairs, ["first", "second", "interaction", "rows"], limit=30))
    parts.append("<p>Every row: elements.csv, products.csv, pairs.csv next to this page.</p></body></html>")
    return "".join(parts)


@dataclass
class Report:
    elements: list[ElementRow]
    products: list[ProductRow]
    pairs: list[PairRow]
    summary: dict


def judged_rows(n: int, max_rows: int, seed: int) -> np.ndarray:
    """The logged rows the reward model is asked about: all, or a seeded random sample of max_rows, in order."""
    return np.sort(np.random.default_rng(seed).choice(n, size=min(max_rows, n), replace=False))


def build_report(model, data: EncodedRows, *, max_rows: int = 5000, pair_rows_max: int = 300, seed: int = 0,
                 model_version: str = "") -> Report:
    """Elements, products and pairs from the model on (a sample of `max_rows` of) the logged rows."""
    judged = judged_rows(len(data), max_rows, seed)
    elements = element_rows(model, data, judged)
    products = product_rows(model, data, judged)
    pairs = pair_rows(model, data, judged[: pair_rows_max])
    summary = {"model": model_version, "impressions": len(data), "clicks": int(data.click.sum()),
               "CTR": f"{data.click.mean():.4%}", "judged impressions": len(judged), "pair impressions": min(pair_rows_max, len(judged))}
    return Report(elements, products, pairs, summary)


def write_report(report: Report, out: str | Path, title: str = "genco element report") -> dict[str, Path]:
    out = output_folder(out)
    files = {"html": out / "report.html", "elements": out / "elements.csv", "products": out / "products.csv", "pairs": out / "pairs.csv"}
    atomic_write_bytes(files["elements"], _csv_bytes(report.elements))
    atomic_write_bytes(files["products"], _csv_bytes(report.products))
    atomic_write_bytes(files["pairs"], _csv_bytes(report.pairs))
    atomic_write_bytes(files["html"], render_html(title, report.summary, report.elements, report.products, report.pairs).encode())
    return files

