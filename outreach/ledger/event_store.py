"""Events into the ledger: each event stored once, each letter it touches brought up to date.

The rules (what an event is, which letter it is about, what a letter's events
mean) are in outreach.events; this module runs them against the database, in
one transaction per post, or per group of posts through the ledger's writer.
Hard bounces, spam reports and unsubscribes also put the address on the
suppression list.
"""

from __future__ import annotations

from collections import defaultdict
from concurrent.futures import Future
from dataclasses import dataclass, field, fields
from functools import partial
from importlib import import_module
from itertools import chain
from typing import NamedTuple

from sqlalchemy import bindparam, func, insert, select, update

from outreach import states
from outreach.events import (
    Candidate, Event, Seen, SetAside, date_problem, latest_send, match_event, message_id_prefix, next_state,
    suppression_for,
)
from outreach.ledger import schema as S
from outreach.ledger.prepared import Prepared, insert_once, keys, select_in
from outreach.ledger.suppressions import suppress
from outreach.ledger.writer import now

L, E = S.letters.c, S.events.c


class _Row(NamedTuple):
    """An event as stored: the columns of `events` but its id."""

    letter_id: str | None
    campaign_id: int | None
    matched_by: str | None
    event: str
    type: str | None
    sg_event_id: str | None
    dedupe_key: str
    sg_message_id: str | None
    email: str | None
    occurred_at: float
    received_at: float
    detail: str | None
    raw: str


@dataclass
class IngestResult:
    """What one post (or file) did to the ledger."""

    received: int = 0
    stored: int = 0
    matched: int = 0
    unmatched: int = 0
    tests: int = 0
    letters_changed: int = 0
    suppressed: int = 0
    set_aside: int = 0          # kept for review, not applied (counted once, as stored)
    aside: list = field(default_factory=list, repr=False)   # their reasons, for the log

    @property
    def duplicates(self) -> int:
        return self.received - self.stored - self.set_aside

    def add(self, other: "IngestResult") -> None:
        for f in fields(self):
            setattr(self, f.name, getattr(self, f.name) + getattr(other, f.name))

    def as_dict(self) -> dict:
        return {"received": self.received, "stored": self.stored, "duplicates": self.duplicates,
                "matched": self.matched, "unmatched": self.unmatched, "tests": self.tests,
                "letters_changed": self.letters_changed, "suppressed": self.suppressed,
                "set_aside": self.set_aside}


class LetterEvent(NamedTuple):
    """One stored event, for `outreach letters show` and `outreach events unmatched`."""

    id: int
    occurred_at: float
    received_at: float
    event: str
    detail: str | None
    email: str | None
    sg_message_id: str | None
    matched_by: str | None


class EventStore:
    def __init__(self, ledger):
        self.ledger = ledger

    def ingest(self, events: list[Event], set_aside: list[SetAside] = (), received_at: float | None = None) \
            -> IngestResult:
        """Store a post's events (duplicates skipped) and bring their letters up to date, in one transaction;
        `set_aside`: events that could not be used, kept for review."""
        return self.ingest_posts([(events, set_aside)], received_at)[0]

    def ingest_posts(self, posts: list, received_at: float | None = None) -> list[IngestResult]:
        """Several posts (each its events, or (events, set aside)) in one transaction; each result tells
        what its own post did."""
        with self.ledger.write() as db:
            return ingest_posts(db, posts, now() if received_at is None else received_at)

    def submit(self, events: list[Event], set_aside: list[SetAside] = ()) -> Future:
        """Store a post's events through the ledger's writer, with whatever other posts are waiting;
        the future gives the post's IngestResult once committed."""
        return self.ledger.writer.submit(_posts, (events, list(set_aside)), weight=max(1, len(events)))

    def of_letter(self, letter_id: str) -> list[LetterEvent]:
        """A letter's events, oldest first."""
        with self.ledger.read() as db:
            return _shown(db.execute(select(*_SHOWN).where(E.letter_id == letter_id).order_by(E.occurred_at, E.id)))

    def unmatched(self, limit: int | None = None, offset: int = 0) -> list[LetterEvent]:
        """Events that matched no letter (and are not --test-to copies), newest first."""
        q = (select(*_SHOWN).where(E.letter_id.is_(None), E.matched_by.is_(None))
             .order_by(E.received_at.desc(), E.id.desc()))
        if limit:
            q = q.limit(limit).offset(offset)
        with self.ledger.read() as db:
            return _shown(db.execute(q))

    def count_unmatched(self) -> int:
        with self.ledger.read() as db:
            return db.execute(select(func.count()).select_from(S.events)
                              .where(E.letter_id.is_(None), E.matched_by.is_(None))).scalar() or 0

    def set_aside(self, limit: int | None = None, offset: int = 0) -> list:
        """Events kept for review (id, received_at, reason, raw), newest first."""
        A = S.events_set_aside.c
        q = select(A.id, A.received_at, A.reason, A.raw).order_by(A.received_at.desc(), A.id.desc())
        if limit:
            q = q.limit(limit).offset(offset)
        with self.ledger.read() as db:
            return db.execute(q).all()

    def count_set_aside(self) -> int:
        with self.ledger.read() as db:
            return db.execute(select(func.count()).select_from(S.events_set_aside)).scalar() or 0


def _posts(db, posts: list[list[Event]]) -> list[IngestResult]:
    return ingest_posts(db, posts, now())


def ingest_posts(db, posts: list, received_at: float) -> list[IngestResult]:
    """Several posts (each its events, or (events, set aside)) in one open transaction; each result
    tells what its own post did.

    Letters touched by several posts are read and written once, and the database
    writes each page the posts share once: under load this decides how many
    events a second are stored. An event dated before its letter or far ahead is
    set aside for review, never applied.
    """
    posts = [p if isinstance(p, tuple) else (p, []) for p in posts]
    results = [IngestResult(received=len(events) + len(aside)) for events, aside in posts]
    events = [ev for p, _ in posts for ev in p]
    post_of = [n for n, (p, _) in enumerate(posts) for _ in p]
    aside = [(n, a) for n, (_, p) in enumerate(posts) for a in p]
    rows = []
    for ev, n, (letter, how) in zip(events, post_of, _match_all(db, events)):
        problem = date_problem(ev, letter, received_at)
        if problem is not None:
            aside.append((n, SetAside(problem, ev.raw)))
            continue
        rows.append((n, _Row(letter.id if letter else None, letter.campaign_id if letter else None, how, ev.event,
                             ev.type, ev.sg_event_id, ev.dedupe_key, ev.sg_message_id, ev.email, ev.occurred_at,
                             received_at, ev.detail, ev.raw)))
    for n in _store_set_aside(db, aside, received_at):
        results[n].set_aside += 1
    for n, a in aside:
        results[n].aside.append(a.reason)
    post_of = [n for n, _ in rows]
    rows = [r for _, r in rows]
    if not rows:
        return results
    # The insert is the first write: from here the letters' states are read and written
    # in one consistent transaction.
    stored = _insert_new(db, rows)
    # Only new events can change a letter: a post sent again (SendGrid retrying) moves nothing,
    # not even a letter the operator has queued again since.
    changed = _update_letters(db, {rows[i].letter_id for i in stored if rows[i].letter_id}, received_at)
    suppressed = _suppress_addresses(db, rows, stored, received_at)
    for i in stored:
        result, how = results[post_of[i]], rows[i].matched_by
        result.stored += 1
        if how == "test":
            result.tests += 1
        elif how is None:
            result.unmatched += 1
        else:
            result.matched += 1
    for i in suppressed:
        results[post_of[i]].suppressed += 1
    touched: list[set[str]] = [set() for _ in posts]
    for i, r in enumerate(rows):
        if r.letter_id in changed:
            touched[post_of[i]].add(r.letter_id)
    for result, letters in zip(results, touched):
        result.letters_changed = len(letters)
    return results


# -- matching -------------------------------------------------------------------------------------------

_CANDIDATE = (L.id, L.campaign_id, L.email_key, L.status, L.accepted_at, L.provider_message_id, L.created_at)
_TRACKED = ("status", "reason", "last_event", "last_event_at", "accepted_at", "provider_message_id")
_SENT = sorted(states.SENT)

# Queries by a list of values, each built for `n` values (see outreach.ledger.prepared.select_in).
_BY_ID = ("letters by id", lambda n: select(*_CANDIDATE).where(L.id.in_(keys(n))))
_BY_MESSAGE = ("letters by message id", lambda n: select(*_CANDIDATE).where(L.provider_message_id.in_(keys(n))))
_BY_ADDRESS = ("letters by address", lambda n: select(*_CANDIDATE).where(
    L.email_key.in_(keys(n)), L.status.in_([bindparam(f"s{i}", s) for i, s in enumerate(_SENT)])))
# Locked in letter-id order (PostgreSQL; SQLite has one writer anyway): two processes storing
# events of the same letters wait for each other instead of deadlocking. FOR NO KEY UPDATE, as
# an UPDATE of a letter takes anyway: it does not wait for the key-share locks that another
# transaction's new events hold on their letters (foreign keys), in whatever order it took them.
_STATES = ("letter states", lambda n: select(L.id, *(getattr(L, k) for k in _TRACKED)).where(L.id.in_(keys(n)))
           .order_by(L.id).with_for_update(key_share=True))
_HISTORY = ("events of letters", lambda n: select(E.letter_id, E.event, E.occurred_at, E.type, E.detail, E.id,
                                                 E.sg_message_id).where(E.letter_id.in_(keys(n)))
            .order_by(E.occurred_at, E.id))
_EVENTS_BY_KEY = ("events by key", lambda n: select(E.id, E.dedupe_key).where(E.dedupe_key.in_(keys(n))))


def _select_in(db, query: tuple, values) -> list[tuple]:
    return select_in(db, *query, values)


def _match_all(db, events: list[Event]) -> list[tuple[Candidate | None, str | None]]:
    """Match every event of a post with three queries at most (by id, by message id, by address)."""
    by_message: dict[str, list[Candidate]] = defaultdict(list)
    by_email: dict[str, list[Candidate]] = defaultdict(list)
    ids = {ev.letter_id for ev in events if ev.letter_id and ev.test_of is None}
    by_id = {r[0]: Candidate(*r) for r in _select_in(db, _BY_ID, ids)}
    rest = [ev for ev in events if ev.test_of is None and ev.letter_id not in by_id]
    prefixes = {p for ev in rest if (p := message_id_prefix(ev.sg_message_id))}
    for r in _select_in(db, _BY_MESSAGE, prefixes):
        by_message[r[5]].append(Candidate(*r))
    emails = {ev.email.strip().lower() for ev in rest
              if ev.email and match_event(ev, by_id, by_message, by_email)[0] is None}
    for r in _select_in(db, _BY_ADDRESS, emails):
        by_email[r[2]].append(Candidate(*r))
    return [match_event(ev, by_id, by_message, by_email) for ev in events]


# -- storing events -----------------------------------------------------------------------------------

_INSERT_BATCH = 256   # rows per multi-row INSERT


def _insert_new(db, rows: list[_Row]) -> dict[int, int]:
    """Insert the events not stored yet; returns {index in rows: new event id} for those inserted."""
    first: dict[str, int] = {}
    for i, r in enumerate(rows):  # the same event twice in a post (or a group): the first counts
        first.setdefault(r.dedupe_key, i)
    # Inserted in the unique index's order: two processes storing the same events (SendGrid's
    # retry racing its first try) wait for each other on the first shared key, never deadlock.
    unique = sorted((rows[i] for i in first.values()), key=lambda r: (r.occurred_at, r.dedupe_key))
    if db.dialect.name in ("sqlite", "postgresql") and db.dialect.insert_returning:
        fresh: dict[str, int] = {}
        start = 0
        while start < len(unique):
            left = len(unique) - start
            size = _INSERT_BATCH if left >= _INSERT_BATCH else 1 << (left.bit_length() - 1)
            prepared = Prepared.of(db.dialect, "insert events", size,
                                   partial(_insert_ignoring_duplicates, db.dialect.name))
            batch = unique[start:start + size]
            if prepared.order == _flat_order(size):  # row after row, in the table's column order: as they are
                args = tuple(chain.from_iterable(batch))
            else:
                args = prepared.args({f"{c}_{i}": v for i, r in enumerate(batch) for c, v in zip(_Row._fields, r)})
            fresh.update((key, event_id) for event_id, key in prepared.fetch(db, args))
            start += size
    else:
        # Any other database: leave out what is already there, then a plain insert.
        known = {key for _, key in _select_in(db, _EVENTS_BY_KEY, first)}
        new = [r for r in unique if r.dedupe_key not in known]
        if new:
            db.execute(insert(S.events), [r._asdict() for r in new])
        fresh = {key: event_id for event_id, key in _select_in(db, _EVENTS_BY_KEY, [r.dedupe_key for r in new])}
    return {first[key]: event_id for key, event_id in fresh.items()}


def _insert_ignoring_duplicates(dialect_name: str, size: int):
    """INSERT of `size` rows, skipping any already stored, returning (id, dedupe_key) of those inserted."""
    return (import_module(f"sqlalchemy.dialects.{dialect_name}").insert(S.events)
            .values([{c: bindparam(f"{c}_{i}") for c in _Row._fields} for i in range(size)])
            .on_conflict_do_nothing().returning(E.id, E.dedupe_key))


def _flat_order(size: int) -> list[str]:
    found = _FLAT.get(size)
    if found is None:
        found = _FLAT[size] = [f"{c}_{i}" for i in range(size) for c in _Row._fields]
    return found


_FLAT: dict[int, list[str]] = {}


_RAW_LIMIT = 64 * 1024


def _store_set_aside(db, aside: list[tuple[int, SetAside]], t: float) -> list[int]:
    """Keep each set-aside event once (a post sent again adds nothing); returns the posts of those kept."""
    import hashlib

    kept = []
    for n, a in aside:
        key = "sa:" + hashlib.sha256(a.raw.encode("utf-8", "backslashreplace")).hexdigest()
        raw = a.raw if len(a.raw) <= _RAW_LIMIT else a.raw[:_RAW_LIMIT] + " ... (cut)"
        row = {"received_at": t, "reason": a.reason[:500], "raw": raw.encode("utf-8", "backslashreplace").decode(),
               "dedupe_key": key}
        if insert_once(db, S.events_set_aside, row):
            kept.append(n)
    return kept


# -- bringing letters up to date --------------------------------------------------------------------------

def _update_statement(columns: tuple[str, ...], _size: int = 1):
    """UPDATE letters SET only `columns`: SQLite maintains every index on a column that is SET,
    changed or not, so a letter that only saw another open does not touch the status indexes."""
    values = {c: bindparam(f"new_{c}") for c in columns}
    if "status" in columns:
        values.update(claimed_by=None, next_attempt_at=None)  # no longer ours to send or retry
    return update(S.letters).where(L.id == bindparam("lid")).values(**values)


def _update_letters(db, letter_ids: set[str], t: float) -> set[str]:
    """Recompute each letter from all its stored events; one UPDATE per changed letter.

    Returns the letters whose state changed.
    """
    if not letter_ids:
        return set()
    # The letters first, locked: their history is then read whole, with what another process
    # storing events of the same letters committed while we waited.
    current = _select_in(db, _STATES, sorted(letter_ids))
    history: dict[str, list[Seen]] = defaultdict(list)
    for r in _select_in(db, _HISTORY, letter_ids):
        history[r[0]].append(Seen(*r[1:6], message_id_prefix(r[6])))  # oldest first
    changes: dict[tuple[str, ...], list[dict]] = defaultdict(list)
    moved: set[str] = set()
    for cur in current:
        letter, old = cur[0], cur[1:]
        seen = history.get(letter, [])
        # A letter whose answer we never saw (unknown, or sent again and not yet answered) learns
        # its X-Message-Id from its events: the newest send's, so an earlier send's bounce
        # never decides the state of the letter sent again.
        message_id = old[5] or next((e.message_id for e in reversed(seen) if e.message_id), None)
        seen = latest_send(seen, message_id)
        new = next_state(old[0], seen)
        if new is None:
            continue
        status, reason = new
        values = (status, reason, seen[-1].event, seen[-1].occurred_at,
                  # A letter reconciled from `unknown` never got our own accepted_at.
                  old[4] if old[4] is not None else seen[0].occurred_at, message_id)
        changed = tuple(k for k, was, v in zip(_TRACKED, old, values) if was != v)
        if not changed:
            continue
        change = {f"new_{k}": v for k, v in zip(_TRACKED, values) if k in changed}
        change["lid"] = letter
        if "status" in changed or "reason" in changed:
            changed += ("updated_at",)
            change["new_updated_at"] = t
        if status != old[0]:
            moved.add(letter)
        changes[changed].append(change)
    for columns, rows in changes.items():
        Prepared.of(db.dialect, "update " + ",".join(columns), 1, partial(_update_statement, columns)) \
            .run_many(db, rows)
    return moved


def _suppress_addresses(db, rows: list[_Row], stored: dict[int, int], t: float) -> list[int]:
    """Hard bounces, spam reports and unsubscribes just stored put their address on the suppression
    list; returns the indexes of the rows that added one."""
    added = []
    for i, event_id in stored.items():
        r = rows[i]
        reason = suppression_for(r.event, r.type) if r.email and r.matched_by != "test" else None
        if reason and suppress(db, r.email, reason, r.detail, event_id, t):
            added.append(i)
    return added


# -- reading back -----------------------------------------------------------------------------------------

_SHOWN = (E.id, E.occurred_at, E.received_at, E.event, E.type, E.detail, E.email, E.sg_message_id, E.matched_by)


def _shown(db_rows) -> list[LetterEvent]:
    return [LetterEvent(r.id, r.occurred_at, r.received_at, r.event,
                        f"{r.type}: {r.detail}" if r.type and r.detail else (r.type or r.detail),
                        r.email, r.sg_message_id, r.matched_by) for r in db_rows]
