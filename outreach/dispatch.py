"""The dispatcher: recorded letters out through a transport, at a precise rate, with retries.

The decisions (what an answer means for the letter, how long to back off or
pause) are pure functions; the Dispatcher wires them to the ledger, the
transport, a shared rate limiter and a pool of worker threads.
"""

from __future__ import annotations

import heapq
import random
import threading
import time
import uuid
from collections import deque
from dataclasses import dataclass, field
from typing import Callable

from outreach.ledger import Ledger, LetterRecord
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
class RunSummary:
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
    """Sends a campaign's due letters: `concurrency` workers, one rate limit, retries in the run."""

    def __init__(self, ledger: Ledger, campaign_id: int, transport, make_message: Callable[[LetterRecord], Message],
                 delivery, *, clock: Callable[[], float] = time.time, rng: Callable[[], float] = random.random,
                 on_done: Callable[[str, str], None] | None = None, batch_size: int | None = None):
        self.ledger = ledger
        self.campaign_id = campaign_id
        self.transport = transport
        self.make_message = make_message
        self.max_attempts = delivery.max_attempts
        self.concurrency = delivery.concurrency
        self.batch_size = batch_size or delivery.batch_size
        self.limiter = RateLimiter(delivery.rate_per_minute)
        self.clock = clock
        self.rng = rng
        self.on_done = on_done or (lambda letter_id, status: None)
        self.owner = uuid.uuid4().hex
        self.summary = RunSummary()
        self._stop = threading.Event()
        self._cond = threading.Condition()
        self._ready: deque[str] = deque()
        self._later: list[tuple[float, str]] = []   # (when, letter id): retries within this run
        self._seen: set[str] = set()
        self._records: dict[str, LetterRecord] = {}   # the batch's archived messages, loaded together
        self._taken = 0
        self._in_flight = 0
        self._limit: int | None = None
        self._only: set[str] | None = None
        self._exhausted = False
        self._error: BaseException | None = None

    def stop(self, why: str = "stopped") -> None:
        """Take no new letters; the ones in flight finish and are recorded."""
        with self._cond:
            if self.summary.stopped is None:
                self.summary.stopped = why
            self._stop.set()
            self._cond.notify_all()

    def run(self, limit: int | None = None, retry_in_run: bool = True, only: set[str] | None = None) -> RunSummary:
        """Send due letters (at most `limit` new ones, only those in `only` if given) until none
        is left or the run is stopped."""
        self._limit = limit
        self._only = only
        self._retry_in_run = retry_in_run
        self.store = self.ledger.group_writer()
        workers = [threading.Thread(target=self._work, name=f"sender-{i}", daemon=True)
                   for i in range(self.concurrency)]
        try:
            for w in workers:
                w.start()
            for w in workers:
                while w.is_alive():
                    w.join(0.2)  # short joins keep the main thread free to take signals
        finally:
            self.store.close()
        if self._error is not None:
            raise self._error
        return self.summary

    # -- the queue ----------------------------------------------------------------------------

    def _refill(self) -> bool:
        """Take the next batch of due letters from the ledger (called with the condition held)."""
        if self._exhausted:
            return False
        room = self.batch_size if self._limit is None else min(self.batch_size, self._limit - self._taken)
        if room <= 0:
            self._exhausted = True
            return False
        due = self.ledger.due(self.campaign_id, limit=None if self._only is not None else room + len(self._seen))
        fresh = [i for i in due if i not in self._seen and (self._only is None or i in self._only)]
        fresh = fresh[:room]
        if not fresh:
            self._exhausted = True
            return False
        self._seen.update(fresh)
        self._records.update(self.ledger.load_many(fresh))
        # A letter without an archived message is never sent blind: it waits, untouched.
        fresh = [i for i in fresh if i in self._records]
        self._taken += len(fresh)
        self._ready.extend(fresh)
        return True

    def _next(self) -> str | None:
        with self._cond:
            while True:
                if self._stop.is_set():
                    return None
                if self._ready:
                    self._in_flight += 1
                    return self._ready.popleft()
                now = self.clock()
                if self._later and self._later[0][0] <= now:
                    self._in_flight += 1
                    return heapq.heappop(self._later)[1]
                if self._refill():
                    continue
                if self._in_flight == 0 and not self._later:
                    self._cond.notify_all()
                    return None
                timeout = (self._later[0][0] - now) if self._later else None
                self._cond.wait(timeout if timeout is None else max(timeout, 0.01))

    def _done(self, letter_id: str, retry_at: float | None = None) -> None:
        with self._cond:
            self._in_flight -= 1
            if retry_at is not None and not self._stop.is_set():
                heapq.heappush(self._later, (retry_at, letter_id))
            self._cond.notify_all()

    # -- one worker ------------------------------------------------------------------------------

    def _work(self) -> None:
        while True:
            letter_id = self._next()
            if letter_id is None:
                return
            retry_at = None
            try:
                retry_at = self._send_one(letter_id)
            except BaseException as e:  # noqa: BLE001 - a broken ledger stops the run; the letter stays `sending`
                with self._cond:
                    self._error = self._error or e
                self.stop("an error stopped the run")
            finally:
                self._done(letter_id, retry_at)

    def _send_one(self, letter_id: str) -> float | None:
        if not self.limiter.wait(self._stop):
            return None
        if not self.store.claim(letter_id, self.owner):
            return None  # someone (the operator) moved it meanwhile
        record = self._records[letter_id]
        record.attempts += 1  # as the claim did in the ledger
        started = self.clock()
        t0 = time.perf_counter()
        result = self.transport.send(self.make_message(record))
        duration_ms = int((time.perf_counter() - t0) * 1000)
        decision = decide(result, record.attempts, self.max_attempts, self.clock(), self.rng)
        retry_at = (started + decision.retry_in) if decision.retry_in is not None else None
        attempt = {"started_at": started, "duration_ms": duration_ms, "transport": self.transport.name,
                   "outcome": result.outcome, "http_status": result.status, "error": result.error}
        self.store.finish(letter_id, decision.status, attempt=attempt, reason=decision.reason,
                           message_id=result.message_id, retry_at=retry_at, refund=decision.refund)
        if decision.refund:
            record.attempts -= 1
        self._count(letter_id, result, decision)
        if decision.pause_s:
            self.limiter.pause(decision.pause_s)
        if decision.stop:
            with self._cond:
                self.summary.unauthorized = True
            self.stop(f"credentials refused: {result.error}")
        self.on_done(letter_id, decision.status)
        if decision.status == "retry_wait" and self._retry_in_run:
            return retry_at
        with self._cond:
            self._records.pop(letter_id, None)  # done with in this run: its text need not stay in memory
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
