"""Per-campaign state kept for the scheduler: paused, ended, and letters sent since a moment."""

from __future__ import annotations

import time

from sqlalchemy import func, insert, select, update

from outreach import schema as S


def campaign_state(ledger, campaign_id: int) -> dict:
    """{'paused': bool, 'ended_at': float | None}; a campaign never touched is running."""
    C = S.campaign_state.c
    with ledger.engine.connect() as db:
        row = db.execute(select(C.paused, C.ended_at).where(C.campaign_id == campaign_id)).one_or_none()
    return {"paused": bool(row.paused) if row else False, "ended_at": row.ended_at if row else None}


def _upsert(ledger, campaign_id: int, **values) -> None:
    C = S.campaign_state.c
    t = time.time()
    with ledger.write() as db:
        n = db.execute(update(S.campaign_state).where(C.campaign_id == campaign_id)
                       .values(updated_at=t, **values)).rowcount
        if n == 0:
            db.execute(insert(S.campaign_state).values(campaign_id=campaign_id, updated_at=t,
                                                       **{"paused": 0, **values}))


def set_paused(ledger, campaign_id: int, paused: bool) -> None:
    _upsert(ledger, campaign_id, paused=1 if paused else 0)


def set_ended(ledger, campaign_id: int, ended: bool) -> None:
    _upsert(ledger, campaign_id, ended_at=time.time() if ended else None)


def sent_since(ledger, campaign_id: int, since: float) -> int:
    """Letters that left us since `since` (attempts accepted or lost in flight): what a daily cap counts."""
    A, L = S.attempts.c, S.letters.c
    with ledger.engine.connect() as db:
        return db.execute(select(func.count()).select_from(S.attempts.join(S.letters))
                          .where(L.campaign_id == campaign_id, A.started_at >= since,
                                 A.outcome.in_(("accepted", "unknown")))).scalar() or 0
