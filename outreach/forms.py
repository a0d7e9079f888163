"""Forms of address for members of Congress: titles, honorifics, salutations."""

from __future__ import annotations

import re
from dataclasses import dataclass

from outreach.contacts import Contact
from outreach.geography import ALL_CODES, DELEGATE_SEATS, RESIDENT_COMMISSIONER_SEATS

# Full-committee codes that the letters speak to (DESIGN.md).
ARMED_SERVICES = frozenset({"SSAS", "HSAS"})
FOREIGN_AFFAIRS = frozenset({"SSFR", "HSFA"})
COMMITTEE_NAMES = {
    "SSAS": "Senate Armed Services Committee",
    "SSFR": "Senate Foreign Relations Committee",
    "HSAS": "House Armed Services Committee",
    "HSFA": "House Foreign Affairs Committee",
}


def title_for(chamber: str, state: str) -> str:
    """Senator, Representative, Delegate (DC and four territories) or Resident Commissioner (PR)."""
    if chamber == "senate":
        return "Senator"
    if state in RESIDENT_COMMISSIONER_SEATS:
        return "Resident Commissioner"
    if state in DELEGATE_SEATS:
        return "Delegate"
    return "Representative"


def ordinal(n: int) -> str:
    if 10 <= n % 100 <= 20:
        return f"{n}th"
    return f"{n}{({1: 'st', 2: 'nd', 3: 'rd'}).get(n % 10, 'th')}"


def official_name(contact: Contact) -> str:
    """The official full name; built from first and last name only when the list has none.

    A first name like 'James (Jim)' loses its nickname: letters use the formal name.
    """
    if contact.full_name:
        return contact.full_name
    first = re.sub(r"\s*\(.*?\)", "", contact.first_name).strip()
    return f"{first} {contact.last_name}".strip()


@dataclass(slots=True)
class Member:
    """What a letter template knows about its recipient's office."""

    title: str             # "Senator", "Representative", "Delegate", "Resident Commissioner"
    full_name: str         # "Dan Sullivan"
    last_name: str         # "Sullivan"
    honorific: str         # "The Honorable Dan Sullivan"
    salutation: str        # "Dear Senator Sullivan"
    chamber: str           # "senate" / "house"
    chamber_name: str      # "United States Senate" / "U.S. House of Representatives"
    state: str             # "AK"
    state_name: str        # "Alaska"
    district: int | None
    constituency: str      # "Alaska", "Alabama's 3rd congressional district", "Guam"
    party: str
    bioguide_id: str
    committees: tuple[str, ...]
    on_armed_services: bool
    on_foreign_affairs: bool
    armed_services_committee: str   # the committee's name in this member's chamber
    foreign_affairs_committee: str
    staffer: str
    office_address: str

    @property
    def is_senator(self) -> bool:
        return self.chamber == "senate"

    def on(self, code: str) -> bool:
        """Member of committee `code` (a full-committee code such as SSAS)."""
        return any(c.startswith(code.upper()) for c in self.committees)


def member_for(contact: Contact) -> Member:
    """The forms of address and facts a template may use for one contact."""
    title = title_for(contact.chamber, contact.state)
    name = official_name(contact)
    state_name = ALL_CODES[contact.state]
    if contact.chamber == "senate" or not contact.district:
        constituency = state_name
        if contact.chamber == "house" and title == "Representative":
            constituency = f"{state_name} (at large)"
    else:
        constituency = f"{state_name}'s {ordinal(contact.district)} congressional district"
    senate = contact.chamber == "senate"
    codes = contact.full_committees
    return Member(
        title=title,
        full_name=name,
        last_name=contact.last_name,
        honorific=f"The Honorable {name}",
        salutation=f"Dear {title} {contact.last_name}",
        chamber=contact.chamber,
        chamber_name="United States Senate" if senate else "U.S. House of Representatives",
        state=contact.state,
        state_name=state_name,
        district=contact.district,
        constituency=constituency,
        party=contact.party,
        bioguide_id=contact.bioguide_id,
        committees=tuple(sorted(codes)),
        on_armed_services=bool(codes & ARMED_SERVICES),
        on_foreign_affairs=bool(codes & FOREIGN_AFFAIRS),
        armed_services_committee=COMMITTEE_NAMES["SSAS" if senate else "HSAS"],
        foreign_affairs_committee=COMMITTEE_NAMES["SSFR" if senate else "HSFA"],
        staffer=contact.staffer,
        office_address=contact.fields.get("office_address", ""),
    )
