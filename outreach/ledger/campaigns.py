"""Campaigns in the ledger: their ids, and what the scheduler keeps of each (paused, ended, last tick)."""

from __future__ import annotations

from typing import NamedTuple

from sqlalchemy import insert, select, update
from sqlalchemy.exc import IntegrityError

from outreach.ledger import schema as S
from outreach.ledger.writer import now

C = S.campaign_state.c


class CampaignState(NamedTuple):
    paused: bool = False
    ended_at: float | None = None
    last_tick_at: float | None = None


class Campaigns:
    def __init__(self, ledger):
        self.ledger = ledger

    def id(self, name: str, create: bool = True) -> int | None:
        """The campaign's id; with `create`, a new campaign is added when there is none yet."""
        with self.ledger.read() as db:
            found = db.execute(select(S.campaigns.c.id).where(S.campaigns.c.name == name)).scalar()
        if found is not None or not create:
            return found
        try:
            with self.ledger.write() as db:
                return db.execute(insert(S.campaigns).values(name=name, created_at=now())).inserted_primary_key[0]
        except IntegrityError:  # another process added it meanwhile
            return self.id(name, create=False)

    def names(self) -> dict[str, int]:
        """name -> id of every campaign in the ledger."""
        with self.ledger.read() as db:
            return {r.name: r.id for r in db.execute(select(S.campaigns.c.name, S.campaigns.c.id))}

    def state(self, campaign_id: int | None) -> CampaignState:
        """Paused, ended, last tick; a campaign never touched is running."""
        if campaign_id is None:
            return CampaignState()
        with self.ledger.read() as db:
            row = db.execute(select(C.paused, C.ended_at, C.last_tick_at)
                             .where(C.campaign_id == campaign_id)).one_or_none()
        return CampaignState(bool(row.paused), row.ended_at, row.last_tick_at) if row else CampaignState()

    def set_paused(self, campaign_id: int, paused: bool) -> None:
        self._upsert(campaign_id, paused=1 if paused else 0)

    def set_ended(self, campaign_id: int, ended: bool) -> None:
        self._upsert(campaign_id, ended_at=now() if ended else None)

    def set_last_tick(self, campaign_id: int, at: float) -> None:
        self._upsert(campaign_id, last_tick_at=at)

    def _upsert(self, campaign_id: int, **values) -> None:
        t = now()
        with self.ledger.write() as db:
            n = db.execute(update(S.campaign_state).where(C.campaign_id == campaign_id)
                           .values(updated_at=t, **values)).rowcount
            if n == 0:
                db.execute(insert(S.campaign_state).values(campaign_id=campaign_id, updated_at=t,
                                                           **{"paused": 0, **values}))
