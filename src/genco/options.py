"""The range of every numeric option, declared once, on the config dataclass that holds it.

The command line, the server and the Python API all build the same dataclasses (ModelConfig, TrainConfig,
SelectConfig, WorldConfig, Limits, ...), so a value out of range is refused by the same rule, in the same
words, wherever it comes from:

    @dataclass
    class TrainConfig:
        epochs: int = bounded(30, ge=1, le=10_000)

        def __post_init__(self) -> None:
            check_options(self)

NaN and infinities are refused wherever a range is declared; an int field refuses floats (and bools).
The command line names the flag (`--epochs`), the Python API the field (`epochs`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, fields
from typing import Any

from genco.errors import GencoInputError

#: Seeds go to numpy (non-negative only) and torch (below 2**64): one range for both.
SEED_MAX = 2**63 - 1

#: The most combinations a request may sample (greedy K, training K): past a thousand, more samples find
#: nothing the coordinate ascent would not, and memory grows with K.
MAX_K = 1024


@dataclass(frozen=True)
class Range:
    """low <= value <= high (or < where open); None: unbounded on that side."""

    low: float | None = None
    high: float | None = None
    low_open: bool = False
    high_open: bool = False

    def describe(self) -> str:
        def number(x: float) -> str:
            return str(x) if isinstance(x, int) else f"{x:g}"

        parts = []
        if self.low is not None:
            parts.append(f"{'>' if self.low_open else '>='} {number(self.low)}")
        if self.high is not None:
            parts.append(f"{'<' if self.high_open else '<='} {number(self.high)}")
        return " and ".join(parts) if parts else "a finite number"

    def admits(self, value: float) -> bool:
        if not math.isfinite(value):
            return False
        if self.low is not None and (value <= self.low if self.low_open else value < self.low):
            return False
        if self.high is not None and (value >= self.high if self.high_open else value > self.high):
            return False
        return True


def bounded(default: Any, *, ge: float | None = None, gt: float | None = None, le: float | None = None,
            lt: float | None = None) -> Any:
    """A dataclass field with a default and a range that `check_options` enforces."""
    low, high = (gt if gt is not None else ge), (lt if lt is not None else le)
    return field(default=default, metadata={"range": Range(low, high, gt is not None, lt is not None)})


def seed_field(default: int = 0) -> Any:
    return bounded(default, ge=0, le=SEED_MAX)


class OptionError(GencoInputError, ValueError):
    """An option's value is out of its range (or of the wrong type): exit status 2 on the command line."""

    def __init__(self, option: str, requirement: str, value: Any):
        self.option, self.requirement, self.value = option, requirement, value
        super().__init__(f"{option} must be {requirement}, got {value!r}")

    @property
    def flag(self) -> str:
        """The command-line flag of the option: field `rl_weight` is flag `--rl-weight`."""
        return "--" + self.option.replace("_", "-")

    def for_command_line(self) -> str:
        return f"{self.flag} must be {self.requirement}, got {self.value!r}"


def check_value(option: str, value: Any, allowed: Range, integer: bool) -> None:
    """Raise OptionError unless `value` is a number of the right kind within `allowed`."""
    kind_ok = isinstance(value, int) if integer else isinstance(value, (int, float))
    if isinstance(value, bool) or not kind_ok:
        raise OptionError(option, f"{'an integer' if integer else 'a number'} {allowed.describe()}", value)
    if not allowed.admits(value):
        raise OptionError(option, allowed.describe(), value)


def check_options(config: Any) -> None:
    """Check every field of a dataclass that declares a range (see `bounded`)."""
    for f in fields(config):
        allowed = f.metadata.get("range")
        if allowed is not None:
            integer = f.type in (int, "int")
            check_value(f.name, getattr(config, f.name), allowed, integer)
