"""Property-based: the command line with random option values (issue 12). Whatever the values (negative, zero,
huge, NaN, infinite, not a number), every command exits 0 or 2 and never prints a traceback.

The commands run in-process (`genco.cli.main`), on tiny inputs, so that a hundred runs take a minute. Values
are drawn from edge cases and from small valid ones (a valid `--impressions 100000000` would run for real).
`genco serve` binds its port and then returns instead of serving; `genco demo` is left out (its only numeric
option, --seed, has the range every seed has, tested in test_cli_edges)."""

from __future__ import annotations

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from genco import cli
from tests.conftest import read_jsonl, write_jsonl

INTS = ["-1", "0", "1", "3", str(10**12), str(2**70), "1.5", "nan", "x", ""]  # edges of every integer option
FLOATS = ["-1", "0", "0.5", "1", "1.5", "nan", "inf", "-inf", "1e999", "x"]  # and of every float option

# command -> (arguments every run gets, {flag: small valid values}); each flag also draws from the edges above
COMMANDS = {
    "simulate": (["--ads", "3", "--impressions", "20", "--requests", "3"],
                 {"--seed": ["0", "7"], "--ads": ["1", "2"], "--impressions": ["0", "1", "5"], "--requests": ["0", "1"],
                  "--interaction": ["0", "3"], "--max-candidates": ["2", "3"], "--cold-share": ["0", "0.5"]}),
    "train": (["--epochs", "1", "--reward-models", "1"],
              {"--epochs": ["1", "2"], "--seed": ["0", "5"], "--batch-size": ["1", "16", "4096"], "--lr": ["0.001", "0.05", "5"],
               "--k": ["2", "3"], "--rl-epochs": ["0", "1"], "--reward-models": ["1", "2"], "--rl-weight": ["0", "1"],
               "--holdout": ["0", "0.5", "0.9"], "--dim": ["2", "8"], "--context-dim": ["1", "3"], "--max-candidates": ["9", "100"],
               "--id-shrinkage": ["0", "3"], "--combination-shrinkage": ["0", "1000"]}),
    "select": ([], {"--k": ["0", "1", "5"], "--refine-passes": ["0", "1"], "--refine-starts": ["1", "3"],
                    "--epsilon": ["0", "0.5", "1"], "--seed": ["0", "9"], "--max-candidates": ["100"],
                    "--enumerate-up-to": ["0", "1", "4096"]}),
    "validate": ([], {"--max-candidates": ["1", "9", "100"]}),
    # serve with torch: an ONNX session per example costs seconds (tests/test_lean.py covers that runtime)
    "serve": (["--runtime", "torch"], {"--port": ["0"], "--max-requests": ["1", "10"], "--max-body-bytes": ["1024", "100000"],
                   "--max-candidates": ["10"], "--k": ["0", "4"], "--epsilon": ["0.1"], "--refine-starts": ["1"]}),
    "bench": (["--quick", "--policies", "random,counting", "--scenarios", "offline"],
              {"--seeds": ["1", "2"], "--impressions": ["1", "3", "50"]}),
}
FLOAT_FLAGS = {"--interaction", "--cold-share", "--lr", "--rl-weight", "--holdout", "--epsilon", "--id-shrinkage",
               "--combination-shrinkage"}


@pytest.fixture(scope="module")
def inputs(tiny_world, tiny_model, tmp_path_factory):
    folder = tmp_path_factory.mktemp("options")
    logs = write_jsonl(folder / "logs.jsonl", read_jsonl(tiny_world / "logs.jsonl")[:80])
    requests = write_jsonl(folder / "requests.jsonl", read_jsonl(tiny_world / "requests.jsonl")[:20])
    return {"folder": folder, "logs": logs, "requests": requests, "model": tiny_model}


def _arguments(command: str, inputs: dict) -> list[str]:
    out = inputs["folder"]
    return {
        "simulate": ["--out", str(out / "world")],
        "train": ["--logs", str(inputs["logs"]), "--out", str(out / "model")],
        "select": ["--model", str(inputs["model"]), "--requests", str(inputs["requests"]), "--out", str(out / "s.jsonl")],
        "validate": [str(inputs["logs"])],
        "serve": ["--model", str(inputs["model"])],
        "bench": ["--out", str(out / "bench")],
    }[command]


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_random_option_values_exit_0_or_2(inputs, capsys, monkeypatch, data):
    import uvicorn

    monkeypatch.setattr(uvicorn.Server, "run", lambda self, sockets=None: [s.close() for s in sockets or []])
    command = data.draw(st.sampled_from(sorted(COMMANDS)))
    fixed, options = COMMANDS[command]
    chosen = data.draw(st.lists(st.sampled_from(sorted(options)), min_size=1, max_size=min(3, len(options)), unique=True))
    quiet = [] if command in ("validate", "serve") else ["--quiet"]  # the two without progress to silence
    argv = [command, *_arguments(command, inputs), *fixed, *quiet]
    for flag in chosen:
        edges = FLOATS if flag in FLOAT_FLAGS else INTS
        argv += [flag, data.draw(st.sampled_from(options[flag]) | st.sampled_from(edges))]
    if command == "select":
        argv.append(data.draw(st.sampled_from(["--greedy", "--explore"])))
    with pytest.raises(SystemExit) as exit_:
        cli.main(argv)
    output = capsys.readouterr()
    status = exit_.value.code or 0
    assert status in (0, 2), (argv, status, output.err[-2000:])
    assert "Traceback" not in output.err and "internal error" not in output.err, (argv, output.err[-2000:])
    if status == 2:
        assert output.err.strip(), f"{argv}: exit 2 says why"
