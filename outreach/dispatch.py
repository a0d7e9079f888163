"""The dispatcher: letters out through a transport, at a precise rate, with retries.

The decisions (what an answer means for the letter, how long to back off or
pause) are pure functions; the Dispatcher wires them to a recorder (the
ledger's claims and finishes, or nothing for a dry run), the transport, a
shared rate limiter and a pool of worker threads.
"""

from __future__ import annotations

import heapq
import random
import threading
import time
from dataclasses import dataclass, field
from typing import Callable, Iterable, Iterator

from outreach.message import Message
from outreach.transports import SendResult

PAUSE_MIN_S = 1.0      # a 429 whose reset is already past still waits this long
PAUSE_MAX_S = 120.0    # and never longer than this, whatever the header says
BACKOFF_BASE_S = 1.0
BACKOFF_CAP_S = 60.0


# -- decisions (pure) ---------------------------------------------------------------------------

def backoff_delay(attempt: int, rng: Callable[[], float] = random.random,
                  base: float = BACKOFF_BASE_S, cap: float = BACKOFF_CAP_S) -> float:
    """Exponential backoff with jitter after failed attempt number `attempt` (1, 2, ...)."""
    ceiling = min(cap, base * 2 ** (attempt - 1))
    return ceiling / 2 + rng() * ceiling / 2


def pause_for(reset_at: float | None, now: float) -> float:
    """How long everyone waits after a 429: until X-RateLimit-Reset, within sensible bounds."""
    wanted = (reset_at - now) if reset_at is not None else PAUSE_MIN_S
    return min(PAUSE_MAX_S, max(PAUSE_MIN_S, wanted))


@dataclass(frozen=True)
class Decision:
    status: str                     # the letter's next state
    reason: str | None = None
    retry_in: float | None = None   # retry_wait: seconds until the next attempt
    pause_s: float = 0.0            # everyone waits this long (429)
    refund: bool = False            # the attempt does not count (it was refused before being read)
    stop: bool = False              # stop the whole run (credentials refused)


def decide(result: SendResult, attempts: int, max_attempts: int, now: float,
           rng: Callable[[], float] = random.random) -> Decision:
    """What one transport answer means for the letter (attempts = tries so far, this one included)."""
    outcome = result.outcome
    if outcome == "accepted":
        return Decision("accepted")
    if outcome == "throttled":
        pause = pause_for(result.reset_at, now)
        return Decision("retry_wait", f"throttled (HTTP 429); waiting {pause:.0f} s",
                        retry_in=pause, pause_s=pause, refund=True)
    if outcome == "retry":
        if attempts < max_attempts:
            return Decision("retry_wait", result.error, retry_in=backoff_delay(attempts, rng))
        return Decision("failed", f"gave up after {attempts} attempts: {result.error}")
    if outcome == "unauthorized":
        return Decision("pending", result.error, refund=True, stop=True)
    if outcome == "unknown":
        return Decision("unknown", result.error)
    return Decision("failed", result.error)


# -- the rate limiter -------------------------------------------------------------------------------

class RateLimiter:
    """Send slots at least 60/rate seconds apart, shared by all workers: never above the rate."""

    def __init__(self, rate_per_minute: float, clock: Callable[[], float] = time.monotonic):
        self.interval = 60.0 / rate_per_minute
        self.clock = clock
        self._next = clock()
        self._paused_until = 0.0
        self._lock = threading.Lock()

    def reserve(self) -> float:
        """The next free slot (on the limiter's clock), taken for the caller."""
        with self._lock:
            slot = max(self.clock(), self._next)
            self._next = slot + self.interval
            return slot

    def pause(self, seconds: float) -> None:
        """No slot before `seconds` from now (everyone waits: a 429)."""
        with self._lock:
            self._paused_until = max(self._paused_until, self.clock() + seconds)
            self._next = max(self._next, self._paused_until)

    def wait(self, stop: threading.Event) -> bool:
        """Sleep until a slot; False if asked to stop meanwhile.

        A slot reserved before a pause began is given up for one after it.
        """
        while True:
            delay = self.reserve() - self.clock()
            if delay > 0 and stop.wait(delay):
                return False
            if stop.is_set():
                return False
            if self.clock() >= self._paused_until:
                return True


# -- the dispatcher ----------------------------------------------------------------------------------

@dataclass
class Outgoing:
    """One letter to send: its id, its message, and how many times it was tried before."""

    letter_id: str
    message: Message
    attempts: int = 0


class NoRecord:
    """The recorder of a dry run or of test copies: every letter may go, nothing is written."""

    def claim(self, letter_id: str) -> bool:
        return True

    def finish(self, letter_id: str, status: str, **details) -> None:
        pass

    def close(self) -> None:
        pass


@dataclass
class DispatchSummary:
    accepted: int = 0
    failed: int = 0
    unknown: int = 0
    retried: int = 0
    throttled: int = 0
    stopped: str | None = None          # why the run stopped early, if it did
    unauthorized: bool = False
    reasons: list[tuple[str, str, str]] = field(default_factory=list)   # (letter id, status, reason)

    @property
    def handled(self) -> int:
        return self.accepted + self.failed + self.unknown


class Dispatcher:
    """Sends letters in the order given: `concurrency` workers, one rate limit, retries in the run.

    A transport that is not paced (the outbox) is written in the calling thread,
    one letter after another, as fast as it goes.
    """

    def __init__(self, transport, recorder, *, rate_per_minute: float, concurrency: int, max_attempts: int,
                 clock: Callable[[], float] = time.time, rng: Callable[[], float] = random.random,
                 on_done: Callable[[Outgoing, str, SendResult], None] | None = None):
        self.transport = transport
        self.recorder = recorder
        paced = getattr(transport, "paced", True)
        self.limiter = RateLimiter(rate_per_minute) if paced else None
        self.concurrency = concurrency if paced else 1
        self.max_attempts = max_attempts
        self.clock = clock
        self.rng = rng
        self.on_done = on_done or (lambda item, status, result: None)
        self.summary = DispatchSummary()
        self._asked: str | None = None               # a stop asked for (a plain attribute: signal-safe)
        self._stopped = threading.Event()
        self._cond = threading.Condition()
        self._later: list[tuple[float, int, Outgoing]] = []   # retries within this run, by when
        self._seq = 0
        self._in_flight = 0
        self._source: Iterator[Outgoing] | None = None
        self._source_lock = threading.Lock()
        self._error: BaseException | None = None
        self._retry_in_run = True

    def stop(self, why: str = "stopped") -> None:
        """Take no new letters; the ones in flight finish and are recorded. Safe in a signal handler."""
        self._asked = self._asked or why

    def run(self, letters: Iterable[Outgoing], retry_in_run: bool = True) -> DispatchSummary:
        """Send the letters, in their order, until none is left or the run is stopped.

        `letters` may be a generator that records each letter before yielding it."""
        self._source = iter(letters)
        self._retry_in_run = retry_in_run
        try:
            if self.limiter is None:  # written here, one after another (a stop is seen between letters)
                self._work_here()
            else:
                workers = [threading.Thread(target=self._work, name=f"sender-{i}", daemon=True)
                           for i in range(self.concurrency)]
                for w in workers:
                    w.start()
                for w in workers:
                    while w.is_alive():
                        w.join(0.2)  # short joins keep this thread free to take signals
                        if self._asked and not self._stopped.is_set():
                            self._halt(self._asked)
        finally:
            self.recorder.close()
        if self._error is not None:
            raise self._error
        return self.summary

    def _halt(self, why: str) -> None:
        with self._cond:
            if self.summary.stopped is None:
                self.summary.stopped = why
            self._stopped.set()
            self._cond.notify_all()

    # -- the queue ------------------------------------------------------------------------------

    def _take(self) -> Outgoing | None:
        """The next letter: a retry that has come due, else the next one given, else wait for a
        retry; None when there is nothing more (or the run stops)."""
        while True:
            if self._asked and not self._stopped.is_set():
                self._halt(self._asked)
            with self._cond:
                if self._stopped.is_set():
                    return None
                if self._later and self._later[0][0] <= self.clock():
                    self._in_flight += 1
                    return heapq.heappop(self._later)[2]
                reading = self._source is not None
            if reading:
                with self._source_lock:
                    item = next(self._source, None) if self._source is not None else None
                    if item is None:
                        self._source = None
                if item is not None:
                    with self._cond:
                        self._in_flight += 1
                    return item
                continue
            with self._cond:
                if self._stopped.is_set():
                    return None
                if not self._later and self._in_flight == 0:
                    self._cond.notify_all()
                    return None
                wait = (self._later[0][0] - self.clock()) if self._later else 0.2
                if wait > 0:
                    self._cond.wait(min(max(wait, 0.01), 0.2))

    def _done(self, item: Outgoing, retry_at: float | None) -> None:
        with self._cond:
            self._in_flight -= 1
            if retry_at is not None and not self._stopped.is_set():
                self._seq += 1
                heapq.heappush(self._later, (retry_at, self._seq, item))
            self._cond.notify_all()

    # -- one worker --------------------------------------------------------------------------------

    def _work(self) -> None:
        while True:
            try:
                item = self._take()
            except BaseException as e:  # noqa: BLE001 - the letters could not be prepared: the run stops
                self._fail(e)
                return
            if item is None:
                return
            retry_at = None
            try:
                retry_at = self._send_one(item)
            except BaseException as e:  # noqa: BLE001 - a broken ledger stops the run; the letter stays `sending`
                self._fail(e)
            finally:
                self._done(item, retry_at)

    def _work_here(self) -> None:
        """The letters one after another in this thread, as fast as the transport takes them:
        no queue, no lock; a stop asked for is seen between letters."""
        for item in self._source:
            if self._asked:
                self._halt(self._asked)
                return
            self._in_flight = 1
            retry_at = self._send_one(item)
            self._in_flight = 0
            if retry_at is not None:  # not from a transport written here; kept for any that may answer so
                self._seq += 1
                heapq.heappush(self._later, (retry_at, self._seq, item))
        self._source = None
        self._work()  # retries, if any were asked for

    def _fail(self, error: BaseException) -> None:
        with self._cond:
            self._error = self._error or error
        self._halt("an error stopped the run")

    def _send_one(self, item: Outgoing) -> float | None:
        if self.limiter is not None and not self.limiter.wait(self._stopped):
            return None
        if self._stopped.is_set() or self._asked or not self.recorder.claim(item.letter_id):
            return None  # stopping; or someone (the operator) moved the letter meanwhile
        item.attempts += 1  # as the claim did in the ledger
        started = self.clock()
        t0 = time.perf_counter()
        result = self.transport.send(item.message)
        duration_ms = int((time.perf_counter() - t0) * 1000)
        decision = decide(result, item.attempts, self.max_attempts, self.clock(), self.rng)
        retry_at = (started + decision.retry_in) if decision.retry_in is not None else None
        attempt = {"started_at": started, "duration_ms": duration_ms, "transport": self.transport.name,
                   "outcome": result.outcome, "http_status": result.status, "error": result.error}
        self.recorder.finish(item.letter_id, decision.status, attempt=attempt, reason=decision.reason,
                             message_id=result.message_id, retry_at=retry_at, refund=decision.refund)
        if decision.refund:
            item.attempts -= 1
        self._count(item.letter_id, result, decision)
        if decision.pause_s and self.limiter is not None:
            self.limiter.pause(decision.pause_s)
        if decision.stop:
            with self._cond:
                self.summary.unauthorized = True
            self._halt(f"credentials refused: {result.error}")
        self.on_done(item, decision.status, result)
        if decision.status == "retry_wait" and self._retry_in_run:
            return retry_at
        return None

    def _count(self, letter_id: str, result: SendResult, decision: Decision) -> None:
        with self._cond:
            s = self.summary
            if decision.status == "accepted":
                s.accepted += 1
            elif decision.status == "failed":
                s.failed += 1
                s.reasons.append((letter_id, "failed", decision.reason or ""))
            elif decision.status == "unknown":
                s.unknown += 1
                s.reasons.append((letter_id, "unknown", decision.reason or ""))
            elif result.outcome == "throttled":
                s.throttled += 1
            elif decision.status == "retry_wait":
                s.retried += 1
