"""Errors that carry an exit status.

Bad input (a file, a flag, a row) exits with 2 and a message that names where and why; everything
else that escapes is an internal failure and exits with 1.
"""

from __future__ import annotations

from dataclasses import dataclass


class GencoInputError(Exception):
    """The user's input is wrong: the command line prints the message and exits with status 2."""

    exit_code = 2


@dataclass(frozen=True)
class Location:
    """Where a row came from: a file and a 1-based line (JSONL) or row number (Parquet)."""

    path: str
    line: int
    parquet: bool = False

    def __str__(self) -> str:
        return f"{self.path}: row {self.line}" if self.parquet else f"{self.path}:{self.line}"


@dataclass(frozen=True)
class ItemLocation:
    """A row that came in a list rather than a file: request i of an HTTP body or of a Python call."""

    index: int
    name: str = "requests"

    def __str__(self) -> str:
        return f"{self.name}[{self.index}]"


class BadRowError(GencoInputError):
    """One row breaks one rule of CONTRACT.md section 1. `field` is the path of the offending value within
    the row (("user", 0), ("components", "title", 2, "id")), empty when the rule is about the whole row."""

    def __init__(self, location: Location | ItemLocation, rule: str, detail: str, field: tuple = ()):
        self.location = location
        self.rule = rule
        self.detail = detail
        self.field = tuple(field)
        super().__init__(f"{location}: rule {rule}: {detail}")
