"""Scheduled batch mailings: the calendar decisions with an injected clock, then scheduler.py for real."""

from __future__ import annotations

import datetime as dt
import os
import signal
import subprocess
import sys
import time
from zoneinfo import ZoneInfo

import pytest

from conftest import ROOT
from mockgrid import MockGrid
from outreach.config import load_config
from outreach.config_schedule import Schedule, parse_days
from outreach.office_hours import (
    batch_for_tick, every, expected_finish, is_sending_day, missed_tick, next_tick, ticks_after, window_open,
)
from outreach.schedule import OfficeHoursTrigger
from test_crash import many_contacts
from test_live import KEY, campaign_letters, ledger_of, write_live_config

NY = ZoneInfo("America/New_York")
UTC = dt.timezone.utc


def at(y, m, d, hh=0, mm=0, tz=NY) -> dt.datetime:
    return dt.datetime(y, m, d, hh, mm, tzinfo=tz)


def weekday_schedule(**changes) -> Schedule:
    return Schedule(**{"days": parse_days("mon-fri"), "window": (dt.time(9, 30), dt.time(16, 30)),
                       "every_s": 3600, **changes})


# -- the window and the calendar -------------------------------------------------------------------

def test_the_window_opens_and_closes_in_eastern_time():
    s = weekday_schedule()
    assert not window_open(at(2026, 12, 1, 9, 29), s)            # Tuesday, a minute early
    assert window_open(at(2026, 12, 1, 9, 30), s)
    assert window_open(at(2026, 12, 1, 16, 29), s)
    assert not window_open(at(2026, 12, 1, 16, 30), s)
    assert not window_open(at(2026, 12, 5, 11, 0), s)            # Saturday
    # The same instant seen from UTC: 14:30 UTC is 09:30 in New York in December.
    assert window_open(dt.datetime(2026, 12, 1, 14, 30, tzinfo=UTC), s)


@pytest.mark.parametrize("day,name", [
    (dt.date(2026, 11, 26), "Thanksgiving"), (dt.date(2026, 12, 25), "Christmas"),
    (dt.date(2026, 11, 11), "Veterans Day"), (dt.date(2027, 1, 1), "New Year's Day"),
    (dt.date(2027, 1, 18), "Martin Luther King Jr. Day"), (dt.date(2027, 2, 15), "Washington's Birthday"),
    (dt.date(2027, 5, 31), "Memorial Day"), (dt.date(2027, 6, 18), "Juneteenth (observed)"),
    (dt.date(2027, 7, 5), "Independence Day (observed)"), (dt.date(2027, 9, 6), "Labor Day"),
    (dt.date(2027, 10, 11), "Columbus Day"), (dt.date(2027, 11, 11), "Veterans Day"),
    (dt.date(2027, 11, 25), "Thanksgiving"),
    (dt.date(2027, 12, 24), "Christmas (observed)"), (dt.date(2027, 12, 31), "New Year's Day 2028 (observed)"),
    (dt.date(2026, 7, 3), "Independence Day 2026 (observed)"),
])
def test_federal_holidays_of_2026_and_2027_are_skipped(day, name):
    assert day.weekday() < 5, name
    assert not is_sending_day(day, weekday_schedule())
    assert is_sending_day(day, weekday_schedule(skip_federal_holidays=False))


def test_skip_dates_and_days():
    s = weekday_schedule(days=parse_days("mon,wed,fri"), skip_dates=frozenset({dt.date(2026, 12, 2)}))
    assert [is_sending_day(dt.date(2026, 11, 30) + dt.timedelta(days=i), s) for i in range(7)] == \
        [True, False, False, False, True, False, False]   # Wed 2 Dec is a recess day


def test_ticks_start_at_the_window_and_stop_before_its_end():
    s = weekday_schedule(every_s=2 * 3600)
    ticks = [t.astimezone(NY) for t in ticks_after(at(2026, 12, 1, 0, 0), s)][:5]
    assert [t.strftime("%a %H:%M") for t in ticks] == ["Tue 09:30", "Tue 11:30", "Tue 13:30", "Tue 15:30",
                                                       "Wed 09:30"]


def test_the_start_date_holds_ticks_back_and_carries_its_offset():
    s = weekday_schedule(start=dt.datetime(2026, 12, 3, 12, 0, tzinfo=dt.timezone(dt.timedelta(hours=-5))))
    assert next_tick(at(2026, 12, 1), s).astimezone(NY) == at(2026, 12, 3, 12, 30)
    assert not window_open(at(2026, 12, 2, 10, 0), s)


def test_spring_forward_neither_skips_nor_doubles_the_window():
    s = weekday_schedule(every_s=3600)
    # Daylight saving begins Sunday 14 March 2027; Friday before and Monday after.
    before = [t.astimezone(NY) for t in ticks_after(at(2027, 3, 12, 0, 0), s)][:14]
    hours = ("09", "10", "11", "12", "13", "14", "15")
    assert [t.strftime("%a %H:%M") for t in before] == [f"{d} {h}:30" for d in ("Fri", "Mon") for h in hours]
    # Wall-clock 09:30 both days, although the UTC hour moved.
    assert before[0].astimezone(UTC).hour == 14 and before[7].astimezone(UTC).hour == 13


def test_fall_back_neither_skips_nor_doubles_the_window():
    s = weekday_schedule(every_s=3600)
    ticks = [t.astimezone(NY) for t in ticks_after(at(2026, 10, 30, 0, 0), s)][:14]   # DST ends Sun 1 Nov 2026
    assert [t.strftime("%a %H:%M") for t in ticks] == [f"{d} {h}:30" for d in ("Fri", "Mon")
                                                       for h in ("09", "10", "11", "12", "13", "14", "15")]
    assert ticks[0].astimezone(UTC).hour == 13 and ticks[7].astimezone(UTC).hour == 14


def test_a_window_over_the_change_hour_runs_once_through_it():
    s = Schedule(days=parse_days("mon-sun"), window=(dt.time(0, 0), dt.time(4, 0)), every_s=1800,
                 skip_federal_holidays=False)
    spring = [t.astimezone(NY).strftime("%H:%M") for t in ticks_after(at(2027, 3, 14, 0, 0) - dt.timedelta(minutes=1), s)][:6]
    assert spring == ["00:00", "00:30", "01:00", "01:30", "03:00", "03:30"]      # 02:00-02:59 does not exist
    fall = [t.astimezone(NY) for t in ticks_after(at(2026, 11, 1, 0, 0) - dt.timedelta(minutes=1), s)][:8]
    assert [t.strftime("%H:%M") for t in fall] == ["00:00", "00:30", "01:00", "01:30", "02:00", "02:30", "03:00",
                                                   "03:30"]   # 01:00-01:59 happens twice; ticked once
    assert all(b > a for a, b in zip(fall, fall[1:]))


def test_the_trigger_gives_one_next_run_after_a_long_outage():
    """APScheduler asks for the fire times missed; with coalesce they collapse to one run."""
    s = weekday_schedule(every_s=900)
    trigger = OfficeHoursTrigger(s)
    down_from, back_at = at(2026, 12, 1, 9, 40), at(2026, 12, 1, 12, 5)
    missed = []
    t = trigger.get_next_fire_time(down_from, back_at)
    while t is not None and t <= back_at:
        missed.append(t)
        t = trigger.get_next_fire_time(t, back_at)
    assert len(missed) == 10 and t.astimezone(NY) == at(2026, 12, 1, 12, 15)
    assert str(trigger) == "office hours 09:30-16:30 America/New_York every 15m"
    assert [every(weekday_schedule(every_s=n)) for n in (30, 900, 3600, 5400)] == ["30s", "15m", "1h", "90m"]


def test_a_tick_missed_while_down_runs_once_on_return_only_inside_the_window():
    s = weekday_schedule(every_s=900)
    grace = 7 * 3600
    ran = dt.timedelta(seconds=3)  # a tick runs a moment after its time
    # The 10:15 tick ran; down until 10:52: the 10:45 tick runs on return, once (not 10:30 too).
    assert missed_tick(at(2026, 12, 1, 10, 15) + ran, at(2026, 12, 1, 10, 52), s, grace) == at(2026, 12, 1, 10, 45)
    # Down a whole day: the latest tick of today's window, not a burst from yesterday.
    assert missed_tick(at(2026, 12, 1, 11, 0) + ran, at(2026, 12, 2, 11, 5), s, grace) == at(2026, 12, 2, 11, 0)
    # Back after the window closed, or before it opens, or on a weekend: nothing now.
    assert missed_tick(at(2026, 12, 1, 10, 15) + ran, at(2026, 12, 1, 18, 0), s, grace) is None
    assert missed_tick(at(2026, 12, 1, 16, 15) + ran, at(2026, 12, 2, 9, 20), s, grace) is None
    assert missed_tick(at(2026, 12, 4, 16, 15) + ran, at(2026, 12, 5, 11, 0), s, grace) is None
    # Nothing missed: the next tick is still ahead; and a scheduler that never ticked missed nothing.
    assert missed_tick(at(2026, 12, 1, 10, 45) + ran, at(2026, 12, 1, 10, 52), s, grace) is None
    assert missed_tick(None, at(2026, 12, 1, 10, 52), s, grace) is None


def test_a_tick_sends_its_batch_within_the_daily_cap():
    assert batch_for_tick(25, None, 10_000) == 25
    assert batch_for_tick(25, 100, 0) == 25
    assert batch_for_tick(25, 100, 90) == 10
    assert batch_for_tick(25, 100, 100) == 0 and batch_for_tick(25, 100, 130) == 0


def test_expected_finish_respects_batch_and_daily_cap():
    s = weekday_schedule(every_s=3600, daily_cap=100)
    # 537 letters, 50 a tick, 100 a day: five full days from Monday, the last 37 at the
    # first tick of the next Monday.
    finish = expected_finish(at(2026, 11, 30, 8, 0), s, remaining=537, batch=50)
    assert finish.astimezone(NY) == at(2026, 12, 7, 9, 30)
    assert expected_finish(at(2026, 11, 30, 8, 0), weekday_schedule(every_s=3600), 100, 50).astimezone(NY) \
        == at(2026, 11, 30, 10, 30)


def test_schedule_keys_are_validated(project, outreach):
    project.write_config(extra='[campaigns.korea-exception.schedule]\nwindow = "17:00-09:00"\nevery = "often"\n'
                               'days = "weekdays"\ntimezone = "Mars/Olympus"\nskip_dates = ["soon"]\n')
    r = outreach("--config", project.config, "schedule", "show")
    assert r.code == 2
    for key in ("window", "every", "days", "timezone", "skip_dates"):
        assert f"[campaigns.korea-exception.schedule] {key}" in r.err


def test_a_naive_start_is_in_the_schedule_time_zone(project):
    project.write_config(extra='[campaigns.korea-exception.schedule]\nstart = 2026-12-01T09:30:00\n'
                               'timezone = "America/Chicago"\n')
    s = load_config(project.config).campaigns["korea-exception"].schedule
    assert s.start == dt.datetime(2026, 12, 1, 9, 30, tzinfo=ZoneInfo("America/Chicago"))


# -- scheduler.py for real ----------------------------------------------------------------------------

FAST = """
[campaigns.korea-exception.schedule]
days = "mon-sun"
window = "00:00-24:00"
timezone = "UTC"
every = "1s"
batch_size = 4
skip_federal_holidays = false
live = true
"""


class Scheduler:
    """`python scheduler.py` as a subprocess, its log collected as it runs."""

    def __init__(self, project, prelude: str = ""):
        """`prelude`: Python run first in the same process (to slow a step down or break one)."""
        import threading

        env = {**os.environ, "SENDGRID_API_KEY": KEY}
        command = [sys.executable, str(ROOT / "scheduler.py"), "--config", str(project.config)]
        if prelude:
            command = [sys.executable, "-c", f"{prelude}\nimport runpy, sys\nsys.argv = {command[1:]!r}\n"
                                             f"runpy.run_path({command[1]!r}, run_name='__main__')"]
        self.proc = subprocess.Popen(command, cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                                     text=True)
        self.lines: list[str] = []
        self.reader = threading.Thread(target=lambda: self.lines.extend(iter(self.proc.stderr.readline, "")),
                                       daemon=True)
        self.reader.start()

    @property
    def log(self) -> str:
        return "".join(self.lines)

    @property
    def returncode(self):
        return self.proc.returncode

    def send_signal(self, sig) -> None:
        self.proc.send_signal(sig)

    def wait(self, timeout: float = 60) -> int:
        try:
            self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()  # never leave a scheduler behind a failed test
            self.proc.wait()
            pytest.fail(f"the scheduler did not stop within {timeout:.0f} s; its log:\n{self.log}")
        self.reader.join(10)
        return self.proc.returncode

    def communicate(self, timeout: float = 60) -> tuple[str, str]:
        self.wait(timeout)
        return "", self.log


_STARTED: list[Scheduler] = []


@pytest.fixture(autouse=True)
def _no_scheduler_left_behind():
    yield
    while _STARTED:
        proc = _STARTED.pop().proc
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def start_scheduler(project, prelude: str = "") -> Scheduler:
    _STARTED.append(Scheduler(project, prelude))
    return _STARTED[-1]


def stopped_cleanly(proc: Scheduler, timeout: float = 30) -> bool:
    """Exit 0 within `timeout`, having said so, with no traceback in its log."""
    code = proc.wait(timeout)
    return code == 0 and "Traceback" not in proc.log and "stopped" in proc.log


def wait_for(condition, timeout: float, what: str):
    deadline = time.time() + timeout
    while time.time() < deadline:
        if condition():
            return
        time.sleep(0.1)
    pytest.fail(f"timed out waiting for {what}")


def test_the_scheduler_survives_sigkill_and_finishes_the_campaign(project):
    many_contacts(project, 30)
    with MockGrid(api_key=KEY, latency=0.05) as grid:
        write_live_config(project, grid, extra=FAST, concurrency=2)
        first = start_scheduler(project)
        wait_for(lambda: len(grid.deliveries()) >= 6, 30, "the first batches")
        # A second scheduler on the same database refuses to start.
        second = start_scheduler(project)
        out, err = second.communicate(timeout=30)
        assert second.returncode == 2 and "already running" in err
        first.send_signal(signal.SIGKILL)
        first.wait()
        sent_before_kill = len(grid.deliveries())
        assert sent_before_kill < 30
        # The killed one's lock is stale: a new scheduler takes it over and carries on.
        third = start_scheduler(project)

        def finished():
            counts = ledger_of(project).letters.counts(ledger_of(project).campaigns.id("korea-exception"))
            return counts["pending"] + counts["retry_wait"] + counts["sending"] == 0 and sum(counts.values()) == 30

        wait_for(finished, 60, "the campaign to finish")
        time.sleep(1.5)  # a tick or two more: the end is logged once, not at every tick
        third.send_signal(signal.SIGTERM)
        out, err = third.communicate(timeout=60)
        received = grid.received
    assert third.returncode == 0, err
    assert "took over the scheduler lock" in err
    assert "campaign finished" in err and err.count("campaign finished") == 1
    assert "sent" in err and "remaining" in err and "next run" in err
    assert max(received.values()) == 1
    statuses = [row.status for row in campaign_letters(project)]
    assert len(statuses) == 30 and set(statuses) <= {"accepted", "unknown"}


def test_pause_is_honoured_at_the_next_tick_and_sigterm_exits_0(project, outreach):
    many_contacts(project, 20)
    with MockGrid(api_key=KEY, latency=0.05) as grid:
        write_live_config(project, grid, extra=FAST, concurrency=1)
        assert outreach("--config", project.config, "schedule", "pause", "korea-exception").code == 0
        proc = start_scheduler(project)
        wait_for(lambda: "paused; nothing sent" in proc.log, 30, "a paused tick")
        assert grid.deliveries() == []
        r = outreach("--config", project.config, "schedule", "show")
        assert "korea-exception: paused" in r.out and "letters remaining: 20" in r.out
        outreach("--config", project.config, "schedule", "resume", "korea-exception")
        wait_for(lambda: len(grid.deliveries()) >= 4, 20, "sending after resume")
        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=60)
    assert proc.returncode == 0, err
    assert "paused; nothing sent" in err
    assert "sending" not in {row.status for row in campaign_letters(project)}


def test_a_schedule_that_is_not_live_logs_and_records_nothing(project):
    many_contacts(project, 10)
    with MockGrid(api_key=KEY) as grid:
        write_live_config(project, grid, extra=FAST.replace("live = true", "live = false"))
        proc = start_scheduler(project)
        wait_for(lambda: "would send" in proc.log, 30, "a tick that is not live")
        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=60)
        assert grid.deliveries() == []
    assert proc.returncode == 0, err
    assert "would send 4 letters" in err and "nothing sent or recorded" in err
    assert "Error submitting job" not in err
    assert campaign_letters(project) == []


def last_tick(project, when: dt.datetime | None = None) -> dt.datetime | None:
    """When the scheduler last ran a tick of the campaign (None: never); with `when`, set it first."""
    ledger = ledger_of(project)
    cid = ledger.campaigns.id("korea-exception")
    if when is not None:
        ledger.campaigns.set_last_tick(cid, when.timestamp())
    t = ledger.campaigns.state(cid).last_tick_at
    return dt.datetime.fromtimestamp(t, UTC) if t is not None else None


def hourly_not_live() -> str:
    """An hourly schedule, not live, whose window opened 20 minutes ago: no tick falls due
    while a test runs (a window from midnight would tick at the top of every hour)."""
    opened = dt.datetime.now(UTC) - dt.timedelta(minutes=20)
    window = f"{opened:%H:%M}-24:00" if opened.date() == dt.datetime.now(UTC).date() else "00:00-24:00"
    return (FAST.replace('every = "1s"', 'every = "1h"').replace("live = true", "live = false")
            .replace('window = "00:00-24:00"', f'window = "{window}"'))


def slowed(method: str, note: str) -> str:
    """A prelude that makes Scheduler.`method` print `note` and wait 1.5 s before it runs."""
    return (f"import sys, time, outreach.schedule as s\n_f = s.Scheduler.{method}\n"
            f"def slow(*a):\n    print({note!r}, file=sys.stderr, flush=True)\n    time.sleep(1.5)\n"
            f"    return _f(*a)\ns.Scheduler.{method} = slow")


def a_missed_tick(project) -> dt.datetime:
    """As if the scheduler ran a tick 30 minutes ago and then went down: the window's first
    tick (20 minutes ago) is missed. Returns when the last tick ran."""
    return last_tick(project, dt.datetime.now(UTC) - dt.timedelta(minutes=30))


def test_a_tick_missed_while_the_scheduler_was_down_runs_on_return_once(project):
    """A start stopped during its set-up (made slow here) stops at once, cleanly, and leaves the
    missed tick alone; the next start runs it at once, once."""
    many_contacts(project, 10)
    with MockGrid(api_key=KEY) as grid:
        write_live_config(project, grid, extra=hourly_not_live())
        ran = a_missed_tick(project)
        second = start_scheduler(project, prelude=slowed("_add_jobs", "adding jobs"))
        wait_for(lambda: "adding jobs" in second.log, 30, "the set-up")
        second.send_signal(signal.SIGTERM)
        assert stopped_cleanly(second, 10), second.log
        assert "would send" not in second.log
        assert last_tick(project) == ran  # not moved on unrun
        third = start_scheduler(project)
        wait_for(lambda: "would send" in third.log, 30, "the missed tick")
        time.sleep(1.0)
        third.send_signal(signal.SIGTERM)
        assert stopped_cleanly(third), third.log
        assert grid.deliveries() == []
    assert "was missed while the scheduler was down" in third.log
    assert third.log.count("would send") == 1
    assert last_tick(project) > ran


def test_sigterm_while_still_importing_stops_the_scheduler_cleanly(project):
    """Before the scheduler listens for signals itself (its imports, made slow here): exit 0, one line."""
    slow_import = ("import importlib.abc, sys, time\n"
                   "class Slow(importlib.abc.MetaPathFinder):\n"
                   "    def find_spec(self, name, path, target=None):\n"
                   "        if name == 'outreach.cli':\n"
                   "            print('importing', file=sys.stderr, flush=True)\n"
                   "            time.sleep(1.5)\n"
                   "sys.meta_path.insert(0, Slow())")
    many_contacts(project, 10)
    with MockGrid(api_key=KEY) as grid:
        write_live_config(project, grid, extra=FAST.replace("live = true", "live = false"))
        proc = start_scheduler(project, prelude=slow_import)
        wait_for(lambda: "importing" in proc.log, 30, "the imports")
        proc.send_signal(signal.SIGTERM)
        assert stopped_cleanly(proc), proc.log
        assert "scheduler.py: stopped" in proc.log and "scheduled (" not in proc.log
        assert grid.deliveries() == []


def test_sigterm_while_the_last_batch_is_in_flight(project):
    """The campaign's last tick finishes while the scheduler stops: the letters in flight are
    recorded, the campaign is finished, the scheduler exits."""
    many_contacts(project, 4)
    with MockGrid(api_key=KEY, latency=1.5) as grid:
        write_live_config(project, grid, extra=FAST)
        proc = start_scheduler(project)
        wait_for(lambda: any(r.status == "sending" for r in campaign_letters(project)), 30, "letters in flight")
        proc.send_signal(signal.SIGTERM)
        assert stopped_cleanly(proc), proc.log
        assert "campaign finished" in proc.log
        assert len(grid.deliveries()) == 4
    assert {r.status for r in campaign_letters(project)} == {"accepted"}


UNREACHABLE = ("import time, outreach.ledger.database as d, outreach.ledger.locks as k, outreach.schedule as s\n"
               "from sqlalchemy.exc import OperationalError\n"
               "k.Lock.HEARTBEAT = 0.2\n"
               "s.Scheduler.UNREACHABLE_AFTER_S = 1.0\n"
               "_started, _write = time.time(), d.Ledger.write\n"
               "def write(self):\n"
               "    if time.time() - _started > 3:\n"
               "        raise OperationalError('UPDATE locks', {}, Exception('unable to open database file'))\n"
               "    return _write(self)\n"
               "d.Ledger.write = write")


def test_a_ledger_that_stops_answering_stops_the_scheduler_with_one_line(project):
    """Its database gone (a file system, a server): it says so in one line, lets go of what it
    can and exits 1, rather than living on without a lock it can no longer renew."""
    many_contacts(project, 10)
    with MockGrid(api_key=KEY) as grid:
        write_live_config(project, grid, extra=hourly_not_live())
        proc = start_scheduler(project, prelude=UNREACHABLE)
        assert proc.wait(30) == 1, proc.log
        assert grid.deliveries() == []
    assert "Traceback" not in proc.log
    assert proc.log.count("the scheduler cannot go on: the ledger's database has not answered") == 1, proc.log
    assert "unable to open database file" in proc.log and "scheduler stopped" in proc.log
    ledger_of(project).lock("scheduler", "a second scheduler").acquire()  # the first one is gone


def test_a_scheduler_thread_that_dies_stops_the_scheduler_with_one_line(project):
    """APScheduler's own loop ended by an error (here: the trigger, the next time it is asked):
    one line, exit 1, instead of a process that holds the lock and never ticks again."""
    broken = ("import outreach.schedule as s\n_g, _n = s.OfficeHoursTrigger.get_next_fire_time, [0]\n"
              "def g(self, *a):\n    _n[0] += 1\n"
              "    if _n[0] > 1:\n        raise RuntimeError('the trigger broke')\n    return _g(self, *a)\n"
              "s.OfficeHoursTrigger.get_next_fire_time = g")
    many_contacts(project, 10)
    with MockGrid(api_key=KEY) as grid:
        write_live_config(project, grid, extra=FAST.replace("live = true", "live = false"))
        proc = start_scheduler(project, prelude=broken)
        assert proc.wait(30) == 1, proc.log
    assert "Traceback" not in proc.log
    assert proc.log.count("the scheduler cannot go on: RuntimeError in thread") == 1, proc.log
    assert "scheduler stopped" in proc.log


def test_sigterm_at_the_first_moment_stops_the_scheduler(project):
    """Signalled as soon as it says anything, over and over: it always exits cleanly."""
    many_contacts(project, 10)
    with MockGrid(api_key=KEY) as grid:
        write_live_config(project, grid, extra=FAST.replace("live = true", "live = false"))
        for _ in range(3):
            proc = start_scheduler(project)
            wait_for(lambda: proc.lines, 30, "the scheduler's first line")
            proc.send_signal(signal.SIGTERM)
            assert stopped_cleanly(proc), proc.log
        assert grid.deliveries() == []


def test_a_tick_due_as_the_scheduler_stops_is_kept_for_the_next_start(project):
    """A tick handed out just before SIGTERM (slow to start, here) does nothing and leaves the
    record of the last tick as it was, so the next start runs it as missed instead of
    skipping a batch."""
    many_contacts(project, 10)
    with MockGrid(api_key=KEY) as grid:
        write_live_config(project, grid, extra=hourly_not_live())
        ran = a_missed_tick(project)
        second = start_scheduler(project, prelude=slowed("tick", "tick handed out"))
        wait_for(lambda: "tick handed out" in second.log, 30, "the missed tick handed out")
        second.send_signal(signal.SIGTERM)
        assert stopped_cleanly(second), second.log
        assert "would send" not in second.log
        assert "was left for the next start" in second.log
        assert last_tick(project) == ran
        third = start_scheduler(project)
        wait_for(lambda: "would send" in third.log, 30, "the kept tick")
        third.send_signal(signal.SIGTERM)
        assert stopped_cleanly(third), third.log
        assert grid.deliveries() == []
    assert "was missed while the scheduler was down; running it now" in third.log


def test_a_finished_campaign_is_not_scheduled_again(project):
    many_contacts(project, 4)
    with MockGrid(api_key=KEY) as grid:
        write_live_config(project, grid, extra=FAST)
        first = start_scheduler(project)
        wait_for(lambda: "campaign finished" in first.log, 30, "the campaign to finish")
        first.send_signal(signal.SIGTERM)
        assert stopped_cleanly(first), first.log
        second = start_scheduler(project)
        wait_for(lambda: "finished earlier" in second.log, 30, "the start")
        time.sleep(2.5)
        second.send_signal(signal.SIGTERM)
        assert stopped_cleanly(second), second.log
        assert len(grid.deliveries()) == 4
    assert "sent 0" not in second.log and "scheduled (" not in second.log
