"""Scheduled batch mailings: when a campaign may send (pure), and what each tick does.

The decisions — is this a sending day, is the window open, when is the next
tick, when will the campaign finish — are pure functions of a Schedule and a
UTC time. `run_scheduler` wires them to APScheduler 3 (BackgroundScheduler, its
SQLAlchemy job store in the ledger's database) and each tick sends one batch
through the same dispatcher as `outreach send --live`.
"""

from __future__ import annotations

import datetime as dt
import functools
import logging
import os
import threading
import time
from typing import Iterator
from zoneinfo import ZoneInfo

from apscheduler.schedulers.background import BackgroundScheduler
from apscheduler.schedulers.base import STATE_STOPPED
from apscheduler.triggers.base import BaseTrigger

from outreach.config import Schedule
from outreach.errors import one_line

log = logging.getLogger("outreach.schedule")
UTC = dt.timezone.utc
JOB_PREFIX = "outreach:"
JOBS_TABLE = "scheduler_jobs"   # APScheduler's job store, in the ledger's database
LOOKAHEAD_DAYS = 800   # far enough for any schedule with a sending day in it


# -- the calendar (pure) ------------------------------------------------------------------------------

@functools.lru_cache(maxsize=64)
def federal_holidays(year: int) -> frozenset[dt.date]:
    """U.S. federal holidays of `year`, observed dates included (the `holidays` package)."""
    import holidays

    return frozenset(holidays.country_holidays("US", years=[year]).keys())


def is_sending_day(day: dt.date, s: Schedule) -> bool:
    if day.weekday() not in s.days or day in s.skip_dates:
        return False
    return not (s.skip_federal_holidays and day in federal_holidays(day.year))


def _wall_times(day: dt.date, s: Schedule, from_wall: dt.time | None = None) -> Iterator[dt.time]:
    """The window's tick times on one day, as wall-clock times: start, start + every, ...

    With `from_wall`, ticks more than an hour and a bit before it are stepped over
    arithmetically (the hour covers a daylight-saving shift), not one by one.
    """
    start = dt.datetime.combine(day, s.window[0])
    end = dt.datetime.combine(day, s.window[1])
    t = start
    if from_wall is not None:
        ahead = (dt.datetime.combine(day, from_wall) - start).total_seconds() - 3900
        if ahead > 0:
            t = start + dt.timedelta(seconds=s.every_s * int(ahead // s.every_s))
    while t < end:
        yield t.time()
        t += dt.timedelta(seconds=s.every_s)


def _local(day: dt.date, wall: dt.time, tz: ZoneInfo) -> dt.datetime | None:
    """The moment a wall-clock time happens, or None if it does not (the spring-forward gap).

    A time that happens twice (fall back) is taken once, at its first occurrence.
    """
    aware = dt.datetime.combine(day, wall, tzinfo=tz).replace(fold=0)
    if aware.astimezone(UTC).astimezone(tz).replace(tzinfo=None) != aware.replace(tzinfo=None):
        return None
    return aware


def ticks_after(after: dt.datetime, s: Schedule) -> Iterator[dt.datetime]:
    """Every tick strictly after `after` (aware), in order, as UTC datetimes."""
    tz = ZoneInfo(s.timezone)
    after = max(after, s.start - dt.timedelta(microseconds=1)) if s.start else after
    local = after.astimezone(tz)
    day, first_day = local.date(), local.date()
    for _ in range(LOOKAHEAD_DAYS):
        if is_sending_day(day, s):
            for wall in _wall_times(day, s, local.time().replace(tzinfo=None) if day == first_day else None):
                moment = _local(day, wall, tz)
                if moment is not None and moment > after:
                    yield moment.astimezone(UTC)
        day += dt.timedelta(days=1)


def next_tick(after: dt.datetime, s: Schedule) -> dt.datetime | None:
    return next(ticks_after(after, s), None)


def window_open(now: dt.datetime, s: Schedule) -> bool:
    """Inside today's window, on a sending day, after the start."""
    if s.start and now < s.start:
        return False
    local = now.astimezone(ZoneInfo(s.timezone))
    if not is_sending_day(local.date(), s):
        return False
    return s.window[0] <= local.time().replace(tzinfo=None) < s.window[1]


def local_midnight(now: dt.datetime, s: Schedule) -> dt.datetime:
    tz = ZoneInfo(s.timezone)
    return dt.datetime.combine(now.astimezone(tz).date(), dt.time(), tzinfo=tz)


def batch_for_tick(batch_size: int, daily_cap: int | None, sent_today: int) -> int:
    """How many letters this tick may send: the batch, within what is left of the daily cap."""
    if daily_cap is None:
        return batch_size
    return max(0, min(batch_size, daily_cap - sent_today))


def expected_finish(now: dt.datetime, s: Schedule, remaining: int, batch: int,
                    sent_today: int = 0) -> dt.datetime | None:
    """When the last tick will run, if each tick sends `batch` within the daily cap."""
    if remaining <= 0:
        return now
    tz = ZoneInfo(s.timezone)
    today = now.astimezone(tz).date()
    used = {today: sent_today}
    for tick in ticks_after(now, s):
        day = tick.astimezone(tz).date()
        room = batch_for_tick(batch, s.daily_cap, used.get(day, 0))
        if room <= 0:
            continue
        used[day] = used.get(day, 0) + room
        remaining -= room
        if remaining <= 0:
            return tick
    return None


class OfficeHoursTrigger(BaseTrigger):
    """An APScheduler trigger firing on the schedule's ticks (picklable: it holds the Schedule)."""

    def __init__(self, schedule: Schedule):
        self.schedule = schedule

    def get_next_fire_time(self, previous_fire_time, now):
        after = previous_fire_time if previous_fire_time is not None else now - dt.timedelta(microseconds=1)
        return next_tick(after, self.schedule)

    def __getstate__(self):
        return {"version": 1, "schedule": self.schedule}

    def __setstate__(self, state):
        self.schedule = state["schedule"]

    def __str__(self) -> str:
        s = self.schedule
        return f"office hours {s.window[0]:%H:%M}-{s.window[1]:%H:%M} {s.timezone} every {s.every_s}s"


# -- what a tick does ---------------------------------------------------------------------------------

_STOPPING = threading.Event()
_RUNNING: set = set()        # the dispatchers of live ticks, to stop them
_RUNNING_LOCK = threading.Lock()
_TICKS = [0]                 # ticks running now, live or not (under _RUNNING_LOCK)
_DEFERRED: dict = {}         # campaign -> when its tick came due as the scheduler was stopping
_SCHEDULER = None


def stop_ticks() -> None:
    """Take no new letters in any running tick; they finish what is in flight and record it."""
    _STOPPING.set()
    with _RUNNING_LOCK:
        for dispatcher in list(_RUNNING):
            dispatcher.stop("the scheduler is stopping")


def run_tick(config_path: str, campaign: str) -> None:
    """One scheduled tick of `campaign`: send (or, not live, list) one batch. Called by APScheduler."""
    from outreach.errors import UserError

    with _RUNNING_LOCK:
        _TICKS[0] += 1
    try:
        _tick(config_path, campaign)
    except UserError as e:
        for problem in e.problems:
            log.error("%s: %s", campaign, problem)
    except Exception as e:  # noqa: BLE001 - a tick must never take the scheduler down
        log.error("%s: the tick failed (%s: %s); this is a bug: run with OUTREACH_DEBUG=1 for the details "
                  "and report it; the next tick tries again", campaign, type(e).__name__, e)
        log.debug("the failure in full", exc_info=True)
    finally:
        with _RUNNING_LOCK:
            _TICKS[0] -= 1


def _tick(config_path: str, campaign: str) -> None:
    from outreach.campaign import plan_campaign
    from outreach.config import load_config
    from outreach.ledger import open_ledger
    from outreach.state import campaign_state, sent_since, set_ended

    if _STOPPING.is_set():
        # Due just as the scheduler stops: kept as missed, for the next start to run.
        with _RUNNING_LOCK:
            _DEFERRED.setdefault(campaign, dt.datetime.now(UTC))
        return
    cfg = load_config(config_path)
    if campaign not in cfg.campaigns or cfg.campaigns[campaign].schedule is None:
        log.warning("%s: no longer scheduled in %s; removing its job", campaign, config_path)
        _remove_job(campaign)
        return
    s = cfg.campaigns[campaign].schedule
    now = dt.datetime.now(UTC)
    ledger = open_ledger(cfg)
    cid = ledger.campaign_id(campaign)
    state = campaign_state(ledger, cid)
    if state["paused"]:
        log.info("%s: paused; nothing sent (next run %s)", campaign, _when(next_tick(now, s), s))
        return
    if not window_open(now, s):
        log.info("%s: outside the sending window; nothing sent (next run %s)", campaign, _when(next_tick(now, s), s))
        return
    sent_today = sent_since(ledger, cid, local_midnight(now, s).timestamp())
    batch = batch_for_tick(s.batch_size or cfg.delivery.batch_size, s.daily_cap, sent_today)
    if batch <= 0:
        log.info("%s: daily cap of %d reached; nothing sent (next run %s)", campaign, s.daily_cap,
                 _when(next_tick(now, s), s))
        return
    plan = plan_campaign(cfg, campaign, ledger=ledger)
    if not s.live:
        _dry_tick(ledger, cid, plan, batch, now, s)
        return
    summary, remaining, counts = _live_tick(cfg, ledger, cid, plan, batch)
    if summary is None:
        return
    log.info("%s: sent %d, failed %d, unknown %d, remaining %d; next run %s", campaign, summary.accepted,
             summary.failed, summary.unknown, remaining, _when(next_tick(now, s), s) if remaining else "none")
    if remaining == 0 and not state["ended_at"]:
        set_ended(ledger, cid, True)
        review = [r.id for r in ledger.letters(cid, "unknown")]
        log.info("%s: campaign finished: %d letters (%s)%s", campaign, sum(counts.values()),
                 ", ".join(f"{n} {k}" for k, n in counts.items() if n),
                 f"; {len(review)} unknown need review: {', '.join(review[:20])}"
                 f"{' ...' if len(review) > 20 else ''} (`outreach letters show ID`)" if review else "")
        _remove_job(campaign)


def _dry_tick(ledger, cid: int, plan, batch: int, now: dt.datetime, s: Schedule) -> None:
    known = ledger.known(cid)
    waiting = [c for c in plan.recipients if c.key not in known or known[c.key][1] in ("pending", "retry_wait")]
    chosen = waiting[:batch]
    log.info("%s: not live (schedule live = false): would send %d letters: %s%s; nothing sent or recorded "
             "(next run %s)", plan.name, len(chosen), ", ".join(c.email for c in chosen[:10]),
             f" and {len(chosen) - 10} more" if len(chosen) > 10 else "", _when(next_tick(now, s), s))


def _live_tick(cfg, ledger, cid: int, plan, batch: int):
    from outreach.dispatch import Dispatcher
    from outreach.errors import UserError
    from outreach.ledger import FILTERED
    from outreach.live import check_sender, message_factory, settlement, transport_for

    check_sender(cfg)
    transport = transport_for(cfg, purpose="a live schedule")
    try:
        lock = ledger.lock(f"send:{plan.name}", f"a send of campaign {plan.name}")
        lock.acquire()
    except UserError as e:
        log.warning("%s: %s; skipping this tick", plan.name, e.problems[0])
        return None, None, None
    try:
        orphans = ledger.orphans_to_unknown(cid)
        if orphans:
            log.warning("%s: %d letters left `sending` by a stopped run are now unknown and will not be resent",
                        plan.name, orphans)
        changes = settlement(ledger, cid, plan)
        ledger.apply_settlement(changes)
        filtered = sum(1 for c in changes if c.reason == FILTERED)
        if filtered:
            log.info("%s: %d recorded letters skipped: their recipients left the audience or the contact list",
                     plan.name, filtered)
        ledger.record(cid, plan.preflight(plan.recipients), plan.templates.hash())
        ledger.record_skipped(cid, plan.suppressed)
        dispatcher = Dispatcher(ledger, cid, transport, message_factory(cfg, plan.name), cfg.delivery,
                                batch_size=batch)
        with _RUNNING_LOCK:
            _RUNNING.add(dispatcher)
        try:
            if _STOPPING.is_set():
                dispatcher.stop("the scheduler is stopping")
            summary = dispatcher.run(limit=batch)
        finally:
            with _RUNNING_LOCK:
                _RUNNING.discard(dispatcher)
            transport.close()
        counts = ledger.counts(cid)
        remaining = counts["pending"] + counts["retry_wait"] + counts["sending"]
        return summary, remaining, counts
    finally:
        lock.release()


def _when(moment: dt.datetime | None, s: Schedule) -> str:
    """'Mon 2026-11-30 09:30 EST (14:30 UTC here)': the campaign's time, then this machine's."""
    if moment is None:
        return "none"
    there = moment.astimezone(ZoneInfo(s.timezone))
    here = moment.astimezone()
    return f"{there:%a %Y-%m-%d %H:%M %Z} ({here:%H:%M %Z} here)"


# -- the long-running scheduler ------------------------------------------------------------------------

class _StopFlag:
    """Raised by SIGTERM / Ctrl-C. A plain attribute: a signal handler must not take a lock
    (threading.Event.set does, and the main thread may be holding it when the signal lands)."""

    def __init__(self):
        self.raised = False

    def raise_(self, signum=None, frame=None) -> None:
        self.raised = True


class _Scheduler(BackgroundScheduler):
    """APScheduler's background scheduler, with two of its edges filed off."""

    failure: Exception | None = None

    def _process_jobs(self):
        # After shutdown its loop makes one more pass, which would hand a due job to the
        # executor that has just been shut down (a logged traceback, and the job's next
        # run moved on unrun). Stopped means stopped.
        with self._jobstores_lock:
            if self.state == STATE_STOPPED:
                return None
            return super()._process_jobs()

    def _main_loop(self):
        # An error here (the job store's database, say) would end the thread silently and
        # leave a process that holds the scheduler lock but never ticks again.
        try:
            super()._main_loop()
        except Exception as e:  # noqa: BLE001 - reported, and the scheduler stops
            self.failure = e
            log.error("the scheduler cannot go on (%s: %s); stopping", type(e).__name__, one_line(str(e)))
            log.debug("the failure in full", exc_info=True)


def run_scheduler(config_path: str) -> int:
    """Run every scheduled campaign until SIGTERM / Ctrl-C; returns the exit code."""
    import signal

    global _SCHEDULER
    _setup_logging()
    # Listen for SIGTERM / Ctrl-C before anything else, so a stop asked for while the
    # campaigns are being set up is never lost; the handler only raises a flag.
    stop = _StopFlag()
    previous = {sig: signal.signal(sig, stop.raise_) for sig in (signal.SIGTERM, signal.SIGINT)}
    try:
        return _run_scheduler(config_path, stop)
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        _SCHEDULER = None


def _run_scheduler(config_path: str, stop: _StopFlag) -> int:
    from apscheduler.jobstores.sqlalchemy import SQLAlchemyJobStore

    from outreach.config import load_config
    from outreach.errors import EXIT_ATTENTION, EXIT_OK, UserError
    from outreach.ledger import open_ledger
    from outreach.live import check_sender, transport_for

    global _SCHEDULER
    cfg = load_config(config_path)
    scheduled = {name: c.schedule for name, c in sorted(cfg.campaigns.items()) if c.schedule is not None}
    if not scheduled:
        raise UserError(f"{cfg.path}: no campaign has a [campaigns.NAME.schedule] table; add one to schedule it")
    if any(s.live for s in scheduled.values()):
        check_sender(cfg)
        transport_for(cfg, purpose="a live schedule")  # the key is there before anything is scheduled
    ledger = open_ledger(cfg)
    lock = ledger.lock("scheduler", "a scheduler on this database")
    lock.acquire()
    try:
        if lock.took_over:
            log.warning("took over the scheduler lock from pid %s on %s, which is no longer running",
                        lock.took_over["pid"], lock.took_over["host"])
        _STOPPING.clear()
        _DEFERRED.clear()
        scheduler = _Scheduler(
            jobstores={"default": SQLAlchemyJobStore(engine=ledger.engine, tablename=JOBS_TABLE)},
            job_defaults={"coalesce": True, "max_instances": 1}, timezone=UTC)
        _SCHEDULER = scheduler
        # Started paused, so each job is in the job store before it is announced; ticks then
        # run in the scheduler's threads while this one waits for a stop.
        scheduler.start(paused=True)
        _add_jobs(scheduler, cfg, ledger, scheduled, stop)
        if not stop.raised:
            scheduler.resume()
            while not stop.raised and scheduler.failure is None:
                time.sleep(0.2)
        log.info("stopping: the letters in flight are finished and recorded")
        # No new tick (a pass handing out due ticks finishes first: it holds the job-store
        # lock), then every running one finished before APScheduler shuts down: a
        # campaign's last tick removes its job, which needs the lock shutdown holds.
        if scheduler.failure is None:
            with scheduler._jobstores_lock:
                scheduler.pause()
        stop_ticks()
        _wait_for_ticks()
        if scheduler.running:
            scheduler.shutdown(wait=True)
        _keep_deferred_ticks(ledger)
    finally:
        lock.release()
    log.info("scheduler stopped")
    return EXIT_OK if scheduler.failure is None else EXIT_ATTENTION


def _add_jobs(scheduler, cfg, ledger, scheduled: dict, stop: _StopFlag) -> None:
    """One job per scheduled campaign that still has letters to send, a missed tick included."""
    from outreach.campaign import plan_campaign
    from outreach.state import campaign_state, set_ended

    now = dt.datetime.now(UTC)
    for name, s in scheduled.items():
        if stop.raised:
            return
        cid = ledger.campaign_id(name)
        ended = campaign_state(ledger, cid)["ended_at"]
        if ended and s.live:
            counts = ledger.counts(cid)
            plan = plan_campaign(cfg, name, ledger=ledger)
            known = ledger.known(cid)
            if counts["pending"] + counts["retry_wait"] == 0 and all(c.key in known for c in plan.recipients):
                log.info("%s: finished earlier; nothing left to send", name)
                _remove_job(name)  # a job a stop left behind would tick for nothing, forever
                continue
            set_ended(ledger, cid, False)
        window = dt.datetime.combine(dt.date.today(), s.window[1]) - dt.datetime.combine(dt.date.today(), s.window[0])
        grace = int(window.total_seconds()) or 1
        # A tick missed while the scheduler was down runs once on return if still in the
        # window (coalesced, within the grace); the tick itself checks the window. Re-adding
        # the job would otherwise count its next run from now and drop the missed tick.
        missed = missed_tick(_stored_next_run(ledger, JOB_PREFIX + name), now, s, grace)
        scheduler.add_job("outreach.schedule:run_tick", OfficeHoursTrigger(s), args=[str(cfg.path), name],
                          id=JOB_PREFIX + name, name=name, replace_existing=True, coalesce=True, max_instances=1,
                          misfire_grace_time=grace, **({"next_run_time": missed} if missed else {}))
        if missed:
            log.info("%s: a tick at %s was missed while the scheduler was down; running it now",
                     name, _when(missed, s))
        log.info("%s: scheduled (%s, %s); next run %s", name, "live" if s.live else "not live: logs only",
                 OfficeHoursTrigger(s), _when(next_tick(now, s), s))


def missed_tick(stored: dt.datetime | None, now: dt.datetime, s: Schedule, grace_s: int) -> dt.datetime | None:
    """The latest tick due while the scheduler was down (its stored next run had passed),
    if it is within the grace: run once on return. None when nothing was missed."""
    if stored is None or stored > now or not window_open(now, s):
        return None
    since = now - dt.timedelta(seconds=grace_s)
    last = stored if stored >= since else None  # the stored run itself (an earlier config's tick, too)
    for t in ticks_after(max(stored, since), s):
        if t > now:
            break
        last = t
    return last


def _stored_next_run(ledger, job_id: str) -> dt.datetime | None:
    """When APScheduler's job store expected to run the job next (None: no such job yet)."""
    from sqlalchemy import text
    from sqlalchemy.exc import SQLAlchemyError

    try:
        with ledger.engine.connect() as db:
            value = db.execute(text(f"SELECT next_run_time FROM {JOBS_TABLE} WHERE id = :id"),
                               {"id": job_id}).scalar()
    except SQLAlchemyError:
        return None  # no job store yet
    return dt.datetime.fromtimestamp(value, UTC) if value is not None else None


def _remove_job(campaign: str) -> None:
    from apscheduler.jobstores.base import JobLookupError

    if _SCHEDULER is not None:
        try:
            _SCHEDULER.remove_job(JOB_PREFIX + campaign)
        except JobLookupError:
            pass


def _wait_for_ticks() -> None:
    """Until no tick is running. No deadline: shutting down under a running tick can
    deadlock (see above), and a tick's sends all have timeouts."""
    next_note = time.monotonic() + 30
    while True:
        with _RUNNING_LOCK:
            running = _TICKS[0]
        if not running:
            return
        if time.monotonic() >= next_note:
            log.info("stopping: still finishing %d tick(s)", running)
            next_note += 30
        time.sleep(0.1)


def _keep_deferred_ticks(ledger) -> None:
    """Ticks that came due while the scheduler stopped did nothing, yet APScheduler moved
    their jobs on to the next run: put that run back, so the next start runs them as missed."""
    from apscheduler.jobstores.sqlalchemy import SQLAlchemyJobStore

    with _RUNNING_LOCK:
        deferred = dict(_DEFERRED)
        _DEFERRED.clear()
    if not deferred:
        return
    store = SQLAlchemyJobStore(engine=ledger.engine, tablename=JOBS_TABLE)
    for campaign, due in deferred.items():
        job = store.lookup_job(JOB_PREFIX + campaign)
        if job is not None and job.next_run_time and job.next_run_time > due:
            job.next_run_time = due
            store.update_job(job)
            log.info("%s: the tick due at %s was left for the next start", campaign, f"{due:%H:%M:%S} UTC")


def _setup_logging() -> None:
    debug = os.environ.get("OUTREACH_DEBUG") == "1"
    logging.basicConfig(level=logging.DEBUG if debug else logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    logging.getLogger("apscheduler").setLevel(logging.WARNING)
    logging.getLogger("python_http_client").setLevel(logging.WARNING)
