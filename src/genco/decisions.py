"""Served decisions become training data: the decision log `genco serve --log-decisions DIR` writes, and
`genco join`, which adds the clicks and makes contract log rows of it.

    serve (explore) -> DIR/decisions-*.jsonl -> join with click events -> logs -> genco train -> serve reloads

A decision row is a log row without its click (genco.contract.Decision): the request, `shown`, `propensity`
(the true probability of what was served, so the joined log is valid for training and off-policy
estimates), `score`, `model_version` and `served_at`. Rows go to a hidden file (`.decisions-....jsonl.open`)
that is renamed to `decisions-<UTC start>-<pid>-<n>.jsonl` when it reaches `rotate_rows` rows or
`rotate_seconds` of age, and on shutdown: a finished file appears whole or not at all, a clean shutdown
loses nothing, and a killed server loses at most the open file's rows. Readers (`genco join`, `genco
train`) see only finished files.
"""

from __future__ import annotations

import json
import os
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from genco.contract import Decision, Request, Selection, parse_row, shown_value
from genco.errors import BadRowError
from genco.files import AtomicWriter, data_files, iter_raw, output_folder, read_located


def _utc_now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="milliseconds")


class DecisionLog:
    """Appends served decisions to rotating files, each published atomically. Safe to call from any thread."""

    def __init__(self, directory: str | Path, *, rotate_rows: int = 100_000, rotate_seconds: float = 60.0):
        self.directory = output_folder(directory, "--log-decisions")
        self.rotate_rows, self.rotate_seconds = rotate_rows, rotate_seconds
        self.lock = threading.Lock()
        self.handle = None
        self.open_path: Path | None = None
        self.final_path: Path | None = None
        self.rows_in_file = 0
        self.opened_at = 0.0
        self.sequence = 0
        self._stop = threading.Event()
        self._ticker = threading.Thread(target=self._tick, name="genco-decision-log", daemon=True)
        self._ticker.start()

    def record(self, requests: Sequence[Request], selections: Sequence[Selection], model_version: str) -> None:
        """One decision row per (request, selection) served by `model_version`."""
        served_at = _utc_now()
        lines = []
        for request, selection in zip(requests, selections):
            head = request.model_dump_json(exclude_none=True)  # '{...}': the request as the contract writes it
            tail = json.dumps({"shown": selection.selection, "propensity": selection.propensity, "score": selection.score,
                               "model_version": model_version, "served_at": served_at}, separators=(",", ":"))
            lines.append(f"{head[:-1]},{tail[1:]}\n")
        with self.lock:
            for line in lines:
                if self.handle is None:
                    self._open()
                self.handle.write(line)
                self.rows_in_file += 1
                if self.rows_in_file >= self.rotate_rows:
                    self._publish()

    def close(self) -> None:
        """Publish the open file (a clean shutdown loses no row) and stop rotating by age."""
        self._stop.set()
        with self.lock:
            self._publish()

    def _open(self) -> None:
        stamp = datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%S")
        self.sequence += 1
        name = f"decisions-{stamp}-{os.getpid()}-{self.sequence:05d}.jsonl"
        self.final_path, self.open_path = self.directory / name, self.directory / f".{name}.open"
        self.handle = open(self.open_path, "w", encoding="utf-8")
        self.rows_in_file, self.opened_at = 0, time.monotonic()

    def _publish(self) -> None:
        if self.handle is None:
            return
        self.handle.flush()
        os.fsync(self.handle.fileno())
        self.handle.close()
        self.handle = None
        os.chmod(self.open_path, 0o644)
        os.replace(self.open_path, self.final_path)

    def _tick(self) -> None:
        while not self._stop.wait(min(1.0, self.rotate_seconds)):
            with self.lock:
                if self.handle is not None and time.monotonic() - self.opened_at >= self.rotate_seconds:
                    self._publish()


@dataclass
class JoinReport:
    decisions: int = 0
    clicks: int = 0  # decisions with a click event
    click_events: int = 0
    unmatched_click_events: int = 0  # events whose request_id no decision has (another server's, or lost)
    unfinished_files: int = 0  # `.open` files of a server that is running or was killed: not read

    def summary(self) -> dict[str, Any]:
        return {"decisions": self.decisions, "clicks": self.clicks, "ctr": self.clicks / max(self.decisions, 1),
                "click_events": self.click_events, "unmatched_click_events": self.unmatched_click_events,
                "unfinished_files": self.unfinished_files}


def read_clicks(path: str | Path) -> tuple[dict[str, float | None], int]:
    """Click events by request_id (the first event's revenue kept; a second click on a request is the same
    click) and how many events were read."""
    clicked: dict[str, float | None] = {}
    events = 0
    for file in data_files(path):
        for location, raw in iter_raw(file):
            event = parse_row("clicks", raw, location)
            events += 1
            clicked.setdefault(event.request_id, event.revenue)
    return clicked, events


def join(decisions: str | Path, clicks: str | Path, out: str | Path) -> JoinReport:
    """`genco join`: every decision row of the folder `decisions` becomes a log row, click 1 where `clicks` holds an
    event with its request_id (and that event's revenue, if any), else 0. Written atomically to `out`."""
    report = JoinReport()
    clicked, report.click_events = read_clicks(clicks)
    report.unfinished_files = sum(1 for p in Path(decisions).glob(".decisions-*.open")) if Path(decisions).is_dir() else 0
    first_seen: dict[str, Any] = {}
    with AtomicWriter(out, "logs") as writer:
        for location, decision in read_located(decisions, "decisions"):
            assert isinstance(decision, Decision)
            if decision.request_id in first_seen:  # across files too: a click could not say which decision it was for
                raise BadRowError(location, "duplicate-request-id", f"request_id {shown_value(decision.request_id)} "
                                  f"was also decided at {first_seen[decision.request_id]}", ("request_id",))
            first_seen[decision.request_id] = location
            row = decision.model_dump(exclude_none=True)
            row["click"] = int(decision.request_id in clicked)
            if row["click"] and clicked[decision.request_id] is not None:
                row["revenue"] = clicked[decision.request_id]
            writer.write(row)
            report.decisions += 1
            report.clicks += row["click"]
    report.unmatched_click_events = sum(1 for request_id in clicked if request_id not in first_seen)
    return report
