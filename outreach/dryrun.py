"""The dry run: every letter rendered and written to the outbox; nothing sent, the ledger untouched.

Each letter is rendered once and written as it is rendered, into a hidden
folder that is published only when every letter succeeded: the preflight
and the writing are one pass. Large runs are split across processes (on
systems that can fork), since rendering is CPU-bound and one core is the
limit otherwise.
"""

from __future__ import annotations

import os
import signal
import struct
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from outreach.campaign import Plan
from outreach.errors import EXIT_ATTENTION, UserError
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
    with _interrupts() as interrupts, OutboxRun(cfg.outbox_dir, plan.name, shield=interrupts.held) as run, \
            Progress(len(recipients), "writing letters") as progress:
        if workers > 1 and recipients:
            _write_parallel(plan, cfg, run, recipients, workers, progress, interrupts)
        else:
            try:
                _write_range(plan, cfg, run, recipients, 0, len(recipients), progress.advance)
            except _LetterFailed as failed:
                raise failed.error from None
        folder = run.publish()
    return DryRunResult(folder, len(recipients), workers)


class _Interrupts:
    """The SIGINT and SIGTERM handler during a dry run. Both raise KeyboardInterrupt, so
    SIGTERM stops a run the way Ctrl-C does and the hidden run folder is removed, rather
    than left behind by a process killed outright.

    Inside `held()` (which nests) they are only noted, and raised when the outermost
    hold ends: starting the workers, stopping them, making, publishing or removing the
    run folder each run to the end, whatever a second Ctrl-C does. A counter, not a
    swap of handlers or of the signal mask, so a signal arriving at the wrong moment
    cannot leave anything half-changed."""

    def __init__(self) -> None:
        self.depth = 0
        self.noted = False

    def __call__(self, signum, frame) -> None:
        if self.depth:
            self.noted = True
        else:
            raise KeyboardInterrupt

    @contextmanager
    def held(self):
        self.depth += 1
        try:
            yield
        finally:
            self.depth -= 1
        if self.noted and not self.depth:
            self.noted = False
            raise KeyboardInterrupt


@contextmanager
def _interrupts():
    import threading

    handler = _Interrupts()
    if threading.current_thread() is not threading.main_thread():
        yield handler  # signals go to the main thread, which is not ours to change
        return
    previous = {}
    try:
        for signum in _STOP_SIGNALS:
            previous[signum] = signal.getsignal(signum)
            signal.signal(signum, handler)
        yield handler
    finally:
        # Held while the old handlers go back, SIGINT last: until then a signal is only
        # noted, so none can stop this loop halfway and leave one of ours installed.
        handler.depth += 1
        for signum in reversed(previous):
            signal.signal(signum, previous[signum])
    if handler.noted:  # came while the handlers went back, the run done: it is still obeyed
        raise KeyboardInterrupt


def _default_workers(count: int) -> int:
    """One process per core for large runs; OUTREACH_WORKERS overrides (1 = no extra processes)."""
    if not hasattr(os, "fork"):
        return 1
    wanted = os.environ.get("OUTREACH_WORKERS", "")
    if wanted.isascii() and wanted.isdigit() and int(wanted) > 0:
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


def _write_parallel(plan: Plan, cfg, run: OutboxRun, recipients, workers: int, progress: Progress,
                    interrupts: _Interrupts) -> None:
    """Write the letters with `workers` forked processes; the first failure in letter order is raised.

    Plain fork(): the workers inherit the plan, the recipients and the open run folder,
    so nothing but a few numbers and the manifest lines crosses between processes
    (multiprocessing's pool would cost ~12 ms of imports and start-up for no more).
    - Work: slice numbers sit in a pipe; a worker takes one with a 4-byte read, which
      the kernel makes atomic, so each slice goes to exactly one worker.
    - Shared memory (an anonymous mapping survives fork): the lowest letter index that
      failed (-1 once the run is interrupted), and each worker's count for the progress.
    - Results: each worker sends its slices' manifest lines or first failure on a pipe
      of its own, and always ends with os._exit, never running this process's clean-up.
    """
    import gc
    import mmap
    import select

    count = len(recipients)
    bounds = _slices(count, min(workers, _MAX_WORKERS))
    workers = min(workers, _MAX_WORKERS, len(bounds))
    children: list[int] = []
    results: dict[int, bytearray] = {}  # each worker's result pipe, and what came through it
    unread: set[int] = set()            # the pipes still open here
    take = shared = None
    # While the workers run, the objects they share with this process are kept out of
    # the collector's sight: a collection (in a worker or here) writes to every object
    # it walks, which copies the whole shared heap page by page.
    # (Unless the caller froze its own objects already: that is theirs to undo.)
    freezing = gc.get_freeze_count() == 0
    try:
        # Everything made here is noted down before an interrupt can stop this part.
        with interrupts.held():
            if freezing:
                gc.freeze()
            shared = mmap.mmap(-1, _SLOT * (1 + workers))
            _STOP.pack_into(shared, 0, count)
            take, give = os.pipe()
            try:
                os.write(give, b"".join(_SLICE.pack(i) for i in range(len(bounds))))  # < 1 KiB: never blocks
            finally:
                os.close(give)
            for k in range(workers):
                out, into = os.pipe()
                results[out] = bytearray()
                unread.add(out)
                try:
                    pid = os.fork()
                    if pid == 0:  # the worker: never returns
                        _worker(k, plan, cfg, run, recipients, bounds, take, into, shared)
                    children.append(pid)
                finally:
                    os.close(into)
        poller = select.poll()
        for fd in unread:
            poller.register(fd, select.POLLIN)
        while unread:
            for fd, _ in poller.poll(100):
                chunk = os.read(fd, 1 << 16)
                if chunk:
                    results[fd] += chunk
                else:
                    poller.unregister(fd)
                    os.close(fd)
                    unread.discard(fd)
            progress.advance(sum(_COUNT.unpack_from(shared, _SLOT * (1 + k))[0] for k in range(workers))
                             - progress.done)
        with interrupts.held():
            stopped = _reap(children)
    except BaseException:  # Ctrl-C above all: the workers stop, the caller removes the run folder
        with interrupts.held():  # and a second Ctrl-C does not cut this short
            if shared is not None:
                _STOP.pack_into(shared, 0, -1)
            _close(unread)  # a worker blocked sending to us gets EPIPE rather than waiting forever
            for pid in children:
                try:
                    os.kill(pid, signal.SIGTERM)
                except ProcessLookupError:
                    pass
            _reap(children)
        raise
    finally:
        if freezing:
            gc.unfreeze()
        _close(unread)
        if take is not None:
            os.close(take)
        if shared is not None:
            shared.close()
    records = [record for buffer in results.values() for record in _records(buffer)]
    written = {number: manifest for number, kind, manifest in records if kind == "written"}
    # What a one-process run would have met first: a letter that failed, a worker that
    # failed, or the slices of a worker that stopped without a word (killed, say).
    problems = [problem for _, kind, problem in records if kind == "failed"]
    told = {number for number, kind, _ in records if kind == "failed"}
    problems += [(bounds[number][0], "stopped", stopped or "it sent no result")
                 for number in range(len(bounds)) if number not in written and number not in told]
    if problems:
        _, kind, message = min(problems)
        if kind == "letter":
            raise UserError(message)
        if kind == "stopped":
            raise UserError(f"a dry-run worker process stopped unexpectedly ({message}); nothing was published",
                            exit_code=EXIT_ATTENTION)
        if kind == "machine":  # out of memory or file handles, say
            raise UserError(f"a dry-run worker failed: {message}; nothing was published", exit_code=EXIT_ATTENTION)
        raise RuntimeError(f"in a dry-run worker: {message}")  # a bug of ours: said as one
    for number in range(len(bounds)):
        run.add_manifest(written[number])
    progress.advance(count - progress.done)


_STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)
_MAX_WORKERS = 64
_STOP = _COUNT = struct.Struct("q")  # one slot each in the shared mapping
_SLOT = _STOP.size
_SLICE = struct.Struct("I")
_LENGTH = struct.Struct("Q")


def _slices(count: int, workers: int) -> list[tuple[int, int]]:
    """[start, stop) ranges covering 0..count in order: a few per worker, so one that runs
    slower (a busy core) is not waited for."""
    size = max(PARALLEL_FROM // 4, -(-count // (workers * 4)))
    return [(i, min(i + size, count)) for i in range(0, count, size)]


def _worker(k: int, plan: Plan, cfg, run: OutboxRun, recipients, bounds, take: int, into: int, shared) -> None:
    """A forked worker: take slices until none is left, send what each gave, then exit.

    Letters after a known failure cannot be published, so no worker writes them; letters
    before it still are, since one of them may fail first."""
    code, number, start = 0, -1, -1
    try:
        # Told to stop (Ctrl-C reaches the whole process group), a worker just stops:
        # the parent removes the run folder.
        for signum in _STOP_SIGNALS:
            signal.signal(signum, signal.SIG_DFL)
        done = 0
        slot = _SLOT * (1 + k)

        def advance() -> None:
            nonlocal done
            done += 1
            if done % 50 == 0:
                _COUNT.pack_into(shared, slot, done)

        def abandon(i: int) -> bool:
            return i > _STOP.unpack_from(shared, 0)[0]

        while True:
            taken = os.read(take, _SLICE.size)
            if not taken:
                break
            (number,) = _SLICE.unpack(taken)
            start, stop = bounds[number]
            run.rows = []
            try:
                _write_range(plan, cfg, run, recipients, start, stop, advance, abandon)
                record = (number, "written", run.take_manifest())
                start = stop  # what fails from here on fails after this slice's letters
            except _LetterFailed as failed:
                # Two workers failing at once may race here and leave the higher index:
                # then a few letters too many are written, never the wrong error reported
                # (that is the lowest index the parent receives).
                if failed.index < _STOP.unpack_from(shared, 0)[0]:
                    _STOP.pack_into(shared, 0, failed.index)
                record = (number, "failed", (failed.index, "letter", str(failed.error)))
            _send(into, record)
        _COUNT.pack_into(shared, slot, done)
    except BaseException as e:  # noqa: BLE001 - reported to the parent, which says it in one line
        code = 1
        try:
            if os.environ.get("OUTREACH_DEBUG"):
                import traceback

                traceback.print_exc()
            # Placed at its slice's first letter (no letter before it in the slice failed),
            # or just after the last slice it wrote.
            kind = "machine" if isinstance(e, (MemoryError, OSError)) else "bug"
            _send(into, (number, "failed", (start, kind, f"{type(e).__name__}: {e}")))
        except BaseException:  # noqa: BLE001 - the parent is gone or stopping us: nothing to tell
            pass
    finally:
        os._exit(code)


def _close(fds: set[int]) -> None:
    while fds:
        os.close(fds.pop())


def _send(fd: int, record) -> None:
    import pickle

    data = pickle.dumps(record)
    view = memoryview(_LENGTH.pack(len(data)) + data)
    while view:
        view = view[os.write(fd, view):]


def _records(buffer: bytearray) -> list:
    import pickle

    out, at = [], 0
    while at + _LENGTH.size <= len(buffer):
        (size,) = _LENGTH.unpack_from(buffer, at)
        if at + _LENGTH.size + size > len(buffer):
            break  # cut short: the worker died while sending
        out.append(pickle.loads(buffer[at + _LENGTH.size:at + _LENGTH.size + size]))
        at += _LENGTH.size + size
    return out


def _reap(children: list[int]) -> str | None:
    """Wait for every worker, taking each off the list once reaped (its pid may then be
    reused, so it is never signalled again); how the first one that did not exit
    cleanly stopped, or None."""
    killed = exited = None
    while children:
        try:
            _, status = os.waitpid(children[0], 0)
        except ChildProcessError:  # not ours to wait for (SIGCHLD ignored, say)
            status = 0
        children.pop(0)
        if os.WIFSIGNALED(status):
            killed = killed or f"killed by signal {os.WTERMSIG(status)}"
        elif status:
            exited = exited or f"exit status {os.WEXITSTATUS(status)}"
    return killed or exited  # a worker that exits 1 has said why; a killed one has not
