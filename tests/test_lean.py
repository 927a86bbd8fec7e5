"""The lean greedy program (genco.lean) and its ONNX export give the full model's answers, on every layout the
contract allows and every model option: `user: []`, `features: []`, one candidate, components missing in some
rows, pools small enough to enumerate, the ensemble, and the ablation switches."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from genco.checkpoint import load_model
from genco.contract import LogRow, Request
from genco.data import collate, encode
from genco.ensemble import RewardEnsemble
from genco.export import OnnxGreedy, onnx_program
from genco.files import load_requests
from genco.lean import LeanGreedy, every_combination, greedy_program, grid_inputs, subnormals_flushed
from genco.model import GenCO, ModelConfig
from genco.select import SelectConfig, choose
from tests.test_files import log_rows

OPTIONS = [{}, {"attention": False}, {"cross_component": False}, {"context_attention": True}, {"id_vectors": False},
           {"element_ids": False, "ad_ids": False}, {"combination_effects": False},
           {"feature_effects": False, "pair_effects": False}]


def randomised(model: GenCO | RewardEnsemble, seed: int) -> GenCO | RewardEnsemble:
    """Every weight drawn at random (a fresh model's zero-initialised parts would hide a wrong lean term), the
    wide part's feature and pair effects too, and id and combination counts spread, so that shrinkage is neither 0 nor 1."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for parameter in model.parameters():
            parameter.copy_(0.5 * torch.randn(parameter.shape, generator=generator))
        for name, buffer in model.named_buffers():
            if name.endswith("counts"):
                buffer.copy_(torch.randint(0, 40, buffer.shape, generator=generator).float())
            if name.endswith(("feature_effect", "pair_effect")):  # what the exact fit sets
                buffer.copy_(0.5 * torch.randn(buffer.shape, generator=generator))
    return model.eval()


def model_for(schema, options: dict, members: int, seed: int) -> GenCO | RewardEnsemble:
    config = ModelConfig(dim=8, heads=2, hidden=8, context_dim=4, **options)
    model = GenCO(schema, config) if members == 1 else RewardEnsemble([GenCO(schema, config) for _ in range(members)])
    return randomised(model, seed)


def assert_same_answers(model, data, program, config: SelectConfig) -> None:
    full = choose(model, data, greedy=True, config=config)
    lean = choose(model, data, greedy=True, config=config, program=program)
    assert lean.selections == full.selections
    np.testing.assert_array_equal(lean.positions, full.positions)
    np.testing.assert_allclose(lean.score, full.score, rtol=1e-4, atol=1e-6)
    assert (lean.propensity == 1).all()


def bounded(rows: list[dict]) -> list[dict]:
    """The rows with features squashed into (-1, 1): random weights on 1e6-sized features give logits of 1e6,
    where float32 rounds whole candidates into ties that two orders of summation break differently."""
    for row in rows:
        for field in ("user", "ad"):
            if row.get(field) is not None:
                row[field] = [math.tanh(v) for v in row[field]]
        for candidates in row["components"].values():
            for element in candidates:
                element["features"] = [math.tanh(v) for v in element["features"]]
    return rows


@settings(max_examples=30, deadline=None)
@given(rows=log_rows(n_rows=st.integers(1, 6)), option=st.sampled_from(OPTIONS), members=st.sampled_from([1, 2]),
       mode=st.sampled_from(["best-of-k", "argmax"]), enumerate_up_to=st.sampled_from([0, 256]), seed=st.integers(0, 3))
def test_lean_gives_the_full_models_answers(rows, option, members, mode, enumerate_up_to, seed):
    data = encode([LogRow.model_validate(r) for r in bounded(rows)], id_buckets=97, ad_buckets=13)
    model = model_for(data.schema, option, members, seed)
    config = SelectConfig(mode=mode, k=5, enumerate_up_to=enumerate_up_to, batch_size=4)
    assert_same_answers(model, data, LeanGreedy(model), config)


def test_search_and_variants_keep_the_full_model():
    data = encode([LogRow.model_validate(r) for r in bounded([{"request_id": "r", "ad_id": "a", "user": [],
                   "components": {"t": [{"id": "x", "features": []}]}, "shown": {"t": "x"}, "click": 0}])])
    model = model_for(data.schema, {}, 1, 0)
    assert greedy_program(model, "search") is None
    assert isinstance(greedy_program(model, "best-of-k"), LeanGreedy)


def test_every_combination_of_small_pools_only():
    pools = np.array([[2, 0, 3], [4, 4, 4], [1, 1, 1]])  # 6, 64 and 1 combinations
    every = every_combination(pools, up_to=10)
    assert every.shape == (3, 6, 3)
    assert {tuple(c) for c in every[0]} == {(i, -1, j) for i in range(2) for j in range(3)}
    assert (every[1] == -2).all(), "a row of more combinations than the limit gets none"
    assert every[2, 0].tolist() == [0, 0, 0] and (every[2, 1:] == -2).all()
    assert every_combination(pools, up_to=0).shape == (3, 0, 3)


def edge_requests(n: int, seed: int) -> list[Request]:
    """Requests of one data set that hold every edge: user [], a component without features, one candidate,
    a component missing from some rows, pools from 1 to 9 (some small enough to enumerate)."""
    rng = np.random.default_rng(seed)
    rows = []
    for r in range(n):
        components = {"badge": [{"id": f"b{j}", "features": []} for j in range(rng.integers(1, 4))],
                      "title": [{"id": f"t{j}", "features": rng.uniform(-1, 1, 3).tolist()} for j in range(rng.integers(1, 10))]}
        if rng.random() < 0.7:
            components["image"] = [{"id": f"i{j}", "features": rng.uniform(-1, 1, 2).tolist()} for j in range(rng.integers(1, 8))]
        rows.append(Request.model_validate({"request_id": f"r{r}", "ad_id": f"a{r % 5}", "user": [], "components": components}))
    return rows


@pytest.fixture(scope="module")
def edge_model_and_onnx():
    data = encode(edge_requests(200, seed=0))
    model = model_for(data.schema, {"context_attention": True}, 3, seed=1)
    return model, data, onnx_program(LeanGreedy(model), threads=1)


@pytest.mark.parametrize("mode", ["best-of-k", "argmax"])
def test_onnx_export_gives_the_same_answers(edge_model_and_onnx, mode):
    model, data, onnx = edge_model_and_onnx
    assert_same_answers(model, data, onnx, SelectConfig(mode=mode, k=16, batch_size=64))


def test_a_reload_swaps_weights_into_the_exported_graph(edge_model_and_onnx):
    """A retrained model of the same layout reuses the graph (no second export) and answers as itself."""
    model, data, onnx = edge_model_and_onnx
    retrained = model_for(data.schema, {"context_attention": True}, 3, seed=2)
    reloaded = onnx_program(LeanGreedy(retrained), threads=1, previous=onnx)
    assert reloaded.signature == onnx.signature and reloaded.onnx_model != onnx.onnx_model
    config = SelectConfig(k=16, batch_size=64)
    assert_same_answers(retrained, data, reloaded, config)
    assert choose(retrained, data, greedy=True, config=config).selections != choose(model, data, greedy=True, config=config).selections


def test_exported_file_serves_select(genco_here, tiny_model, tiny_world, tmp_path):
    """`genco export --onnx` writes a file ONNX Runtime runs; `genco select --runtime onnx` gives `--runtime torch`'s
    selections."""
    onnx_file = tmp_path / "model.onnx"
    assert genco_here("export", "--model", str(tiny_model), "--onnx", str(onnx_file), "-q").returncode == 0
    model, _ = load_model(tiny_model)
    data = encode(load_requests(tiny_world / "requests.jsonl")[:128], model.schema)
    assert_same_answers(model, data, OnnxGreedy(onnx_file), SelectConfig(k=16))


def test_exported_graphs_are_cached_by_layout(edge_model_and_onnx, tmp_path, monkeypatch):
    """A second model of the same layout is served from the cached graph with its own weights (no export);
    a damaged cache file is exported again, never an error. (The export itself is the fixture's, counted.)"""
    import genco.export

    model, data, onnx = edge_model_and_onnx
    monkeypatch.setenv("GENCO_CACHE", str(tmp_path))
    exports = []
    monkeypatch.setattr(genco.export, "export_onnx", lambda lean: exports.append(lean) or onnx.onnx_model)
    onnx_program(LeanGreedy(model), threads=1)
    cached = list(tmp_path.glob("lean-*.onnx"))
    assert len(exports) == 1 and len(cached) == 1
    retrained = model_for(data.schema, {"context_attention": True}, 3, seed=2)
    assert_same_answers(retrained, data, onnx_program(LeanGreedy(retrained), threads=1), SelectConfig(k=16, batch_size=64))
    assert len(exports) == 1, "the cached graph served the retrained model"
    cached[0].write_bytes(b"not a graph")
    assert_same_answers(model, data, onnx_program(LeanGreedy(model), threads=1), SelectConfig(k=16, batch_size=64))
    fresh = genco.export.optimized(onnx.onnx_model)  # what the cache holds: the export, optimized
    assert len(exports) == 2 and cached[0].read_bytes() == fresh, "the damaged file is replaced by a fresh export"


def test_programs_flush_subnormals_only_while_they_run(edge_model_and_onnx):
    """The programs compute with subnormal floats flushed to zero (fast attention softmaxes), a mode of the
    thread: once they return, and once a session is built, the caller's arithmetic has its subnormals back."""
    model, data, onnx = edge_model_and_onnx
    tiny = np.array([1e-45], dtype=np.float32)
    inputs = grid_inputs(collate(data, np.arange(4), grid=True), 4)
    with subnormals_flushed():
        assert (tiny * np.float32(1.0))[0] == 0
    for program in (OnnxGreedy(onnx.onnx_model, threads=1), onnx, LeanGreedy(model)):
        program.answer(inputs)
        assert (tiny * np.float32(1.0))[0] > 0
