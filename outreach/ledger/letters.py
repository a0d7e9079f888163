"""Letters in the ledger: one row per (campaign, recipient), its archived message and its attempts.

The moves a letter makes here are the ones outreach.states allows; each
conditional on the state it is in, so two writers never both move a letter.
"""

from __future__ import annotations

import zlib
from typing import Iterable, NamedTuple

from sqlalchemy import and_, bindparam, func, insert, or_, select, update

from outreach import states
from outreach.errors import UserError
from outreach.ledger import schema as S
from outreach.ledger.writer import now

L, A = S.letters.c, S.archive.c


class Known(NamedTuple):
    """A recorded letter as a plan sees it."""

    id: str
    status: str
    reason: str | None
    attempts: int
    next_attempt_at: float | None


class LetterRecord(NamedTuple):
    """A recorded letter's archived message: what a send of it carries."""

    id: str
    email: str
    name: str
    subject: str
    text: str
    html: str
    attempts: int


class Letters:
    def __init__(self, ledger):
        self.ledger = ledger

    # -- what is recorded ---------------------------------------------------------------------

    def known(self, campaign_id: int | None) -> dict[str, Known]:
        """email_key -> the recorded letter, for every letter of the campaign."""
        if campaign_id is None:
            return {}
        with self.ledger.read() as db:
            rows = db.execute(select(L.email_key, L.id, L.status, L.reason, L.attempts, L.next_attempt_at)
                              .where(L.campaign_id == campaign_id))
            return {r.email_key: Known(r.id, r.status, r.reason, r.attempts, r.next_attempt_at) for r in rows}

    def record(self, campaign_id: int, letters: Iterable, template_hash: str) -> int:
        """Record letters not yet in the ledger as `pending`, with their archived message.

        A letter already recorded keeps its row: only one that was never attempted
        gets its archive refreshed, so what is archived is what goes out.
        """
        t = now()
        rows, archives = [], []
        for letter in letters:
            rows.append(_row(campaign_id, letter.contact, letter.letter_id, letter.to_name, "pending", None, t))
            archives.append({"letter_id": letter.letter_id, "subject": letter.subject,
                             "text_z": zlib.compress(letter.text.encode()),
                             "html_z": zlib.compress(letter.html.encode()),
                             "template_hash": template_hash, "archived_at": t})
        if not rows:
            return 0
        with self.ledger.write() as db:
            found = {r.id: r for r in db.execute(
                select(L.id, L.status, L.attempts, L.term_end).where(L.id.in_([r["id"] for r in rows])))}
            new = [i for i, r in enumerate(rows) if r["id"] not in found]
            if new:
                db.execute(insert(S.letters), [rows[i] for i in new])
                db.execute(insert(S.archive), [archives[i] for i in new])
            # A refreshed list may give a recorded letter's member a new term.
            renewed = [{"lid": r["id"], "term": r["term_end"]} for r in rows
                       if r["id"] in found and found[r["id"]].term_end != r["term_end"]]
            if renewed:
                db.execute(update(S.letters).where(L.id == bindparam("lid")).values(term_end=bindparam("term")),
                           renewed)
            for arch in archives:
                entry = found.get(arch["letter_id"])
                if entry is None or (entry.status, entry.attempts) != ("pending", 0):
                    continue
                n = db.execute(update(S.archive).where(A.letter_id == arch["letter_id"])
                               .values(**{k: v for k, v in arch.items() if k != "letter_id"})).rowcount
                if n == 0:  # recorded as skipped (no message then), now to be sent
                    db.execute(insert(S.archive).values(**arch))
        return len(new)

    def record_skipped(self, campaign_id: int, left_out: list, ids: dict[str, str]) -> int:
        """Recipients left out on purpose get a `skipped` letter with the reason, once.

        `left_out`: (contact, reason) pairs; `ids`: email_key -> the letter id each would have."""
        t = now()
        rows = [_row(campaign_id, contact, ids[contact.key], contact.full_name, "skipped", reason, t)
                for contact, reason in left_out]
        if not rows:
            return 0
        with self.ledger.write() as db:
            found = set(db.execute(select(L.id).where(L.id.in_([r["id"] for r in rows]))).scalars())
            rows = [r for r in rows if r["id"] not in found]
            if rows:
                db.execute(insert(S.letters), rows)
        return len(rows)

    def settle(self, changes: list) -> int:
        """Carry out a plan's changes (letter_id, old -> new, reason), each only if the letter
        has not moved meanwhile."""
        t = now()
        done = 0
        with self.ledger.write() as db:
            for c in changes:
                assert states.can_move(c.old, c.new), (c.old, c.new)
                done += db.execute(update(S.letters).where(L.id == c.letter_id, L.status == c.old)
                                   .values(status=c.new, reason=c.reason, updated_at=t)).rowcount
        return done

    def orphans_to_unknown(self, campaign_id: int) -> int:
        """Letters left `sending` by a run that is gone become `unknown` (call while holding the
        campaign's send lock: no other run of it is sending)."""
        with self.ledger.write() as db:
            return db.execute(update(S.letters).where(L.campaign_id == campaign_id, L.status.in_(states.IN_FLIGHT))
                              .values(status="unknown", updated_at=now(), claimed_by=None,
                                      reason="the sending process stopped before the answer was recorded; "
                                             "it may have been accepted")).rowcount

    def release(self, campaign_id: int | None, ids: list[str] | None = None, all_unknown: bool = False) -> list[str]:
        """unknown -> pending, by the operator's decision; returns the ids released."""
        cond = [L.status == "unknown"]
        if campaign_id is not None:
            cond.append(L.campaign_id == campaign_id)
        with self.ledger.write() as db:
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
            released = []
            for letter_id in list(db.execute(select(L.id).where(*cond)).scalars()):
                # Still unknown at the moment of the change: an event may have reconciled it meanwhile.
                if db.execute(update(S.letters).where(L.id == letter_id, L.status == "unknown")
                              .values(status="pending", reason="released by the operator",
                                      updated_at=now())).rowcount == 1:
                    released.append(letter_id)
        return released

    # -- sending again what never arrived ---------------------------------------------------------

    def retry_candidates(self, campaign_id: int) -> tuple[list, list]:
        """Letters that never reached the office: failed, or bounced as `blocked` (never one delivered).

        A letter with any delivered, open or click event is left out whatever its state says.
        Returns (to retry, left out because the address is suppressed: with its suppression reason).
        """
        E, X = S.events.c, S.suppressions.c
        reached = select(E.id).where(E.letter_id == L.id, E.event.in_(("delivered", "open", "click"))).exists()
        with self.ledger.read() as db:
            rows = db.execute(select(L.id, L.email, L.email_key, L.status, L.reason, X.reason.label("suppressed"))
                              .outerjoin_from(S.letters, S.suppressions, X.email_key == L.email_key)
                              .where(L.campaign_id == campaign_id, _RETRYABLE, ~reached)
                              .order_by(L.created_at, L.id)).all()
        rows = [r for r in rows if states.retryable(r.status, r.reason)]
        return [r for r in rows if r.suppressed is None], [r for r in rows if r.suppressed is not None]

    def requeue(self, letter_ids: list[str]) -> int:
        """failed / blocked letters -> pending, attempts counted afresh (their history stays in attempts).

        A letter to a suppressed address is never queued again, whoever asks.
        """
        X = S.suppressions.c
        suppressed = select(X.email_key).where(X.email_key == L.email_key).exists()
        with self.ledger.write() as db:
            return db.execute(update(S.letters).where(L.id.in_(letter_ids), _RETRYABLE, ~suppressed)
                .values(status="pending", attempts=0, reason="queued again by --retry-failed",
                        # The earlier send's id and time go (its attempts keep them): the events of
                        # the new send, not the old bounce, must decide the letter's state.
                        provider_message_id=None, accepted_at=None, updated_at=now())).rowcount

    # -- sending ----------------------------------------------------------------------------------

    def load(self, letter_ids: list[str]) -> dict[str, LetterRecord]:
        """The archived messages of several letters (what is archived is what is sent)."""
        out = {}
        with self.ledger.read() as db:
            for i in range(0, len(letter_ids), 500):
                rows = db.execute(select(L.id, L.email, L.name, L.attempts, A.subject, A.text_z, A.html_z)
                                  .join_from(S.letters, S.archive, L.id == A.letter_id)
                                  .where(L.id.in_(letter_ids[i:i + 500])))
                for r in rows:
                    out[r.id] = LetterRecord(r.id, r.email, r.name, r.subject, zlib.decompress(r.text_z).decode(),
                                             zlib.decompress(r.html_z).decode(), r.attempts)
        return out

    def sender(self, owner: str) -> "Sending":
        """Claims and finishes for one run, committed in groups by the ledger's writer."""
        return Sending(self.ledger.writer, owner)

    # -- reading ------------------------------------------------------------------------------------

    def counts(self, campaign_id: int | None) -> dict[str, int]:
        """Letters by state, every state present (zero included)."""
        counts = states.counts_template()
        if campaign_id is None:
            return counts
        with self.ledger.read() as db:
            for status, n in db.execute(select(L.status, func.count()).where(L.campaign_id == campaign_id)
                                        .group_by(L.status)):
                counts[status] = n
        return counts

    def listing(self, campaign_id: int | None = None, status: str | None = None, limit: int | None = None):
        """Letters (with their campaign's name), oldest first."""
        q = select(S.letters, S.campaigns.c.name.label("campaign")).join(S.campaigns)
        if campaign_id is not None:
            q = q.where(L.campaign_id == campaign_id)
        if status is not None:
            q = q.where(L.status == status)
        q = q.order_by(L.created_at, L.id)
        if limit:
            q = q.limit(limit)
        with self.ledger.read() as db:
            return db.execute(q).all()

    def find(self, prefix: str):
        """The one letter whose id starts with `prefix`."""
        with self.ledger.read() as db:
            rows = db.execute(select(S.letters, S.campaigns.c.name.label("campaign")).join(S.campaigns)
                              .where(L.id.startswith(prefix.strip().lower())).limit(2)).all()
        if not rows:
            raise UserError(f"no letter with id {prefix!r}; `outreach letters list` shows them")
        if len(rows) > 1:
            raise UserError(f"letter id {prefix!r} is ambiguous; give more characters")
        return rows[0]

    def archived(self, letter_id: str) -> dict | None:
        with self.ledger.read() as db:
            r = db.execute(select(S.archive).where(A.letter_id == letter_id)).one_or_none()
        if r is None:
            return None
        return {"subject": r.subject, "text": zlib.decompress(r.text_z).decode(),
                "html": zlib.decompress(r.html_z).decode(), "template_hash": r.template_hash,
                "archived_at": r.archived_at}

    def attempts_of(self, letter_id: str):
        T = S.attempts.c
        with self.ledger.read() as db:
            return db.execute(select(S.attempts).where(T.letter_id == letter_id).order_by(T.id)).all()

    def in_states(self, campaign_id: int, wanted: frozenset[str], settled_before: float) -> set[str]:
        """Recipients (email keys) whose letter is in one of `wanted` since before `settled_before`
        (accepted then, or last changed then): a follow-up's audience."""
        with self.ledger.read() as db:
            return set(db.execute(select(L.email_key).where(
                L.campaign_id == campaign_id, L.status.in_(sorted(wanted)),
                func.coalesce(L.accepted_at, L.updated_at) <= settled_before)).scalars())

    def sent_since(self, campaign_id: int, since: float) -> int:
        """Letters that left us since `since` (attempts accepted or lost in flight): what a daily cap counts."""
        T = S.attempts.c
        with self.ledger.read() as db:
            return db.execute(select(func.count()).select_from(S.attempts.join(S.letters))
                              .where(L.campaign_id == campaign_id, T.started_at >= since,
                                     T.outcome.in_(("accepted", "unknown")))).scalar() or 0


def _row(campaign_id: int, contact, letter_id: str, name: str, status: str, reason: str | None, t: float) -> dict:
    return {"id": letter_id, "campaign_id": campaign_id, "email": contact.email, "email_key": contact.key,
            "bioguide_id": contact.bioguide_id, "name": name, "chamber": contact.chamber,
            "state_code": contact.state, "district": contact.district, "party": contact.party,
            "committees": ";".join(contact.committees), "status": status, "reason": reason, "attempts": 0,
            "created_at": t, "updated_at": t,
            "term_end": contact.term_end.isoformat() if contact.term_end else None}


# Letters --retry-failed may send again (outreach.states.retryable, as SQL).
_RETRYABLE = or_(L.status == "failed", and_(L.status == "bounced", L.reason.startswith(states.BLOCKED_PREFIX)))


# -- claims and finishes, through the writer ------------------------------------------------------

_CLAIM = (update(S.letters)
          .where(L.id == bindparam("lid"), L.status.in_(sorted(states.TO_SEND)))
          .values(status="sending", claimed_by=bindparam("owner"), attempts=L.attempts + 1,
                  next_attempt_at=None, updated_at=bindparam("t")))
_ATTEMPT = insert(S.attempts)
_FINISH = (update(S.letters)
           .where(L.id == bindparam("lid"), L.status.in_(sorted(states.IN_FLIGHT)))
           .values(status=bindparam("status"), reason=bindparam("reason"), updated_at=bindparam("t"),
                   claimed_by=None, next_attempt_at=bindparam("retry_at"),
                   attempts=L.attempts - bindparam("refund"),
                   provider_message_id=func.coalesce(bindparam("message_id"), L.provider_message_id),
                   accepted_at=func.coalesce(bindparam("accepted_at"), L.accepted_at)))


def _claims(db, payloads: list[dict]) -> list[bool]:
    # One at a time: each claim's answer is its own row count.
    return [db.execute(_CLAIM, p).rowcount == 1 for p in payloads]


def _finishes(db, payloads: list[tuple[dict, dict]]) -> list[None]:
    db.execute(_ATTEMPT, [attempt for _, attempt in payloads])
    db.execute(_FINISH, [finish for finish, _ in payloads])
    return [None] * len(payloads)


class Sending:
    """A run's claims (committed before the request leaves) and finishes (queued).

    A finish that cannot be committed stops the run: the next claim (or close)
    raises its error, and that letter stays `sending`, to become `unknown`."""

    def __init__(self, writer, owner: str):
        self.writer = writer
        self.owner = owner
        self.error: BaseException | None = None

    def _failed(self, error: BaseException) -> None:
        self.error = self.error or error

    def claim(self, letter_id: str) -> bool:
        """pending/retry_wait -> sending; False if the letter moved meanwhile."""
        if self.error is not None:
            raise self.error
        return self.writer.call(_claims, {"lid": letter_id, "owner": self.owner, "t": now()})

    def finish(self, letter_id: str, status: str, *, attempt: dict, reason: str | None = None,
               message_id: str | None = None, retry_at: float | None = None, refund: bool = False) -> None:
        """sending -> `status`, with the attempt that decided it (queued; committed with the next group)."""
        assert states.can_move("sending", status), status
        t = now()
        finish = {"lid": letter_id, "status": status, "reason": reason, "t": t, "retry_at": retry_at,
                  "refund": 1 if refund else 0, "message_id": message_id,
                  "accepted_at": t if status == "accepted" else None}
        self.writer.post(_finishes, (finish, {"letter_id": letter_id, **attempt}), self._failed)

    def close(self) -> None:
        """Wait until every finish is committed (raises what a finish met)."""
        self.writer.call(_nothing, None)
        if self.error is not None:
            raise self.error


def _nothing(db, payloads: list) -> list:
    return [None] * len(payloads)
