"""Data shown to people is data, never code: in a terminal (no control character acts on it) and in a
spreadsheet (no cell is a formula). Contact lists and SendGrid's events come from outside."""

from __future__ import annotations

import re
import time

# C0 and C1 controls (tab, CR and LF aside: quoted cells may hold line breaks), DEL, and the
# bidirectional overrides and isolates that reorder what a reader sees (U+202A-E, U+2066-9).
CONTROLS = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f\u202a-\u202e\u2066-\u2069]")
_LINE_BREAKS = re.compile("[\t\r\n]")
# A spreadsheet reads a cell starting with one of these as a formula (OWASP, CSV injection).
FORMULA_START = ("=", "+", "-", "@", "\t", "\r", "\n")


def utc_iso(t: float | None) -> str | None:
    """UTC ISO 8601 for a stored time; 0 (1970) is a time like any other, and one no calendar
    holds (a hand-edited ledger) shows as missing rather than breaking a view."""
    if t is None:
        return None
    try:
        return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(t))
    except (OverflowError, OSError, ValueError):
        return None


def local_time(t: float | None, fmt: str = "%Y-%m-%d %H:%M:%S") -> str:
    """A stored time in this machine's zone, for people; "" for none, "?" for one no calendar holds."""
    if t is None:
        return ""
    try:
        return time.strftime(fmt, time.localtime(t))
    except (OverflowError, OSError, ValueError):
        return "?"


def count(n: int, singular: str, plural: str | None = None) -> str:
    """'1 letter', '3 letters', '1 House member': a number with its noun agreeing."""
    return f"{n} {singular if n == 1 else plural or singular + 's'}"


def control_characters(value: str) -> list[str]:
    """The control characters in `value`, as escapes ('\\x1b', '\\u202e'), once each, in order."""
    return list(dict.fromkeys(_escape(m.group()) for m in CONTROLS.finditer(value)))


def visible(value, multiline: bool = False) -> str:
    """Text for a terminal: every control character shown as an escape, so none acts; line breaks
    and tabs kept only in `multiline` text (a letter's body)."""
    text = "" if value is None else str(value)
    text = CONTROLS.sub(lambda m: _escape(m.group()), text)
    if not multiline:
        text = _LINE_BREAKS.sub(lambda m: _escape(m.group()), text)
    return text


def json_text(text: str) -> str:
    """JSON for a terminal: the controls JSON leaves raw (C1, bidi overrides) as \\u escapes, still
    valid JSON (they can only stand inside strings)."""
    return CONTROLS.sub(lambda m: f"\\u{ord(m.group()):04x}", text)


def spreadsheet_cell(value):
    """A CSV cell made for people to open in a spreadsheet: text that would start a formula gets a
    leading apostrophe (the JSON report keeps the true value)."""
    if isinstance(value, str) and value.startswith(FORMULA_START):
        return "'" + value
    return value


def _escape(ch: str) -> str:
    code = ord(ch)
    return f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}"
