"""One writer thread per ledger: writes from many threads committed together (a group commit).

A send's claims and finishes, and the webhook's posts of events, all go through
it. Whatever queued while one transaction ran shares the next one, and its
fsync. The order of the queue is kept: a worker's claim commits only with (or
after) its own earlier finish, so a crash leaves at most one `sending` letter
per worker.

A group that meets another process's transaction (a deadlock, a serialization failure, a
key stored meanwhile: PostgreSQL with several `serve` processes) is tried again a few
times after a short random wait. A group that still fails is tried again one operation
at a time, each in its own transaction: one bad operation fails alone, never the ones
beside it.
"""

from __future__ import annotations

import logging
import queue
import random
import threading
import time
from concurrent.futures import Future
from typing import Any, Callable

from outreach.errors import LedgerFailure

# How one kind of operation is written: (db, payloads) -> one result per payload.
Handler = Callable[[Any, list], list]


# SQLSTATEs of a transaction that lost to another one and may simply be tried again:
# deadlock detected, serialization failure, unique violation (a key stored meanwhile).
CONFLICTS = ("40P01", "40001", "23505")
CONFLICT_RETRIES = 4

log = logging.getLogger("outreach.ledger")


def now() -> float:
    return time.time()


def conflict(error: BaseException) -> bool:
    """Whether `error` is the database telling us another transaction got there first."""
    return getattr(getattr(error, "orig", None), "sqlstate", None) in CONFLICTS


def after_conflict(error: BaseException, attempt: int) -> None:
    """Say that a transaction met another one, and wait a little longer at each attempt (1, 2, ...)
    with jitter, so the two do not meet again at once."""
    log.info("a transaction met another process's (%s); trying again",
             " ".join(str(getattr(error, "orig", error)).split())[:120])
    time.sleep(random.uniform(0.005, 0.05) * attempt)


def retrying_conflicts(write: Callable[[], Any]):
    """`write()` (one transaction), tried again up to CONFLICT_RETRIES times if it meets another."""
    for attempt in range(1, CONFLICT_RETRIES + 1):
        try:
            return write()
        except Exception as e:  # noqa: BLE001 - only a conflict is tried again
            if not conflict(e):
                raise
            after_conflict(e, attempt)
    return write()


class _Op:
    __slots__ = ("handler", "payload", "weight", "future", "on_error")

    def __init__(self, handler: Handler, payload, weight: int, future: Future | None, on_error=None):
        self.handler, self.payload, self.weight, self.future = handler, payload, weight, future
        self.on_error = on_error


class GroupWriter:
    """`call(handler, payload)` waits until committed; `post(...)` queues without waiting.

    A handler is a function (db, payloads) -> results, called once for a run of
    queued operations of its kind, inside the group's transaction."""

    def __init__(self, ledger, max_weight: int = 20_000):
        self.ledger = ledger
        self.max_weight = max_weight
        self.closed = False
        self._queue: queue.Queue = queue.Queue()
        self._thread = threading.Thread(target=self._run, name="ledger-writer", daemon=True)
        self._thread.start()

    def submit(self, handler: Handler, payload, weight: int = 1) -> Future:
        """Queue one operation; the future gives its result once committed (or its error)."""
        future: Future = Future()
        self._put(_Op(handler, payload, weight, future))
        return future

    def call(self, handler: Handler, payload, weight: int = 1):
        """Queue one operation and wait for its result."""
        return self.submit(handler, payload, weight).result()

    def post(self, handler: Handler, payload, on_error: Callable[[BaseException], None], weight: int = 1) -> None:
        """Queue one operation without waiting; `on_error` hears if it fails."""
        self._put(_Op(handler, payload, weight, None, on_error))

    def _put(self, op: _Op) -> None:
        if self.closed:
            raise RuntimeError("the ledger's writer is closed")
        self._queue.put(op)

    def close(self) -> None:
        """Commit what is queued, then stop the thread."""
        if not self.closed:
            self.closed = True
            self._queue.put(None)
            self._thread.join()

    # -- the writer thread -------------------------------------------------------------------

    def _run(self) -> None:
        while (op := self._queue.get()) is not None:
            group, weight = [op], op.weight
            while weight < self.max_weight:
                try:
                    nxt = self._queue.get_nowait()
                except queue.Empty:
                    break
                if nxt is None:
                    self._queue.put(None)
                    break
                group.append(nxt)
                weight += nxt.weight
            self._write(group)

    def _write(self, group: list[_Op], tries: int = CONFLICT_RETRIES + 1) -> None:
        try:
            with self.ledger.write() as db:
                results = self._apply(db, group)
        except BaseException as e:  # noqa: BLE001 - handed to the callers
            if tries > 1 and conflict(e):
                after_conflict(e, CONFLICT_RETRIES + 2 - tries)
                self._write(group, tries - 1)
            elif len(group) > 1 and not isinstance(e, LedgerFailure):
                for op in group:  # alone, each in its own transaction: the bad one fails by itself
                    self._write([op])
            else:   # the database itself failed (full, locked, gone): trying each alone would only wait again
                for op in group:
                    self._fail(op, e)
            return
        for op, result in zip(group, results):
            if op.future is not None:
                op.future.set_result(result)

    @staticmethod
    def _apply(db, group: list[_Op]) -> list:
        """Each run of operations of one kind, in the order they came, with one call of its handler."""
        results: list = []
        start = 0
        while start < len(group):
            end = start
            while end < len(group) and group[end].handler is group[start].handler:
                end += 1
            results += group[start].handler(db, [op.payload for op in group[start:end]])
            start = end
        return results

    @staticmethod
    def _fail(op: _Op, error: BaseException) -> None:
        if op.future is not None:
            op.future.set_exception(error)
        else:
            op.on_error(error)
