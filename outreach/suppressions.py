"""Suppressed addresses: never written to again after a hard bounce, a spam report or an unsubscribe.

Every send path (live, scheduled, retry, follow-up) and every preview consults
the list; a recipient on it gets a `skipped` letter with the reason, so the
ledger and the reports show who was left out and why.
"""

from __future__ import annotations

import time

from sqlalchemy import delete, insert, select

from outreach import schema as S

# Events that suppress an address, and the reason recorded for each.
SUPPRESSING_EVENTS = {"spamreport": "spamreport", "unsubscribe": "unsubscribe",
                      "group_unsubscribe": "unsubscribe"}
SKIP_PREFIX = "suppressed: "


def reason_for_event(event: dict) -> str | None:
    """The suppression an event causes, if any: hard bounces, spam reports, unsubscribes.

    A bounce of type `blocked` is the receiving server refusing for now (often a
    policy or reputation block), not a dead address: it is retried, not suppressed.
    """
    kind = str(event.get("event", ""))
    if kind == "bounce":
        return "bounce" if str(event.get("type", "bounce")) != "blocked" else None
    return SUPPRESSING_EVENTS.get(kind)


def suppress(db, email: str, reason: str, detail: str | None = None, event_id: int | None = None,
             at: float | None = None) -> bool:
    """Add `email` to the list inside an open transaction `db`; False if it was already there."""
    key = email.strip().lower()
    C = S.suppressions.c
    if db.execute(select(C.email_key).where(C.email_key == key)).first() is not None:
        return False
    db.execute(insert(S.suppressions).values(email_key=key, email=email.strip(), reason=reason, detail=detail,
                                             event_id=event_id, created_at=at or time.time()))
    return True


def add(ledger, email: str, reason: str, detail: str | None = None) -> bool:
    with ledger.write() as db:
        return suppress(db, email, reason, detail)


def remove(ledger, email: str) -> bool:
    with ledger.write() as db:
        return db.execute(delete(S.suppressions).where(S.suppressions.c.email_key == email.strip().lower())
                          ).rowcount == 1


def all_suppressions(ledger) -> list:
    with ledger.engine.connect() as db:
        return db.execute(select(S.suppressions).order_by(S.suppressions.c.created_at)).all()


def suppressed(ledger) -> dict[str, str]:
    """email_key -> reason, for every suppressed address."""
    C = S.suppressions.c
    with ledger.engine.connect() as db:
        return {r.email_key: r.reason for r in db.execute(select(C.email_key, C.reason))}
