"""A letter as a message to send, and its RFC 5322 form (.eml), built fast and safely.

Headers carry contact data, so every header value is cleaned of CR/LF and
control characters before it is written: nothing from a contact list can add
a header. Bodies that are plain ASCII go as they are (7bit); anything else is
quoted-printable UTF-8, so any mail reader parses them.
"""

from __future__ import annotations

import binascii
import datetime
import functools
import re
import time
from dataclasses import dataclass, replace
from email.header import Header
from email.utils import formataddr, format_datetime

# Controls (C0, DEL, C1) and the bidi overrides that reorder what a reader sees.
_CONTROL = re.compile("[\x00-\x1f\x7f-\x9f\u202a-\u202e\u2066-\u2069]+")
NAME_LIMIT = 200   # a display name longer than this is cut: a header line stays far inside 998 characters
_SPECIALS = re.compile(r'[][\\()<>@,:;".]')


@dataclass(frozen=True, slots=True)
class Message:
    """What a transport sends: addresses, subject, text and HTML, and our identifiers."""

    letter_id: str
    campaign: str
    from_name: str
    from_email: str
    to_name: str
    to_email: str
    subject: str
    text: str
    html: str
    reply_to: str | None = None
    is_test: bool = False
    bioguide_id: str = ""          # the office, for the outbox's manifest (never sent)
    last_name: str = ""            # for the outbox's file names (never sent)

    def as_test_to(self, address: str, reply_to: str | None = None) -> "Message":
        """The same letter sent to `address` instead, marked [TEST] in the subject; a reply to it
        goes to `reply_to` (the sender's), never to the letter's own replies address."""
        return replace(self, to_email=address, to_name="", subject=f"[TEST] {self.subject}", is_test=True,
                       reply_to=reply_to)


def message_id(message: Message) -> str:
    """The letter's Message-ID, set by us so a reply's In-Reply-To names its letter:
    '<LETTER_ID.CAMPAIGN@sender-domain>'. A test copy's starts with 'test-': a reply to it
    is never taken for the office's."""
    domain = message.from_email.rpartition("@")[2] or "outreach.invalid"
    return f"<{'test-' if message.is_test else ''}{message.letter_id}.{clean_header(message.campaign)}@{domain}>"


def replies_address(replies: str | None, letter_id: str) -> str | None:
    """Where a reply to this letter goes: `local+LETTER_ID@domain` of [replies] address (None: off)."""
    if not replies:
        return None
    local, _, domain = replies.rpartition("@")
    return f"{local}+{letter_id}@{domain}"


def message_for(letter, sender, campaign: str, replies: str | None = None) -> Message:
    """The message for a rendered letter, from the [sender] in config; with [replies] address
    set, replies come back to the letter's own address."""
    return Message(
        letter_id=letter.letter_id, campaign=campaign,
        from_name=sender.name, from_email=sender.email,
        to_name=letter.to_name, to_email=letter.to_email,
        subject=letter.subject, text=letter.text, html=letter.html,
        reply_to=replies_address(replies, letter.letter_id) or sender.reply_to,
        bioguide_id=letter.contact.bioguide_id, last_name=letter.contact.last_name,
    )


def clean_header(value: str) -> str:
    """One line of header text: CR, LF and other control characters become a single space."""
    if value.isprintable() and "  " not in value and value.strip() == value:
        return value
    return " ".join(_CONTROL.sub(" ", value).split())


def display_name(name: str) -> str:
    """A name as every header (and SendGrid's payload) carries it: one line, no control character,
    at most NAME_LIMIT characters."""
    name = clean_header(name)
    return name if len(name) <= NAME_LIMIT else name[:NAME_LIMIT - 1] + "…"


def encode_text_header(value: str) -> str:
    """A header value, RFC 2047-encoded when it is not ASCII, folded when long."""
    value = clean_header(value)
    if value.isascii():
        if len(value) <= 76:
            return value
        # Folding happens only at spaces: a longer run of text (data from a contact cell, say)
        # is encoded instead, in pieces, so no line passes 998 characters.
        if max(map(len, value.split(" "))) <= 76:
            return _fold_ascii(value)
    return Header(value, "utf-8", maxlinelen=76).encode(linesep="\n")


def _fold_ascii(value: str) -> str:
    lines, current = [], ""
    for word in value.split(" "):
        if current and len(current) + 1 + len(word) > 76:
            lines.append(current)
            current = word
        else:
            current = f"{current} {word}" if current else word
    lines.append(current)
    return "\n ".join(lines)


@functools.lru_cache(maxsize=64)
def _sender_address(name: str, email: str) -> str:
    return encode_address(name, email)


def encode_address(name: str, email: str) -> str:
    """'Name <addr>' with the name quoted or RFC 2047-encoded as needed; the address stays readable."""
    email = clean_header(email)
    if not email or " " in email or "<" in email or ">" in email:
        raise ValueError(f"not a single email address: {email!r}")
    local, _, domain = email.rpartition("@")
    if not domain.isascii():
        domain = domain.encode("idna").decode("ascii")
        email = f"{local}@{domain}"
    name = display_name(name)
    if not name:
        return email
    if name.isascii():
        # What formataddr does for ASCII, without its per-call overhead.
        if _SPECIALS.search(name):
            name = '"' + name.replace("\\", "\\\\").replace('"', '\\"') + '"'
        return f"{name} <{email}>"
    return formataddr((name, email), charset="utf-8")


def _body(text: str) -> tuple[str, bytes]:
    """(transfer encoding, bytes): ASCII with short lines goes as is, anything else quoted-printable."""
    body = text.replace("\r\n", "\n").replace("\r", "\n") if "\r" in text else text
    if body.isascii() and _lines_short(body):
        return "7bit", body.encode("ascii")
    return "quoted-printable", binascii.b2a_qp(body.encode("utf-8"), istext=True)


def _lines_short(body: str, limit: int = 998) -> bool:
    """True when no line reaches `limit` characters (RFC 5322's 998 before CRLF).

    A line of `limit` characters or more covers at least one whole aligned slice of
    limit // 2: when every such slice holds a newline, no line is that long. That is
    a few substring tests instead of splitting a letter into lines; only a body that
    fails it is split and measured."""
    step = limit // 2
    if all("\n" in body[i:i + step] for i in range(0, len(body) - step + 1, step)):
        return True
    return max(map(len, body.split("\n"))) < limit


def mail_date(t: float) -> str:
    """An RFC 5322 date in UTC with a numeric zone: 'Mon, 07 Dec 2026 19:56:11 +0000' (never 'GMT')."""
    return format_datetime(datetime.datetime.fromtimestamp(int(t), datetime.timezone.utc))


def to_eml(message: Message, date: str | None = None) -> bytes:
    """The message as multipart/alternative .eml bytes (text, then HTML)."""
    boundary = f"=_outreach_{message.letter_id}"
    headers = [
        f"From: {_sender_address(message.from_name, message.from_email)}",
        f"To: {encode_address(message.to_name, message.to_email)}",
    ]
    if message.reply_to:
        headers.append(f"Reply-To: {_sender_address('', message.reply_to)}")
    headers += [
        f"Subject: {encode_text_header(message.subject)}",
        f"Date: {date or mail_date(time.time())}",
        f"Message-ID: {message_id(message)}",
        "MIME-Version: 1.0",
        f"X-Outreach-Campaign: {clean_header(message.campaign)}",
        f"X-Outreach-Letter-Id: {message.letter_id}",
        f'Content-Type: multipart/alternative; boundary="{boundary}"',
    ]
    chunks = [("\n".join(headers) + "\n\n").encode("utf-8")]
    for kind, text in (("plain", message.text), ("html", message.html)):
        encoding, body = _body(text)
        chunks.append(f'--{boundary}\nContent-Type: text/{kind}; charset="utf-8"\n'
                      f"Content-Transfer-Encoding: {encoding}\n\n".encode("ascii"))
        chunks.append(body)
        chunks.append(b"\n")
    chunks.append(f"--{boundary}--\n".encode("ascii"))
    return b"".join(chunks)
