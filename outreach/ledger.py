"""The ledger: one row per letter, its state, its attempts and the archived message.

Every state change is committed before the next side effect, so a crash can
at worst leave a letter `sending`, which the next run turns into `unknown`:
visible, never silently resent.
"""

from __future__ import annotations

import contextlib
import os
import socket
import threading
import time
import uuid
import zlib
from dataclasses import dataclass
from typing import Iterable, NamedTuple

from sqlalchemy import and_, bindparam, create_engine, event, func, insert, or_, select, update
from sqlalchemy.engine import Engine
from sqlalchemy.exc import IntegrityError, OperationalError, SQLAlchemyError

from outreach import schema as S
from outreach.config import sqlite_file
from outreach.errors import UserError
from outreach.letters import letter_id

STATES = ("pending", "sending", "retry_wait", "accepted", "delivered", "opened", "clicked", "deferred",
          "bounced", "dropped", "spamreport", "unsubscribed", "failed", "unknown", "skipped")
# States in which the letter has left our hands: never sent again.
LEFT_US = frozenset({"accepted", "delivered", "opened", "clicked", "deferred", "bounced", "dropped",
                     "spamreport", "unsubscribed"})
TO_SEND = ("pending", "retry_wait")
NEEDS_ATTENTION = ("unknown", "failed")
# A bounced letter's reason starts with its bounce type: "blocked: ..." is the receiving
# server refusing for now, worth retrying; "bounce: ..." is a dead address, suppressed.
BLOCKED_PREFIX = "blocked"
# A recorded letter whose recipient left the audience or the contact list before it went out.
FILTERED = "filtered: no longer in the audience or the contact list"


class Change(NamedTuple):
    """One letter's move before a send: `old` -> `new` state, with the reason."""

    letter_id: str
    email_key: str
    old: str
    new: str
    reason: str


def now() -> float:
    return time.time()


@dataclass
class LetterRecord:
    """What the dispatcher needs to send one recorded letter."""

    id: str
    email: str
    name: str
    subject: str
    text: str
    html: str
    attempts: int


class Ledger:
    """The ledger in any SQLAlchemy database; SQLite (WAL) by default."""

    def __init__(self, url: str):
        self.url = url
        # SQLite has one writer at a time and its busy handler sleeps in steps of
        # milliseconds; our own threads queue here instead, without sleeping.
        self._write_lock = threading.Lock() if url.startswith("sqlite") else None
        try:
            self.engine = _engine(url)
            self.migrate()
        except UserError:
            raise
        except SQLAlchemyError as e:
            raise UserError(f"{safe_url(url)}: cannot open the ledger database: {_short(e)}") from None

    @contextlib.contextmanager
    def write(self):
        """A write transaction, committed on exit."""
        if self._write_lock is None:
            with self.engine.begin() as db:
                yield db
        else:
            with self._write_lock, self.engine.begin() as db:
                yield db

    # -- schema ---------------------------------------------------------------------

    def migrate(self) -> int:
        """Bring the schema to the current version; returns the version found before."""
        with self.write() as db:
            S.schema_version.create(db, checkfirst=True)
            found = db.execute(select(func.max(S.schema_version.c.version))).scalar() or 0
            if found > S.CURRENT_VERSION:
                raise UserError(f"{safe_url(self.url)}: the ledger has schema version {found}, newer than this "
                                f"outreach ({S.CURRENT_VERSION}); upgrade outreach")
            for version, _, tables, statements in S.MIGRATIONS:
                if version > found:
                    S.metadata.create_all(db, tables=tables, checkfirst=True)
                    for statement in statements:
                        db.exec_driver_sql(statement)
                    db.execute(insert(S.schema_version).values(version=version, applied_at=now()))
        return found

    def version(self) -> int:
        with self.engine.connect() as db:
            return db.execute(select(func.max(S.schema_version.c.version))).scalar() or 0

    # -- campaigns ------------------------------------------------------------------------

    def campaign_id(self, name: str, create: bool = True) -> int | None:
        with self.write() as db:
            found = db.execute(select(S.campaigns.c.id).where(S.campaigns.c.name == name)).scalar()
            if found is not None or not create:
                return found
            try:
                return db.execute(insert(S.campaigns).values(name=name, created_at=now())).inserted_primary_key[0]
            except IntegrityError:
                pass
        return self.campaign_id(name, create=False)

    # -- recording letters ------------------------------------------------------------------

    def known(self, campaign_id: int) -> dict[str, tuple[str, str]]:
        """email_key -> (letter id, status) for every letter of the campaign."""
        L = S.letters.c
        with self.engine.connect() as db:
            rows = db.execute(select(L.email_key, L.id, L.status).where(L.campaign_id == campaign_id))
            return {r.email_key: (r.id, r.status) for r in rows}

    def record(self, campaign_id: int, letters: Iterable, template_hash: str) -> int:
        """Record letters not yet in the ledger as `pending`, with their archived message.

        A letter already recorded keeps its row: only one that was never attempted
        gets its archive refreshed, so what is archived is what goes out.
        """
        letters = list(letters)
        known = self.known(campaign_id)
        t = now()
        new_rows, new_archive, refresh = [], [], []
        for letter in letters:
            c = letter.contact
            entry = known.get(c.key)
            arch = {"letter_id": letter.letter_id, "subject": letter.subject,
                    "text_z": zlib.compress(letter.text.encode()), "html_z": zlib.compress(letter.html.encode()),
                    "template_hash": template_hash, "archived_at": t}
            if entry is None:
                new_rows.append({
                    "id": letter.letter_id, "campaign_id": campaign_id, "email": c.email, "email_key": c.key,
                    "bioguide_id": c.bioguide_id, "name": letter.to_name, "chamber": c.chamber,
                    "state_code": c.state, "district": c.district, "party": c.party,
                    "committees": ";".join(c.committees), "status": "pending", "attempts": 0,
                    "created_at": t, "updated_at": t})
                new_archive.append(arch)
                known[c.key] = (letter.letter_id, "pending")
            elif entry[1] == "pending":
                refresh.append(arch)
        with self.write() as db:
            if new_rows:
                db.execute(insert(S.letters), new_rows)
                db.execute(insert(S.archive), new_archive)
            for arch in refresh:
                L = S.letters.c
                never_tried = db.execute(select(L.attempts).where(L.id == arch["letter_id"])).scalar() == 0
                if never_tried:
                    n = db.execute(update(S.archive).where(S.archive.c.letter_id == arch["letter_id"])
                                   .values(**{k: v for k, v in arch.items() if k != "letter_id"})).rowcount
                    if n == 0:  # recorded as skipped (no message then), now to be sent
                        db.execute(insert(S.archive).values(**arch))
        return len(new_rows)

    def record_skipped(self, campaign_id: int, skipped: list) -> int:
        """Recipients left out on purpose (suppressed) get a `skipped` letter with the reason, once."""
        known = self.known(campaign_id)
        t = now()
        rows = []
        for contact, reason in skipped:
            if contact.key in known:
                continue
            rows.append({"id": letter_id(self._campaign_name(campaign_id), contact.email),
                         "campaign_id": campaign_id, "email": contact.email, "email_key": contact.key,
                         "bioguide_id": contact.bioguide_id, "name": contact.full_name, "chamber": contact.chamber,
                         "state_code": contact.state, "district": contact.district, "party": contact.party,
                         "committees": ";".join(contact.committees), "status": "skipped",
                         "reason": f"suppressed: {reason}", "attempts": 0, "created_at": t, "updated_at": t})
            known[contact.key] = (rows[-1]["id"], "skipped")
        if rows:
            with self.write() as db:
                db.execute(insert(S.letters), rows)
        return len(rows)

    def _campaign_name(self, campaign_id: int) -> str:
        with self.engine.connect() as db:
            return db.execute(select(S.campaigns.c.name).where(S.campaigns.c.id == campaign_id)).scalar_one()

    def retry_candidates(self, campaign_id: int) -> tuple[list, list]:
        """Letters that never reached the office: failed, or bounced as `blocked` (never one delivered).

        A letter with any delivered, open or click event is left out whatever its state says.
        Returns (to retry, left out because the address is suppressed: with its suppression reason).
        """
        L, E, X = S.letters.c, S.events.c, S.suppressions.c
        reached = select(E.id).where(E.letter_id == L.id, E.event.in_(("delivered", "open", "click"))).exists()
        with self.engine.connect() as db:
            rows = db.execute(select(L.id, L.email, L.email_key, L.status, L.reason, X.reason.label("suppressed"))
                              .outerjoin_from(S.letters, S.suppressions, X.email_key == L.email_key)
                              .where(L.campaign_id == campaign_id, _RETRYABLE, ~reached)
                              .order_by(L.created_at, L.id)).all()
        return [r for r in rows if r.suppressed is None], [r for r in rows if r.suppressed is not None]

    def requeue(self, letter_ids: list[str]) -> int:
        """failed / blocked letters -> pending, attempts counted afresh (their history stays in attempts).

        A letter to a suppressed address is never queued again, whoever asks.
        """
        L, X = S.letters.c, S.suppressions.c
        suppressed = select(X.email_key).where(X.email_key == L.email_key).exists()
        with self.write() as db:
            return db.execute(update(S.letters).where(L.id.in_(letter_ids), _RETRYABLE, ~suppressed)
                .values(status="pending", attempts=0, reason="queued again by --retry-failed",
                        # The earlier send's id and time go (its attempts keep them): the events of
                        # the new send, not the old bounce, must decide the letter's state.
                        provider_message_id=None, accepted_at=None, updated_at=now())).rowcount

    # -- the state machine ------------------------------------------------------------------

    def due(self, campaign_id: int, limit: int | None = None, at: float | None = None) -> list[str]:
        """Letters ready to go: pending, or waiting to retry and due; oldest first."""
        L = S.letters.c
        at = now() if at is None else at
        q = (select(L.id).where(L.campaign_id == campaign_id,
                                or_(L.status == "pending",
                                    and_(L.status == "retry_wait", L.next_attempt_at <= at)))
             .order_by(L.created_at, L.id))
        if limit is not None:
            q = q.limit(limit)
        with self.engine.connect() as db:
            return list(db.execute(q).scalars())

    def next_retry_at(self, campaign_id: int) -> float | None:
        L = S.letters.c
        with self.engine.connect() as db:
            return db.execute(select(func.min(L.next_attempt_at))
                              .where(L.campaign_id == campaign_id, L.status == "retry_wait")).scalar()

    def load(self, letter_id: str) -> LetterRecord:
        return self.load_many([letter_id])[letter_id]

    def load_many(self, letter_ids: list[str]) -> dict[str, LetterRecord]:
        """The archived messages of several letters in one query."""
        L, A = S.letters.c, S.archive.c
        out = {}
        with self.engine.connect() as db:
            for i in range(0, len(letter_ids), 500):
                rows = db.execute(select(L.id, L.email, L.name, L.attempts, A.subject, A.text_z, A.html_z)
                                  .join_from(S.letters, S.archive, L.id == A.letter_id)
                                  .where(L.id.in_(letter_ids[i:i + 500])))
                for r in rows:
                    out[r.id] = LetterRecord(r.id, r.email, r.name, r.subject, zlib.decompress(r.text_z).decode(),
                                             zlib.decompress(r.html_z).decode(), r.attempts)
        return out

    def claim(self, letter_id: str, owner: str) -> bool:
        """pending/retry_wait -> sending, committed before the request leaves; False if it moved meanwhile."""
        with self.write() as db:
            n = db.execute(_CLAIM, {"lid": letter_id, "owner": owner, "t": now()}).rowcount
        return n == 1

    def finish(self, letter_id: str, status: str, *, attempt: dict, reason: str | None = None,
               message_id: str | None = None, retry_at: float | None = None, refund: bool = False) -> None:
        """sending -> `status`, with the attempt that decided it, in one transaction."""
        params = _finish_params(letter_id, status, reason, message_id, retry_at, refund)
        with self.write() as db:
            db.execute(_ATTEMPT, {"letter_id": letter_id, **attempt})
            db.execute(_FINISH, params)

    def settlement(self, campaign_id: int, audience: set[str], suppressed: dict[str, str]) -> list["Change"]:
        """What today's audience and suppression list change among letters not yet sent (read only).

        Decided once per letter: a suppressed address is `skipped` with the suppression's
        reason; a recipient no longer in the audience (or the contact list) is `skipped` as
        FILTERED; a skipped letter whose recipient is back and not suppressed waits again
        (`retry_wait` if it had a retry time, else `pending`).
        """
        from outreach.suppressions import SKIP_PREFIX

        L = S.letters.c
        with self.engine.connect() as db:
            rows = db.execute(select(L.id, L.email_key, L.status, L.reason, L.next_attempt_at).where(
                L.campaign_id == campaign_id, L.status.in_(("pending", "retry_wait", "skipped")))).all()
        changes = []
        for r in rows:
            held = r.status == "skipped"
            ours = held and ((r.reason or "").startswith(SKIP_PREFIX) or r.reason == FILTERED)
            if held and not ours:
                continue  # skipped for a reason this does not decide
            if r.email_key in suppressed:
                status, reason = "skipped", SKIP_PREFIX + suppressed[r.email_key]
            elif r.email_key not in audience:
                status, reason = "skipped", FILTERED
            elif held:
                status = "retry_wait" if r.next_attempt_at is not None else "pending"
                reason = "back in the audience" if r.reason == FILTERED else "suppression removed"
            else:
                continue
            if (status, reason) != (r.status, r.reason):
                changes.append(Change(r.id, r.email_key, r.status, status, reason))
        return changes

    def apply_settlement(self, changes: list["Change"]) -> int:
        """Carry out `settlement`'s changes (each only if the letter has not moved meanwhile)."""
        L = S.letters.c
        t = now()
        done = 0
        with self.write() as db:
            for c in changes:
                done += db.execute(update(S.letters).where(L.id == c.letter_id, L.status == c.old)
                                   .values(status=c.new, reason=c.reason, updated_at=t)).rowcount
        return done

    def orphans_to_unknown(self, campaign_id: int) -> int:
        """Letters left `sending` by a process that is gone become `unknown` (call while holding the lock)."""
        L = S.letters.c
        with self.write() as db:
            return db.execute(update(S.letters).where(L.campaign_id == campaign_id, L.status == "sending")
                              .values(status="unknown", updated_at=now(), claimed_by=None,
                                      reason="the sending process stopped before the answer was recorded; "
                                             "it may have been accepted")).rowcount

    def release(self, campaign_id: int | None, ids: list[str] | None = None, all_unknown: bool = False) -> list[str]:
        """unknown -> pending, by the operator's decision; returns the ids released."""
        L = S.letters.c
        cond = [L.status == "unknown"]
        if campaign_id is not None:
            cond.append(L.campaign_id == campaign_id)
        with self.write() as db:
            if ids is not None:
                found = []
                for prefix in ids:
                    rows = db.execute(select(L.id, L.status).where(L.id.startswith(prefix))).all()
                    if not rows:
                        raise UserError(f"no letter with id {prefix!r}")
                    if len(rows) > 1:
                        raise UserError(f"letter id {prefix!r} is ambiguous ({len(rows)} letters); give more characters")
                    if rows[0].status != "unknown":
                        raise UserError(f"letter {rows[0].id} is {rows[0].status}, not unknown: only unknown letters "
                                        "can be released")
                    found.append(rows[0].id)
                cond.append(L.id.in_(found))
            elif not all_unknown:
                return []
            candidates = list(db.execute(select(L.id).where(*cond)).scalars())
            released = []
            for letter_id in candidates:
                # Still unknown at the moment of the change: an event may have reconciled it meanwhile.
                if db.execute(update(S.letters).where(L.id == letter_id, L.status == "unknown")
                              .values(status="pending", reason="released by the operator",
                                      updated_at=now())).rowcount == 1:
                    released.append(letter_id)
        return released

    # -- reading ----------------------------------------------------------------------------------

    def counts(self, campaign_id: int) -> dict[str, int]:
        L = S.letters.c
        counts = dict.fromkeys(STATES, 0)
        with self.engine.connect() as db:
            for status, n in db.execute(select(L.status, func.count()).where(L.campaign_id == campaign_id)
                                        .group_by(L.status)):
                counts[status] = n
        return counts

    def letters(self, campaign_id: int | None = None, status: str | None = None, limit: int | None = None):
        L = S.letters.c
        q = select(S.letters, S.campaigns.c.name.label("campaign")).join(S.campaigns)
        if campaign_id is not None:
            q = q.where(L.campaign_id == campaign_id)
        if status is not None:
            q = q.where(L.status == status)
        q = q.order_by(L.created_at, L.id)
        if limit:
            q = q.limit(limit)
        with self.engine.connect() as db:
            return db.execute(q).all()

    def find_letter(self, prefix: str):
        L = S.letters.c
        with self.engine.connect() as db:
            rows = db.execute(select(S.letters, S.campaigns.c.name.label("campaign")).join(S.campaigns)
                              .where(L.id.startswith(prefix.strip().lower())).limit(2)).all()
        if not rows:
            raise UserError(f"no letter with id {prefix!r}; `outreach letters list` shows them")
        if len(rows) > 1:
            raise UserError(f"letter id {prefix!r} is ambiguous; give more characters")
        return rows[0]

    def archived(self, letter_id: str):
        A = S.archive.c
        with self.engine.connect() as db:
            r = db.execute(select(S.archive).where(A.letter_id == letter_id)).one_or_none()
        if r is None:
            return None
        return {"subject": r.subject, "text": zlib.decompress(r.text_z).decode(),
                "html": zlib.decompress(r.html_z).decode(), "template_hash": r.template_hash,
                "archived_at": r.archived_at}

    def attempts_of(self, letter_id: str):
        A = S.attempts.c
        with self.engine.connect() as db:
            return db.execute(select(S.attempts).where(A.letter_id == letter_id).order_by(A.id)).all()

    def group_writer(self) -> "GroupWriter":
        """claim() and finish() for many worker threads, committed together."""
        return GroupWriter(self)

    # -- locks -------------------------------------------------------------------------------------

    def lock(self, name: str, what: str) -> "Lock":
        """Hold `name` for this process, or refuse naming who holds it; stale holders are taken over."""
        return Lock(self, name, what)


class _Op:
    __slots__ = ("kind", "params", "attempt", "result", "error", "done")

    def __init__(self, kind: str, params: dict, attempt: dict | None = None):
        self.kind, self.params, self.attempt = kind, params, attempt
        self.result, self.error = None, None
        self.done = threading.Event()


class GroupWriter:
    """Claims and finishes from many workers, committed in groups by one writer thread.

    A claim returns only once it is committed (before its request leaves);
    whatever queued meanwhile shares the transaction and its fsync. A finish
    is queued without waiting: the queue is first in, first out, so a worker's
    next claim commits only with its previous finish, and a crash leaves at
    most one `sending` letter per worker, as with one transaction per change.
    """

    def __init__(self, ledger: Ledger, max_group: int = 256):
        import queue

        self.ledger = ledger
        self.max_group = max_group
        self._queue: queue.Queue = queue.Queue()
        self._error: BaseException | None = None
        self._statements: dict[str, _Prepared] = {}
        self._thread = threading.Thread(target=self._run, name="ledger-writer", daemon=True)
        self._thread.start()

    def claim(self, letter_id: str, owner: str) -> bool:
        return self._submit(_Op("claim", {"lid": letter_id, "owner": owner, "t": now()}))

    def finish(self, letter_id: str, status: str, *, attempt: dict, reason: str | None = None,
               message_id: str | None = None, retry_at: float | None = None, refund: bool = False) -> None:
        self._submit(_Op("finish", _finish_params(letter_id, status, reason, message_id, retry_at, refund),
                         {"letter_id": letter_id, **attempt}), wait=False)

    def _submit(self, op: _Op, wait: bool = True):
        if self._error is not None:
            raise self._error
        self._queue.put(op)
        if not wait:
            return None
        op.done.wait()
        if op.error is not None:
            raise op.error
        return op.result

    def _run(self) -> None:
        import queue

        while (op := self._queue.get()) is not None:
            group = [op]
            while len(group) < self.max_group:
                try:
                    nxt = self._queue.get_nowait()
                except queue.Empty:
                    break
                if nxt is None:
                    self._queue.put(None)
                    break
                group.append(nxt)
            try:
                with self.ledger.write() as db:
                    # In the order they came: a retry's claim must see its own earlier finish.
                    finishes: list[_Op] = []
                    for o in [*group, None]:
                        if o is not None and o.kind == "finish":
                            finishes.append(o)
                            continue
                        if finishes:
                            self._prepared(db, "attempt").run_many(db, [f.attempt for f in finishes])
                            self._prepared(db, "finish").run_many(db, [f.params for f in finishes])
                            finishes = []
                        if o is not None:
                            o.result = self._prepared(db, "claim").run(db, o.params).rowcount == 1
            except BaseException as e:  # noqa: BLE001 - handed to every waiting caller
                self._error = self._error or e
                for o in group:
                    o.error = e
            for o in group:
                o.done.set()

    def _prepared(self, db, name: str) -> "_Prepared":
        found = self._statements.get(name)
        if found is None:
            stmt = {"claim": _CLAIM, "attempt": _ATTEMPT_ROW, "finish": _FINISH}[name]
            found = self._statements[name] = _Prepared(stmt, db.dialect)
        return found

    def close(self) -> None:
        """Commit what is queued; raise the first error the writer met."""
        self._queue.put(None)
        self._thread.join()
        if self._error is not None:
            raise self._error


class _Prepared:
    """A statement compiled once for the database's dialect and run as driver SQL.

    On the hot path SQLAlchemy's per-execution compile-cache lookup and
    parameter processing cost more than SQLite's own work.
    """

    def __init__(self, stmt, dialect):
        compiled = stmt.compile(dialect=dialect)
        self.sql = compiled.string
        self.defaults = dict(compiled.params)
        self.order = list(compiled.positiontup) if compiled.positional else None

    def _args(self, params: dict):
        merged = {**self.defaults, **params}
        return tuple(merged[k] for k in self.order) if self.order is not None else merged

    def run(self, db, params: dict):
        return db.exec_driver_sql(self.sql, self._args(params))

    def run_many(self, db, rows: list[dict]):
        return db.exec_driver_sql(self.sql, [self._args(r) for r in rows])


def _finish_params(letter_id, status, reason, message_id, retry_at, refund) -> dict:
    assert status in ("accepted", "failed", "unknown", "retry_wait", "pending"), status
    t = now()
    return {"lid": letter_id, "status": status, "reason": reason, "t": t, "retry_at": retry_at,
            "refund": 1 if refund else 0, "message_id": message_id,
            "accepted_at": t if status == "accepted" else None}


class Lock:
    """A named lease in the database, kept alive by a heartbeat thread.

    A holder on this host whose process is gone, or any holder silent for
    STALE_AFTER seconds, is stale and is taken over.
    """

    HEARTBEAT = 5.0
    STALE_AFTER = 60.0

    def __init__(self, ledger: Ledger, name: str, what: str):
        self.ledger = ledger
        self.name = name
        self.what = what
        self.owner = uuid.uuid4().hex
        self.took_over: dict | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def __enter__(self) -> "Lock":
        self.acquire()
        return self

    def __exit__(self, *exc) -> None:
        self.release()

    def acquire(self) -> None:
        K = S.locks.c
        me = {"owner": self.owner, "pid": os.getpid(), "host": socket.gethostname()}
        for _ in range(5):
            t = now()
            with self.ledger.write() as db:
                held = db.execute(select(S.locks).where(K.name == self.name)).one_or_none()
                if held is None:
                    try:
                        db.execute(insert(S.locks).values(name=self.name, acquired_at=t, heartbeat_at=t, **me))
                    except IntegrityError:
                        continue
                    break
                if not _is_stale(held, t, self.STALE_AFTER):
                    since = time.strftime("%H:%M:%S", time.localtime(held.acquired_at))
                    raise UserError(f"{self.what} is already running (pid {held.pid} on {held.host}, since {since}); "
                                    "wait for it to finish or stop it first")
                n = db.execute(update(S.locks).where(K.name == self.name, K.owner == held.owner)
                               .values(acquired_at=t, heartbeat_at=t, **me)).rowcount
                if n == 1:
                    self.took_over = {"pid": held.pid, "host": held.host}
                    break
        else:
            raise UserError(f"could not take the lock for {self.what}; try again")
        self._thread = threading.Thread(target=self._beat, name=f"lock:{self.name}", daemon=True)
        self._thread.start()

    def _beat(self) -> None:
        K = S.locks.c
        while not self._stop.wait(self.HEARTBEAT):
            try:
                with self.ledger.write() as db:
                    db.execute(update(S.locks).where(K.name == self.name, K.owner == self.owner)
                               .values(heartbeat_at=now()))
            except SQLAlchemyError:
                pass  # a busy database delays a beat; staleness allows for many

    def release(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=self.HEARTBEAT + 1)
        K = S.locks.c
        try:
            with self.ledger.write() as db:
                db.execute(S.locks.delete().where(K.name == self.name, K.owner == self.owner))
        except SQLAlchemyError:
            pass


# Letters --retry-failed may send again: failed, or bounced as `blocked` (the receiving server refused them).
_RETRYABLE = or_(S.letters.c.status == "failed",
                 and_(S.letters.c.status == "bounced", S.letters.c.reason.startswith(BLOCKED_PREFIX)))


# Statements on the hot path, built once: constructing them per letter costs more than running them.
_L = S.letters.c
_CLAIM = (update(S.letters)
          .where(_L.id == bindparam("lid"), or_(*(_L.status == s for s in TO_SEND)))
          .values(status="sending", claimed_by=bindparam("owner"), attempts=_L.attempts + 1,
                  next_attempt_at=None, updated_at=bindparam("t")))
_ATTEMPT = insert(S.attempts)
_ATTEMPT_ROW = insert(S.attempts).values({c.name: bindparam(c.name) for c in S.attempts.c if c.name != "id"})
_FINISH = (update(S.letters)
           .where(_L.id == bindparam("lid"), _L.status == "sending")
           .values(status=bindparam("status"), reason=bindparam("reason"), updated_at=bindparam("t"),
                   claimed_by=None, next_attempt_at=bindparam("retry_at"),
                   attempts=_L.attempts - bindparam("refund"),
                   provider_message_id=func.coalesce(bindparam("message_id"), _L.provider_message_id),
                   accepted_at=func.coalesce(bindparam("accepted_at"), _L.accepted_at)))


def _is_stale(held, t: float, stale_after: float) -> bool:
    """A holder on this host whose process is gone, or any holder silent for `stale_after`
    (on this host too: its pid may have been reused by another process)."""
    if held.host == socket.gethostname() and not _pid_alive(held.pid):
        return True
    return t - held.heartbeat_at > stale_after


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # A zombie (killed, not yet reaped by its parent) is gone for our purposes.
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            return f.read().split(b") ", 1)[1][:1] != b"Z"
    except (OSError, IndexError):
        return True


def _engine(url: str) -> Engine:
    if url.startswith("sqlite"):
        path = sqlite_file(url)
        if path:
            folder = os.path.dirname(path)
            if folder and not os.path.isdir(folder):
                raise UserError(f"{url}: the folder {folder} does not exist; create it or change [database] url")
        pool = {"pool_size": 16, "max_overflow": 64, "pool_use_lifo": True} if path else {}
        engine = create_engine(url, connect_args={"timeout": 30, "check_same_thread": False}, **pool)

        @event.listens_for(engine, "connect")
        def _pragmas(conn, _record):
            cur = conn.cursor()
            cur.execute("PRAGMA journal_mode=WAL")
            # FULL: a committed `sending` survives a power cut too, not only a crash.
            cur.execute("PRAGMA synchronous=FULL")
            cur.execute("PRAGMA foreign_keys=ON")
            cur.execute("PRAGMA busy_timeout=30000")
            # 64 MiB of page cache: index pages of a large campaign stay in memory across writes.
            cur.execute("PRAGMA cache_size=-65536")
            cur.close()
        return engine
    try:
        return create_engine(url, pool_pre_ping=True)
    except (ImportError, ModuleNotFoundError) as e:
        raise UserError(f"[database] url needs a driver that is not installed: {e}") from None
    except Exception as e:  # noqa: BLE001 - SQLAlchemy's URL errors have several types
        raise UserError(f"[database] url {safe_url(url)!r} is not usable: {_short(e)}") from None


def safe_url(url: str) -> str:
    """The URL without its password; nothing of it when it cannot be parsed (it may hold one)."""
    from sqlalchemy.engine import make_url
    from sqlalchemy.exc import ArgumentError

    try:
        return make_url(url).render_as_string(hide_password=True)
    except (ArgumentError, ValueError):
        return "(the [database] url, which is not a valid URL)"


def _short(e: Exception) -> str:
    text = str(getattr(e, "orig", None) or e)
    return " ".join(text.split())[:300]


def open_ledger(cfg) -> Ledger:
    """The ledger named by [database] url in config (default: outreach.db next to config.toml)."""
    return Ledger(cfg.database_url)


__all__ = ["Ledger", "LetterRecord", "Lock", "STATES", "LEFT_US", "open_ledger", "OperationalError"]
