"""A campaign ready to run: its contact list read, its audience chosen, its templates loaded."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path

from outreach.audience import Selection, select
from outreach.contacts import Contact, ContactList, read_contacts
from outreach.errors import UserError
from outreach.letters import Letter, TemplateSet

# What each follow-up `audience.status` means, in the first campaign's letter states.
FOLLOW_UP_STATES = {
    "not_opened": ("delivered",),                 # reached the office, never opened
    "delivered": ("delivered", "opened", "clicked"),
    "not_delivered": ("accepted", "deferred", "bounced", "dropped", "failed", "unknown"),
}


@dataclass
class Plan:
    name: str
    contacts_path: Path
    contact_list: ContactList
    selection: Selection
    templates: TemplateSet
    recipients: list[Contact]
    suppressed: list[tuple[Contact, str]] = field(default_factory=list)   # (contact, reason)
    not_due: int = 0   # follow-ups: recipients of the first campaign not (yet) in the wanted state

    def skipped_lines(self) -> list[str]:
        """One line per row or recipient left out, with the reason (for summaries)."""
        out = [f"line {p.line}: {p.column}: {p.reason}" for p in self.contact_list.problems]
        out += [f"line {c.line}: {c.email}: excluded by the campaign's audience" for c in self.selection.excluded]
        out += [f"line {c.line}: {c.email}: suppressed ({reason}): never written to again"
                for c, reason in self.suppressed]
        return out

    def find(self, who: str) -> Contact:
        """The recipient with bioguide id or email `who`, from this campaign's audience."""
        key = who.strip()

        def match(c: Contact) -> bool:
            return key.upper() == c.bioguide_id or key.lower() == c.key

        for c in self.recipients:
            if match(c):
                return c
        for c, reason in self.suppressed:
            if match(c):
                raise UserError(f"{who}: suppressed ({reason}); `outreach suppressions remove {c.email}` "
                                "if that was a mistake")
        for c in self.contact_list.contacts:
            if match(c):
                raise UserError(f"{who}: in {self.contacts_path} (line {c.line}) but not in the audience "
                                f"of campaign {self.name!r}")
        raise UserError(f"{who}: no recipient with that bioguide id or email in {self.contacts_path}")

    def preflight(self, contacts: list[Contact]) -> list[Letter]:
        """Render every letter before anything is written or sent; the first failure stops all."""
        return [self.templates.render(c) for c in contacts]


def plan_campaign(cfg, name: str | None, contacts: Path | None = None, ledger=None,
                  now: float | None = None) -> Plan:
    """Load what a run of campaign `name` needs; `contacts` overrides the configured list.

    With a ledger, suppressed addresses are set aside, and a follow-up keeps only the
    first campaign's recipients whose letter is in the wanted state for long enough.
    """
    name, campaign = cfg.campaign(name)
    path = contacts if contacts is not None else cfg.resolve(campaign.contacts)
    contact_list = read_contacts(path)
    if not contact_list.contacts:
        raise UserError(f"{path}: no valid row; run `outreach contacts check {path}` to see why")
    templates = TemplateSet(cfg.resolve(campaign.templates), cfg.sender, name, campaign.subject)
    selection = select(contact_list.contacts, campaign.audience)
    recipients = list(selection.recipients)
    not_due = 0
    if campaign.follow_up_of is not None:
        if ledger is None:
            from outreach.ledger import open_ledger

            ledger = open_ledger(cfg)
        wanted = follow_up_keys(ledger, campaign.follow_up_of, campaign.audience.status, campaign.after_days,
                                time.time() if now is None else now)
        not_due = sum(1 for c in recipients if c.key not in wanted)
        recipients = [c for c in recipients if c.key in wanted]
    suppressed: list[tuple[Contact, str]] = []
    if ledger is not None:
        from outreach.suppressions import suppressed as suppressed_addresses

        blocked = suppressed_addresses(ledger)
        suppressed = [(c, blocked[c.key]) for c in recipients if c.key in blocked]
        recipients = [c for c in recipients if c.key not in blocked]
    return Plan(name, path, contact_list, selection, templates, recipients, suppressed, not_due)


def follow_up_keys(ledger, first: str, status: str, after_days: int, now: float) -> set[str]:
    """Recipients (email keys) of campaign `first` whose letter is in `status` for `after_days` days."""
    from sqlalchemy import func, select as sql_select

    from outreach import schema as S

    L = S.letters.c
    first_id = ledger.campaign_id(first, create=False)
    if first_id is None:
        return set()
    cutoff = now - after_days * 86400
    with ledger.engine.connect() as db:
        rows = db.execute(sql_select(L.email_key).where(
            L.campaign_id == first_id, L.status.in_(FOLLOW_UP_STATES[status]),
            func.coalesce(L.accepted_at, L.updated_at) <= cutoff))
        return {r.email_key for r in rows}
