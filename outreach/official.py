"""The official congress-legislators files: read (their YAML, or the published CSV forms) and fetched.

The dataset (github.com/unitedstates/congress-legislators) publishes
`legislators-current` as YAML, JSON and CSV (only YAML and JSON carry term
dates and `leadership_roles`) and `committee-membership-current` as YAML and
JSON. Both YAML files are read here into one shape, `Official`; so are the
CSV forms, without what they lack.
"""

from __future__ import annotations

import datetime as dt
import os
import re
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from outreach.errors import UserError
from outreach.progress import Quiet

BASE_URL = "https://unitedstates.github.io/congress-legislators"
LEGISLATORS, COMMITTEES = "legislators-current.yaml", "committee-membership-current.yaml"
# The committees a campaign on the landmine exception writes to because of what they oversee.
WATCHED = ("SSAS", "SSFR", "HSAS", "HSFA")


@dataclass
class Official:
    """One member as the official data has them, in our contact list's terms."""

    bioguide_id: str
    first_name: str
    last_name: str
    nickname: str
    full_name: str
    chamber: str            # senate, house
    state: str
    district: str           # "" for a senator; "0" at large
    party: str
    senate_class: str
    phone: str
    office_address: str
    contact_form: str
    website: str
    gender: str
    birthday: str
    term_end: str           # YYYY-MM-DD; "" from the CSV form, which has no terms
    leadership: str         # the roles current on the day read, "; "-separated

    @property
    def seat(self) -> str:
        """'MI' for a senator, 'MI-7' (or 'AK-AL') for a House member."""
        if self.chamber == "senate":
            return self.state
        return f"{self.state}-{'AL' if self.district in ('0', '') else self.district}"


@dataclass
class Roster:
    """What the official files say: members by bioguide id, and full-committee memberships."""

    members: dict[str, Official]
    has_terms: bool                                  # read from YAML: term_end and leadership are known
    committees: dict[str, dict[str, str]] | None     # bioguide -> {committee code: title ("" for a member)}

    def committees_of(self, bioguide_id: str) -> dict[str, str]:
        return (self.committees or {}).get(bioguide_id, {})


def read_roster(legislators: Path, committees: Path | None, today: dt.date) -> Roster:
    """Both files, YAML or CSV each (by their name's ending)."""
    members, has_terms = read_legislators(legislators, today)
    return Roster(members, has_terms, read_memberships(committees) if committees is not None else None)


# -- legislators ------------------------------------------------------------------------------------

def read_legislators(path: Path, today: dt.date) -> tuple[dict[str, Official], bool]:
    """(members by bioguide id, whether terms are known): the YAML, or the published CSV."""
    if _is_yaml(path):
        return {m.bioguide_id: m for m in (_from_yaml(path, e, i, today) for i, e in enumerate(_yaml(path)))}, True
    rows = csv_rows(path, ("bioguide_id", "type", "state", "last_name", "first_name"), "the legislators CSV")
    members = {}
    for line, row in rows:
        if row["type"] not in ("sen", "rep"):
            raise UserError(f"{path}: line {line}, column type: {row['type']!r} is not sen or rep")
        name = _full_name(row.get("full_name", ""), row["first_name"], row.get("middle_name", ""),
                          row["last_name"], row.get("suffix", ""))
        m = Official(row["bioguide_id"].upper(), row["first_name"], row["last_name"], row.get("nickname", ""), name,
                     "senate" if row["type"] == "sen" else "house", row["state"], row.get("district", ""),
                     row.get("party", ""), row.get("senate_class", ""), row.get("phone", ""), row.get("address", ""),
                     row.get("contact_form", ""), row.get("url", ""), row.get("gender", ""), row.get("birthday", ""),
                     "", "")
        members[m.bioguide_id] = m
    return members, False


def _from_yaml(path: Path, entry, i: int, today: dt.date) -> Official:
    try:
        bioguide = str(entry["id"]["bioguide"]).upper()
        name, term, bio = entry["name"], entry["terms"][-1], entry.get("bio") or {}
        kind = term["type"]
    except (KeyError, TypeError, IndexError):
        raise UserError(f"{path}: entry {i + 1} has no bioguide id, name or term; is this "
                        f"legislators-current.yaml?") from None
    if kind not in ("sen", "rep"):
        raise UserError(f"{path}: {bioguide}: the current term's type {kind!r} is not sen or rep")
    district = term.get("district")
    roles = [r.get("title", "") for r in entry.get("leadership_roles") or []
             if _date(r.get("start")) <= today and (r.get("end") is None or _date(r.get("end")) > today)]
    return Official(
        bioguide, _text(name.get("first")), _text(name.get("last")), _text(name.get("nickname")),
        _full_name(_text(name.get("official_full")), _text(name.get("first")), _text(name.get("middle")),
                   _text(name.get("last")), _text(name.get("suffix"))),
        "senate" if kind == "sen" else "house", _text(term.get("state")),
        "" if district is None else str(district), _text(term.get("party")), _text(term.get("class")),
        _text(term.get("phone")), _text(term.get("address")), _text(term.get("contact_form")),
        _text(term.get("url")), _text(bio.get("gender")), _text(bio.get("birthday")), _text(term.get("end")),
        "; ".join(r for r in roles if r))


def _full_name(official: str, first: str, middle: str, last: str, suffix: str) -> str:
    """The official full name, built from its parts when the dataset has none (never from a nickname)."""
    if official:
        return official
    first = re.sub(r"\s*\(.*?\)", "", first).strip()
    name = " ".join(p for p in (first, middle, last) if p)
    return f"{name}, {suffix}" if suffix else name


# -- committee memberships -------------------------------------------------------------------------------

def read_memberships(path: Path) -> dict[str, dict[str, str]]:
    """bioguide -> {full committee code: title}; a subcommittee (SSAS13) counts for its committee."""
    out: dict[str, dict[str, str]] = {}

    def add(bioguide: str, committee: str, title: str, full: bool) -> None:
        code = committee[:4].upper()
        held = out.setdefault(bioguide.upper(), {})
        if full or code not in held:
            held[code] = title if full else held.get(code, "")

    if _is_yaml(path):
        data = _yaml(path)
        if not isinstance(data, dict):
            raise UserError(f"{path}: not committee-membership-current.yaml (expected committees by id)")
        for committee, seats in data.items():
            for seat in seats or []:
                if isinstance(seat, dict) and seat.get("bioguide"):
                    add(str(seat["bioguide"]), str(committee), _text(seat.get("title")), len(str(committee)) == 4)
        return out
    for _, row in csv_rows(path, ("bioguide", "committee_id"), "the committee membership CSV"):
        add(row["bioguide"], row["committee_id"], row.get("title", ""), len(row["committee_id"]) == 4)
    return out


# -- reading files --------------------------------------------------------------------------------------

def _is_yaml(path: Path) -> bool:
    return path.suffix.lower() in (".yaml", ".yml")


def _yaml(path: Path):
    import yaml

    try:
        with open(path, "rb") as f:
            return yaml.load(f, Loader=getattr(yaml, "CSafeLoader", yaml.SafeLoader))
    except FileNotFoundError:
        raise UserError(f"{path}: not found") from None
    except OSError as e:
        raise UserError(f"{path}: cannot read it: {e.strerror}") from None
    except yaml.YAMLError as e:
        where = getattr(e, "problem_mark", None)
        line = f"line {where.line + 1}: " if where is not None else ""
        raise UserError(f"{path}: {line}not valid YAML ({getattr(e, 'problem', None) or 'unreadable'})") from None


def csv_rows(path: Path, required: tuple[str, ...], what: str) -> list[tuple[int, dict[str, str]]]:
    """(spreadsheet line, row) of a published CSV form, every cell as stripped text."""
    import pandas as pd

    try:
        frame = pd.read_csv(path, dtype=str, keep_default_na=False, encoding="utf-8-sig")
    except FileNotFoundError:
        raise UserError(f"{path}: {what} not found") from None
    except (OSError, UnicodeDecodeError, pd.errors.ParserError, pd.errors.EmptyDataError) as e:
        raise UserError(f"{path}: cannot read {what}: {' '.join(str(e).split())}") from None
    frame.columns = [c.strip().lower() for c in frame.columns]
    missing = [c for c in required if c not in frame.columns]
    if missing:
        raise UserError(f"{path}: line 1: column {', '.join(missing)} missing; is this {what}?")
    return [(i + 2, {k: v.strip() for k, v in row.items()}) for i, row in enumerate(frame.to_dict("records"))]


def _text(value) -> str:
    return "" if value is None else str(value).strip()


def _date(value) -> dt.date:
    return value if isinstance(value, dt.date) else dt.date.fromisoformat(str(value))


# -- fetching the current files ------------------------------------------------------------------------

def cache_folder() -> Path:
    """Where downloaded files are kept: $XDG_CACHE_HOME/outreach/congress-legislators."""
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "outreach" / "congress-legislators"


def download(base_url: str, names: tuple[str, ...] = (LEGISLATORS, COMMITTEES), folder: Path | None = None,
             progress=None, timeout_s: float = 30) -> list[Path]:
    """Fetch the current official files into the cache folder; one line (UserError) when it cannot."""
    folder = folder or cache_folder()
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise UserError(f"{folder}: cannot create the download folder: {e.strerror}") from None
    return [_fetch(f"{base_url.rstrip('/')}/{name}", folder / name, progress, timeout_s) for name in names]


def _fetch(url: str, target: Path, progress, timeout_s: float) -> Path:
    partial = target.with_name(target.name + ".part")
    try:
        with urllib.request.urlopen(url, timeout=timeout_s) as answer, open(partial, "wb") as out:
            total = int(answer.headers.get("Content-Length") or 0)
            bar = progress(total, f"downloading {target.name}") if progress and total else None
            with bar if bar is not None else Quiet() as shown:
                while chunk := answer.read(1 << 16):
                    out.write(chunk)
                    shown.advance(len(chunk))
        os.replace(partial, target)
    except urllib.error.HTTPError as e:
        partial.unlink(missing_ok=True)
        raise UserError(f"could not download {url}: HTTP {e.code} {e.reason}") from None
    except (urllib.error.URLError, OSError, ValueError) as e:
        partial.unlink(missing_ok=True)
        reason = getattr(e, "reason", None) or e.strerror or e
        raise UserError(f"could not download {url} ({reason}; offline?): fetch {target.name} by hand and "
                        "give its path instead of --download") from None
    return target


