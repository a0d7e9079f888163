"""Delivery reports: one model built from the ledger, shown as a table, CSV, JSON or HTML.

The funnel is cumulative (a clicked letter was also opened, delivered and
accepted); the exclusive counts beside it put each letter in its one current
state, so they add up to the campaign's letters. The ledger counts (see
outreach.ledger.report_queries); this module shapes what it counted.
"""

from __future__ import annotations

import datetime as dt
import json
import time
from collections import Counter

from outreach import states, terms
from outreach.ledger.report_queries import LETTER_KEYS
from outreach.text import utc_iso

FUNNEL = states.FUNNEL
BESIDE = states.BESIDE
COMMITTEES = {"SSAS": "Senate Armed Services", "SSFR": "Senate Foreign Relations",
              "HSAS": "House Armed Services", "HSFA": "House Foreign Affairs"}
DEFERRED_TOO_LONG_S = 86400


_iso = utc_iso


def _rate(part: int, whole: int) -> float | None:
    return round(part / whole, 4) if whole else None


def _funnel_counts(counts: Counter) -> dict[str, int]:
    out = {"targeted": sum(n for s, n in counts.items() if s != "skipped")}
    for step, reached in states.REACHED.items():
        out[step] = sum(counts[s] for s in reached)
    return out


def _breakdown_rows(groups: dict[str, Counter], label=lambda k: k) -> list[dict]:
    rows = []
    for key in sorted(groups):
        counts = groups[key]
        funnel = _funnel_counts(counts)
        to_send = sum(counts[s] for s in states.TO_SEND)
        # Nothing sent yet is no rate at all, not 0%: it is not a failure to deliver.
        rate = _rate(funnel["delivered"], funnel["targeted"]) if to_send < funnel["targeted"] else None
        rows.append({"key": key, "label": label(key), **funnel, **{s: counts[s] for s in BESIDE},
                     "to_send": to_send, "delivery_rate": rate})
    return rows


def _attention(ledger, campaign_id: int, now: float) -> list[dict]:
    """Unknown, failed, bounced, and deferred for over a day: what to look at first."""
    stale = now - DEFERRED_TOO_LONG_S
    order = {s: i for i, s in enumerate(states.ATTENTION)}
    rows = [{"id": r.id, "name": r.name, "email": r.email, "status": r.status, "reason": r.reason,
             "last_event": r.last_event, "last_event_at": _iso(r.last_event_at)}
            for r in ledger.reports.attention(campaign_id)
            if r.status != "deferred" or (r.last_event_at or r.accepted_at or 0) < stale]
    rows.sort(key=lambda a: (order[a["status"]], a["name"] or "", a["id"]))
    return rows


def _timeline(ledger, campaign_id: int, points: int = 48) -> dict:
    """Accepted and first-delivered letters over time, cumulative, bucketed by the database."""
    times = [t for pair in ledger.reports.times(campaign_id).values() for t in pair if t is not None]
    if not times:
        return timeline_buckets(None, None, points)
    spec = timeline_buckets(min(times), max(times), points)
    start, width, n = spec.pop("_start"), spec["bucket_seconds"], len(spec["starts"])
    for name, buckets in ledger.reports.counts_by_bucket(campaign_id, start, width).items():
        counts = [0] * n
        for b, c in buckets.items():
            counts[min(n - 1, max(0, b))] += c
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


def last_ended(at: float) -> str:
    """The latest term_end (YYYY-MM-DD) over at `at`: terms end at noon Eastern."""
    local = dt.datetime.fromtimestamp(at, terms.EASTERN)
    day = local.date() if local.time() >= terms.NOON else local.date() - dt.timedelta(days=1)
    return day.isoformat()


def _letter_dicts(ledger, campaign_id: int, ended: str, limit: int | None = None, offset: int = 0) -> list[dict]:
    out = []
    for r in ledger.reports.letters(campaign_id, limit, offset):
        d = dict(zip(LETTER_KEYS, r))
        d["last_event_at"], d["accepted_at"] = _iso(d["last_event_at"]), _iso(d["accepted_at"])
        d["term_ended"] = d["term_end"] is not None and d["term_end"] <= ended
        out.append(d)
    return out


# -- the report --------------------------------------------------------------------------------------

def build_report(ledger, campaign: str, now: float | None = None, letters: str = "all",
                 letters_limit: int | None = None, letters_offset: int = 0, terms_at: float | None = None) -> dict:
    """The report of `campaign`: {"summary", "breakdowns", "attention", "timeline", "letters"}.

    letters: "all" (a list of dicts), "none" (left out: the caller adds them another way).
    Offices whose term has ended at `terms_at` (default: outreach.terms.now()) are counted and
    marked, so a campaign that spans a change of Congress reads right.
    """
    now = time.time() if now is None else now
    ended = last_ended(terms.now() if terms_at is None else terms_at)
    campaign_id = ledger.campaigns.id(campaign, create=False)
    counts: Counter = Counter()
    groups = {name: {} for name in ("chamber", "party", "state", "committee")}
    skipped, attention, letter_list = Counter(), [], []
    timeline = timeline_buckets(None, None)
    terms_ended = 0
    if campaign_id is not None:
        counts, groups, skipped = ledger.reports.aggregate(campaign_id)
        attention = _attention(ledger, campaign_id, now)
        timeline = _timeline(ledger, campaign_id)
        terms_ended = ledger.reports.terms_ended(campaign_id, ended)
        if letters == "all":
            letter_list = _letter_dicts(ledger, campaign_id, ended, letters_limit, letters_offset)
    funnel = _funnel_counts(counts)
    return {
        "summary": {
            "campaign": campaign,
            "generated_at": _iso(now),
            "letters": sum(counts.values()),
            "funnel": funnel,
            "rates": {step: _rate(funnel[step], funnel["targeted"]) for step in FUNNEL[1:]},
            "counts": {s: counts[s] for s in states.STATES},
            "beside": {s: counts[s] for s in BESIDE},
            "skipped_reasons": dict(skipped.most_common()),
            "needs_attention": len(attention),
            "terms_ended": terms_ended,            # offices whose term is over (a new Congress)
            "terms_ended_by": ended,
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


def report_json(ledger, campaign: str, now: float | None = None, terms_at: float | None = None) -> str:
    """The JSON report, its letters written by the database where it can."""
    report = build_report(ledger, campaign, now, letters="none", terms_at=terms_at)
    ended = report["summary"]["terms_ended_by"]
    campaign_id = ledger.campaigns.id(campaign, create=False)
    letters = "[]"
    if campaign_id is not None:
        letters = ledger.reports.letters_json(campaign_id, ended)
        if letters is None:
            letters = json.dumps(_letter_dicts(ledger, campaign_id, ended), ensure_ascii=False,
                                 separators=(",", ":"))
    head = json.dumps({k: v for k, v in report.items() if k != "letters"}, ensure_ascii=False,
                      separators=(",", ":"))
    return head[:-1] + ',"letters":' + letters + "}"
