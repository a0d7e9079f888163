"""When a member's term ends, and what the time is for that question. Pure, but for reading the clock.

A term ends at noon Eastern time on its `term_end` date (the Twentieth
Amendment: noon on 3 January for Congress). A member whose term has ended is
never sent a live letter: a new Congress may have replaced them.
"""

from __future__ import annotations

import datetime as dt
import os
import re
import time
from zoneinfo import ZoneInfo

from outreach.states import TERM_ENDED_PREFIX

EASTERN = ZoneInfo("America/New_York")
NOON = dt.time(12, 0)
REFRESH_HINT = "run `outreach contacts refresh`"
_DATE = re.compile(r"^\d{4}-\d{2}-\d{2}$")

# Tests set this to an ISO date-time so that nothing they check changes with the calendar.
NOW_ENV = "OUTREACH_NOW"


def now() -> float:
    """The time for term decisions (UNIX seconds): $OUTREACH_NOW when set, else the clock."""
    given = os.environ.get(NOW_ENV, "").strip()
    if given:
        moment = dt.datetime.fromisoformat(given)
        return (moment if moment.tzinfo else moment.replace(tzinfo=EASTERN)).timestamp()
    return time.time()


def parse_term_end(value: str) -> dt.date | None:
    """'2027-01-03' -> the date; raises ValueError for anything else but an empty cell (None)."""
    value = value.strip()
    if not value:
        return None
    if not (value.isascii() and _DATE.match(value)):
        raise ValueError("not a date like 2027-01-03")
    return dt.date.fromisoformat(value)


def ends_at(term_end: dt.date) -> float:
    """The moment a term ends: noon Eastern time on its last day."""
    return dt.datetime.combine(term_end, NOON, tzinfo=EASTERN).timestamp()


def term_over(term_end: dt.date | None, at: float) -> bool:
    """Whether the term has ended at `at` (UNIX seconds); a list without term_end cannot say: False."""
    return term_end is not None and at >= ends_at(term_end)


def term_ended_reason(term_end: dt.date) -> str:
    """The reason a letter is skipped: 'term ended 2027-01-03; run `outreach contacts refresh`'."""
    return f"{TERM_ENDED_PREFIX}{term_end.isoformat()}; {REFRESH_HINT}"
