"""Offices' replies, matched to the letters they answer.

A reply names its letter in one of three ways, tried in order:

1. the address it was sent to: each letter's Reply-To is `local+LETTER_ID@domain`
   of `[replies] address` (only that address counts), which survives forwarding
   and rewritten subjects;
2. its thread: In-Reply-To / References carry the letter's own Message-ID
   (`<LETTER_ID.CAMPAIGN@domain>`, set by us at sending);
3. its sender: the latest letter sent to that address, in any campaign (so a
   reply to a follow-up belongs to the follow-up's letter).

A reply that matches no letter is kept for review. A person's reply moves its
letter to `replied` if the letter left us (a letter still to send, or skipped,
keeps its state: a reply cannot stop a letter that was never sent); an
automatic reply (out of office, ...) is kept but changes nothing. A reply delivered again (SendGrid retrying, a file ingested twice) is
stored once, by its Message-ID or, without one, a hash of the message.
"""

from __future__ import annotations

import json
import re
import zlib
from dataclasses import dataclass, field

from sqlalchemy import select, update

from outreach import states
from outreach.ledger import schema as S
from outreach.ledger.prepared import insert_once
from outreach.ledger.writer import now, retrying_conflicts

L = S.letters.c
R = S.replies.c

_THREAD = re.compile(r"([0-9a-f]{20})\.[^@]*@", re.I)      # LETTER_ID.CAMPAIGN@domain (not test-...)
TEXT_LIMIT = 100_000
# A real thread names a handful of messages: more candidates than this are not looked at.
MAX_CANDIDATES = 50
# The letters a sender's reply may answer: any that left us.
_ANSWERABLE = sorted(states.SENT | {"unknown"})


@dataclass
class ReplyResult:
    received: int = 0
    stored: int = 0
    duplicates: int = 0
    matched: int = 0
    unmatched: int = 0
    automatic: int = 0
    letters_replied: int = 0
    by: dict = field(default_factory=dict)      # how each stored reply matched -> count


class Replies:
    def __init__(self, ledger):
        self.ledger = ledger

    def record(self, replies: list, received_at: float | None = None, address: str | None = None) -> ReplyResult:
        """Store parsed replies (outreach.inbound.Reply), matching each to its letter, in one transaction
        (tried again if it meets another process's); `address`: [replies] address, whose tags name letters."""
        t = received_at or now()
        return retrying_conflicts(lambda: self._record(replies, t, address))

    def _record(self, replies: list, t: float, address: str | None) -> ReplyResult:
        result = ReplyResult(received=len(replies))
        tagged = _tag_pattern(address)
        with self.ledger.write() as db:
            keys = [r.dedupe_key for r in replies]
            seen = set()
            for start in range(0, len(keys), 500):
                chunk = keys[start:start + 500]
                seen.update(k for (k,) in db.execute(select(R.dedupe_key).where(R.dedupe_key.in_(chunk))))
            replied: set[str] = set()
            for reply in replies:
                if reply.dedupe_key in seen:
                    result.duplicates += 1
                    continue
                seen.add(reply.dedupe_key)
                letter, how = _match(db, reply, tagged)
                if not insert_once(db, S.replies, dict(
                    letter_id=letter.id if letter else None, campaign_id=letter.campaign_id if letter else None,
                    matched_by=how, dedupe_key=_text(reply.dedupe_key), sender=_text(reply.sender),
                    sender_name=_text(reply.sender_name), sent_at=reply.sent_at, received_at=t,
                    subject=_text(reply.subject), text=_text(reply.text[:TEXT_LIMIT]),
                    attachments=json.dumps([[_text(name), size] for name, size in reply.attachments]),
                    spam_score=reply.spam_score, spam_report=_text(reply.spam_report),
                    auto_reply=_text(reply.auto_reply))):
                    result.duplicates += 1      # stored meanwhile by another process
                    continue
                result.stored += 1
                if letter is None:
                    result.unmatched += 1
                    continue
                result.matched += 1
                result.by[how] = result.by.get(how, 0) + 1
                if reply.auto_reply:
                    result.automatic += 1
                elif letter.status in _ANSWERABLE and letter.status != "replied":
                    replied.add(letter.id)
            for letter_id in sorted(replied):   # in id order, as the event store locks letters
                db.execute(update(S.letters).where(L.id == letter_id, L.status.in_(_ANSWERABLE),
                                                   L.status != "replied")
                           .values(status="replied", reason=None, updated_at=t))
            result.letters_replied = len(replied)
        return result

    def record_unreadable(self, raw: bytes, problem: str, dedupe_key: str, received_at: float | None = None) -> bool:
        """Keep a signed post that could not be read, whole, for review; False if it was already kept."""
        with self.ledger.write() as db:
            return insert_once(db, S.replies, dict(dedupe_key=dedupe_key, received_at=received_at or now(),
                                                   problem=_text(problem), raw_z=zlib.compress(raw, 6)))

    def list(self, campaign_id: int | None = None, limit: int = 200) -> list:
        """Replies, newest first, with their letter's recipient; all campaigns when campaign_id is None."""
        query = (select(R.id, R.letter_id, R.campaign_id, R.matched_by, R.sender, R.sender_name, R.sent_at,
                        R.received_at, R.subject, R.auto_reply, R.problem, R.spam_score, R.attachments,
                        L.name.label("office"), L.email.label("office_email"), L.bioguide_id)
                 .select_from(S.replies.outerjoin(S.letters, L.id == R.letter_id))
                 .order_by(R.received_at.desc(), R.id.desc()).limit(limit))
        if campaign_id is not None:
            query = query.where(R.campaign_id == campaign_id)
        with self.ledger.read() as db:
            return db.execute(query).all()

    def get(self, reply_id: int):
        """One reply, whole (its text included), or None."""
        query = (select(S.replies, L.name.label("office"), L.email.label("office_email"),
                        L.bioguide_id, L.status.label("letter_status"))
                 .select_from(S.replies.outerjoin(S.letters, L.id == R.letter_id)).where(R.id == reply_id))
        with self.ledger.read() as db:
            return db.execute(query).first()

    def of_letter(self, letter_id: str) -> list:
        """A letter's replies, oldest first."""
        with self.ledger.read() as db:
            return db.execute(select(S.replies).where(R.letter_id == letter_id)
                              .order_by(R.received_at, R.id)).all()

    def repliers(self, campaign_ids: list[int]) -> set[str]:
        """The recipients (email keys) who replied, in person, to a letter of any of these campaigns."""
        if not campaign_ids:
            return set()
        with self.ledger.read() as db:
            return {k for (k,) in db.execute(
                select(L.email_key).where(L.campaign_id.in_(campaign_ids), L.status == "replied"))}


def _tag_pattern(address: str | None):
    """`local+LETTER_ID@domain` of the replies address, or None (no address: no tags count)."""
    if not address:
        return None
    local, _, domain = address.lower().rpartition("@")
    return re.compile(re.escape(local) + r"\+([0-9a-f]{20})@" + re.escape(domain))


def _text(value):
    """Text as every database stores it: PostgreSQL refuses NUL, so it goes."""
    return value.replace("\x00", "") if isinstance(value, str) else value


def _match(db, reply, tagged):
    """(letter row, how) for a reply, or (None, None)."""
    ids = [m.group(1) for address in reply.to[:MAX_CANDIDATES] if tagged
           for m in [tagged.fullmatch(address.strip().lower())] if m]
    found = _letter(db, ids)
    if found is not None:
        return found, "address"
    ids = [m.group(1).lower() for ref in reply.refers_to[:MAX_CANDIDATES]
           if not ref.lower().startswith("test-") for m in [_THREAD.match(ref)] if m]
    found = _letter(db, ids)
    if found is not None:
        return found, "thread"
    if reply.sender:
        latest = db.execute(
            select(L.id, L.campaign_id, L.status).where(L.email_key == _text(reply.sender.lower()),
                                                        L.status.in_(_ANSWERABLE))
            .order_by(L.accepted_at.is_(None), L.accepted_at.desc(), L.created_at.desc()).limit(1)).first()
        if latest is not None:
            return latest, "sender"
    return None, None


def _letter(db, ids: list[str]):
    """The first of `ids` that is a letter in the ledger."""
    if not ids:
        return None
    rows = {r.id: r for r in db.execute(select(L.id, L.campaign_id, L.status).where(L.id.in_(ids)))}
    return next((rows[i] for i in ids if i in rows), None)
