"""CSV files as spreadsheets export them: read whole (a regular file of a sane size), decoded (UTF-8
with or without a byte-order mark, Windows-1252 as a fallback, said so), the delimiter sniffed, the
header's spellings mapped to our column names."""

from __future__ import annotations

import csv
import io
import re
from dataclasses import dataclass
from pathlib import Path

from outreach.errors import UserError

MAX_BYTES = 100 * 1024 * 1024  # a contact list larger than this is not one (or not the file meant)

# Header spellings seen in real lists, mapped to our column names.
ALIASES = {
    "e_mail": "email", "email_address": "email", "e_mail_address": "email", "mail": "email",
    "bioguide": "bioguide_id", "bioguideid": "bioguide_id",
    "firstname": "first_name", "first": "first_name", "given_name": "first_name",
    "lastname": "last_name", "last": "last_name", "surname": "last_name", "family_name": "last_name",
    "fullname": "full_name", "name": "full_name",
    "type": "chamber",
}

def normalise_header(name: str) -> str:
    """'  First Name ' -> 'first_name'; known aliases to our names."""
    key = re.sub(r"[\s\-.]+", "_", name.strip().lower()).strip("_")
    return ALIASES.get(key, key)


def read_file(path: Path) -> bytes:
    """The file's bytes; one line for what is not a contact list file (a folder, a device such as
    /dev/zero, something far too large)."""
    import stat

    try:
        info = path.stat()
        if stat.S_ISDIR(info.st_mode):
            raise UserError(f"{path}: is a folder; give the contact list's CSV file")
        if not stat.S_ISREG(info.st_mode):
            raise UserError(f"{path}: not a regular file (a device or a pipe); give the contact list's CSV file")
        if info.st_size > MAX_BYTES:
            raise UserError(f"{path}: {info.st_size / 1e6:.0f} MB, larger than any contact list "
                            f"({MAX_BYTES // 1_000_000} MB at most); is this the right file?")
        with open(path, "rb") as f:
            return f.read(MAX_BYTES + 1)
    except FileNotFoundError:
        raise UserError(f"{path}: contact list not found") from None
    except OSError as e:
        raise UserError(f"{path}: cannot read the contact list: {e.strerror}") from None


def decode(path: Path, raw: bytes) -> tuple[str, str, list[str]]:
    """(text, encoding, notes): UTF-8 with or without BOM, else Windows-1252, said so."""
    if raw.startswith(b"PK\x03\x04") or raw.startswith(b"\xd0\xcf\x11\xe0"):
        raise UserError(f"{path}: this is a spreadsheet workbook, not CSV; "
                        "save it as 'CSV UTF-8' and check that file")
    try:
        return raw.decode("utf-8-sig"), "utf-8", []
    except UnicodeDecodeError as e:
        line = raw.count(b"\n", 0, e.start) + 1
        try:
            text = raw.decode("cp1252")
        except UnicodeDecodeError:
            raise UserError(f"{path}: line {line}: not UTF-8 or Windows-1252 text; "
                            "save it as 'CSV UTF-8'") from None
        note = (f"not valid UTF-8 (first at line {line}); read as Windows-1252: check accented "
                "names, and save the file as 'CSV UTF-8' next time")
        return text, "cp1252", [note]


def sniff_delimiter(text: str) -> str:
    """The delimiter used in the header line: comma, semicolon or tab, whichever is most used."""
    header = text.split("\n", 1)[0]
    counts = {d: header.count(d) for d in (",", ";", "\t")}
    best = max(counts, key=lambda d: counts[d])
    return best if counts[best] else ","


@dataclass
class Sheet:
    """A contact list's cells as they are (for rewriting it): its header, as spelled and as our
    names, and each row with its spreadsheet line."""

    names: list[str]
    shown: list[str]
    rows: list[tuple[int, list[str]]]

    def value(self, cells: list[str], name: str) -> str:
        i = self.names.index(name) if name in self.names else None
        return cells[i].strip() if i is not None and i < len(cells) else ""


def read_sheet(path: str | Path) -> Sheet:
    """The rows of a contact list, unvalidated; UserError only when the file cannot be read."""
    path = Path(path)
    text, _, _ = decode(path, read_file(path))
    reader = csv.reader(io.StringIO(text, newline=""), delimiter=sniff_delimiter(text), strict=False)
    try:
        header = next(reader, [])
        rows = [(i + 2, cells) for i, cells in enumerate(reader) if any(c.strip() for c in cells)]
    except csv.Error as e:
        raise UserError(f"{path}: cannot read it as CSV: {e}") from None
    names = [normalise_header(c) or f"column_{i + 1}" for i, c in enumerate(header)]
    return Sheet(names, [c.strip() or n for c, n in zip(header, names)], rows)
