"""config.toml's schedule tables: when the scheduler may send a campaign, read and checked."""

from __future__ import annotations

import datetime
import re
from dataclasses import dataclass

from outreach.config_table import Table


@dataclass(frozen=True)
class Schedule:
    """When the scheduler sends a campaign: a window on some days, a batch every so often."""

    timezone: str = "America/New_York"
    start: datetime.datetime | None = None        # aware; None = at once
    days: frozenset[int] = frozenset(range(5))     # 0 = Monday
    window: tuple[datetime.time, datetime.time] = (datetime.time(9, 30), datetime.time(16, 30))
    every_s: int = 900
    batch_size: int | None = None
    daily_cap: int | None = None
    skip_federal_holidays: bool = True
    skip_dates: frozenset[datetime.date] = frozenset()
    live: bool = False


DAY_NAMES = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")


def parse_days(value: str) -> frozenset[int] | None:
    """'mon-fri', 'mon,wed,fri', 'mon-sun' -> weekday numbers (0 = Monday); None if not understood."""
    days: set[int] = set()
    for part in value.lower().replace(" ", "").split(","):
        if "-" in part:
            a, _, b = part.partition("-")
            if a not in DAY_NAMES or b not in DAY_NAMES:
                return None
            i, j = DAY_NAMES.index(a), DAY_NAMES.index(b)
            days.update(range(i, j + 1) if i <= j else [*range(i, 7), *range(0, j + 1)])
        elif part in DAY_NAMES:
            days.add(DAY_NAMES.index(part))
        else:
            return None
    return frozenset(days) or None


def parse_window(value: str) -> tuple[datetime.time, datetime.time] | None:
    """'09:30-16:30' -> (09:30, 16:30); the end may be 24:00; None if not understood."""
    m = re.match(r"^\s*(\d{1,2}):(\d{2})\s*-\s*(\d{1,2}):(\d{2})\s*$", value)
    if not m:
        return None
    h1, m1, h2, m2 = map(int, m.groups())
    if h2 == 24 and m2 == 0:
        return datetime.time(h1, m1), datetime.time.max  # the window runs to the end of the day
    if not (h1 < 24 and h2 < 24 and m1 < 60 and m2 < 60) or (h1, m1) >= (h2, m2):
        return None
    return datetime.time(h1, m1), datetime.time(h2, m2)


def parse_every(value: str) -> int | None:
    """'15m', '1h', '30s' -> seconds; None if not understood."""
    m = re.match(r"^\s*(\d+)\s*(s|m|h)\s*$", value.lower())
    if not m or int(m.group(1)) == 0:
        return None
    return int(m.group(1)) * {"s": 1, "m": 60, "h": 3600}[m.group(2)]


def read_schedule(t: Table) -> Schedule:
    from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

    tz_name = t.text("timezone", Schedule.timezone)
    try:
        tz = ZoneInfo(tz_name)
    except (ZoneInfoNotFoundError, ValueError):
        t.problem("timezone", f"not a time zone name like America/New_York (got {tz_name!r})")
        tz = ZoneInfo(Schedule.timezone)
    start = t.get("start", (datetime.datetime, datetime.date, str), None, "a date-time like 2026-12-01T09:30")
    if isinstance(start, str):
        try:
            start = datetime.datetime.fromisoformat(start)
        except ValueError:
            t.problem("start", f"not a date-time like 2026-12-01T09:30 (got {start!r})")
            start = None
    if isinstance(start, datetime.date) and not isinstance(start, datetime.datetime):
        start = datetime.datetime.combine(start, datetime.time())
    if isinstance(start, datetime.datetime) and start.tzinfo is None:
        start = start.replace(tzinfo=tz)  # in the schedule's time zone unless it carries an offset
    days = t.text("days", "mon-fri", check=lambda v: None if parse_days(v) else
                  "should be like \"mon-fri\", \"mon,wed,fri\" or \"mon-sun\"")
    window = t.text("window", "09:30-16:30", check=lambda v: None if parse_window(v) else
                    "should be like \"09:30-16:30\" (start before end, 24-hour clock)")
    every = t.text("every", "15m", check=lambda v: None if parse_every(v) else
                   "should be like \"15m\", \"1h\" or \"30s\"")
    skip = []
    for d in t.get("skip_dates", list, [], "a list of dates like [2026-12-24]") or []:
        if isinstance(d, datetime.datetime):
            d = d.date()
        elif isinstance(d, str):
            try:
                d = datetime.date.fromisoformat(d)
            except ValueError:
                t.problem("skip_dates", f"should hold dates like 2026-12-24 (got {d!r})")
                continue
        if not isinstance(d, datetime.date):
            t.problem("skip_dates", f"should hold dates like 2026-12-24 (got {d!r})")
            continue
        skip.append(d)
    schedule = Schedule(
        timezone=tz_name if tz_name else Schedule.timezone,
        start=start if isinstance(start, datetime.datetime) else None,
        days=parse_days(days or "") or Schedule.days,
        window=parse_window(window or "") or Schedule.window,
        every_s=parse_every(every or "") or Schedule.every_s,
        batch_size=t.number("batch_size", None, 0, 100_000, integer=True),
        daily_cap=t.number("daily_cap", None, 0, 10_000_000, integer=True),
        skip_federal_holidays=t.get("skip_federal_holidays", bool, True),
        skip_dates=frozenset(skip),
        live=t.get("live", bool, False),
    )
    t.done()
    return schedule
