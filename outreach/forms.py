"""Forms of address for members of Congress: titles, honorifics, salutations, the inside address.

One name per person: the greeting's surname is the one the honorific's name
ends with ("The Honorable Pablo José Hernández" / "Dear Resident Commissioner
Hernández"). The Speaker is "Mr. Speaker" or "Madam Speaker"; the chair and
the ranking member of a committee the letter speaks to are greeted as such,
since that committee is why the letter reaches them. A contact list's own
`salutation` or `honorific` cell wins over all of this.
"""

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
SPEAKER = "Speaker of the House"
# Committee titles that a greeting uses ("Dear Chairman Wicker:"); vice chairs and ex officio
# members are greeted by their office.
CHAIR_TITLES = ("Chairman", "Chairwoman", "Chair")
GREETING_TITLES = (*CHAIR_TITLES, "Ranking Member")
CHAMBER_NAMES = {"senate": "United States Senate", "house": "U.S. House of Representatives"}
# Where a letter goes when the list has no office address: the chamber's own.
CHAMBER_CITY = {"senate": "Washington, DC 20510", "house": "Washington, DC 20515"}

_QUOTES = frozenset('"“”„‟')
_QUOTED = re.compile(r"\s*[\"“”„‟][^\"“”„‟]*[\"“”„‟]")           # a nickname in quotes, straight or curly
_SUFFIX = re.compile(r",?\s+(Jr\.?|Sr\.?|II|III|IV|V)$")
_CAPITOL = re.compile(r"^(?P<street>.+?),?\s+Washington,?\s+D\.?\s?C\.?,?\s+(?P<zip>\d{5}(?:-\d{4})?)$")


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
    """The official full name without a quoted nickname; built from first and last name only when
    the list has none ('James (Jim)' loses its nickname too): letters use the formal name."""
    if contact.full_name:
        name = contact.full_name
        return " ".join(_QUOTED.sub("", name).split()) if _QUOTES.intersection(name) else name
    first = re.sub(r"\s*\(.*?\)", "", contact.first_name).strip()
    return f"{first} {contact.last_name}".strip()


def surname(name: str, last_name: str) -> str:
    """The surname as `name` (the honorific's) has it: the longest start of `last_name` it ends with.

    'Pablo José Hernández' with last name 'Hernández Rivera' -> 'Hernández'; a name that does
    not end with any of it keeps the list's last name.
    """
    if name.endswith(" " + last_name) or name == last_name:   # the usual case
        return last_name
    bare = _SUFFIX.sub("", name).strip()
    words = last_name.split()
    for n in range(len(words), 0, -1):
        part = " ".join(words[:n])
        if bare == part or bare.endswith(" " + part):
            return part
    return last_name


def committee_roles(cell: str) -> dict[str, str]:
    """'SSAS=Chairman;SSFR=Ranking Member' -> {'SSAS': 'Chairman', 'SSFR': 'Ranking Member'}."""
    roles: dict[str, str] = {}
    if not cell:
        return roles
    for item in cell.split(";"):
        code, _, title = item.partition("=")
        if code.strip() and title.strip():
            roles[code.strip().upper()] = " ".join(title.split())
    return roles


def address_lines(address: str, chamber: str) -> tuple[str, ...]:
    """The office address as a letter sets it: the building on one line, the city on the next
    ("Washington, DC 20510"); without one, the chamber's city and ZIP code."""
    flat = " ".join(address.split())
    if not flat:
        return (CHAMBER_CITY[chamber],)
    m = _CAPITOL.match(flat)
    if m is None:
        return tuple(line.strip() for line in address.splitlines() if line.strip())
    return m["street"].rstrip(","), f"Washington, DC {m['zip']}"


@dataclass(slots=True)
class Member:
    """What a letter template knows about its recipient's office."""

    title: str             # "Senator", "Representative", "Delegate", "Resident Commissioner"
    full_name: str         # "Dan Sullivan" (no quoted nickname)
    last_name: str         # the surname as full_name has it: "Sullivan"
    honorific: str         # "The Honorable Dan Sullivan"
    salutation: str        # "Dear Senator Sullivan", "Dear Mr. Speaker", "Dear Chairman Wicker"
    position: str          # the inside address's line under the name: "Speaker of the House", or ""
    chamber: str           # "senate" / "house"
    chamber_name: str      # "United States Senate" / "U.S. House of Representatives"
    address_lines: tuple[str, ...]   # ("706 Hart Senate Office Building", "Washington, DC 20510")
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
    armed_services_role: str        # "Chairman", "Ranking Member", ... or "" for a member
    foreign_affairs_role: str
    is_speaker: bool
    staffer: str
    office_address: str             # as the list has it

    @property
    def is_senator(self) -> bool:
        return self.chamber == "senate"

    def on(self, code: str) -> bool:
        """Member of committee `code` (a full-committee code such as SSAS)."""
        return any(c.startswith(code.upper()) for c in self.committees)


def member_for(contact: Contact) -> Member:
    """The forms of address and facts a template may use for one contact."""
    fields = contact.fields
    title = title_for(contact.chamber, contact.state)
    name = official_name(contact)
    last = surname(name, contact.last_name)
    state_name = ALL_CODES[contact.state]
    if contact.chamber == "senate" or not contact.district:
        constituency = state_name
        if contact.chamber == "house" and title == "Representative":
            constituency = f"{state_name} (at large)"
    else:
        constituency = f"{state_name}'s {ordinal(contact.district)} congressional district"
    senate = contact.chamber == "senate"
    codes = contact.full_committees
    armed, foreign = ("SSAS", "SSFR") if senate else ("HSAS", "HSFA")
    roles = committee_roles(fields.get("committee_roles", ""))
    leadership = fields.get("leadership", "")
    is_speaker = bool(leadership) and SPEAKER in (r.strip() for r in leadership.split(";"))
    salutation, position = _greeting(title, last, fields.get("gender", ""), is_speaker, roles, (armed, foreign))
    return Member(
        title=title,
        full_name=name,
        last_name=last,
        honorific=_own(fields, "honorific") or f"The Honorable {name}",
        salutation=_own(fields, "salutation") or salutation,
        position=position,
        chamber=contact.chamber,
        chamber_name=CHAMBER_NAMES[contact.chamber],
        address_lines=address_lines(fields.get("office_address", ""), contact.chamber),
        state=contact.state,
        state_name=state_name,
        district=contact.district,
        constituency=constituency,
        party=contact.party,
        bioguide_id=contact.bioguide_id,
        committees=tuple(sorted(codes)),
        on_armed_services=bool(codes & ARMED_SERVICES),
        on_foreign_affairs=bool(codes & FOREIGN_AFFAIRS),
        armed_services_committee=COMMITTEE_NAMES[armed],
        foreign_affairs_committee=COMMITTEE_NAMES[foreign],
        armed_services_role=_greeting_title(roles.get(armed, "")) if armed in codes else "",
        foreign_affairs_role=_greeting_title(roles.get(foreign, "")) if foreign in codes else "",
        is_speaker=is_speaker,
        staffer=contact.staffer,
        office_address=fields.get("office_address", ""),
    )


def _greeting(title: str, last: str, gender: str, is_speaker: bool, roles: dict[str, str],
              watched: tuple[str, str]) -> tuple[str, str]:
    """(salutation, position line): the Speaker; else a chair, then a ranking member, of a committee
    the letter speaks to; else the member's office."""
    if is_speaker:
        form = {"M": "Mr. Speaker", "F": "Madam Speaker"}.get(gender.strip().upper()[:1], f"Speaker {last}")
        return f"Dear {form}", SPEAKER
    if not roles:
        return f"Dear {title} {last}", ""
    for wanted in (CHAIR_TITLES, ("Ranking Member",)):
        for code in watched:
            held = _greeting_title(roles.get(code, ""))
            if held in wanted:
                return f"Dear {held} {last}", f"{held}, {COMMITTEE_NAMES[code]}"
    return f"Dear {title} {last}", ""


def _greeting_title(title: str) -> str:
    """A committee title as a greeting uses it ("Chairman", "Ranking Member"), or "" for any other."""
    return next((t for t in GREETING_TITLES if t.lower() == title.strip().lower()), "")


def _own(fields: dict[str, str], column: str) -> str:
    """The list's own form for this row ("Dear Mr. Chairman:" -> "Dear Mr. Chairman"), or ""."""
    value = fields.get(column)
    return " ".join(value.split()).rstrip(":,").strip() if value else ""
