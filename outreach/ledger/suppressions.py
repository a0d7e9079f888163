"""Suppressed addresses: never written to again after a hard bounce, a spam report or an unsubscribe.

Every run (live, scheduled, retry, follow-up, dry run and preview) consults the
list; a recipient on it gets a `skipped` letter with the reason, so the ledger
and the reports show who was left out and why.
"""

from __future__ import annotations

from sqlalchemy import delete, select

from outreach.ledger import schema as S
from outreach.ledger.prepared import insert_once
from outreach.ledger.writer import now

X = S.suppressions.c


def suppress(db, email: str, reason: str, detail: str | None = None, event_id: int | None = None,
             at: float | None = None) -> bool:
    """Add `email` to the list inside an open transaction `db`; False if it was already there."""
    return insert_once(db, S.suppressions, dict(email_key=email.strip().lower(), email=email.strip(), reason=reason,
                                                detail=detail, event_id=event_id, created_at=at or now()))


class Suppressions:
    def __init__(self, ledger):
        self.ledger = ledger

    def add(self, email: str, reason: str, detail: str | None = None) -> bool:
        """Suppress `email`; False if it already was."""
        with self.ledger.write() as db:
            return suppress(db, email, reason, detail)

    def remove(self, email: str) -> bool:
        """Write to `email` again; False if it was not suppressed."""
        with self.ledger.write() as db:
            return db.execute(delete(S.suppressions).where(X.email_key == email.strip().lower())).rowcount == 1

    def all(self) -> list:
        """Every suppression, oldest first."""
        with self.ledger.read() as db:
            return db.execute(select(S.suppressions).order_by(X.created_at)).all()

    def reasons(self) -> dict[str, str]:
        """email_key -> reason, for every suppressed address."""
        with self.ledger.read() as db:
            return {r.email_key: r.reason for r in db.execute(select(X.email_key, X.reason))}
