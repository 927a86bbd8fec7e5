"""ONNX export of the lean greedy program (genco.lean), and an ONNX Runtime runner for serving.

`genco export --onnx` writes one self-contained .onnx file: an ad server in any language feeds it the grid
inputs (genco.lean: user and ad features, element buckets, mask, request-keyed noise, element features)
and reads the chosen positions and the click logit. The batch, the sample count K and the pool width N are
dynamic axes; K = 0 is the argmax mode. `genco serve --runtime onnx` runs the same file in-process.
"""

from __future__ import annotations

import contextlib
import hashlib
import importlib.util
import inspect
import io
import json
import logging
import os
import warnings
from pathlib import Path

import numpy as np
import torch

from genco.ensemble import RewardEnsemble
from genco.errors import GencoInputError
from genco.lean import LeanGreedy, subnormals_flushed
from genco.model import GenCO

OPSET = 18


def _example(lean: LeanGreedy) -> tuple[tuple[torch.Tensor, ...], tuple[dict, ...]]:
    """Example inputs (in input_names order) and their dynamic axes. Sizes differ from each other and from M,
    so that the exporter cannot mistake one axis for another (and none is 0 or 1, which it would specialise)."""
    schema, M = lean.schema, lean.components
    N = M + 2
    B, K, X = N + 1, N + 2, N + 3
    batch, width = torch.export.Dim("batch"), torch.export.Dim("width")
    samples, extra = torch.export.Dim("samples", min=0), torch.export.Dim("extra", min=0)
    examples = {"user": (torch.rand(B, schema.user_dim), {0: batch}), "ad": (torch.rand(B, schema.ad_dim), {0: batch}),
                "ad_bucket": (torch.zeros(B, dtype=torch.long), {0: batch}),
                "element_bucket": (torch.zeros(B, M, N, dtype=torch.long), {0: batch, 2: width}),
                "mask": (torch.ones(B, M, N, dtype=torch.bool), {0: batch, 2: width}),
                "noise": (torch.rand(B, K, M, N).clamp(0.01, 0.99), {0: batch, 1: samples, 3: width}),
                "extra": (torch.full((B, X, M), -2, dtype=torch.long), {0: batch, 1: extra}),
                "features": (torch.rand(B, M, N, lean.feature_width), {0: batch, 2: width})}
    names = lean.input_names()
    return tuple(examples[n][0] for n in names), tuple(examples[n][1] for n in names)


def _require(module: str) -> None:
    try:
        __import__(module)
    except ImportError:
        raise GencoInputError(f"ONNX needs the package {module!r}: pip install 'genco[onnx]'") from None


def export_onnx(model: GenCO | RewardEnsemble | LeanGreedy) -> bytes:
    """The lean greedy program of `model` as an ONNX model (bytes), unoptimised: every weight an initializer
    named as in the LeanGreedy's state_dict, so that `reweighted` can swap another model's weights in; run
    `optimized` on it before serving it. Takes seconds (torch.export)."""
    _require("onnxscript")
    lean = model if isinstance(model, LeanGreedy) else LeanGreedy(model)
    lean.eval()
    args, axes = _example(lean)
    out = io.BytesIO()
    with _quiet_exporter():
        program = torch.onnx.export(lean, args, dynamo=True, input_names=lean.input_names(), output_names=["positions", "logit"],
                                    dynamic_shapes={"tensors": axes}, opset_version=OPSET, verbose=False,
                                    optimize=False)  # unfolded, every weight keeps its name: see reweighted
        program.save(out)
    return out.getvalue()


@contextlib.contextmanager
def _quiet_exporter():
    """torch.onnx prints its progress, warnings and torchvision notices; a CLI user wants none of it."""
    loggers = [logging.getLogger(name) for name in ("torch.onnx", "torch.export", "torch._dynamo", "torch")]
    levels = [logger.level for logger in loggers]
    for logger in loggers:
        logger.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
            warnings.simplefilter("ignore")
            yield
    finally:
        for logger, level in zip(loggers, levels):
            logger.setLevel(level)


def signature(lean: LeanGreedy) -> str:
    """What fixes the exported graph: the model options, the data layout and the ensemble's size."""
    return json.dumps([lean.config.to_dict(), lean.schema.to_dict(), len(lean.ad_embedding)], sort_keys=True)


def reweighted(onnx_model: bytes, lean: LeanGreedy) -> bytes:
    """The program of a model of the same signature (exported, or exported and optimized) with `lean`'s weights
    instead: what a reload of a retrained model needs, in about a tenth of a second where an export takes
    10-25 s and the optimizer a second. Both keep every weight as an initializer named as in
    lean.state_dict()."""
    _require("onnx")
    import onnx
    from onnx import numpy_helper

    graph = onnx.load_from_string(onnx_model)
    state = lean.state_dict()
    for initializer in graph.graph.initializer:
        if initializer.name in state:
            initializer.CopyFrom(numpy_helper.from_array(state[initializer.name].numpy(), initializer.name))
    return graph.SerializeToString()


def optimized(onnx_model: bytes) -> bytes:
    """The exported graph with its shape arithmetic simplified and the constants that do not depend on the
    weights folded (onnxscript's optimizer, about a second), every weight kept as it is, by name, so that
    `reweighted` applies to the result: a reload swaps weights in and runs no optimizer (a second of Python,
    which in a serving process holds the interpreter lock that every call in flight waits for). ONNX Runtime
    folds what derives from the weights (transposed and reshaped copies) when it loads the graph. Unoptimised,
    the graph ran 1.7x as long at batch 256 (ONNX Runtime did not fold through the shape arithmetic), at batch
    1 about 5% longer; optimised this way, as fast as with the weights folded too (within 3%)."""
    _require("onnxscript")
    import onnx
    import onnxscript.optimizer
    from onnx import helper

    model = onnx.load_from_string(onnx_model)
    graph = model.graph
    weights = {w.name: w for w in graph.initializer}
    del graph.initializer[:]
    graph.input.extend(helper.make_tensor_value_info(w.name, w.data_type, list(w.dims)) for w in weights.values())  # not foldable
    with _quiet_exporter():
        model = onnxscript.optimizer.optimize(model)
    graph = model.graph
    inputs = [i for i in graph.input if i.name not in weights]
    kept = [weights[i.name] for i in graph.input if i.name in weights]
    del graph.input[:]
    graph.input.extend(inputs)
    graph.initializer.extend(kept)
    return model.SerializeToString()


def onnx_available() -> bool:
    """Whether the [onnx] extra is installed: what `--runtime auto` serves with ONNX Runtime on."""
    return all(importlib.util.find_spec(name) is not None for name in ("onnx", "onnxscript", "onnxruntime"))


def cache_folder() -> Path:
    """Where exported graphs are kept between runs: $GENCO_CACHE, else $XDG_CACHE_HOME/genco, else ~/.cache/genco."""
    if os.environ.get("GENCO_CACHE"):
        return Path(os.environ["GENCO_CACHE"])
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "genco"


def cached_export(lean: LeanGreedy) -> bytes:
    """optimized(export_onnx(lean)), from a graph exported and optimized earlier for the same signature (and
    program and export code, torch and genco versions) with `lean`'s weights swapped in where the cache has
    one: a server starts in a fraction of a second instead of the export's 10-25 s. The cache only saves time:
    a file that cannot be read or written is exported again."""
    from genco import __version__
    from genco.files import atomic_write_bytes

    key = hashlib.sha256(json.dumps([signature(lean), [[name, list(value.shape)] for name, value in lean.state_dict().items()],
                                     torch.__version__, __version__]).encode())
    for code in (LeanGreedy, optimized):  # the code that was traced and optimized, not only its weights
        key.update(Path(inspect.getsourcefile(code)).read_bytes())
    path = cache_folder() / f"lean-{key.hexdigest()[:32]}.onnx"
    if path.is_file():
        try:
            return reweighted(path.read_bytes(), lean)
        except Exception:  # a damaged or foreign file: export again, below  # noqa: BLE001
            pass
    exported = optimized(export_onnx(lean))
    with contextlib.suppress(OSError):
        atomic_write_bytes(path, exported)
    return exported


def onnx_program(lean: LeanGreedy, threads: int = 0, previous: object = None) -> OnnxGreedy:
    """`lean` run by ONNX Runtime: `previous`'s graph with these weights where it is an OnnxGreedy of the same
    signature (a reload: no export, no optimizer), else the cached or a fresh export."""
    key = signature(lean)
    if isinstance(previous, OnnxGreedy) and previous.signature == key:
        return OnnxGreedy(reweighted(previous.onnx_model, lean), threads, key)
    return OnnxGreedy(cached_export(lean), threads, key)


class OnnxGreedy:
    """The exported program run by ONNX Runtime: answer(grid_inputs(...)) -> positions (B, M), logit (B,).
    `onnx_model` is an optimized export (genco.export.optimized, as `genco export` writes it), kept for a later
    reweighting."""

    def __init__(self, onnx_model: bytes | str | Path, threads: int = 0, signature: str | None = None):
        _require("onnxruntime")
        import onnxruntime

        options = onnxruntime.SessionOptions()
        options.intra_op_num_threads, options.inter_op_num_threads = threads, 1  # 0: ONNX Runtime's default
        options.log_severity_level = 3
        # subnormal floats flushed to zero in ONNX Runtime's own threads (genco.lean.subnormals_flushed says
        # why); the session sets the mode on the thread that builds it too, which is undone
        options.add_session_config_entry("session.set_denormal_as_zero", "1")
        self.onnx_model = onnx_model if isinstance(onnx_model, bytes) else Path(onnx_model).read_bytes()
        self.signature = signature
        with subnormals_flushed():
            self.session = onnxruntime.InferenceSession(self.onnx_model, options, providers=["CPUExecutionProvider"])
        self.inputs = [i.name for i in self.session.get_inputs()]  # the exporter may drop an input the program ignores

    def answer(self, arrays: dict[str, np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
        with subnormals_flushed():
            positions, logit = self.session.run(None, {name: arrays[name] for name in self.inputs})
        return positions, logit
