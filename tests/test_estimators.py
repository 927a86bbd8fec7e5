"""Off-policy estimators: parity with the vw-estimators package, and both checked against the truth."""

import numpy as np
import pytest

from genco import estimators as est


def logged_slates(rng: np.random.Generator, n: int, pools: tuple[int, ...], additive: bool):
    """Impressions of a product logging policy over a Cartesian slate, a product target policy, and the
    target's true expected reward (computed exactly over every combination)."""
    K = len(pools)
    mu = [rng.dirichlet(np.full(s, 2.0)) for s in pools]
    pi = [rng.dirichlet(np.full(s, 0.5)) for s in pools]
    effect = [rng.normal(0, 0.08, s) for s in pools]
    pair = rng.normal(0, 0 if additive else 0.08, (pools[0], pools[1]))

    def click_p(a):  # a: (..., K) positions
        return np.clip(0.2 + sum(effect[k][a[..., k]] for k in range(K)) + pair[a[..., 0], a[..., 1]], 0, 1)

    grid = np.stack(np.meshgrid(*[np.arange(s) for s in pools], indexing="ij"), -1).reshape(-1, K)
    truth = float(np.sum(np.prod([pi[k][grid[:, k]] for k in range(K)], axis=0) * click_p(grid)))
    shown = np.stack([rng.choice(s, size=n, p=mu[k]) for k, s in enumerate(pools)], axis=1)
    reward = (rng.random(n) < click_p(shown)).astype(float)
    p_log_k = np.stack([mu[k][shown[:, k]] for k in range(K)], axis=1)
    p_tgt_k = np.stack([pi[k][shown[:, k]] for k in range(K)], axis=1)
    return reward, p_log_k, p_tgt_k, truth


def test_ips_snips_and_pi_equal_vw_estimators():
    pytest.importorskip("estimators")
    from estimators.bandits import ips, snips
    from estimators.slates import pseudo_inverse

    reward, p_log_k, p_tgt_k, _ = logged_slates(np.random.default_rng(3), 500, (3, 4, 5), additive=False)
    reward = reward * np.random.default_rng(4).uniform(0.5, 2.0, len(reward))  # not only 0/1: revenue works too
    p_log, p_tgt = p_log_k.prod(axis=1), p_tgt_k.prod(axis=1)
    peers = {"ips": ips.Estimator(), "snips": snips.Estimator(), "pi": pseudo_inverse.Estimator()}
    for r, pl, pt, plk, ptk in zip(reward, p_log, p_tgt, p_log_k, p_tgt_k):
        peers["ips"].add_example(pl, r, pt)
        peers["snips"].add_example(pl, r, pt)
        peers["pi"].add_example(list(plk), r, list(ptk))
    assert est.ips(reward, p_log, p_tgt).value == pytest.approx(peers["ips"].get(), abs=1e-9)
    assert est.snips(reward, p_log, p_tgt).value == pytest.approx(peers["snips"].get(), abs=1e-9)
    assert est.pseudo_inverse(reward, p_log_k, p_tgt_k).value == pytest.approx(peers["pi"].get(), abs=1e-9)


@pytest.mark.parametrize("additive", [True, False])
def test_estimators_find_the_truth(additive):
    """Averaged over many logs, IPS (always) and PI (under an additive reward) are unbiased, and their 95%
    intervals cover the truth about 95% of the time; PI's bias shows once pairs interact."""
    rng = np.random.default_rng(11)
    rows = {"ips": [], "pi": [], "snips": []}
    for _ in range(200):
        reward, p_log_k, p_tgt_k, truth = logged_slates(rng, 2000, (3, 4), additive)
        p_log, p_tgt = p_log_k.prod(axis=1), p_tgt_k.prod(axis=1)
        for e in (est.ips(reward, p_log, p_tgt), est.snips(reward, p_log, p_tgt), est.pseudo_inverse(reward, p_log_k, p_tgt_k)):
            rows[e.estimator].append((e.value - truth, e.low <= truth <= e.high))
    for name, got in rows.items():
        error, covered = np.array(got).T
        if name == "pi" and not additive:
            assert abs(error.mean()) > 3 * error.std() / np.sqrt(len(error)) or covered.mean() < 0.95
            continue
        assert abs(error.mean()) < 3 * error.std() / np.sqrt(len(error)), name
        assert 0.88 <= covered.mean() <= 0.99, name


def test_pi_weights_count_only_the_components_a_row_has():
    p = np.array([[0.5, 0.25], [0.5, 1.0]])
    q = np.array([[1.0, 0.0], [0.0, 1.0]])
    present = np.array([[True, True], [True, False]])
    assert est.pseudo_inverse_weights(p, q, present).tolist() == [1.0, 0.0]


def test_direct_doubly_robust_and_replay():
    reward = np.array([1.0, 0.0, 1.0, 0.0])
    dr = est.doubly_robust(reward, predicted_logged=np.full(4, 0.5), predicted_target=np.full(4, 0.5),
                           weights=np.array([2.0, 0.0, 0.0, 2.0]))
    assert dr.value == pytest.approx(0.5)  # corrections +1 and -1 cancel
    assert est.direct(np.array([0.1, 0.3])).value == pytest.approx(0.2)
    matched = est.replay(reward, np.array([True, True, True, False]))
    assert matched.value == pytest.approx(2 / 3) and matched.n == 3 and 0 < matched.low < 2 / 3 < matched.high < 1
    assert np.isnan(est.replay(reward, np.zeros(4, bool)).value)
    assert np.isnan(est.snips(reward, np.ones(4), np.zeros(4)).value)  # no support: no estimate, no crash
    with pytest.raises(ValueError):
        est.ips(reward, np.zeros(4), np.ones(4))
