"""The serving path's grid (genco.request_grid) is the arrays the columnar path builds (encode, collate,
grid_inputs), on every layout the contract allows, so an answer does not depend on which path built it."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from genco.contract import LogRow, Request
from genco.errors import BadRowError
from genco.data import collate, encode, selections_at
from genco.lean import LeanGreedy, grid_inputs
from genco.request_grid import grid_selections, request_grid
from genco.select import SelectConfig, choose, select_requests
from tests.test_files import log_rows
from tests.test_lean import edge_requests, model_for


@settings(max_examples=40, deadline=None)
@given(rows=log_rows(n_rows=st.integers(1, 6)), k=st.sampled_from([0, 3]), enumerate_up_to=st.sampled_from([0, 256]))
def test_the_grid_is_the_columnar_paths(rows, k, enumerate_up_to):
    logs = [LogRow.model_validate(r) for r in rows]
    schema = encode(logs, id_buckets=97, ad_buckets=13).schema
    requests = [Request.model_validate(r.model_dump()) for r in logs]
    data = encode(requests, schema)
    want = grid_inputs(collate(data, np.arange(len(data)), grid=True), k, enumerate_up_to)
    got = request_grid(requests, schema, k, enumerate_up_to)
    assert got.keys() == want.keys()
    for name in want:
        assert got[name].dtype == want[name].dtype, name
        np.testing.assert_array_equal(got[name], want[name], err_msg=name)
    positions = np.stack([np.where(want["mask"][:, m].any(axis=1), want["mask"][:, m].sum(axis=1) - 1, -1)
                          for m in range(len(schema.components))], axis=1)  # the last candidate of every component
    assert grid_selections(requests, schema, positions) == selections_at(data, np.arange(len(data)), positions)


def test_served_answers_are_choose_answers():
    requests = edge_requests(60, seed=3)
    model = model_for(encode(requests).schema, {}, 2, seed=0)
    config = SelectConfig(k=16, batch_size=16)
    served = select_requests(model, requests, greedy=True, config=config, program=LeanGreedy(model))
    chosen = choose(model, encode(requests, model.schema), greedy=True, config=config)
    assert [s.selection for s in served] == chosen.selections
    np.testing.assert_allclose([s.score for s in served], chosen.score, rtol=1e-4, atol=1e-6)
    assert all(s.propensity == 1.0 for s in served)


def test_a_request_that_does_not_fit_the_model_is_named():
    requests = edge_requests(3, seed=3)
    model = model_for(encode(requests).schema, {}, 1, seed=0)
    wrong = requests[2].model_copy(update={"user": [0.5]})  # the model was trained with user: []
    with pytest.raises(BadRowError) as error:
        select_requests(model, [*requests[:2], wrong], greedy=True, program=LeanGreedy(model))
    assert error.value.rule == "feature-length" and error.value.location.index == 2
