"""`genco serve`'s own settings, apart from the server so that the command line reads them without importing it."""

from __future__ import annotations

from dataclasses import dataclass

from genco.options import OptionError, bounded, check_options


RUNTIMES = ("auto", "torch", "onnx")  # what runs greedy best-of-k and argmax answers (genco.lean.greedy_program)


@dataclass(frozen=True)
class ServeConfig:
    host: str = "127.0.0.1"
    port: int = bounded(8000, ge=0, le=65535)  # 0: any free port
    batch_window_ms: float = bounded(0.0, ge=0, le=1000)  # how long a batch waits for more calls once one is queued (0: what waits)
    max_batch: int = bounded(256, ge=1, le=1 << 16)  # requests one batch gathers at most (one call may hold more)
    reload_seconds: float = bounded(1.0, ge=0, le=3600)  # how often the model folder is checked for a new model (0: never)
    threads: int = bounded(0, ge=0, le=1024)  # torch threads for the forward passes (0: torch's default, the cores)
    workers: int = bounded(1, ge=1, le=64)  # server processes sharing the socket
    log_decisions: str | None = None  # a folder: every served decision as a log row without its click
    rotate_rows: int = bounded(100_000, ge=1, le=1 << 30)  # decision rows per file at most
    rotate_seconds: float = bounded(60.0, gt=0, le=86_400)  # a decision file is published at this age at most
    runtime: str = "auto"  # one of RUNTIMES: ONNX Runtime where installed (faster at batch 1, README *Serving*)

    def __post_init__(self) -> None:
        check_options(self)
        if self.runtime not in RUNTIMES:
            raise OptionError("runtime", " or ".join(repr(r) for r in RUNTIMES), self.runtime)
