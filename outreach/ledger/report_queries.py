"""What the reports and the dashboard read: counts done by the database over its indexes.

A campaign can have 100,000 letters: counting is grouped in SQL, and only the
per-letter list is read row by row (for JSON on SQLite, the database writes
that list itself).
"""

from __future__ import annotations

from collections import Counter, defaultdict

from sqlalchemy import Integer, case, func, literal, literal_column, or_, select

from outreach import states
from outreach.ledger import schema as S

L, E = S.letters.c, S.events.c
COMMITTEE_CODES = ("SSAS", "SSFR", "HSAS", "HSFA")
LETTER_KEYS = ("id", "name", "bioguide_id", "chamber", "state", "district", "party", "email", "status",
               "last_event", "last_event_at", "accepted_at", "reason", "term_end", "replies")
# Each letter's replies written by a person (automatic ones and unreadable posts left out).
_REPLIES = (select(func.count()).select_from(S.replies)
            .where(S.replies.c.letter_id == L.id, S.replies.c.auto_reply.is_(None), S.replies.c.problem.is_(None))
            .scalar_subquery())
_LETTER_COLUMNS = (L.id, L.name, L.bioguide_id, L.chamber, L.state_code, L.district, L.party, L.email, L.status,
                   L.last_event, L.last_event_at, L.accepted_at, L.reason, L.term_end, _REPLIES)


class ReportQueries:
    def __init__(self, ledger):
        self.ledger = ledger

    def aggregate(self, campaign_id: int) -> tuple[Counter, dict, Counter]:
        """Letters counted by state, by (chamber, party, state, committee) and state, and skipped by reason."""
        q = (select(L.status, L.chamber, L.party, L.state_code, func.count(),
                    *(func.sum(case((L.committees.contains(code), 1), else_=0)) for code in COMMITTEE_CODES))
             .where(L.campaign_id == campaign_id).group_by(L.status, L.chamber, L.party, L.state_code))
        counts: Counter = Counter()
        groups = {name: defaultdict(Counter) for name in ("chamber", "party", "state", "committee")}
        with self.ledger.read() as db:
            for status, chamber, party, state, n, *members in db.execute(q):
                counts[status] += n
                groups["chamber"][chamber or "unknown"][status] += n
                groups["party"][party or "unknown"][status] += n
                groups["state"][state or "??"][status] += n
                for code, m in zip(COMMITTEE_CODES, members):
                    if m:
                        groups["committee"][code][status] += m
            skipped = Counter({reason or "skipped": n for reason, n in db.execute(
                select(L.reason, func.count()).where(L.campaign_id == campaign_id, L.status == "skipped")
                .group_by(L.reason))})
        return counts, groups, skipped

    def terms_ended(self, campaign_id: int, last_ended: str) -> int:
        """Offices (letters) whose term ended on or before `last_ended` (YYYY-MM-DD)."""
        with self.ledger.read() as db:
            return db.execute(select(func.count()).where(L.campaign_id == campaign_id, L.term_end.is_not(None),
                                                         L.term_end <= last_ended)).scalar() or 0

    def attention(self, campaign_id: int):
        """Letters in a state that may need attention (the report decides which do)."""
        with self.ledger.read() as db:
            return db.execute(select(L.id, L.name, L.email, L.status, L.reason, L.last_event, L.last_event_at,
                                     L.accepted_at)
                              .where(L.campaign_id == campaign_id, L.status.in_(states.ATTENTION))).all()

    def times(self, campaign_id: int) -> dict[str, tuple]:
        """(first, last) of the accepted and first-delivered times."""
        with self.ledger.read() as db:
            return {name: db.execute(select(func.min(col), func.max(col)).where(*cond)).one()
                    for name, (col, cond) in _sources(campaign_id).items()}

    def counts_by_bucket(self, campaign_id: int, start: float, width: float) -> dict[str, Counter]:
        """Accepted and first-delivered letters counted per bucket of `width` seconds from `start`."""
        out = {}
        with self.ledger.read() as db:
            for name, (col, cond) in _sources(campaign_id).items():
                # Literal numbers, so SELECT and GROUP BY are the same expression to every database;
                # the offset is never negative, so truncating (SQLite's CAST) is flooring (PostgreSQL's floor).
                offset = (col - literal(start, literal_execute=True)) / literal(width, literal_execute=True)
                if db.dialect.name != "sqlite":
                    offset = func.floor(offset)
                bucket = func.cast(offset, Integer).label("b")
                out[name] = Counter({int(b): c for b, c in db.execute(
                    select(bucket, func.count()).where(*cond).group_by(bucket))})
        return out

    def letters(self, campaign_id: int, limit: int | None = None, offset: int = 0) -> list[tuple]:
        """The campaign's letters as tuples in LETTER_KEYS order (times as epoch seconds), by state and name."""
        q = (select(*_LETTER_COLUMNS).where(L.campaign_id == campaign_id)
             .order_by(L.state_code, L.chamber.desc(), L.district, L.name, L.id))
        if limit is not None:
            q = q.limit(limit).offset(offset)
        with self.ledger.read() as db:
            return [tuple(r) for r in db.execute(q)]

    def letters_json(self, campaign_id: int, last_ended: str) -> str | None:
        """The letters as a JSON array written by the database (SQLite: much faster than Python), each
        with `term_ended` (its term ended on or before `last_ended`); None where the database cannot."""
        if self.ledger.engine.dialect.name != "sqlite":
            return None

        def iso(col):
            return func.strftime("%Y-%m-%dT%H:%M:%SZ", col, "unixepoch")

        columns = [iso(c) if c in (L.last_event_at, L.accepted_at) else c for c in _LETTER_COLUMNS]
        pairs = [*zip(LETTER_KEYS, columns),
                 ("term_ended", func.json(case((L.term_end <= last_ended, "true"), else_="false")))]
        args = [x for key, col in pairs for x in (literal_column(f"'{key}'"), col)]
        # `+ 0` keeps SQLite from reading rows through the campaign index one by one: a
        # campaign is most of the table, and a straight scan is faster. JSON letters come in
        # the order they were recorded; sorting 100,000 of them would double the time.
        q = select(func.coalesce(func.json_group_array(func.json_object(*args)), "[]")).where(
            L.campaign_id + 0 == campaign_id)
        with self.ledger.read() as db:
            return db.execute(q).scalar_one()

    def last_activity(self) -> dict[int, float]:
        """campaign id -> when any of its letters last changed."""
        with self.ledger.read() as db:
            return dict(db.execute(select(L.campaign_id, func.max(L.updated_at)).group_by(L.campaign_id)).all())

    def search_offices(self, q: str, limit: int, offset: int) -> list:
        """Letters whose office matches `q` (name, state, bioguide id or email), by state and name."""
        needle = q.strip()
        # `%` and `_` in what was typed are matched as themselves, not as wildcards.
        literal = needle.lower().replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
        like = f"%{literal}%"
        cond = [func.lower(L.name).like(like, escape="\\"), L.email_key.like(like, escape="\\")]
        if len(needle) == 2 and needle.isalpha():
            cond.append(L.state_code == needle.upper())
        if needle[:1].isalpha() and needle[1:].isascii() and needle[1:].isdigit():
            cond.append(L.bioguide_id == needle.upper())
        query = (select(L.id, L.name, L.email, L.bioguide_id, L.chamber, L.state_code, L.district, L.status,
                        L.updated_at, S.campaigns.c.name.label("campaign"))
                 .join(S.campaigns).where(or_(*cond))
                 .order_by(L.state_code, L.name, S.campaigns.c.name).limit(limit).offset(offset))
        with self.ledger.read() as db:
            return db.execute(query).all()


def _sources(campaign_id: int) -> dict:
    """The timeline's two series: (time column, conditions)."""
    first_delivery = (select(func.min(E.occurred_at).label("t"))
                      .where(E.campaign_id == campaign_id, E.event == "delivered")
                      .group_by(E.letter_id).subquery())
    return {"accepted": (L.accepted_at, [L.campaign_id == campaign_id, L.accepted_at.is_not(None)]),
            "delivered": (first_delivery.c.t, [])}
