"""Import the official congress-legislators CSV files into our contact-list format."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

from outreach.addresses import normalise_email
from outreach.errors import UserError

# Our columns, in the order a spreadsheet user reads them.
OUTPUT_COLUMNS = [
    "bioguide_id", "first_name", "last_name", "nickname", "full_name", "chamber", "state",
    "district", "party", "senate_class", "phone", "office_address", "contact_form", "website",
    "gender", "birthday", "email", "committees", "staffer",
]
# Upstream column -> ours, where the names differ.
RENAMES = {"address": "office_address", "url": "website"}


@dataclass
class ImportResult:
    members: int = 0
    senators: int = 0
    representatives: int = 0
    with_committees: int = 0
    without_email: list[tuple[str, str]] = field(default_factory=list)


def _read(path: Path, required: list[str], what: str):
    import pandas as pd

    try:
        frame = pd.read_csv(path, dtype=str, keep_default_na=False, encoding="utf-8-sig")
    except FileNotFoundError:
        raise UserError(f"{path}: {what} not found") from None
    except (OSError, UnicodeDecodeError, pd.errors.ParserError, pd.errors.EmptyDataError) as e:
        raise UserError(f"{path}: cannot read {what}: {one_line_reason(e)}") from None
    frame.columns = [c.strip().lower() for c in frame.columns]
    missing = [c for c in required if c not in frame.columns]
    if missing:
        raise UserError(f"{path}: line 1: column {', '.join(missing)} missing; is this the {what}?")
    return frame.apply(lambda col: col.str.strip())


def one_line_reason(e: Exception) -> str:
    return " ".join(str(e).split())


def _official_name(row) -> str:
    """The full name, built from its parts when the dataset has none (never from a nickname)."""
    if row["full_name"]:
        return row["full_name"]
    first = re.sub(r"\s*\(.*?\)", "", row["first_name"]).strip()
    parts = [first, row.get("middle_name", ""), row["last_name"]]
    name = " ".join(p for p in parts if p)
    suffix = row.get("suffix", "")
    return f"{name}, {suffix}" if suffix else name


def import_legislators(legislators_csv: Path, membership_csv: Path | None,
                       emails_csv: Path | None, out: Path) -> ImportResult:
    """Write `out` in our format; members without an email keep it empty and are listed."""
    people = _read(legislators_csv, ["bioguide_id", "type", "state", "last_name", "first_name"],
                   "congress-legislators CSV (legislators-current.csv)")
    for col in ("full_name", "middle_name", "suffix", "nickname", "district", "party", "senate_class",
                "phone", "address", "contact_form", "url", "gender", "birthday"):
        if col not in people.columns:
            people[col] = ""
    people = people.rename(columns=RENAMES)
    unknown = people[~people["type"].isin(["sen", "rep"])]
    if len(unknown):
        line = int(unknown.index[0]) + 2
        raise UserError(f"{legislators_csv}: line {line}, column type: {unknown.iloc[0]['type']!r} "
                        "is not sen or rep")
    people["chamber"] = people["type"].map({"sen": "senate", "rep": "house"})
    people["full_name"] = people.apply(_official_name, axis=1)

    committees: dict[str, str] = {}
    if membership_csv is not None:
        members = _read(membership_csv, ["bioguide", "committee_id"],
                        "committee membership CSV (committee-membership-current.csv)")
        # Subcommittee ids extend their parent's (SSAS13 under SSAS): keep full committees.
        members["code"] = members["committee_id"].str[:4].str.upper()
        committees = (members.groupby("bioguide")["code"]
                      .agg(lambda codes: ";".join(sorted(set(codes)))).to_dict())
    people["committees"] = people["bioguide_id"].map(lambda b: committees.get(b, ""))

    emails: dict[str, str] = {}
    if emails_csv is not None:
        given = _read(emails_csv, ["bioguide_id", "email"], "email CSV (bioguide_id,email)")
        for i, row in given.iterrows():
            if not row["email"]:
                continue
            normal, reason = normalise_email(row["email"])
            if reason:
                raise UserError(f"{emails_csv}: line {int(i) + 2}, column email: {row['email']!r} "
                                f"is not a valid email address: {reason}")
            emails[row["bioguide_id"].upper()] = normal
    people["email"] = people["bioguide_id"].str.upper().map(lambda b: emails.get(b, ""))
    people["staffer"] = ""

    out_frame = people[OUTPUT_COLUMNS].sort_values(["chamber", "state", "district"], kind="stable",
                                                   key=_sort_key)
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        out_frame.to_csv(out, index=False, encoding="utf-8", lineterminator="\n")
    except OSError as e:
        raise UserError(f"{out}: cannot write the contact list: {e.strerror}") from None

    result = ImportResult(
        members=len(people),
        senators=int((people["chamber"] == "senate").sum()),
        representatives=int((people["chamber"] == "house").sum()),
        with_committees=int((people["committees"] != "").sum()),
        without_email=[(r.bioguide_id, r.full_name) for r in out_frame.itertuples() if not r.email],
    )
    return result


def _sort_key(col):
    # Senate first, then states alphabetically, districts numerically.
    if col.name == "chamber":
        return col.map({"senate": 0, "house": 1})
    if col.name == "district":
        return col.map(lambda d: int(d) if d.isascii() and d.isdigit() else -1)
    return col
