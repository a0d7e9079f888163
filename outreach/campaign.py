"""A campaign ready to run: its contact list read, its audience chosen, its templates loaded."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from outreach.audience import Selection, select
from outreach.contacts import Contact, ContactList, read_contacts
from outreach.errors import UserError
from outreach.letters import Letter, TemplateSet


@dataclass
class Plan:
    name: str
    contacts_path: Path
    contact_list: ContactList
    selection: Selection
    templates: TemplateSet

    @property
    def recipients(self) -> list[Contact]:
        return self.selection.recipients

    def skipped_lines(self) -> list[str]:
        """One line per row or recipient left out, with the reason (for summaries)."""
        out = [f"line {p.line}: {p.column}: {p.reason}" for p in self.contact_list.problems]
        out += [f"line {c.line}: {c.email}: excluded by the campaign's audience" for c in self.selection.excluded]
        return out

    def find(self, who: str) -> Contact:
        """The recipient with bioguide id or email `who`, from this campaign's audience."""
        key = who.strip()
        for c in self.recipients:
            if key.upper() == c.bioguide_id or key.lower() == c.key:
                return c
        for c in self.contact_list.contacts:
            if key.upper() == c.bioguide_id or key.lower() == c.key:
                raise UserError(f"{who}: in {self.contacts_path} (line {c.line}) but not in the audience "
                                f"of campaign {self.name!r}")
        raise UserError(f"{who}: no recipient with that bioguide id or email in {self.contacts_path}")

    def preflight(self, contacts: list[Contact]) -> list[Letter]:
        """Render every letter before anything is written or sent; the first failure stops all."""
        return [self.templates.render(c) for c in contacts]


def plan_campaign(cfg, name: str | None, contacts: Path | None = None) -> Plan:
    """Load what a run of campaign `name` needs; `contacts` overrides the configured list."""
    name, campaign = cfg.campaign(name)
    path = contacts if contacts is not None else cfg.resolve(campaign.contacts)
    contact_list = read_contacts(path)
    if not contact_list.contacts:
        raise UserError(f"{path}: no valid row; run `outreach contacts check {path}` to see why")
    templates = TemplateSet(cfg.resolve(campaign.templates), cfg.sender, name, campaign.subject)
    selection = select(contact_list.contacts, campaign.audience)
    return Plan(name, path, contact_list, selection, templates)
