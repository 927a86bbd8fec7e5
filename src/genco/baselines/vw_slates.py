"""Vowpal Wabbit's slates reduction (`--slates`) behind the `Policy` interface: the side-by-side baseline.

What VW slates is. A *slate* is one decision made of several slots, each slot filled from its own,
disjoint pool of actions, rewarded by one global cost for the whole slate. That is exactly our problem
shaped as VW sees it: a slot per component (title, image, ...), the component's candidates as that slot's
actions, the combination's click as the global reward. VW reduces a slate to its conditional contextual
bandit (CCB), then to one contextual bandit with action-dependent features (`cb_explore_adf`) per slot;
here the slot's scores come from a regression of cost on features (`--squarecb` uses `--cb_type mtr`),
and SquareCB turns the scores into an exploration distribution.

Its additive limitation. The reduction copies the one global cost to every slot's outcome and learns each
slot as its own bandit: slot k's score of an element sees the context and that element, never which
elements the other slots chose. The model is therefore additive over components: it can learn which title
and which image are good (for this user, for this ad), but not that *this* title goes with *this* image.
A world whose click depends on title x image pairs caps what slates can reach; GenCO's reward model
scores whole combinations.

How a row becomes an example (a Python list of lines; VW's text format, see `example_lines`):

    slates shared -1 |U u0:0.53 u1:-1.2 ... ad0:0.81 ... ad=ad-17        # cost -click, on learning only
    slates action 0 |A title=title-17-0 title_0:0.12 title_1:-0.3 ...    # one line per candidate; 0 = slot id
    slates action 0 |A title=title-17-1 ...
    slates action 1 |A image=image-17-4 image_0:0.9 ...
    ...
    slates slot 1:0.5 |S title                                           # chosen index:probability, on learning
    slates slot 3:0.25 |S image

- Namespace U holds the user features, the ad features and the ad id; namespace A the element's id and
  features, named after their component (a title's feature 0 and an image's feature 0 are different
  weights). `-q UA` crosses them: personal taste, ad x element memory, ad features x element features.
- Slots are the components the row has, 0-based, in the schema's component order; a component the row
  lacks (or a log row that shows nothing for it) has neither a slot nor actions.
- Labels: the cost is -click. Any cost c - click ranks the same (VW's constant feature absorbs c); with
  -click the mean cost (minus the click rate, a few percent) is close to where zero-initialised weights
  start, so nothing is spent learning a large intercept (measured: -click and 1 - click score the same).
  Each slot's label is the shown element's index within that slot's own actions and its logging
  probability 1 / len(candidates). Our logs are uniform random exposure: the row's propensity is the
  product of those per-slot probabilities. A row's propensity in general (served traffic) is one joint
  number that does not say how it factors over slots, so it is not split: per-slot uniform is what the
  logs are. (Under `cb_type mtr` the probability only weights the chosen action's regression example, it
  does not change what is regressed.)
- Ids and component names are written with the characters VW's text format reserves (space, tab, `|`,
  `:`) and `%` percent-escaped, so any id round-trips unambiguously.

`vowpalwabbit` is an optional extra (`pip install genco[vw]`): it is imported when a `VWSlates` is built,
and a missing package raises `VWUnavailable`, which a benchmark can catch and report as skipped.
"""

from __future__ import annotations

import re
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

from genco.baselines.base import Policy, choices
from genco.data import EncodedRows
from genco.select import Choices

#: Tuned on three simulated worlds (50,000 random-exposure rows each, interaction 0, 1 and 2):
#: - `--squarecb`, not epsilon-greedy (ANCHORS 5.5); it implies `--cb_type mtr`. It only shapes the
#:   exploration distribution: greedy choices are the regression's argmin either way.
#: - `-q UA`: user x element (personal taste), ad id x element id, ad features x element features.
#: - `--power_t 0 -l 0.002`: a small constant learning rate. VW's default (AdaGrad, -l 0.5) chases the last
#:   few clicks: clicks are ~5% of rows and each weighs 1 / p (up to 15 on a large pool), so the final
#:   weights are noisy. Fraction of the oracle's lift, default rate vs this one: 0.08 vs 0.27 (interaction
#:   2), 0.16 vs 0.33 (interaction 1); -l 0.01 is clearly worse, 0.001 slightly, 0.003 about the same.
#: - `--decay_learning_rate 0.5`: the rate halves after each pass, annealing the passes (beat 0.7 and 1).
#: - 3 passes: as good as 4, and each pass costs time. One pass loses about 0.04.
DEFAULT_FLAGS = "--slates --squarecb -q UA --power_t 0 -l 0.002 --decay_learning_rate 0.5"
DEFAULT_PASSES = 3

_RESERVED = re.compile(r"[\s|:%]")


class VWUnavailable(RuntimeError):
    """The optional `vowpalwabbit` package is not installed."""


def load_vowpalwabbit() -> Any:
    try:
        import vowpalwabbit
    except ImportError as exc:
        raise VWUnavailable(
            f"the vw-slates baseline needs the optional `vowpalwabbit` package ({exc}); "
            "install it with `pip install 'genco[vw]'` (or `pip install vowpalwabbit`)"
        ) from None
    return vowpalwabbit


def escape(text: str) -> str:
    """`text` with VW's reserved characters (whitespace, `|`, `:`) and `%` itself as %XX: injective."""
    return _RESERVED.sub(lambda m: "%{:02X}".format(ord(m.group())), text)


def _number(x: float) -> str:
    return f"{x:.6g}"


def _action(label: str, element_id: str, features: list[float]) -> str:
    """The namespace-A text of one element: its id and its non-zero features, named after the component."""
    named = (f"{label}_{k}:{_number(v)}" for k, v in enumerate(features) if v)
    return " ".join(["|A", f"{label}={escape(element_id)}", *named])


class ExampleWriter:
    """Slates examples (lists of lines) for the rows of one EncodedRows.

    The text of every element-table entry is built once and shared by every row that offers it.
    """

    def __init__(self, data: EncodedRows):
        self.data = data
        self.components = list(data.schema.components)
        self.actions: dict[str, list[str]] = {}
        for name in self.components:
            table, label = data.columns[name]["table_features"], escape(name)
            self.actions[name] = [_action(label, eid, row) for eid, row in zip(data.element_ids[name], table.tolist())]

    def _shared(self, r: int) -> str:
        data = self.data
        user = [f"u{k}:{_number(v)}" for k, v in enumerate(data.user[r].tolist()) if v != 0.0]
        ad = [f"ad{k}:{_number(v)}" for k, v in enumerate(data.ad[r].tolist()) if v != 0.0]
        return " ".join(["|U", *user, *ad, f"ad={escape(data.ad_ids[r])}"])

    def lines(self, r: int, *, learn: bool) -> tuple[list[str], list[int]]:
        """Row r as a slates example, and the schema index of the component of each slot."""
        data = self.data
        slots: list[int] = []
        actions: list[str] = []
        slot_lines: list[str] = []
        for m, name in enumerate(self.components):
            column = data.columns[name]
            a, b = int(column["offsets"][r]), int(column["offsets"][r + 1])
            if b == a:
                continue
            if learn:
                shown = int(column["shown"][r])
                if shown < 0:
                    continue  # nothing shown for this component: no label, so no slot
                label = f"{shown}:{_number(1.0 / (b - a))} "
            else:
                label = ""
            slot = len(slots)
            slots.append(m)
            texts = self.actions[name]
            prefix = f"slates action {slot} "
            actions.extend(prefix + texts[e] for e in column["members"][a:b].tolist())
            slot_lines.append(f"slates slot {label}|S {escape(name)}")
        cost = ("-1 " if data.click[r] > 0 else "0 ") if learn else ""
        return [f"slates shared {cost}{self._shared(r)}", *actions, *slot_lines], slots


def example_lines(data: EncodedRows, row: int, *, learn: bool = False) -> list[str]:
    """One row as VW slates text (see the module doc); with `learn`, labelled from the log row."""
    return ExampleWriter(data).lines(row, learn=learn)[0]


class VWSlates(Policy):
    """VW `--slates` fitted offline on logs.

    fit: a fresh workspace per call. The labelled examples are written, in one shuffled order, to a
    temporary text file that VW's own driver reads (`-d`): VW parses on its own thread while it learns, and
    with `passes` > 1 it caches the parsed examples (`-c`) and runs the later passes from that binary cache
    (`--passes`, `--holdout_off` so that every row is learned). That is several times faster than feeding
    examples one by one from Python (the file is about 4 KB a row on the default world and the cache
    3 KB: some 1.5 GB of temporary disk for 200,000 rows, removed when fit returns). VW learns online;
    several passes over an offline log, with the learning rate decayed between passes
    (`--decay_learning_rate` in the flags), let it use the log fully. Measured (2 busy cores): 50,000 rows
    in 30 s, 200,000 rows in 106 s with the default 3 passes.
    choose: greedy mode takes, per slot, the action of highest probability in VW's prediction. Predictions
    are made on unlabelled examples, so VW cannot echo a logged label back (issue #4690: during learning
    CCB reports the labelled action as its choice); SquareCB gives its greedy (lowest predicted cost)
    action the largest probability, so this is the exploit action. Explore mode samples each slot from
    the probabilities VW reports (numpy, seeded by `seed`, so a choice is reproducible) and answers the
    product of the sampled actions' probabilities as the propensity.
    """

    name = "vw-slates"

    def __init__(self, flags: str = DEFAULT_FLAGS, passes: int = DEFAULT_PASSES, seed: int = 0):
        self.vw_module = load_vowpalwabbit()
        self.flags = flags
        self.passes = passes
        self.seed = seed
        self.workspace: Any = None

    def close(self) -> None:
        if self.workspace is not None:
            self.workspace.finish()
            self.workspace = None

    def fit(self, logs: EncodedRows) -> "VWSlates":
        if logs.click is None:
            raise ValueError("VWSlates.fit needs log rows (with shown elements and clicks), got requests")
        self.close()
        writer = ExampleWriter(logs)
        order = np.random.default_rng(self.seed).permutation(len(logs)).tolist()
        with tempfile.TemporaryDirectory(prefix="genco-vw-") as folder:
            data, cache = Path(folder) / "logs.txt", Path(folder) / "logs.cache"
            with open(data, "w", encoding="utf-8") as out:
                for r in order:
                    lines, slots = writer.lines(r, learn=True)
                    if slots:
                        out.write("\n".join(lines))
                        out.write("\n\n")
            args = [*self.flags.split(), "--random_seed", str(self.seed), "-d", str(data), "--holdout_off"]
            if self.passes > 1:
                args += ["--passes", str(self.passes), "--cache_file", str(cache), "--kill_cache"]
            self.workspace = self.vw_module.Workspace(arg_list=args, quiet=True)  # learns from the file
        return self

    def _predict(self, writer: ExampleWriter, r: int) -> tuple[list[int], list[list[tuple[int, float]]]]:
        lines, slots = writer.lines(r, learn=False)
        if not slots:
            return slots, []
        return slots, self.workspace.predict(lines)

    def choose(self, requests: EncodedRows, *, greedy: bool = True, seed: int = 0) -> Choices:
        if self.workspace is None:
            raise RuntimeError("VWSlates.choose before fit")
        rng = np.random.default_rng(seed)
        writer = ExampleWriter(requests)
        n, M = len(requests), len(requests.schema.components)
        positions = np.full((n, M), -1)
        propensity = np.ones(n)
        for r in range(n):
            slots, prediction = self._predict(writer, r)
            for m, scores in zip(slots, prediction):
                probs = np.zeros(len(scores))  # by action index within the slot; VW lists its own pick first
                for action, p in scores:
                    probs[action] = p
                if greedy:
                    positions[r, m] = int(np.argmax(probs))
                else:
                    k = int(rng.choice(len(probs), p=probs / probs.sum()))
                    positions[r, m] = k
                    propensity[r] *= probs[k]
        return choices(requests, positions, propensity=np.minimum(propensity, 1.0))
