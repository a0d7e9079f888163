"""Who a campaign writes to: the [campaigns.NAME.audience] filters applied to a contact list."""

from __future__ import annotations

from dataclasses import dataclass, field

from outreach.contacts import Contact


@dataclass
class Selection:
    """The recipients chosen, and why the others were left out."""

    recipients: list[Contact]
    not_in_audience: int = 0
    excluded: list[Contact] = field(default_factory=list)
    unmatched: list[str] = field(default_factory=list)  # include/exclude entries that match nobody


def _party_key(value: str) -> str:
    """'Democrat', 'Democratic', 'D' -> 'd': parties compare by their initial."""
    return value.strip()[:1].lower()


def _matches_entry(contact: Contact, entry: str) -> bool:
    entry = entry.strip()
    return entry.upper() == contact.bioguide_id or entry.lower() == contact.key


def select(contacts: list[Contact], audience) -> Selection:
    """Apply chamber, states, parties and committees (all must hold, any of each list);
    `include` adds people, `exclude` removes them. With no filter at all, `include`
    alone is the whole audience, and an empty audience means everyone."""
    filters = bool(audience.chamber or audience.states or audience.parties or audience.committees)
    states = set(audience.states)
    parties = {_party_key(p) for p in audience.parties}
    committees = {c.upper() for c in audience.committees}
    include = list(audience.include)
    exclude = list(audience.exclude)

    def in_filters(c: Contact) -> bool:
        if audience.chamber and c.chamber != audience.chamber:
            return False
        if states and c.state not in states:
            return False
        if parties and _party_key(c.party) not in parties:
            return False
        if committees and not (committees & c.full_committees or committees & set(c.committees)):
            return False
        return True

    everyone = not filters and not include
    chosen, excluded = [], []
    used: set[str] = set()
    for c in contacts:
        included = [e for e in include if _matches_entry(c, e)]
        removed = [e for e in exclude if _matches_entry(c, e)]
        used.update(included, removed)
        wanted = everyone or (filters and in_filters(c)) or bool(included)
        if wanted and removed:
            excluded.append(c)
        elif wanted:
            chosen.append(c)
    unmatched = [e for e in include + exclude if e not in used]
    return Selection(chosen, len(contacts) - len(chosen) - len(excluded), excluded, unmatched)
