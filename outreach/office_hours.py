"""Office hours: when a scheduled campaign may send. Pure functions of a Schedule and a UTC time.

Is this a sending day, is the window open, when is the next tick, which tick
was missed while the scheduler was down, when will the campaign finish.
"""

from __future__ import annotations

import datetime as dt
import functools
from typing import Iterator
from zoneinfo import ZoneInfo

from outreach.config_schedule import Schedule

UTC = dt.timezone.utc
LOOKAHEAD_DAYS = 800   # far enough for any schedule with a sending day in it


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


def missed_tick(last_ran: dt.datetime | None, now: dt.datetime, s: Schedule, grace_s: int) -> dt.datetime | None:
    """The latest tick that fell due after the last tick ran (while the scheduler was down, or
    stopping), if it is within the grace and the window is open: run once on return, never as
    a burst. None when nothing was missed (or no tick ever ran)."""
    if last_ran is None or not window_open(now, s):
        return None
    missed = None
    for t in ticks_after(max(last_ran, now - dt.timedelta(seconds=grace_s)), s):
        if t > now:
            break
        missed = t
    return missed


def every(s: Schedule) -> str:
    """The tick interval as config.toml writes it: "15m", "1h", "30s"."""
    for unit, seconds in (("h", 3600), ("m", 60)):
        if s.every_s % seconds == 0:
            return f"{s.every_s // seconds}{unit}"
    return f"{s.every_s}s"


def when(moment: dt.datetime | None, s: Schedule) -> str:
    """'Mon 2026-11-30 09:30 EST (14:30 UTC here)': the campaign's time, then this machine's."""
    if moment is None:
        return "none"
    there = moment.astimezone(ZoneInfo(s.timezone))
    here = moment.astimezone()
    return f"{there:%a %Y-%m-%d %H:%M %Z} ({here:%H:%M %Z} here)"
