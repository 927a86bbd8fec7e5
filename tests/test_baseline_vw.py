"""The Vowpal Wabbit slates baseline: its example text, valid choices, and that it learns something."""

from __future__ import annotations

import sys

import numpy as np
import pytest

pytest.importorskip(
    "vowpalwabbit", reason="the optional `vowpalwabbit` package is not installed (pip install 'genco[vw]')"
)

from genco.baselines.vw_slates import VWSlates, VWUnavailable, escape, example_lines  # noqa: E402
from genco.contract import LogRow, Request  # noqa: E402
from genco.data import encode  # noqa: E402

from tests.conftest import assert_valid_choices, log_row  # noqa: E402


@pytest.fixture(scope="module")
def fitted(easy_world) -> VWSlates:
    return VWSlates().fit(easy_world.logs)




def test_example_text_matches_the_documented_format():
    logs = encode([LogRow.model_validate(log_row())])
    assert example_lines(logs, 0, learn=True) == [
        "slates shared -1 |U u0:0.1 u1:-0.2 ad0:1 ad=ad-1",
        "slates action 0 |A title=t-1 title_0:0.1 title_1:0.2",
        "slates action 0 |A title=t-2 title_0:0.3 title_1:-0.2",
        "slates action 1 |A image=i-1 image_0:0.5 image_1:0.1 image_2:0.9",
        "slates slot 1:0.5 |S title",
        "slates slot 0:1 |S image",
    ]
    # Unlabelled (what choose predicts on): no cost, nothing before the slot's features.
    assert example_lines(logs, 0) == [
        "slates shared |U u0:0.1 u1:-0.2 ad0:1 ad=ad-1",
        "slates action 0 |A title=t-1 title_0:0.1 title_1:0.2",
        "slates action 0 |A title=t-2 title_0:0.3 title_1:-0.2",
        "slates action 1 |A image=i-1 image_0:0.5 image_1:0.1 image_2:0.9",
        "slates slot |S title",
        "slates slot |S image",
    ]


def test_slots_are_the_components_a_row_has_and_ids_are_escaped():
    row = log_row(
        components={"image": [{"id": "i 1:|%", "features": [0.5, 0.0, 0.9]}]},
        shown={"image": "i 1:|%"},
        click=0,
        ad=None,
    )
    schema = encode([LogRow.model_validate(log_row())]).schema  # title then image
    logs = encode([LogRow.model_validate(row)], schema)
    assert example_lines(logs, 0, learn=True) == [
        "slates shared 0 |U u0:0.1 u1:-0.2 ad=ad-1",
        "slates action 0 |A image=i%201%3A%7C%25 image_0:0.5 image_2:0.9",  # slot 0: title is absent
        "slates slot 0:1 |S image",
    ]
    assert escape("a b\tc") == "a%20b%09c"


def test_beats_random_on_the_easy_world(easy_world, fitted):
    vw = easy_world.frac(fitted.choose(easy_world.requests))
    random = easy_world.random_frac
    assert vw > random + 0.1, (vw, random)


def test_greedy_and_explore_choices_are_valid(easy_world, fitted):
    requests = easy_world.requests
    greedy = fitted.choose(requests, greedy=True)
    assert_valid_choices(greedy, requests, greedy=True)
    again = fitted.choose(requests, greedy=True)
    assert np.array_equal(greedy.positions, again.positions), "predicting does not change the model"
    explore = fitted.choose(requests, greedy=False, seed=3)
    assert_valid_choices(explore, requests, greedy=False)
    assert np.any(explore.propensity < 1)
    assert np.array_equal(explore.positions, fitted.choose(requests, greedy=False, seed=3).positions)


def test_a_request_lacking_components(easy_world, fitted):
    row = dict(easy_world.evaluator.requests[0])
    names = list(row["components"])
    assert len(names) >= 2
    kept = {names[-1]: row["components"][names[-1]]}  # only the last component the request has
    request = encode([Request.model_validate({**row, "components": kept})], easy_world.logs.schema)
    for greedy in (True, False):
        chosen = fitted.choose(request, greedy=greedy)
        assert_valid_choices(chosen, request, greedy=greedy)
        assert list(chosen.selections[0]) == [names[-1]]


def test_fit_starts_from_scratch(easy_world):
    logs = easy_world.logs
    policy = VWSlates(passes=1)
    first = policy.fit(logs).choose(easy_world.requests).positions
    assert np.array_equal(policy.fit(logs).choose(easy_world.requests).positions, first)


def test_missing_package_is_a_clear_error(monkeypatch):
    monkeypatch.setitem(sys.modules, "vowpalwabbit", None)  # makes `import vowpalwabbit` fail
    with pytest.raises(VWUnavailable, match=r"pip install"):
        VWSlates()
