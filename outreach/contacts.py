"""Contact lists as people really keep them: read, normalise, validate, report by row."""

from __future__ import annotations

import csv
import datetime
import functools
import io
import re
from dataclasses import dataclass, field
from pathlib import Path

from outreach.addresses import normalise_email
from outreach.errors import UserError
from outreach.geography import (
    ALL_CODES, DELEGATE_SEATS, HOUSE_SEATS, RESIDENT_COMMISSIONER_SEATS, TERRITORIES, normalise_state)
from outreach.spreadsheet import decode, normalise_header, read_file, sniff_delimiter
from outreach.text import CONTROLS, control_characters

NAME_FIELDS = ("full_name", "first_name", "last_name", "nickname", "middle_name", "suffix", "staffer",
               "salutation", "honorific")
# A row's own forms of address, used instead of the computed ones (outreach.forms).
OWN_FORMS = ("salutation", "honorific")
CHAMBERS = {
    "senate": "senate", "sen": "senate", "senator": "senate", "s": "senate",
    "house": "house", "rep": "house", "representative": "house", "h": "house",
}
BIOGUIDE = re.compile(r"^[A-Z]\d{6}$")
MAX_NAME = 200                 # a name longer than this is not a name (and would not fit a mail header)
COMMITTEE = re.compile(r"^[A-Z]{4}(\d{2})?$")


@dataclass(frozen=True, slots=True)
class Problem:
    """Why one cell of one row was rejected; `line` is the spreadsheet row (header = 1)."""

    line: int
    column: str
    value: str
    reason: str

    def as_dict(self) -> dict:
        return {"line": self.line, "column": self.column, "value": self.value, "reason": self.reason}


@dataclass(slots=True, eq=False)
class Contact:
    """One recipient: a member of Congress or a staffer of their office."""

    line: int
    email: str
    full_name: str
    first_name: str
    last_name: str
    chamber: str          # "senate" or "house"
    state: str            # two-letter code
    district: int | None  # House only; 0 = at large
    bioguide_id: str
    party: str
    committees: tuple[str, ...]
    staffer: str
    fields: dict[str, str]
    term_end: datetime.date | None = None   # the member's current term ends at noon Eastern on this day

    @property
    def key(self) -> str:
        """The recipient's identity in a campaign: the email, compared case-insensitively."""
        return self.email.lower()

    @property
    def full_committees(self) -> frozenset[str]:
        """Full-committee codes: SSAS for SSAS or its subcommittee SSAS13."""
        return frozenset(c[:4] for c in self.committees)


@dataclass
class ContactList:
    """What one file gave: the valid contacts, every problem, how it was read."""

    path: Path
    encoding: str
    delimiter: str
    rows: int
    contacts: list[Contact]
    problems: list[Problem]
    notes: list[str]
    has_term_end: bool = False   # the list carries term_end (from `contacts import-legislators` or `refresh`)
    rejected: dict[str, int] = field(default_factory=dict)   # a rejected row's bioguide id / email -> its line

    @property
    def rejected_lines(self) -> set[int]:
        return {p.line for p in self.problems}

    def as_dict(self) -> dict:
        return {
            "file": str(self.path),
            "rows": self.rows,
            "valid": len(self.contacts),
            "encoding": self.encoding,
            "delimiter": self.delimiter,
            "notes": self.notes,
            "problems": [p.as_dict() for p in self.problems],
        }


def normalise_chamber(value: str) -> str | None:
    return CHAMBERS.get(value.strip().lower().rstrip("."))


def read_contacts(path: str | Path) -> ContactList:
    """Read and validate a contact list; bad rows become problems, never exceptions.

    Raises UserError only when the file as a whole cannot be used (unreadable,
    not CSV, a required column missing).
    """
    path = Path(path)
    raw = read_file(path)
    text, encoding, notes = decode(path, raw)
    if "\x00" in text:
        raise UserError(f"{path}: contains NUL bytes, so it is not a text CSV file; export it as 'CSV UTF-8'")
    delimiter = sniff_delimiter(text)
    reader = csv.reader(io.StringIO(text, newline=""), delimiter=delimiter, strict=False)
    try:
        header = next(reader)
    except StopIteration:
        raise UserError(f"{path}: the file is empty; it needs a header row (email, full_name, chamber, state, district)") from None
    except csv.Error as e:
        raise UserError(f"{path}: line 1: cannot read the header: {e}") from None
    columns = _columns(path, header)
    checker = _RowChecker(columns)
    contacts: list[Contact] = []
    problems: list[Problem] = []
    seen: dict[str, int] = {}
    rejected: dict[str, int] = {}
    ids = [(columns.index[c], str.upper if c == "bioguide_id" else str.lower)
           for c in ("bioguide_id", "email") if c in columns.index]
    rows = 0
    line = 1
    while True:
        line += 1  # one spreadsheet row per record, even when a quoted cell spans lines
        try:
            cells = next(reader)
        except StopIteration:
            break
        except csv.Error as e:
            rows += 1
            problems.append(Problem(line, "", "", f"cannot read this row: {e}"))
            continue
        if not (cells and cells[0].strip()) and not any(c.strip() for c in cells):
            continue
        rows += 1
        contact, row_problems = checker.check(line, cells)
        if contact is None:   # who the row was, so a command naming them can say why they are missing
            for i, norm in ids:
                if i < len(cells) and cells[i].strip():
                    rejected.setdefault(norm(cells[i].strip()), line)
        if contact is not None:
            key = contact.key
            first = seen.get(key)
            if first is None:
                seen[key] = line
                contacts.append(contact)
                continue
            row_problems.append(Problem(line, columns.display("email"), contact.email,
                                        f"duplicate recipient: same email as line {first}; the first is kept"))
        problems.extend(row_problems)
    own = [columns.display(c) for c in OWN_FORMS if c in columns.index]
    if own:
        n = sum(1 for c in contacts if any(c.fields.get(f) for f in OWN_FORMS))
        notes.append(f"{n} row{'s' if n != 1 else ''} give{'s' if n == 1 else ''} their own "
                     f"{' or '.join(own)}: the letters use {'it' if len(own) == 1 else 'them'} "
                     "instead of the computed forms")
    return ContactList(path, encoding, "tab" if delimiter == "\t" else delimiter, rows,
                       contacts, problems, notes, "term_end" in columns.index, rejected)


class _Columns:
    """The header: our column names, their positions and how the file spelled them."""

    def __init__(self, names: list[str], shown: list[str]):
        self.names = names
        self.index = {n: i for i, n in enumerate(names)}
        self._shown = dict(zip(names, shown))

    def display(self, name: str) -> str:
        return self._shown.get(name, name)


def _columns(path: Path, header: list[str]) -> _Columns:
    names, shown = [], []
    for i, cell in enumerate(header):
        found = control_characters(cell)
        if found:
            raise UserError(f"{path}: line 1, column {i + 1}: the header holds control characters "
                            f"({', '.join(found)}): remove them")
        name = normalise_header(cell) or f"column_{i + 1}"
        if name in names:
            first = shown[names.index(name)]
            raise UserError(f"{path}: line 1: columns {first!r} and {cell.strip()!r} both mean "
                            f"{name!r}; rename or remove one")
        names.append(name)
        shown.append(cell.strip() or name)
    missing = [c for c in ("email", "chamber", "state") if c not in names]
    if "full_name" not in names and not {"first_name", "last_name"} <= set(names):
        missing.append("full_name (or first_name and last_name)")
    if missing:
        found = ", ".join(shown) or "nothing"
        raise UserError(f"{path}: line 1: required column {', '.join(missing)} missing "
                        f"(found: {found}); add it to the header row")
    return _Columns(names, shown)


class _RowChecker:
    """Turns one row's cells into a Contact, or into the problems that reject it."""

    def __init__(self, columns: _Columns):
        self.columns = columns
        # Cells that must be one line: names and identifiers, never addresses or notes.
        self.single_line = [n for n in columns.names
                            if n in NAME_FIELDS or n in ("email", "state", "chamber", "district", "bioguide_id")]

    def check(self, line: int, cells: list[str]) -> tuple[Contact | None, list[Problem]]:
        cols = self.columns
        problems: list[Problem] = []

        def bad(name: str, value: str, reason: str) -> None:
            problems.append(Problem(line, cols.display(name), value, reason))

        if len(cells) > len(cols.names):
            extra = [c for c in cells[len(cols.names):] if c.strip()]
            if extra:
                bad(cols.names[-1], extra[0].strip(),
                    f"{len(cells)} cells but the header has {len(cols.names)} columns; "
                    "quote cells that contain the delimiter")
                return None, problems
        values = dict(zip(cols.names, map(str.strip, cells)))
        # Control characters (ESC, BEL, the C1 set) and bidi overrides in any cell: data from a
        # spreadsheet anyone may have edited must not act on a terminal, nor reorder a name.
        if CONTROLS.search("".join(cells)):
            for name, value in values.items():
                found = control_characters(value)
                if found:
                    bad(name, value, f"holds control characters ({', '.join(found)}): remove them")
        if len(cells) < len(cols.names):
            # Spreadsheets often drop trailing empty cells.
            for name in cols.names[len(cells):]:
                values[name] = ""
        for name in self.single_line:
            v = values[name]
            # isprintable() is false for any CR, LF or tab: one test for the common clean cell.
            if ("  " in v or not v.isprintable()) and ("  " in v or "\n" in v or "\r" in v or "\t" in v):
                values[name] = " ".join(v.split())

        email_raw = values.get("email", "")
        email = None
        if not email_raw:
            bad("email", "", "missing: every recipient needs an email address")
        else:
            email, reason = normalise_email(email_raw)
            if reason:
                bad("email", email_raw, f"not a valid email address: {reason}")

        full_name = values.get("full_name", "")
        first, last = values.get("first_name", ""), values.get("last_name", "")
        for name in ("full_name", "first_name", "last_name", "staffer", *OWN_FORMS):
            if len(values.get(name, "")) > MAX_NAME:
                bad(name, values[name][:40] + "…", f"longer than {MAX_NAME} characters: no name is; is this the "
                    "right column?")
        if not full_name and not (first and last):
            bad("full_name" if "full_name" in cols.index else "last_name", full_name or last,
                "missing name: fill full_name, or first_name and last_name")

        # Chamber, state and district are checked together, once per distinct seat.
        chamber, state, district, seat_problems = _seat(
            values.get("chamber", ""), values.get("state", ""), values.get("district", ""))
        for problem in seat_problems:
            bad(*problem)

        bioguide = values.get("bioguide_id", "").upper()
        if bioguide and not BIOGUIDE.match(bioguide):
            bad("bioguide_id", values["bioguide_id"], "not a bioguide id (a letter and six digits, e.g. S001198)")

        committees, wrong_code = _committees(values.get("committees", ""))
        if wrong_code is not None:
            bad("committees", values["committees"],
                f"{wrong_code!r} is not a committee code like SSAS or HSFA (separate codes with ;)")

        wrong_role = _committee_roles_problem(values.get("committee_roles", ""))
        if wrong_role is not None:
            bad("committee_roles", values["committee_roles"],
                f"{wrong_role!r} is not CODE=Title, like SSAS=Chairman (separate them with ;)")

        term_end = None
        if values.get("term_end"):
            try:
                term_end = _term_end(values["term_end"])
            except ValueError as e:
                bad("term_end", values["term_end"], f"{e} (the last day of the member's current term)")

        if not last and full_name:
            last = _last_name(full_name)
            if last is None:
                bad("full_name", full_name, "cannot tell the surname from this name (two-word surnames "
                    "such as 'Van Hollen' are common): fill a last_name column for the salutation")
        if problems:
            return None, problems
        return Contact(
            line=line, email=email or "", full_name=full_name, first_name=first, last_name=last,
            chamber=chamber or "", state=state or "", district=district, bioguide_id=bioguide,
            party=values.get("party", ""), committees=committees, staffer=values.get("staffer", ""),
            fields=values, term_end=term_end,
        ), problems


@functools.lru_cache(maxsize=1024)
def _term_end(value: str) -> datetime.date | None:
    from outreach.terms import parse_term_end

    return parse_term_end(value)


@functools.lru_cache(maxsize=4096)
def _seat(chamber_raw: str, state_raw: str, raw: str) -> tuple[str | None, str | None, int | None,
                                                               tuple[tuple[str, str, str], ...]]:
    """(chamber, state, district, problems as (column, value, reason)) for one row's three cells."""
    problems: list[tuple[str, str, str]] = []

    def bad(name: str, value: str, reason: str) -> None:
        problems.append((name, value, reason))

    chamber = normalise_chamber(chamber_raw) if chamber_raw else None
    if not chamber_raw:
        bad("chamber", "", "missing: senate or house")
    elif chamber is None:
        bad("chamber", chamber_raw, "not a chamber: use senate or house (sen and rep work too)")

    state = normalise_state(state_raw) if state_raw else None
    if not state_raw:
        bad("state", "", "missing: a two-letter state or territory code")
    elif state is None:
        bad("state", state_raw, "not a U.S. state or territory code (50 states, DC, AS, GU, MP, PR, VI)")

    district = _district(raw, chamber_raw, chamber, state, bad)
    return chamber, state, district, tuple(problems)


def _district(raw: str, chamber_raw: str, chamber: str | None, state: str | None, bad) -> int | None:
    if chamber == "senate":
        if state in TERRITORIES:
            bad("chamber", chamber_raw, f"{state} ({ALL_CODES[state]}) has no senators; its member sits in the House")
        elif raw:
            bad("district", raw, "a senator has no district: leave it empty, or check the chamber")
        return None
    if chamber != "house" or state is None:
        return None
    if not raw:
        bad("district", "", "missing for a House member: a number, or 0 / AL for at large")
        return None
    if raw.upper() in ("AL", "AT-LARGE", "AT LARGE", "0", "00"):
        if HOUSE_SEATS[state] > 1:
            bad("district", raw, f"{state} has {HOUSE_SEATS[state]} districts, none elected at large: "
                                 "use the district's number")
            return None
        return 0
    if not (raw.isascii() and raw.isdigit()):  # not "²" or "٣", which isdigit() also takes
        bad("district", raw, "not a district: a number, or 0 / AL for at large")
        return None
    number = int(raw)
    seats = HOUSE_SEATS[state]
    if seats == 1:
        kind = ("Delegate" if state in DELEGATE_SEATS else
                "Resident Commissioner" if state in RESIDENT_COMMISSIONER_SEATS else "Representative")
        bad("district", raw, f"{state} elects its {kind} at large: use 0 or AL")
        return None
    if number > seats:
        bad("district", raw, f"{state} has {seats} districts")
        return None
    return number


@functools.lru_cache(maxsize=4096)
def _committees(cell: str) -> tuple[tuple[str, ...], str | None]:
    """(the cell's committee codes, the first code that is not one or None)."""
    codes = tuple(c.strip().upper() for c in re.split(r"[;,]", cell) if c.strip())
    return codes, next((code for code in codes if not COMMITTEE.match(code)), None)


def _committee_roles_problem(cell: str) -> str | None:
    """The first item of a committee_roles cell ('SSAS=Chairman;HSFA=Ranking Member') that is not one."""
    for item in (i.strip() for i in cell.split(";")):
        code, _, title = item.partition("=")
        if item and (not COMMITTEE.match(code.strip().upper()) or not title.strip()):
            return item
    return None


_SUFFIXES = {"jr", "jr.", "sr", "sr.", "ii", "iii", "iv", "v"}


def _last_name(full_name: str) -> str | None:
    """The surname from a full name when no last_name is given: 'Henry C. "Hank" Johnson, Jr.' -> 'Johnson'.

    Only a plain 'First Last' (initials, nicknames in quotes and suffixes aside) is
    unambiguous; for 'Chris Van Hollen' or 'Pablo José Hernández' it returns None.
    """
    words = re.sub(r'"[^"]*"|\([^)]*\)', " ", full_name).replace(",", " ").split()
    while len(words) > 1 and words[-1].lower() in _SUFFIXES:
        words.pop()
    names = [w for w in words if not re.fullmatch(r"[A-Za-z]\.", w)]
    if len(names) != 2:
        return names[0] if len(names) == 1 and len(words) == 1 else None
    return names[-1]
