"""The dashboard's signed-in sessions, shared by every `serve` process on the ledger."""

from __future__ import annotations

from sqlalchemy import delete, insert, select

from outreach.ledger import schema as S

D = S.dashboard_sessions.c


class Sessions:
    def __init__(self, ledger):
        self.ledger = ledger

    def start(self, key: str, ends_at: float, now: float) -> None:
        """Keep a new session until `ends_at`; those already over are forgotten."""
        with self.ledger.write() as db:
            db.execute(delete(S.dashboard_sessions).where(D.ends_at <= now))
            db.execute(insert(S.dashboard_sessions).values(key=key, ends_at=ends_at))

    def valid(self, key: str, now: float) -> bool:
        with self.ledger.read() as db:
            ends_at = db.execute(select(D.ends_at).where(D.key == key)).scalar()
        return ends_at is not None and ends_at > now

    def end(self, key: str) -> None:
        with self.ledger.write() as db:
            db.execute(delete(S.dashboard_sessions).where(D.key == key))
