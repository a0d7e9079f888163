"""The dry run: every letter rendered and written to the outbox; nothing sent, the ledger untouched.

Each letter is rendered once and written as it is rendered, into a hidden
folder that is published only when every letter succeeded: the preflight
and the writing are one pass. Large runs are split across processes (on
systems that can fork), since rendering is CPU-bound and one core is the
limit otherwise.
"""

from __future__ import annotations

import os
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from outreach.campaign import Plan
from outreach.errors import UserError
from outreach.message import message_for
from outreach.outbox import OutboxRun
from outreach.progress import Progress

PARALLEL_FROM = 1000  # below this, starting workers costs more than it saves
BATCH = 250  # letters rendered before they are written


@dataclass
class DryRunResult:
    folder: Path
    written: int
    workers: int


def dry_run(plan: Plan, cfg, limit: int | None = None, workers: int | None = None) -> DryRunResult:
    """Render and write each recipient's letter; a template error removes the run's folder."""
    recipients = plan.recipients[:limit] if limit is not None else plan.recipients
    if workers is None:
        workers = _default_workers(len(recipients))
    with _sigterm_interrupts(), OutboxRun(cfg.outbox_dir, plan.name) as run, \
            Progress(len(recipients), "writing letters") as progress:
        if workers > 1 and recipients:
            _write_parallel(plan, cfg, run, recipients, workers, progress)
        else:
            try:
                _write_range(plan, cfg, run, recipients, 0, len(recipients), progress.advance)
            except _LetterFailed as failed:
                raise failed.error from None
        folder = run.publish()
    return DryRunResult(folder, len(recipients), workers)


@contextmanager
def _sigterm_interrupts():
    """SIGTERM stops a dry run the way Ctrl-C does: the hidden run folder is removed,
    rather than left behind by a process killed outright."""
    import signal
    import threading

    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def interrupt(signum, frame):
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGTERM, interrupt)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def _worker_start() -> None:
    # A worker told to stop just stops; the parent, interrupted, removes the run folder.
    import signal

    signal.signal(signal.SIGTERM, signal.SIG_DFL)


def _default_workers(count: int) -> int:
    """One process per core for large runs; OUTREACH_WORKERS overrides (1 = no extra processes)."""
    import multiprocessing

    if "fork" not in multiprocessing.get_all_start_methods():
        return 1
    wanted = os.environ.get("OUTREACH_WORKERS", "")
    if wanted.isdigit() and int(wanted) > 0:
        return int(wanted)
    if count < PARALLEL_FROM:
        return 1
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    return max(1, min(cores, 8))


def _write_range(plan: Plan, cfg, run: OutboxRun, recipients, start: int, stop: int, advance,
                 abandon=None) -> None:
    """Write recipients[start:stop]; a failure is re-raised as _LetterFailed with its index.
    `abandon(i)`, asked before each batch starting at i, ends the range early when true.

    Letters are rendered a few hundred at a time, then written: alternating Jinja with
    file writes letter by letter keeps evicting each other's working set (~15% slower
    than batches of 50, which are ~3% slower than batches of 250).
    A failure is still the first a letter-by-letter run would meet."""
    render, sender, name = plan.templates.render, cfg.sender, plan.name
    for first in range(start, stop, BATCH):
        if abandon is not None and abandon(first):
            return
        batch = range(first, min(first + BATCH, stop))
        letters, failed = [], None
        for i in batch:
            try:
                letters.append(render(recipients[i]))
            except UserError as e:
                failed = _LetterFailed(i, e)
                break
        for i, letter in zip(batch, letters):
            try:
                run.write(message_for(letter, sender, name), recipients[i].bioguide_id)
            except UserError as e:
                raise _LetterFailed(i, e) from None
            advance()
        if failed is not None:
            raise failed


class _LetterFailed(Exception):
    def __init__(self, index: int, error: UserError):
        super().__init__(index, str(error))
        self.index = index
        self.error = error


# What forked workers inherit: set just before the pool starts, never pickled.
_JOB: dict = {}


def _worker(start: int, stop: int) -> tuple[str, tuple[int, str] | None]:
    """Write recipients[start:stop]; return their manifest lines, or the first failure (index, message).

    `stop_at` is shared by all workers: the lowest index that failed (or -1 once the run
    is interrupted). Letters after it cannot be published, so no worker writes them; letters
    before it still are, since one of them may fail first."""
    plan, cfg, run, recipients, counter, stop_at = (
        _JOB[k] for k in ("plan", "cfg", "run", "recipients", "counter", "stop_at"))
    run.rows = []
    done = 0

    def advance() -> None:
        nonlocal done
        done += 1
        if done % 50 == 0:
            with counter.get_lock():
                counter.value += 50

    try:
        _write_range(plan, cfg, run, recipients, start, stop, advance, lambda i: i > stop_at.value)
    except _LetterFailed as failed:
        with stop_at.get_lock():
            stop_at.value = min(stop_at.value, failed.index)
        return "", (failed.index, str(failed.error))
    with counter.get_lock():
        counter.value += done % 50
    return run.take_manifest(), None


def _write_parallel(plan: Plan, cfg, run: OutboxRun, recipients, workers: int, progress: Progress) -> None:
    import gc
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor, wait

    ctx = multiprocessing.get_context("fork")
    counter = ctx.Value("i", 0)
    stop_at = ctx.Value("q", len(recipients))
    _JOB.update(plan=plan, cfg=cfg, run=run, recipients=recipients, counter=counter, stop_at=stop_at)
    # A few slices per worker, so one that runs slower (a busy core) is not waited for.
    size = max(PARALLEL_FROM // 4, -(-len(recipients) // (workers * 4)))
    bounds = [(i, min(i + size, len(recipients))) for i in range(0, len(recipients), size)]
    # While the workers run, the objects they share with this process are kept out of
    # the collector's sight: a collection (in a worker or here) writes to every object
    # it walks, which copies the whole shared heap page by page.
    # (Unless the caller froze its own objects already: that is theirs to undo.)
    freezing = gc.get_freeze_count() == 0
    if freezing:
        gc.freeze()
    try:
        with ProcessPoolExecutor(max_workers=min(workers, len(bounds)), mp_context=ctx,
                                 initializer=_worker_start) as pool:
            try:
                futures = [pool.submit(_worker, a, b) for a, b in bounds]
                pending = set(futures)
                while pending:
                    _, pending = wait(pending, timeout=0.1)
                    progress.advance(counter.value - progress.done)
            except BaseException:  # Ctrl-C above all: the slices not yet written are dropped
                with stop_at.get_lock():
                    stop_at.value = -1
                pool.shutdown(wait=True, cancel_futures=True)
                raise
            results = [f.result() for f in futures]
    finally:
        if freezing:
            gc.unfreeze()
        _JOB.clear()
    failures = [failure for _, failure in results if failure is not None]
    if failures:
        # Report the failure a sequential run would have met first.
        raise UserError(min(failures)[1])
    for manifest, _ in results:
        run.add_manifest(manifest)
    progress.advance(len(recipients) - progress.done)
