"""A contact list built from the official congress-legislators files (outreach.official).

Members publish no email addresses: an organisation adds its own (`--emails`,
a CSV of bioguide_id,email); members without one keep an empty email and are
listed.
"""

from __future__ import annotations

import csv
import datetime as dt
from dataclasses import dataclass, field
from pathlib import Path

from outreach.addresses import normalise_email
from outreach.errors import UserError
from outreach.official import Official, Roster, csv_rows

# Our columns, in the order a spreadsheet user reads them. The official ones come from the
# dataset and are brought up to date by `contacts refresh`; email and staffer are the organisation's.
OFFICIAL_COLUMNS = [
    "bioguide_id", "first_name", "last_name", "nickname", "full_name", "chamber", "state", "district", "party",
    "senate_class", "phone", "office_address", "contact_form", "website", "gender", "birthday", "term_end",
    "leadership", "committees", "committee_roles",
]
OUTPUT_COLUMNS = OFFICIAL_COLUMNS[:-2] + ["email", "committees", "committee_roles", "staffer"]
COMMITTEE_COLUMNS = ("committees", "committee_roles")


@dataclass
class ImportResult:
    members: int = 0
    senators: int = 0
    representatives: int = 0
    with_committees: int = 0
    has_terms: bool = True
    without_email: list[tuple[str, str]] = field(default_factory=list)


def official_row(member: Official, roster: Roster) -> dict[str, str]:
    """The official columns of one member's row; committee_roles holds the titles ("SSAS=Chairman")."""
    row = {c: getattr(member, c) for c in OFFICIAL_COLUMNS if c not in COMMITTEE_COLUMNS}
    held = roster.committees_of(member.bioguide_id)
    row["committees"] = ";".join(sorted(held))
    row["committee_roles"] = ";".join(f"{code}={title}" for code, title in sorted(held.items()) if title)
    return row


def sort_key(row: dict[str, str]) -> tuple:
    """Senate first, then states alphabetically, districts numerically."""
    district = row.get("district", "")
    return (0 if row.get("chamber") == "senate" else 1, row.get("state", ""),
            int(district) if district.isascii() and district.isdigit() else -1)


def import_legislators(roster: Roster, emails_csv: Path | None, out: Path) -> ImportResult:
    """Write `out` in our format; members without an email keep it empty and are listed."""
    emails = read_emails(emails_csv) if emails_csv is not None else {}
    rows = []
    for member in roster.members.values():
        row = official_row(member, roster)
        row.update(email=emails.get(member.bioguide_id, ""), staffer="")
        rows.append(row)
    rows.sort(key=sort_key)
    write_rows(out, OUTPUT_COLUMNS, rows)
    return ImportResult(
        members=len(rows), senators=sum(r["chamber"] == "senate" for r in rows),
        representatives=sum(r["chamber"] == "house" for r in rows),
        with_committees=sum(bool(r["committees"]) for r in rows), has_terms=roster.has_terms,
        without_email=[(r["bioguide_id"], r["full_name"]) for r in rows if not r["email"]])


def read_emails(path: Path) -> dict[str, str]:
    """bioguide_id -> email, from the organisation's own CSV; a bad address names its line."""
    emails = {}
    for line, row in csv_rows(path, ("bioguide_id", "email"), "the email CSV (bioguide_id,email)"):
        if not row["email"]:
            continue
        normal, reason = normalise_email(row["email"])
        if reason:
            raise UserError(f"{path}: line {line}, column email: {row['email']!r} is not a valid email address: "
                            f"{reason}")
        emails[row["bioguide_id"].upper()] = normal
    return emails


def write_rows(out: Path, columns: list[str], rows: list[dict[str, str]]) -> None:
    """A contact list as UTF-8 CSV, written whole or not at all."""
    partial = out.with_name(f".{out.name}.partial")
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        with open(partial, "w", encoding="utf-8", newline="") as f:
            w = csv.DictWriter(f, fieldnames=columns, lineterminator="\n", extrasaction="ignore")
            w.writeheader()
            w.writerows(rows)
        partial.replace(out)
    except OSError as e:
        partial.unlink(missing_ok=True)
        raise UserError(f"{out}: cannot write the contact list: {e.strerror}") from None


def today() -> dt.date:
    """The day whose leadership roles count as current (Eastern time; $OUTREACH_NOW in tests)."""
    from outreach import terms

    return dt.datetime.fromtimestamp(terms.now(), terms.EASTERN).date()
