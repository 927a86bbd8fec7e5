"""GenCO's model: masks, gradients, sampling, training beats random, save/load, bad model folders."""

from __future__ import annotations

import copy
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file, save_file

from genco.attribution import element_attribution
from genco.attribution import summary as attribution_summary
from genco.checkpoint import load_model
from genco.contract import LogRow
from genco.data import FeatureSchema, collate, encode
from genco.ensemble import RewardEnsemble
from genco.errors import GencoInputError
from genco.evaluate import Evaluator
from genco.files import load_requests, read_rows
from genco.model import GenCO, ModelConfig, mix_uniform
from genco.plots import attribution as attribution_plot
from genco.refit import solve_wide
from genco.select import SelectConfig, choose, refine
from genco.train import (NETWORK_WEIGHTS, TrainConfig, best_of_k_advantage, heldout_figures, losses, new_member,
                         save_trained, shrink_network, train)
from genco.world import World
from tests.conftest import run_genco


def _rows(n=6, seed=0):
    rng = np.random.default_rng(seed)
    rows = []
    for r in range(n):
        comps = {
            "title": [{"id": f"t{k}", "features": rng.normal(size=3).round(3).tolist()} for k in range(rng.integers(1, 6))],
            "image": [{"id": f"i{k}", "features": rng.normal(size=2).round(3).tolist()} for k in range(rng.integers(1, 4))],
        }
        if r % 2:
            comps["badge"] = [{"id": f"b{k}", "features": []} for k in range(3)]
        shown = {name: cands[0]["id"] for name, cands in comps.items()}
        rows.append(LogRow.model_validate({"request_id": f"r{r}", "ad_id": f"a{r % 3}", "user": rng.normal(size=2).tolist(),
                                           "components": comps, "shown": shown, "click": int(r % 3 == 0)}))
    return rows


@pytest.fixture()
def batch_and_model():
    torch.manual_seed(0)
    data = encode(_rows())
    return data, collate(data, np.arange(len(data))), GenCO(data.schema, ModelConfig(dim=8, heads=2, hidden=8))


def test_padded_candidates_are_never_chosen(batch_and_model):
    data, batch, model = batch_and_model
    enc = model.encode(batch)
    log_pi = model.log_pi(model.policy_scores(enc), enc)
    assert torch.isinf(log_pi[~batch.mask]).all() and torch.isfinite(log_pi[batch.mask]).all()
    combos = model.sample(log_pi, enc, 500, torch.Generator().manual_seed(1))  # (B, 500, M)
    for m, (a, b) in enumerate(batch.slices):
        counts = batch.mask[:, a:b].sum(dim=1)
        picks = combos[:, :, m]
        assert ((picks < counts[:, None]) | (counts[:, None] == 0)).all()
        assert ((picks == -1) == (counts[:, None] == 0)).all(), "absent components are never chosen"
    greedy = model.greedy(log_pi, enc)
    assert ((greedy >= -1) & (greedy < torch.stack([batch.mask[:, a:b].sum(1) for a, b in batch.slices], 1))).all()


def test_padding_is_never_attended_to(batch_and_model):
    data, batch, model = batch_and_model
    model.eval()
    enc = model.encode(batch)
    before = model.policy_scores(enc)[batch.mask]
    # Change everything about the padded slots: real slots must not notice.
    poked = enc.e.clone()
    poked[~batch.mask] = 100.0
    enc.e = poked
    after = model.policy_scores(enc)[batch.mask]
    assert torch.allclose(before, after, atol=1e-5)


def test_gradients_reach_generator_and_reward_model(batch_and_model):
    data, batch, model = batch_and_model
    model.train()
    terms = losses(model, batch, TrainConfig(k=4), torch.Generator().manual_seed(0))
    terms["total"].backward()
    grad = lambda module: sum(p.grad.abs().sum().item() for p in module.parameters() if p.grad is not None)
    assert grad(model.generator_attention) > 0, "policy gradient reaches the generator"
    assert model.log_sharpness.grad.abs().sum() > 0
    assert grad(model.phi) > 0 and grad(model.bag_attention) > 0, "MIL losses reach the reward model"
    assert grad(model.feature_proj) > 0 and grad(model.context) > 0


@pytest.mark.parametrize("objective", ["best-of-k", "mean"])
def test_policy_gradient_does_not_move_the_reward_model(batch_and_model, objective):
    data, batch, model = batch_and_model
    terms = losses(model, batch, TrainConfig(k=4, mil=False, rl_objective=objective), torch.Generator().manual_seed(0))
    model.zero_grad()
    terms["rl"].backward()
    assert model.log_sharpness.grad.abs().sum() > 0, "the generator learns"
    assert all(p.grad is None or p.grad.abs().sum() == 0 for p in model.phi.parameters())
    assert all(p.grad is None or p.grad.abs().sum() == 0 for p in model.bag_attention.parameters())


def test_sampling_frequencies_match_pi(batch_and_model):
    data, batch, model = batch_and_model
    model.eval()
    with torch.no_grad():
        enc = model.encode(batch)
        log_pi = model.log_pi(model.policy_scores(enc) * 3, enc)
        combos = model.sample(log_pi, enc, 20000, torch.Generator().manual_seed(2))
    for m, (a, b) in enumerate(batch.slices):
        for row in range(batch.size):
            n = int(batch.mask[row, a:b].sum())
            if n == 0:
                continue
            freq = torch.bincount(combos[row, :, m], minlength=b - a).float() / 20000
            assert torch.allclose(freq[:n], log_pi[row, a : a + n].exp(), atol=0.015)


def test_explore_propensity_is_the_probability_of_the_combination(batch_and_model):
    data, batch, model = batch_and_model
    chosen = choose(model, data, greedy=False, config=SelectConfig(epsilon=0.2), seed=3)
    with torch.no_grad():
        enc = model.encode(batch)
        mixed = mix_uniform(model.log_pi(model.policy_scores(enc), enc), enc, 0.2).exp()
    for row in range(batch.size):
        expected = 1.0
        for m, (a, b) in enumerate(batch.slices):
            if chosen.positions[row, m] >= 0:
                expected *= float(mixed[row, a + chosen.positions[row, m]])
        assert chosen.propensity[row] == pytest.approx(expected, rel=1e-5)
        assert 0 < chosen.propensity[row] <= 1


def test_ensemble_reward_is_the_mean_of_its_members(batch_and_model):
    data, batch, model = batch_and_model
    torch.manual_seed(1)
    other = GenCO(data.schema, model.config)
    with torch.no_grad():
        other.element_effect.weight.normal_()  # members that disagree
    ensemble = RewardEnsemble([model, other])
    ensemble.eval()
    enc = ensemble.encode(batch)
    combos, _ = ensemble.generate(enc, 5, torch.Generator().manual_seed(0))  # (B, 5, M)
    with torch.no_grad():
        each = [m.eval().reward(m.encode(batch), combos)[0] for m in (model, other)]
        assert not torch.allclose(each[0], each[1])
        assert torch.allclose(ensemble.reward(enc, combos)[0], (each[0] + each[1]) / 2, atol=1e-6)
        # the generator is member 0's
        assert torch.equal(combos, model.generate(model.encode(batch), 5, torch.Generator().manual_seed(0))[0])


def test_more_starting_points_never_refine_to_a_worse_combination(batch_and_model):
    data, batch, model = batch_and_model
    model.eval()
    with torch.no_grad():
        model.element_effect.weight.normal_()
        enc = model.encode(batch)
        candidates, _ = model.generate(enc, 8, torch.Generator().manual_seed(2), with_greedy=True)
        creative = model.reward(enc, candidates)[0]
        values = {}
        for starts in (1, 4):
            combo, values[starts] = refine(model, enc, candidates, creative, SelectConfig(refine_starts=starts))
            assert torch.allclose(model.reward(enc, combo[:, None, :])[0][:, 0], values[starts], atol=1e-5)
    assert (values[4] >= values[1] - 1e-6).all()
    assert (values[1] >= creative.max(dim=1).values - 1e-6).all(), "refining never loses the best sample"


def test_the_network_scales_linearly_over_the_wide_part(batch_and_model):
    """scale_network(w) keeps the wide part and w of the network's share of the creative logit (pooling held
    uniform here, where the scaled share is exactly linear); w = 0 is the wide part alone."""
    data, batch, model = batch_and_model
    with torch.no_grad():
        for layer in (model.phi.deep[-1], model.element_effect, model.combination_effect):
            layer.weight.normal_(0, 0.5)
    combos = model.greedy(model.log_pi(model.policy_scores(model.eval().encode(batch)), model.encode(batch)),
                          model.encode(batch))[:, None, :]  # (B, 1, M)

    def creative(weight: float) -> torch.Tensor:
        scaled = copy.deepcopy(model)
        scaled.scale_network(weight)
        return scaled.reward(scaled.encode(batch), combos)[0]

    wide, half, whole = creative(0.0), creative(0.5), creative(1.0)
    assert not torch.allclose(wide, whole, atol=1e-3), "the network says something here"
    assert torch.allclose(half, (wide + whole) / 2, atol=1e-5)
    silent = copy.deepcopy(model)
    silent.silence_network()
    assert torch.equal(silent.reward(silent.encode(batch), combos)[0], wide)


@pytest.mark.parametrize("judge, wide_fit", [("shrink", "first"), ("bar", "first"), ("keep", "first"),
                                             ("shrink", "after"), ("keep", "after")])
def test_stage_one_keeps_the_network_at_the_weight_its_judge_says(judge, wide_fit):
    """network_judge: shrink keeps a weight of the grid, bar all or nothing of the network, keep all of it."""
    data = encode(_rows(40, seed=2))
    result = train(data, ModelConfig(dim=8, hidden=8), TrainConfig(epochs=2, reward_models=2, rl=False, holdout=0.3,
                                                                   network_judge=judge, wide_fit=wide_fit))
    weights = result.summary()["network_weights"]
    assert len(weights) == 2 and set(weights) <= set(NETWORK_WEIGHTS)
    if judge == "bar":
        assert set(weights) <= {0.0, 1.0}
    if judge == "keep":
        assert set(weights) == {1.0}


@pytest.mark.parametrize("refit", [False, True])
def test_the_shrunk_network_has_the_least_held_out_log_loss_of_the_grid(refit):
    """shrink_network picks, and leaves in the model, the grid weight whose held-out log loss is least; given
    priors (a network trained together with its wide part), the wide part solved again at each weight."""
    data = encode(_rows(60, seed=3))
    config = TrainConfig(holdout=0.3)
    member = new_member(lambda: GenCO(data.schema, ModelConfig(dim=8, hidden=8)), data, config, seed=0)
    with torch.no_grad():
        for layer in (member.model.phi.pair, member.model.phi.element, member.model.phi.deep[-1]):
            layer.weight.normal_(0, 1.0)
    precisions = {"elements": 3.0} if refit else None
    losses_at, plain = {}, {}
    for weight in NETWORK_WEIGHTS:
        scaled = copy.deepcopy(member.model)
        scaled.scale_network(weight)
        plain[weight] = heldout_figures(scaled, data, member.heldout)[1]
        if refit:
            solve_wide(scaled, data, member.rows, precisions)
        losses_at[weight] = heldout_figures(scaled, data, member.heldout)[1]
    if refit:
        assert all(abs(losses_at[w] - plain[w]) > 1e-6 for w in NETWORK_WEIGHTS), "the wide part was solved again"
    chosen = shrink_network(member, data, 0, precisions)
    assert losses_at[chosen] == min(losses_at.values())
    assert heldout_figures(member.model, data, member.heldout)[1] == pytest.approx(losses_at[chosen], abs=1e-7)


def test_an_ensemble_trains_with_nothing_held_out():
    data = encode(_rows(12))
    result = train(data, ModelConfig(dim=8, hidden=8), TrainConfig(epochs=1, holdout=0.0, reward_models=2, rl_epochs=1, k=2))
    assert isinstance(result.model, RewardEnsemble)
    # each member's epoch 0 is its wide part alone, fitted exactly (under the priors they choose together, so
    # every member's comes before the first network epoch)
    assert [(r.stage, r.member, r.epoch) for r in result.history] == [
        ("reward", 0, 0), ("reward", 1, 0), ("reward", 0, 1), ("reward", 1, 1), ("generator", 0, 0), ("generator", 0, 1)]
    assert all(np.isfinite(r.heldout_logloss) for r in result.history), "judged on the training rows"
    assert [r.heldout_generator_reward is None for r in result.history] == [True] * 4 + [False] * 2
    assert result.summary()["epochs"] == 3, "the epochs 0 are judgements, not trained epochs"


@pytest.fixture(scope="module")
def trained(train_world):
    logs = encode(read_rows(train_world / "logs.jsonl", "logs"))
    result = train(logs, ModelConfig(), TrainConfig(epochs=3, seed=0, batch_size=256, reward_models=2))
    return logs, result


def test_trained_model_beats_random(train_world, trained):
    logs, result = trained
    requests = load_requests(train_world / "requests.jsonl")
    assert isinstance(result.model, RewardEnsemble) and len(result.model.members) == 2
    assert {r.member for r in result.history if r.stage == "reward"} == {0, 1}
    chosen = choose(result.model, encode(requests, logs.schema), greedy=True)
    figures = Evaluator(World.load(train_world), requests).score(chosen.selections)
    assert figures["ctr"] > figures["random_ctr"] * 1.1
    assert figures["frac_of_oracle_lift"] > 0.15
    assert 0.5 < result.best.heldout_auc < 1.0


def test_element_attribution_tracks_the_truth_once_trained(train_world, trained, tmp_path):
    """The trained reward models rank each component's candidates like the world does; an untrained one does not."""
    logs, result = trained
    requests = load_requests(train_world / "requests.jsonl")
    data, evaluator = encode(requests, logs.schema), Evaluator(World.load(train_world), requests)
    learned = element_attribution(result.model, data, evaluator)
    torch.manual_seed(0)
    untrained = element_attribution(RewardEnsemble.untrained(logs.schema, ModelConfig(), 2), data, evaluator)
    assert [r.component for r in learned] == [r.component for r in untrained] != []
    assert all(r.requests > 0 and len(r.truth) == r.requests for r in learned)
    trained_figures, untrained_figures = attribution_summary(learned), attribution_summary(untrained)
    # a small world and two epochs: the trained figures are modest (0.18 and 0.23 here), the untrained ones nil
    assert trained_figures["attribution_corr"] > 0.12 > 0.08 > abs(untrained_figures["attribution_corr"])
    assert trained_figures["attribution_captured"] > untrained_figures["attribution_captured"] + 0.12
    attribution_plot(learned, tmp_path / "attribution.png")
    assert (tmp_path / "attribution.png").stat().st_size > 1000


def test_save_load_round_trip_gives_identical_selections(train_world, trained, tmp_path):
    logs, result = trained
    save_trained(result, tmp_path / "model", TrainConfig())
    loaded, meta = load_model(tmp_path / "model")
    assert meta["schema"]["components"] == logs.schema.components
    assert (tmp_path / "model" / "training_curve.png").stat().st_size > 1000
    requests = encode(load_requests(train_world / "requests.jsonl"), logs.schema)
    for greedy in (True, False):
        a = choose(result.model, requests, greedy=greedy, seed=5)
        b = choose(loaded, requests, greedy=greedy, seed=5)
        assert a.selections == b.selections
        assert np.allclose(a.score, b.score) and np.allclose(a.propensity, b.propensity)


def test_bad_model_folders_are_clear_errors(train_world, trained, tmp_path):
    logs, result = trained
    save_trained(result, tmp_path / "good", TrainConfig())
    requests = train_world / "requests.jsonl"
    cases = {}
    cases["missing"] = tmp_path / "nope"
    (tmp_path / "empty").mkdir()
    cases["empty"] = tmp_path / "empty"
    broken = tmp_path / "broken-json"
    broken.mkdir()
    (broken / "genco.json").write_text("{not json")
    cases["broken-json"] = broken
    no_weights = tmp_path / "no-weights"
    no_weights.mkdir()
    (no_weights / "genco.json").write_text((tmp_path / "good" / "genco.json").read_text())
    cases["no-weights"] = no_weights
    bad_weights = tmp_path / "bad-weights"
    bad_weights.mkdir()
    (bad_weights / "genco.json").write_text((tmp_path / "good" / "genco.json").read_text())
    (bad_weights / "model.safetensors").write_bytes(b"\x00" * 100)
    cases["bad-weights"] = bad_weights
    weights = load_file(str(tmp_path / "good" / "model.safetensors"))

    def described(name: str, edit) -> Path:
        """The good weights under a description edited by `edit`, in the weights file's header as genco writes it."""
        folder = tmp_path / name
        folder.mkdir()
        meta = json.loads((tmp_path / "good" / "genco.json").read_text())
        edit(meta)
        save_file(weights, str(folder / "model.safetensors"), metadata={"genco": json.dumps(meta)})
        return folder

    cases["mismatch"] = described("mismatch", lambda meta: meta["model_config"].update(dim=16))
    cases["future"] = described("future", lambda meta: meta.update(version=99))
    for members in (1, 3):  # the weights hold 2 reward models
        cases[f"{members}-members"] = described(f"{members}-members", lambda meta: meta["ensemble"].update(members=members))
    for name, folder in cases.items():
        with pytest.raises(GencoInputError):
            load_model(folder)
        result_cli = run_genco("select", "--model", folder, "--requests", requests, "--out", tmp_path / "s.jsonl")
        assert result_cli.returncode == 2, name
        assert str(folder) in result_cli.stderr and "Traceback" not in result_cli.stderr, name
    assert not (tmp_path / "s.jsonl").exists()


@pytest.mark.parametrize("version", [2, 3, 4])
def test_folders_of_earlier_versions_still_load(trained, tmp_path, version):
    """Before version 3 the description lived in genco.json alone; before version 4 models had neither feature
    nor pair effects (and no buffer for them); before version 5, no user x element-id effects."""
    logs, _ = trained
    config = ModelConfig(feature_effects=False, pair_effects=False, user_id_effects=False)
    result = train(logs, config, TrainConfig(epochs=1, seed=0, rl=False, reward_models=2))
    save_trained(result, tmp_path / "new", TrainConfig())
    old = tmp_path / "old"
    old.mkdir()
    weights = {k: v for k, v in load_file(str(tmp_path / "new" / "model.safetensors")).items()
               if version >= 4 or not k.endswith("feature_effect")}
    meta = json.loads((tmp_path / "new" / "genco.json").read_text())
    for key in ("user_id_effects",) + (("feature_effects", "pair_effects") if version < 4 else ()):
        del meta["model_config"][key]
    meta["version"] = version
    save_file(weights, str(old / "model.safetensors"), metadata={"genco": json.dumps(meta)} if version >= 3 else None)
    (old / "genco.json").write_text(json.dumps(meta))
    model, loaded = load_model(old)
    assert loaded["version"] == version and loaded["model_version"].startswith("old@")
    assert not model.config.feature_effects and not model.config.pair_effects and not model.config.user_id_effects
    for name, value in load_model(tmp_path / "new")[0].state_dict().items():
        assert torch.equal(model.state_dict()[name], value), name


def test_best_of_k_credit_goes_to_the_best_sample_only():
    reward = torch.tensor([[1.0, 3.0, 2.0], [5.0, 0.0, 5.0]])
    advantage = best_of_k_advantage(reward)
    assert torch.equal(advantage, torch.tensor([[0.0, 1.0, 0.0], [0.0, 0.0, 0.0]]))  # drawn twice: nothing to add


def test_best_of_k_policy_gradient_is_unbiased_for_the_expected_maximum():
    """On one categorical pi: the Monte Carlo policy gradient matches the exact gradient of E[max of K draws]."""
    reward, k, draws = torch.tensor([0.3, -1.0, 2.0, 1.2]), 3, 200_000
    logits = torch.tensor([0.5, 1.0, -0.5, 0.0], requires_grad=True)
    p = torch.softmax(logits, 0)
    order = reward.argsort()  # E[max] = sum_i r_(i) (F_i^K - F_(i-1)^K), F the cumulative pi in reward order
    cdf = p[order].cumsum(0)
    expected_max = (reward[order] * (cdf**k - torch.cat([cdf.new_zeros(1), cdf[:-1]]) ** k)).sum()
    (exact,) = torch.autograd.grad(expected_max, logits)
    p = p.detach()
    picks = torch.multinomial(p, draws * k, replacement=True, generator=torch.Generator().manual_seed(0)).view(draws, k)
    advantage = best_of_k_advantage(reward[picks])  # (draws, K)
    score = torch.nn.functional.one_hot(picks, 4).float() - p  # grad of log pi(pick) over the logits
    estimate = (advantage[..., None] * score).sum(1).mean(0)
    assert torch.allclose(estimate, exact, atol=0.01), (estimate, exact)
    assert exact.abs().max() > 0.1


@pytest.mark.parametrize("user_dim, expected", [(0, False), (4, True), (64, True), (65, False)])
def test_user_id_weights_exist_only_for_a_user_vector_small_enough_to_feed_them(user_dim, expected):
    schema = FeatureSchema(["badge", "cta"], user_dim, 0, {"badge": 0, "cta": 0}, id_buckets=64)
    assert (GenCO(schema).user_id_effect is not None) == expected
    assert GenCO(schema, ModelConfig(user_id_effects=False)).user_id_effect is None
