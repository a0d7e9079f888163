"""Delivery reports: one model built from the ledger, shown as a table, CSV, JSON or HTML.

The funnel is cumulative (a clicked letter was also opened, delivered and
accepted); the exclusive counts beside it put each letter in its one current
state, so they add up to the campaign's letters. Counting is done by the
database over an index (a campaign can have 100,000 letters); only the
per-letter list is read row by row, and for JSON on SQLite the database
writes that list itself.
"""

from __future__ import annotations

import json
import time
from collections import Counter, defaultdict

from sqlalchemy import case, func, literal, literal_column, select

from outreach import schema as S
from outreach.ledger import STATES

FUNNEL = ("targeted", "accepted", "delivered", "opened", "clicked")
# Which current states count as having reached each funnel step.
REACHED = {
    "accepted": frozenset({"accepted", "deferred", "delivered", "opened", "clicked", "bounced", "dropped",
                           "spamreport", "unsubscribed"}),
    "delivered": frozenset({"delivered", "opened", "clicked", "spamreport", "unsubscribed"}),
    "opened": frozenset({"opened", "clicked"}),
    "clicked": frozenset({"clicked"}),
}
BESIDE = ("skipped", "deferred", "bounced", "dropped", "failed", "unknown")
COMMITTEES = {"SSAS": "Senate Armed Services", "SSFR": "Senate Foreign Relations",
              "HSAS": "House Armed Services", "HSFA": "House Foreign Affairs"}
DEFERRED_TOO_LONG_S = 86400
LETTER_KEYS = ("id", "name", "bioguide_id", "chamber", "state", "district", "party", "email", "status",
               "last_event", "last_event_at", "accepted_at", "reason")
L = S.letters.c


def _iso(t: float | None) -> str | None:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(t)) if t else None


def _rate(part: int, whole: int) -> float | None:
    return round(part / whole, 4) if whole else None


def _funnel_counts(counts: Counter) -> dict[str, int]:
    out = {"targeted": sum(n for s, n in counts.items() if s != "skipped")}
    for step, states in REACHED.items():
        out[step] = sum(counts[s] for s in states)
    return out


def _breakdown_rows(groups: dict[str, Counter], label=lambda k: k) -> list[dict]:
    rows = []
    for key in sorted(groups):
        counts = groups[key]
        funnel = _funnel_counts(counts)
        rows.append({"key": key, "label": label(key), **funnel, **{s: counts[s] for s in BESIDE},
                     "delivery_rate": _rate(funnel["delivered"], funnel["targeted"])})
    return rows


def _ordered(q):
    return q.order_by(L.state_code, L.chamber.desc(), L.district, L.name, L.id)


# -- reading the ledger ---------------------------------------------------------------------------------

def _aggregate(db, campaign_id: int):
    """Letters counted by (status, chamber, party, state) with their committee memberships, in one pass."""
    codes = list(COMMITTEES)
    q = (select(L.status, L.chamber, L.party, L.state_code, func.count(),
                *(func.sum(case((L.committees.contains(code), 1), else_=0)) for code in codes))
         .where(L.campaign_id == campaign_id).group_by(L.status, L.chamber, L.party, L.state_code))
    counts: Counter = Counter()
    groups = {name: defaultdict(Counter) for name in ("chamber", "party", "state", "committee")}
    for status, chamber, party, state, n, *members in db.execute(q):
        counts[status] += n
        groups["chamber"][chamber or "unknown"][status] += n
        groups["party"][party or "unknown"][status] += n
        groups["state"][state or "??"][status] += n
        for code, m in zip(codes, members):
            if m:
                groups["committee"][code][status] += m
    skipped = Counter({reason or "skipped": n for reason, n in db.execute(
        select(L.reason, func.count()).where(L.campaign_id == campaign_id, L.status == "skipped")
        .group_by(L.reason))})
    return counts, groups, skipped


def _attention(db, campaign_id: int, now: float) -> list[dict]:
    """Unknown, failed, bounced, and deferred for over a day: what to look at first."""
    stale = now - DEFERRED_TOO_LONG_S
    q = (select(L.id, L.name, L.email, L.status, L.reason, L.last_event, L.last_event_at, L.accepted_at)
         .where(L.campaign_id == campaign_id, L.status.in_(("unknown", "failed", "bounced", "deferred"))))
    order = {"unknown": 0, "failed": 1, "bounced": 2, "deferred": 3}
    rows = [{"id": r.id, "name": r.name, "email": r.email, "status": r.status, "reason": r.reason,
             "last_event": r.last_event, "last_event_at": _iso(r.last_event_at)} for r in db.execute(q)
            if r.status != "deferred" or (r.last_event_at or r.accepted_at or 0) < stale]
    rows.sort(key=lambda a: (order[a["status"]], a["name"] or "", a["id"]))
    return rows


def _timeline(db, campaign_id: int, points: int = 48) -> dict:
    """Accepted and first-delivered letters over time, cumulative, bucketed by the database."""
    E = S.events.c
    first_delivery = (select(func.min(E.occurred_at).label("t"))
                      .where(E.campaign_id == campaign_id, E.event == "delivered")
                      .group_by(E.letter_id).subquery())
    sources = {"accepted": (L.accepted_at, [L.campaign_id == campaign_id, L.accepted_at.is_not(None)]),
               "delivered": (first_delivery.c.t, [])}
    bounds = [db.execute(select(func.min(col), func.max(col)).where(*cond)).one() for col, cond in sources.values()]
    times = [t for pair in bounds for t in pair if t is not None]
    if not times:
        return timeline_buckets(None, None, points)
    spec = timeline_buckets(min(times), max(times), points)
    start, width, n = spec.pop("_start"), spec["bucket_seconds"], len(spec["starts"])
    for name, (col, cond) in sources.items():
        # Literal numbers, so SELECT and GROUP BY are the same expression to every database;
        # the offset is never negative, so truncating (SQLite's CAST) is flooring (PostgreSQL's floor).
        offset = (col - literal(start, literal_execute=True)) / literal(width, literal_execute=True)
        if db.dialect.name != "sqlite":
            offset = func.floor(offset)
        bucket = func.cast(offset, S.Integer).label("b")
        counts = [0] * n
        for b, c in db.execute(select(bucket, func.count()).where(*cond).group_by(bucket)):
            counts[min(n - 1, max(0, int(b)))] += c
        total = 0
        for i, c in enumerate(counts):
            total += c
            counts[i] = total
        spec[name] = counts
    return spec


def timeline_buckets(first: float | None, last: float | None, points: int = 48) -> dict:
    """At most `points` buckets of whole hours (up to three days) or whole days, from `first` to `last`."""
    if first is None:
        return {"unit": None, "bucket_seconds": None, "starts": [], "accepted": [], "delivered": []}
    unit = 3600.0 if last - first <= 3 * 86400 else 86400.0
    start = first - first % unit
    units = int((last - start) // unit) + 1
    width = unit * -(-units // points)          # whole units per bucket, so no more than `points`
    n = int((last - start) // width) + 1
    return {"unit": "hour" if unit == 3600 else "day", "bucket_seconds": width,
            "starts": [_iso(start + i * width) for i in range(n)], "accepted": [], "delivered": [],
            "_start": start}


def letter_rows(db, campaign_id: int, limit: int | None = None, offset: int = 0):
    """The campaign's letters as tuples in LETTER_KEYS order (times as epoch seconds), by state and name."""
    q = _ordered(select(L.id, L.name, L.bioguide_id, L.chamber, L.state_code, L.district, L.party, L.email,
                        L.status, L.last_event, L.last_event_at, L.accepted_at, L.reason)
                 .where(L.campaign_id == campaign_id))
    if limit is not None:
        q = q.limit(limit).offset(offset)
    return db.execute(q)


def _letter_dicts(db, campaign_id: int, limit: int | None = None, offset: int = 0) -> list[dict]:
    out = []
    for r in letter_rows(db, campaign_id, limit, offset):
        d = dict(zip(LETTER_KEYS, r))
        d["last_event_at"], d["accepted_at"] = _iso(d["last_event_at"]), _iso(d["accepted_at"])
        out.append(d)
    return out


def _letters_json(db, campaign_id: int) -> str:
    """The letters as a JSON array; on SQLite the database builds it (much faster than Python)."""
    if db.dialect.name != "sqlite":
        return json.dumps(_letter_dicts(db, campaign_id), ensure_ascii=False, separators=(",", ":"))

    def iso(col):
        return func.strftime("%Y-%m-%dT%H:%M:%SZ", col, "unixepoch")

    pairs = [("id", L.id), ("name", L.name), ("bioguide_id", L.bioguide_id), ("chamber", L.chamber),
             ("state", L.state_code), ("district", L.district), ("party", L.party), ("email", L.email),
             ("status", L.status), ("last_event", L.last_event), ("last_event_at", iso(L.last_event_at)),
             ("accepted_at", iso(L.accepted_at)), ("reason", L.reason)]
    args = [x for key, col in pairs for x in (literal_column(f"'{key}'"), col)]
    # `+ 0` keeps SQLite from reading rows through the campaign index one by one: a
    # campaign is most of the table, and a straight scan is faster. JSON letters come in
    # the order they were recorded; sorting 100,000 of them would double the time.
    q = select(func.coalesce(func.json_group_array(func.json_object(*args)), "[]")).where(
        L.campaign_id + 0 == campaign_id)
    return db.execute(q).scalar_one()


# -- the report --------------------------------------------------------------------------------------

def build_report(ledger, campaign: str, now: float | None = None, letters: str = "all",
                 letters_limit: int | None = None, letters_offset: int = 0) -> dict:
    """The report of `campaign`: {"summary", "breakdowns", "attention", "timeline", "letters"}.

    letters: "all" (a list of dicts), "none" (left out: the caller adds them another way).
    """
    now = time.time() if now is None else now
    campaign_id = ledger.campaign_id(campaign, create=False)
    counts: Counter = Counter()
    groups = {name: {} for name in ("chamber", "party", "state", "committee")}
    skipped, attention, letter_list = Counter(), [], []
    timeline = timeline_buckets(None, None)
    if campaign_id is not None:
        with ledger.engine.connect() as db:
            counts, groups, skipped = _aggregate(db, campaign_id)
            attention = _attention(db, campaign_id, now)
            timeline = _timeline(db, campaign_id)
            if letters == "all":
                letter_list = _letter_dicts(db, campaign_id, letters_limit, letters_offset)
    funnel = _funnel_counts(counts)
    return {
        "summary": {
            "campaign": campaign,
            "generated_at": _iso(now),
            "letters": sum(counts.values()),
            "funnel": funnel,
            "rates": {step: _rate(funnel[step], funnel["targeted"]) for step in FUNNEL[1:]},
            "counts": {s: counts[s] for s in STATES},
            "beside": {s: counts[s] for s in BESIDE},
            "skipped_reasons": dict(skipped.most_common()),
            "needs_attention": len(attention),
        },
        "breakdowns": {
            "chamber": _breakdown_rows(groups["chamber"], lambda k: {"senate": "Senate", "house": "House"}.get(k, k)),
            "party": _breakdown_rows(groups["party"]),
            "state": _breakdown_rows(groups["state"]),
            "committee": _breakdown_rows(groups["committee"], lambda k: COMMITTEES[k]),
        },
        "attention": attention,
        "timeline": timeline,
        "letters": letter_list,
    }


def report_json(ledger, campaign: str, now: float | None = None) -> str:
    """The JSON report, its letters written by the database where it can."""
    report = build_report(ledger, campaign, now, letters="none")
    campaign_id = ledger.campaign_id(campaign, create=False)
    letters = "[]"
    if campaign_id is not None:
        with ledger.engine.connect() as db:
            letters = _letters_json(db, campaign_id)
    head = json.dumps({k: v for k, v in report.items() if k != "letters"}, ensure_ascii=False,
                      separators=(",", ":"))
    return head[:-1] + ',"letters":' + letters + "}"
