"""Every policy of `genco bench --list` on the rows the contract allows at its edges (issue 12, case 14): no user
features (`user: []`), no ad features, elements known by id alone (`features: []`), components missing from
some rows, single-candidate components. Each fits, answers valid choices in both modes, and answers greedy
requests the same way whatever the seed and the batch."""

from __future__ import annotations

import numpy as np
import pytest

from genco.bench import WORLD_POLICIES, build_policy
from genco.contract import LogRow, Request
from genco.data import encode
from genco.policies import policy_names
from genco.world import World, WorldConfig, fresh_requests, random_exposure_logs
from tests.conftest import assert_valid_choices


def _blank(row: dict) -> dict:
    row = dict(row)
    row.pop("ad", None)
    row["components"] = {name: [{"id": e["id"], "features": []} for e in cands] for name, cands in row["components"].items()}
    return row


@pytest.fixture(scope="module")
def blank_world():
    world = World.generate(WorldConfig(seed=7, ads=25, impressions=1500, requests=60, max_candidates=4, user_dim=0, ad_dim=0))
    logs = encode(LogRow.model_validate(_blank(r)) for r in random_exposure_logs(world, 1500, 1))
    rows = [_blank(r) for r in fresh_requests(world, 60, 1)]
    rows[0]["components"] = {name: cands[:1] for name, cands in rows[0]["components"].items()}  # one candidate each
    requests = [Request.model_validate(r) for r in rows]
    assert logs.schema.user_dim == 0 and set(logs.schema.feature_dims.values()) == {0}
    return world, logs, requests


@pytest.mark.parametrize("name", [*WORLD_POLICIES, *policy_names()])
def test_policy_on_rows_without_context_or_features(blank_world, name):
    world, logs, requests = blank_world
    options = {"epochs": 1, "reward_models": 1} if name.startswith("genco") else {}
    policy = build_policy(name, 0, world, **options)
    policy.fit(logs)
    data = encode(requests, logs.schema)
    if name == "random":  # no best guess to be greedy about: uniform in both modes, with its true propensity
        assert_valid_choices(policy.choose(data, greedy=True, seed=0), data, greedy=False)
        return
    for greedy in (True, False):
        assert_valid_choices(policy.choose(data, greedy=greedy, seed=0), data, greedy=greedy)
    reference = policy.choose(data, greedy=True, seed=0).positions
    assert np.array_equal(policy.choose(data, greedy=True, seed=5).positions, reference), "greedy ignores the seed"
    tail = encode(requests[30:], logs.schema)
    assert np.array_equal(policy.choose(tail, greedy=True, seed=2).positions, reference[30:]), "and the batch"


@pytest.mark.parametrize("name", [*WORLD_POLICIES, *policy_names()])
def test_off_policy_estimates_of_every_policy_on_those_rows(blank_world, name):
    """`genco ope`'s engine with every policy as the target, on the same edge rows (explore mode: the policy's
    own draws, or GenCO's exact pi): estimates come back, every one finite or NaN by design, never a crash."""
    from genco.ope import OPEConfig, estimate_named

    world, logs, _ = blank_world
    result = estimate_named(logs, name, OPEConfig(mode="explore", samples=2, epochs=1), world=world, reward_models=1)
    values = {e.estimator: e.value for e in result.estimates}
    assert {"dm", "ips", "snips", "pi", "replay"} <= set(values)
    assert all(np.isfinite(values[k]) for k in ("dm", "ips", "pi")), values
    assert result.recommended is not None and result.truth is not None
