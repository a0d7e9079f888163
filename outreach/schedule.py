"""The long-running scheduler (`python scheduler.py`): each scheduled campaign, one batch per tick.

When a campaign may send is decided in outreach.office_hours (pure). Here a
Scheduler object drives APScheduler 3 through its public API (a trigger of our
own, jobs in its memory store, `misfire_grace_time`, `coalesce`, pause, resume,
shutdown), and each tick is one campaign run (outreach.run), exactly as
`outreach send --live --limit BATCH`.

The scheduler keeps its own record in the ledger: when each campaign's last
tick ran (`campaign_state.last_tick_at`). A tick that fell due while it was
down, or stopping, is one after that record: the next start runs it once, if
the window is still open.
"""

from __future__ import annotations

import datetime as dt
import logging
import os
import threading
import time

from apscheduler.triggers.base import BaseTrigger

from outreach.config_schedule import Schedule
from outreach.errors import EXIT_ATTENTION, EXIT_OK, UserError, one_line
from outreach.office_hours import (
    UTC, batch_for_tick, every, local_midnight, missed_tick, next_tick, when, window_open,
)

log = logging.getLogger("outreach.schedule")
JOB_PREFIX = "outreach:"


class OfficeHoursTrigger(BaseTrigger):
    """An APScheduler trigger firing on the schedule's ticks."""

    def __init__(self, schedule: Schedule):
        self.schedule = schedule

    def get_next_fire_time(self, previous_fire_time, now):
        after = previous_fire_time if previous_fire_time is not None else now - dt.timedelta(microseconds=1)
        return next_tick(after, self.schedule)

    def __str__(self) -> str:
        s = self.schedule
        return f"office hours {s.window[0]:%H:%M}-{s.window[1]:%H:%M} {s.timezone} every {every(s)}"


class Scheduler:
    """Every scheduled campaign of one config.toml, until SIGTERM / Ctrl-C (or its database fails)."""

    # The database must answer the lock's heartbeat at least this often, or the scheduler stops
    # (exit 1): a scheduler that cannot reach its ledger cannot hold its lock either.
    UNREACHABLE_AFTER_S = 30.0
    WATCH_EVERY_S = 0.2

    def __init__(self, config_path: str):
        self.config_path = config_path
        self.stop_asked = False             # set by SIGTERM / Ctrl-C: a plain attribute
        self.stopping = False               # ticks handed out from now on do nothing
        self.failure: str | None = None     # why the scheduler cannot go on
        self.ledger = None
        self._aps = None
        self._runs: set = set()             # the live runs of ticks in progress, to stop them
        self._ticks = 0                     # ticks in progress, live or not
        self._lock = threading.Lock()

    def ask_stop(self, signum=None, frame=None) -> None:
        """The signal handler: no lock taken (the main thread may hold one when it lands)."""
        self.stop_asked = True

    # -- the main thread ---------------------------------------------------------------------------

    def run(self) -> int:
        """Run until stopped; returns the exit code (1 when the scheduler could not go on)."""
        import signal

        _setup_logging()
        # Listen for SIGTERM / Ctrl-C before anything else, so a stop asked for while the
        # campaigns are being set up is never lost; the handler only raises a flag.
        previous = {sig: signal.signal(sig, self.ask_stop) for sig in (signal.SIGTERM, signal.SIGINT)}
        previous_hook = threading.excepthook
        threading.excepthook = self._thread_died
        try:
            return self._run()
        finally:
            threading.excepthook = previous_hook
            for sig, handler in previous.items():
                signal.signal(sig, handler)

    def _run(self) -> int:
        from apscheduler.schedulers.background import BackgroundScheduler

        from outreach.config import load_config
        from outreach.ledger import open_ledger
        from outreach.run import check_sender
        from outreach.transports import open_transport

        cfg = load_config(self.config_path)
        scheduled = {name: c.schedule for name, c in sorted(cfg.campaigns.items()) if c.schedule is not None}
        if not scheduled:
            raise UserError(f"{cfg.path}: no campaign has a [campaigns.NAME.schedule] table; add one to schedule it")
        if any(s.live for s in scheduled.values()):
            open_transport(cfg, purpose="a live schedule").close()  # the key is there before anything is scheduled
            check_sender(cfg)
        self.ledger = open_ledger(cfg)
        lock = self.ledger.lock("scheduler", "a scheduler on this database")
        lock.acquire()
        try:
            if lock.took_over:
                log.warning("took over the scheduler lock from pid %s on %s, which is no longer running",
                            lock.took_over["pid"], lock.took_over["host"])
            self._aps = BackgroundScheduler(timezone=UTC, job_defaults={"coalesce": True, "max_instances": 1})
            # Started paused, so every job is added before any is run; ticks then run in
            # APScheduler's threads while this one watches.
            self._aps.start(paused=True)
            self._add_jobs(cfg, scheduled)
            if not self.stop_asked:
                self._aps.resume()
            while not self.stop_asked and self.failure is None:
                time.sleep(self.WATCH_EVERY_S)
                self._watch(lock)
            log.info("stopping: the letters in flight are finished and recorded")
            self._stop()
        finally:
            lock.release()
        if self.failure is not None:
            log.info("scheduler stopped (%s)", self.failure)
            return EXIT_ATTENTION
        log.info("scheduler stopped")
        return EXIT_OK

    def _watch(self, lock) -> None:
        """A watchdog: the ledger must stay reachable, and the lock ours."""
        if lock.lost:
            self._fail("another scheduler took over the lock on this database")
        elif lock.failing_since is not None and time.time() - lock.failing_since > self.UNREACHABLE_AFTER_S:
            self._fail(f"the ledger's database has not answered for {self.UNREACHABLE_AFTER_S:.0f} s "
                       f"({one_line(str(lock.failure))[:240]})")

    def _fail(self, why: str) -> None:
        if self.failure is None:
            self.failure = why
            log.error("the scheduler cannot go on: %s; stopping", why)

    def _thread_died(self, args) -> None:
        """A thread ended by an exception (APScheduler's own, say): one line, and the scheduler stops."""
        if args.exc_type is SystemExit:
            return
        self._fail(f"{args.exc_type.__name__} in thread {args.thread.name if args.thread else '?'}: "
                   f"{one_line(str(args.exc_value))[:200]}")
        log.debug("the failure in full", exc_info=(args.exc_type, args.exc_value, args.exc_traceback))

    def _stop(self) -> None:
        """No new tick; every running one finished (its letters in flight recorded); then APScheduler."""
        self.stopping = True
        self._aps.pause()
        with self._lock:
            for run in list(self._runs):
                run.stop("the scheduler is stopping")
        # No deadline: a tick's sends all have timeouts.
        next_note = time.monotonic() + 30
        while True:
            with self._lock:
                running = self._ticks
            if not running:
                break
            if time.monotonic() >= next_note:
                log.info("stopping: still finishing %d tick(s)", running)
                next_note += 30
            time.sleep(0.1)
        # Jobs live in memory (they are added afresh at every start): with none left, the pass
        # APScheduler makes as it shuts down has nothing to hand out.
        self._aps.remove_all_jobs()
        self._aps.shutdown(wait=True)

    def _add_jobs(self, cfg, scheduled: dict) -> None:
        """One job per scheduled campaign that still has letters to send, a missed tick included."""
        from outreach.plan import plan_campaign

        now = dt.datetime.now(UTC)
        for name, s in scheduled.items():
            if self.stop_asked:
                return
            cid = self.ledger.campaigns.id(name)
            state = self.ledger.campaigns.state(cid)
            if state.ended_at and s.live:
                plan = plan_campaign(cfg, name, ledger=self.ledger)
                if not plan.to_send and not plan.waiting:
                    log.info("%s: finished earlier; nothing left to send", name)
                    continue
                self.ledger.campaigns.set_ended(cid, False)
            window = dt.datetime.combine(dt.date.today(), s.window[1]) - \
                dt.datetime.combine(dt.date.today(), s.window[0])
            grace = int(window.total_seconds()) or 1
            last = dt.datetime.fromtimestamp(state.last_tick_at, UTC) if state.last_tick_at else None
            missed = missed_tick(last, now, s, grace)
            self._aps.add_job(self.tick, OfficeHoursTrigger(s), args=[name], id=JOB_PREFIX + name, name=name,
                              coalesce=True, max_instances=1, misfire_grace_time=grace,
                              **({"next_run_time": missed} if missed else {}))
            if missed:
                log.info("%s: a tick at %s was missed while the scheduler was down; running it now",
                         name, when(missed, s))
            log.info("%s: scheduled (%s, %s); next run %s", name, "live" if s.live else "not live: logs only",
                     OfficeHoursTrigger(s), when(next_tick(now, s), s))

    # -- a tick, in one of APScheduler's threads ----------------------------------------------------

    def tick(self, campaign: str) -> None:
        """One scheduled tick of `campaign`: send (or, not live, list) one batch."""
        with self._lock:
            self._ticks += 1
        try:
            if self.stopping:
                # Due just as the scheduler stops: its last tick stays as it was, so the
                # next start runs this one as missed.
                log.info("%s: the tick due at %s was left for the next start", campaign,
                         f"{dt.datetime.now(UTC):%H:%M:%S} UTC")
                return
            self._tick(campaign)
        except UserError as e:
            for problem in e.problems:
                log.error("%s: %s", campaign, problem)
        except Exception as e:  # noqa: BLE001 - a tick must never take the scheduler down
            log.error("%s: the tick failed (%s: %s); the next tick tries again", campaign, type(e).__name__,
                      one_line(str(e))[:300])
            log.debug("the failure in full", exc_info=True)
        finally:
            with self._lock:
                self._ticks -= 1

    def _tick(self, campaign: str) -> None:
        from outreach.config import load_config
        from outreach.run import LIVE, CampaignRun, Request

        cfg = load_config(self.config_path)
        if campaign not in cfg.campaigns or cfg.campaigns[campaign].schedule is None:
            log.warning("%s: no longer scheduled in %s; removing its job", campaign, self.config_path)
            self._remove_job(campaign)
            return
        s = cfg.campaigns[campaign].schedule
        now = dt.datetime.now(UTC)
        campaigns = self.ledger.campaigns
        cid = campaigns.id(campaign)
        state = campaigns.state(cid)
        campaigns.set_last_tick(cid, now.timestamp())
        nxt = when(next_tick(now, s), s)
        if state.paused:
            log.info("%s: paused; nothing sent (next run %s)", campaign, nxt)
            return
        if not window_open(now, s):
            log.info("%s: outside the sending window; nothing sent (next run %s)", campaign, nxt)
            return
        sent_today = self.ledger.letters.sent_since(cid, local_midnight(now, s).timestamp())
        batch = batch_for_tick(s.batch_size or cfg.delivery.batch_size, s.daily_cap, sent_today)
        if batch <= 0:
            log.info("%s: daily cap of %d reached; nothing sent (next run %s)", campaign, s.daily_cap, nxt)
            return
        run = CampaignRun(cfg, Request(LIVE, campaign, limit=batch), ledger=self.ledger)
        if not s.live:
            prepared = run.prepare()
            for line in prepared.warnings:
                log.warning("%s: %s", campaign, line)
            chosen = prepared.chosen
            log.info("%s: not live (schedule live = false): would send %d letters: %s%s; nothing sent or recorded "
                     "(next run %s)", campaign, len(chosen), ", ".join(c.email for c in chosen[:10]),
                     f" and {len(chosen) - 10} more" if len(chosen) > 10 else "", nxt)
            return
        with self._lock:
            self._runs.add(run)
        try:
            if self.stopping:
                run.stop("the scheduler is stopping")
            summary = run.execute()
        except UserError as e:
            if "already running" not in e.problems[0]:
                raise
            log.warning("%s: %s; skipping this tick", campaign, e.problems[0])
            return
        finally:
            with self._lock:
                self._runs.discard(run)
        self._log_tick(summary, state, s, now)

    def _log_tick(self, summary, state, s: Schedule, now: dt.datetime) -> None:
        from outreach import states

        name, d, counts = summary.name, summary.dispatched, summary.counts or states.counts_template()
        for line in summary.warnings:
            log.warning("%s: %s", name, line)
        if summary.orphans:
            log.warning("%s: %d letters left `sending` by a stopped run are now unknown and will not be resent",
                        name, summary.orphans)
        if summary.plan.filtered:
            log.info("%s: %d recorded letters skipped: their recipients left the audience or the contact list",
                     name, summary.plan.filtered)
        remaining = sum(counts[st] for st in states.TO_SEND | states.IN_FLIGHT)
        sent = (d.accepted, d.failed, d.unknown) if d else (0, 0, 0)
        log.info("%s: sent %d, failed %d, unknown %d, remaining %d; next run %s", name, *sent, remaining,
                 when(next_tick(now, s), s) if remaining else "none")
        if remaining or state.ended_at:
            return
        # A run stopped midway may not have recorded every letter still to send: the end is
        # decided by a fresh plan, which sees them all.
        from outreach.config import load_config
        from outreach.plan import plan_campaign

        plan = plan_campaign(load_config(self.config_path), name, ledger=self.ledger)
        if plan.to_send or plan.waiting:
            return
        self.ledger.campaigns.set_ended(summary.plan.campaign_id, True)
        review = [r.id for r in self.ledger.letters.listing(summary.plan.campaign_id, "unknown")]
        log.info("%s: campaign finished: %d letters (%s)%s", name, sum(counts.values()),
                 ", ".join(f"{n} {k}" for k, n in counts.items() if n),
                 f"; {len(review)} unknown need review: {', '.join(review[:20])}"
                 f"{' ...' if len(review) > 20 else ''} (`outreach letters show ID`)" if review else "")
        self._remove_job(name)

    def _remove_job(self, campaign: str) -> None:
        from apscheduler.jobstores.base import JobLookupError

        if self.stopping:
            return  # the next start decides (removing a job now would wait on the shutdown)
        try:
            self._aps.remove_job(JOB_PREFIX + campaign)
        except JobLookupError:
            pass


def run_scheduler(config_path: str) -> int:
    """Run every scheduled campaign until SIGTERM / Ctrl-C; returns the exit code."""
    return Scheduler(config_path).run()


def _setup_logging() -> None:
    debug = os.environ.get("OUTREACH_DEBUG") == "1"
    logging.basicConfig(level=logging.DEBUG if debug else logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    logging.getLogger("apscheduler").setLevel(logging.WARNING)
    logging.getLogger("python_http_client").setLevel(logging.WARNING)
