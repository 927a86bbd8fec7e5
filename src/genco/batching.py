"""Dynamic micro-batching: concurrent POST /v1/select calls answered by one forward pass, not one after another.

A model's forward pass costs about the same for 1 request as for 30 (at these sizes its cost is per
operation, not per row), so a server that runs every call alone, behind a lock, spends nearly all its time
on that fixed cost and queues the callers behind it. Here every call goes on a queue; one worker thread
takes what is waiting, waits up to `window_seconds` for more (never past `max_batch` requests), and
answers the whole batch in one call while the next calls gather. Under light load a call waits at most the
window; under heavy load the batches grow by themselves, as in model servers (Triton's dynamic batcher,
TF Serving's batching). One worker thread, because torch already spreads one forward pass over the cores.

Answers do not depend on the batch: greedy samples are keyed by the request (genco.noise), and explore-mode
propensities are each row's own probability. Calls are grouped by key (the server's: the model snapshot
they were validated against, and greedy or explore), so a model swap never mixes two versions in one answer.

The queue is a thread's, not an event loop's: callers wait on a concurrent future (`submit`, or `await
asyncio.wrap_future(...)` from async code), so the batcher works under any server or test client.
"""

from __future__ import annotations

import queue
import threading
import time
from collections.abc import Callable, Hashable
from concurrent.futures import Future
from dataclasses import dataclass, field

Answer = Callable[[Hashable, list], list]  # (key, requests) -> one answer per request, same order


@dataclass
class Call:
    key: Hashable
    requests: list
    future: Future = field(default_factory=Future, repr=False)


class MicroBatcher:
    def __init__(self, answer: Answer, *, window_seconds: float, max_batch: int,
                 on_batch: Callable[[int, int], None] = lambda calls, requests: None):
        self.answer, self.window, self.max_batch, self.on_batch = answer, window_seconds, max_batch, on_batch
        self.queue: queue.SimpleQueue[Call | None] = queue.SimpleQueue()
        self.worker = threading.Thread(target=self._run, name="genco-select", daemon=True)
        self.worker.start()

    def submit(self, key: Hashable, requests: list) -> Future:
        """Queue a call; its future gets the answers (or the exception answering raised)."""
        call = Call(key, requests)
        self.queue.put(call)
        return call.future

    def stop(self) -> None:
        """Answer every call queued so far, then stop the worker (a clean shutdown drops no call)."""
        self.queue.put(None)
        self.worker.join()

    def _gather(self, first: Call) -> tuple[list[Call], bool]:
        """A batch: the first call, what is already waiting, and what arrives within the window. And whether
        the stop signal came."""
        calls, size = [first], len(first.requests)
        deadline = time.monotonic() + self.window
        while size < self.max_batch:
            try:
                call = self.queue.get(timeout=max(deadline - time.monotonic(), 0.0)) if self.window else self.queue.get_nowait()
            except queue.Empty:
                break
            if call is None:
                return calls, True
            calls.append(call)
            size += len(call.requests)
        return calls, False

    def _run(self) -> None:
        stopping = False
        while not stopping:
            first = self.queue.get()
            if first is None:
                return
            calls, stopping = self._gather(first)
            self.on_batch(len(calls), sum(len(c.requests) for c in calls))
            groups: dict[Hashable, list[Call]] = {}
            for call in calls:
                groups.setdefault(call.key, []).append(call)
            for key, group in groups.items():
                self._answer_group(key, group)

    def _answer_group(self, key: Hashable, group: list[Call]) -> None:
        """One forward pass for the calls of one group; the answers split back per call."""
        everything = [r for call in group for r in call.requests]
        try:
            answers = self.answer(key, everything) if everything else []
        except Exception as exc:  # a bug in answering: every call of the group gets it (HTTP 500), the worker lives on
            for call in group:
                call.future.set_exception(exc)
            return
        start = 0
        for call in group:
            call.future.set_result(answers[start : start + len(call.requests)])
            start += len(call.requests)
