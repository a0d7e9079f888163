"""A contact list held against the current official data: who left, who arrived, what changed.

Offices are matched by bioguide id; a row without one by its name and state,
when exactly one member has them (never guessed). The refreshed list keeps the
organisation's own columns (email, staffer, notes, any other) for members who
stayed, with the official ones brought up to date; a member who changed
chamber keeps them marked `needs_review` (a House office's address does not
reach a Senate office); new members come with an empty email.
"""

from __future__ import annotations

import re
from collections import defaultdict
from dataclasses import asdict, dataclass, field
from pathlib import Path

from outreach.contacts import normalise_chamber
from outreach.spreadsheet import read_sheet
from outreach.geography import normalise_state
from outreach.legislators import COMMITTEE_COLUMNS, OFFICIAL_COLUMNS, official_row, sort_key, write_rows
from outreach.official import WATCHED, Official, Roster

REVIEW = "needs_review"


@dataclass
class Office:
    bioguide_id: str
    name: str
    seat: str


@dataclass
class Moved(Office):
    old: str
    new: str


@dataclass
class Refresh:
    """What changed, office by office (an office with several rows counts once)."""

    list_path: str
    official_members: int
    stayed: int = 0
    left: list[dict] = field(default_factory=list)           # with their last term's end where the list knew it
    new: list[Office] = field(default_factory=list)
    seat: list[dict] = field(default_factory=list)           # chamber or seat changed; `needs_review` if chamber
    party: list[Moved] = field(default_factory=list)
    address: list[Moved] = field(default_factory=list)
    phone: list[Moved] = field(default_factory=list)
    committees: dict[str, dict[str, list[Office]]] = field(
        default_factory=lambda: {code: {"joined": [], "left": []} for code in WATCHED})
    terms_updated: int = 0
    matched_by_name: list[dict] = field(default_factory=list)
    unmatched: list[dict] = field(default_factory=list)      # rows with no bioguide id and no single match
    has_terms: bool = True
    written: str | None = None
    rows_written: int = 0
    without_email: list[Office] = field(default_factory=list)

    @property
    def needs_review(self) -> list[dict]:
        return [s for s in self.seat if s["needs_review"]]

    @property
    def changed(self) -> bool:
        return bool(self.left or self.new or self.seat or self.party or self.address or self.phone
                    or any(v["joined"] or v["left"] for v in self.committees.values()) or self.unmatched)

    def as_dict(self) -> dict:
        d = asdict(self)
        d["needs_review"] = self.needs_review
        return d


def refresh(list_path: Path, roster: Roster, out: Path | None = None) -> Refresh:
    """Compare the list with `roster`; with `out`, write the refreshed list there."""
    sheet = read_sheet(list_path)
    report = Refresh(str(list_path), len(roster.members), has_terms=roster.has_terms)
    by_name = _names(roster)
    seen: set[str] = set()
    kept: list[dict[str, str]] = []
    row_committees: dict[str, set[str]] = {}
    for line, cells in sheet.rows:
        values = {n: (cells[i].strip() if i < len(cells) else "") for i, n in enumerate(sheet.names)}
        name = values.get("full_name") or f"{values.get('first_name', '')} {values.get('last_name', '')}".strip()
        state = normalise_state(values.get("state", "")) or values.get("state", "")
        bioguide = values.get("bioguide_id", "").upper()
        if not bioguide:
            found = by_name.get((_plain(name), state), [])
            if len(found) != 1:
                report.unmatched.append({"line": line, "name": name, "state": state,
                                         "why": "no member has this name and state" if not found
                                         else f"{len(found)} members have this name and state"})
                kept.append(values)
                continue
            bioguide = values["bioguide_id"] = found[0]
            report.matched_by_name.append({"line": line, "name": name, "bioguide_id": bioguide})
        member = roster.members.get(bioguide)
        if member is None:
            if bioguide not in seen:
                report.left.append({"bioguide_id": bioguide, "name": name, "seat": _seat_of(values),
                                    "term_end": values.get("term_end") or None})
                seen.add(bioguide)
                row_committees[bioguide] = _codes(values)
            continue
        if bioguide not in seen:
            seen.add(bioguide)
            row_committees[bioguide] = _codes(values)
            _compare(report, values, member, sheet.names)
        kept.append(_updated(values, member, roster))
    report.stayed = sum(1 for b in seen if b in roster.members)
    new = [m for b, m in roster.members.items() if b not in seen]
    report.new = [Office(m.bioguide_id, m.full_name, m.seat) for m in sorted(new, key=lambda m: sort_key(asdict(m)))]
    _committee_changes(report, roster, row_committees)
    if out is not None:
        _write(report, out, sheet, kept, new, roster)
    return report


def _compare(report: Refresh, values: dict[str, str], member: Official, names: list[str]) -> None:
    office = dict(bioguide_id=member.bioguide_id, name=member.full_name, seat=member.seat)
    old_chamber = normalise_chamber(values.get("chamber", "")) or values.get("chamber", "")
    old_seat = _seat_of(values)
    if old_seat != member.seat or old_chamber != member.chamber:
        report.seat.append({**office, "old": old_seat, "new": member.seat,
                            "needs_review": old_chamber != member.chamber})
    for attr, column, changes in (("party", "party", report.party), ("office_address", "office_address", report.address),
                                  ("phone", "phone", report.phone)):
        if column in names and " ".join(values.get(column, "").split()) != " ".join(getattr(member, attr).split()):
            changes.append(Moved(**office, old=values.get(column, ""), new=getattr(member, attr)))
    if member.term_end and values.get("term_end", "") != member.term_end:
        report.terms_updated += 1


def _updated(values: dict[str, str], member: Official, roster: Roster) -> dict[str, str]:
    """The row with the official columns from `member`; the organisation's columns as they were."""
    old_chamber = normalise_chamber(values.get("chamber", ""))
    row = dict(values)
    official = official_row(member, roster)
    if not roster.has_terms:  # the CSV form knows no terms: what the list had stays
        official = {k: v for k, v in official.items() if k not in ("term_end", "leadership")}
    if roster.committees is None:  # no committee file: the list's committees stay
        official = {k: v for k, v in official.items() if k not in COMMITTEE_COLUMNS}
    row.update(official)
    if old_chamber and old_chamber != member.chamber:
        was = "House" if old_chamber == "house" else "Senate"
        now = "Senate" if member.chamber == "senate" else "House"
        row[REVIEW] = (f"moved from the {was} to the {now} ({member.seat}): check the email, the staffer "
                       "and the notes, which were for the old office")
    return row


def _committee_changes(report: Refresh, roster: Roster, row_committees: dict[str, set[str]]) -> None:
    """Each watched committee's members in the list against the official ones: who joined (new members
    among them), who left it (those who left Congress among them)."""
    if roster.committees is None:
        return
    offices = {**{d["bioguide_id"]: Office(d["bioguide_id"], d["name"], d["seat"]) for d in report.left},
               **{b: Office(b, m.full_name, m.seat) for b, m in roster.members.items()}}
    for code in WATCHED:
        now = {b for b, held in roster.committees.items() if code in held and b in roster.members}
        before = {b for b, codes in row_committees.items() if code in codes}
        report.committees[code]["joined"] = [offices[b] for b in sorted(now - before)]
        report.committees[code]["left"] = [offices[b] for b in sorted(before - now)]


def _write(report: Refresh, out: Path, sheet, kept: list[dict], new: list[Official], roster: Roster) -> None:
    shown = dict(zip(sheet.names, sheet.shown))
    names = list(sheet.names)
    for column in OFFICIAL_COLUMNS + ["email"] + ([REVIEW] if any(REVIEW in r for r in kept) else []):
        if column not in names:
            names.append(column)
    rows = list(kept)
    for member in sorted(new, key=lambda m: sort_key(asdict(m))):
        row = dict.fromkeys(names, "")
        row.update(official_row(member, roster))
        rows.append(row)
        report.without_email.append(Office(member.bioguide_id, member.full_name, member.seat))
    header = [shown.get(n, n) for n in names]
    write_rows(out, header, [{shown.get(n, n): r.get(n, "") for n in names} for r in rows])
    report.written, report.rows_written = str(out), len(rows)


def _names(roster: Roster) -> dict[tuple[str, str], list[str]]:
    """(plain name, state) -> bioguide ids, by full name and by first and last name."""
    out: dict[tuple[str, str], list[str]] = defaultdict(list)
    for m in roster.members.values():
        for name in {m.full_name, f"{m.first_name} {m.last_name}"}:
            key = (_plain(name), m.state)
            if m.bioguide_id not in out[key]:
                out[key].append(m.bioguide_id)
    return out


def _plain(name: str) -> str:
    return " ".join(re.sub(r"[^\w\s]", " ", name.casefold()).split())


def _codes(values: dict[str, str]) -> set[str]:
    return {c.strip().upper()[:4] for c in values.get("committees", "").split(";") if c.strip()}


def _seat_of(values: dict[str, str]) -> str:
    chamber = normalise_chamber(values.get("chamber", ""))
    state = normalise_state(values.get("state", "")) or values.get("state", "")
    district = values.get("district", "")
    if chamber == "senate":
        return state
    return f"{state}-{'AL' if district in ('0', '', 'AL', 'al') else district}"
