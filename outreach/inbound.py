"""Replies to our letters as they arrive: .eml files, mboxes, SendGrid Inbound Parse posts (raw or
parsed mode). Pure: bytes in, `Reply` out. Strangers wrote all of it, so a broken header or charset
degrades a field, never the reply; only what is no message at all raises `ReplyError`, in one line."""

from __future__ import annotations

import calendar
import hashlib
import json
import math
import re
from dataclasses import dataclass, field
from email.header import decode_header
from email.message import Message
from email.parser import BytesHeaderParser, BytesParser
from email.utils import getaddresses, parseaddr, parsedate_tz
from html.parser import HTMLParser
from typing import Iterator

from outreach.errors import one_line

# An Inbound Parse security policy signs as the Event Webhook does (same headers, same ECDSA P-256
# over timestamp + raw body); the key is the policy's own.
from outreach.signature import SIGNATURE_HEADER, TIMESTAMP_HEADER, verify_signature

# A reply is read by people and matched by ids: a novel-length body adds nothing but weight.
MAX_TEXT_CHARS = 100_000

# Subjects that autoresponders put first (English, and the commonest Outlook/Gmail translations).
_AUTO_SUBJECT = re.compile(
    r"\s*(out of (the )?office|automatic reply|auto[- ]?reply|auto[- ]?response|autoresponse|auto:|"
    r"abwesenheitsnotiz|automatische antwort|r[ée]ponse automatique|respuesta autom[áa]tica)", re.I)
_MESSAGE_ID = re.compile(r"<([^<>\s]+)>")


class ReplyError(ValueError):
    """Input that is not an email message (or not an Inbound Parse post) at all; one line."""

    def __init__(self, reason: str):
        super().__init__(one_line(reason))


@dataclass
class Reply:
    """A reply as recorded against a letter: who, when, what it answers, what it says."""

    message_id: str | None
    refers_to: list[str]
    to: list[str]
    sender: str
    sender_name: str
    sent_at: float | None
    subject: str
    text: str
    attachments: list[tuple[str, int]] = field(default_factory=list)
    spam_score: float | None = None
    spam_report: str | None = None
    auto_reply: str | None = None
    dedupe_key: str = ""


# -- one message ------------------------------------------------------------------------------------

def parse_message(raw: bytes) -> Reply:
    """A Reply from one RFC 5322 message (an .eml file, or Inbound Parse's raw `email` field)."""
    msg = _parse_bytes(raw)
    if not msg.keys():
        raise ReplyError("not an email message: it has no headers")
    return _reply(msg, raw, _body_text(msg), list(_attachments(msg)))


def _reply(msg, raw: bytes, text: str, attachments: list[tuple[str, int]]) -> Reply:
    """The Reply a message's headers describe; `raw` is hashed when it has no Message-ID."""
    name, sender = (_addresses(msg, "From") or [("", "")])[0]
    message_id = _message_id(_header(msg, "Message-ID"))
    return Reply(message_id=message_id, refers_to=_refers_to(msg),
                 to=_unique(a for h in ("To", "Cc") for _, a in _addresses(msg, h)),
                 sender=sender, sender_name=name, sent_at=_date(_header(msg, "Date")),
                 subject=_header(msg, "Subject"), text=text[:MAX_TEXT_CHARS], attachments=attachments,
                 auto_reply=auto_reply_reason(msg), dedupe_key=_dedupe_key(message_id, raw))


def _parse_bytes(raw: bytes):
    """The message under `compat32`, which keeps headers as they came (`email.policy.default` parses
    each through its registry on every read: most of a reply's time); `_decoded` reads what we use."""
    if not isinstance(raw, (bytes, bytearray)) or not raw.strip():
        raise ReplyError("not an email message: it is empty")
    try:
        return BytesParser().parsebytes(bytes(raw))
    except Exception as e:  # noqa: BLE001 - the parser is lenient; anything it still refuses is bad input
        raise ReplyError(f"not an email message ({type(e).__name__})") from None


def _header(msg, name: str) -> str:
    """A header's decoded value, white space made single; '' if absent."""
    return " ".join(_decoded((_raw_values(msg, name) or [""])[0]).split())


def _raw_values(msg, name: str) -> list[str]:
    """A header's values as they came (8-bit bytes kept as surrogate escapes), in order."""
    return [str(v) for k, v in msg.raw_items() if k.lower() == name.lower()]


def _decoded(value: str) -> str:
    """A header value as text: raw 8-bit bytes (RFC 6532, or a careless mailer) read as UTF-8, not as
    surrogates no database stores; RFC 2047 encoded words in their charset (ASCII if it is unknown)."""
    value = _decode(value.encode("utf-8", "surrogateescape"), "utf-8")
    try:   # decode_header gives text outside encoded words as raw-unicode-escape bytes (or as is, if all)
        return "".join(c if isinstance(c, str) else _decode(c, cs or "raw-unicode-escape", "ascii")
                       for c, cs in decode_header(value))
    except Exception:  # noqa: BLE001 - broken base64 in an encoded word: the raw text is still readable
        return value


def _decode(data: bytes, charset, fallback: str = "utf-8") -> str:
    """Bytes in the charset named, bad bytes as U+FFFD; in `fallback` if Python knows no such charset."""
    try:
        return data.decode(charset, errors="replace")
    except Exception:  # noqa: BLE001 - no such charset, or one that is no text codec (idna, ...)
        return data.decode(fallback, errors="replace")


def _addresses(msg, name: str) -> list[tuple[str, str]]:
    """(display name, lower-case address) in every `name` header; the forgiving stdlib splitter skips
    what is no address. Names are decoded after the split: an encoded word may hide a comma."""
    try:
        pairs = getaddresses(_raw_values(msg, name))
    except Exception:  # noqa: BLE001 - nothing readable in it: no addresses, not a refused reply
        return []
    return [(" ".join(_decoded(n).split()), _decoded(a).strip().lower()) for n, a in pairs if a and "@" in a]


def _message_id(value: str) -> str | None:
    """The id inside <...>, or a bare token where a sloppy mailer left the brackets off."""
    found, bare = _MESSAGE_ID.search(value), value.strip().strip("<>")
    return found.group(1) if found else bare if bare and " " not in bare else None


def _refers_to(msg) -> list[str]:
    """In-Reply-To first (the message answered), then References (the thread), each once."""
    ids = []
    for name in ("In-Reply-To", "References"):
        value = _header(msg, name)
        ids += _MESSAGE_ID.findall(value) or [t.strip("<>") for t in value.split() if "@" in t]
    return _unique(ids)


def _date(value: str) -> float | None:
    """Unix seconds from a Date header; a date with no zone is taken as UTC; None if unreadable."""
    try:
        parts = parsedate_tz(value) if value else None
        return None if parts is None else float(calendar.timegm(parts[:9]) - (parts[9] or 0))
    except (ValueError, OverflowError, TypeError):
        return None


def _body_text(msg) -> str:
    """The text/plain body, or the HTML body made plain: a reply is stored as text, never markup."""
    for kind in ("plain", "html"):
        try:   # in the part's charset: ASCII if it names none, UTF-8 if Python knows no such charset
            part = _find_body(msg, kind)
            text = "" if part is None else _decode(part.get_payload(decode=True), part.get_content_charset("ascii"))
        except Exception:  # noqa: BLE001 - a tangled structure: try the other kind, then give up
            continue
        if part is not None:
            return text if kind == "plain" else html_to_text(text)
    return ""


def _find_body(part, kind: str):
    """The first text/`kind` part a reader is shown, found as `EmailMessage.get_body` finds it:
    attachments skipped, multiparts searched in order, of a multipart/related only its start part."""
    if part.get_content_disposition() == "attachment":
        return None
    ctype = part.get_content_type()
    if not ctype.startswith("multipart/") or not part.is_multipart():
        return part if ctype == f"text/{kind}" else None
    subparts = part.get_payload()
    if ctype == "multipart/related":
        start = part.get_param("start")
        subparts = [p for p in subparts if start and p.get("Content-ID") == start][:1] or subparts[:1]
    return next((found for sub in subparts if (found := _find_body(sub, kind)) is not None), None)


def _attachments(part) -> Iterator[tuple[str, int]]:
    """(file name, decoded size) of each attached file; an attached message is one file, sized as sent."""
    try:
        filename = _decoded(part.get_filename() or "")   # RFC 2231 by the stdlib, RFC 2047 here
        disposition = part.get_content_disposition()
    except Exception:  # noqa: BLE001 - a broken parameter: not a name we can use
        filename, disposition = "", None
    if filename or disposition == "attachment":
        try:
            payload = part.get_payload(decode=True)
            size = len(payload) if isinstance(payload, bytes) else len(part.get_payload(0).as_bytes())
        except Exception:  # noqa: BLE001 - a size is a hint, not worth refusing a reply over
            size = 0
        yield filename, size
    elif part.is_multipart():
        for sub in part.get_payload():
            yield from _attachments(sub)


def _dedupe_key(message_id: str | None, raw: bytes) -> str:
    """The Message-ID when there is one; else a hash of the bytes, with line endings made one kind,
    so the same message saved as .eml, in an mbox and posted by SendGrid is recorded once."""
    return f"mid:{message_id}" if message_id else \
        "sha256:" + hashlib.sha256(bytes(raw).replace(b"\r\n", b"\n")).hexdigest()


def _unique(items) -> list[str]:
    return list(dict.fromkeys(i for i in items if i))


# -- automatic replies ------------------------------------------------------------------------------

def auto_reply_reason(msg) -> str | None:
    """Why a message is an automatic reply (the header or subject that says so), or None: an
    out-of-office note is no answer, and must not mark a letter replied or stop a follow-up."""
    auto = _header(msg, "Auto-Submitted")
    if auto and auto.split(";")[0].strip().lower() != "no":
        return f"Auto-Submitted: {auto}"
    for name in ("X-Autoreply", "X-Autorespond"):
        if _raw_values(msg, name) and _header(msg, name).lower() not in ("no", "false"):
            return f"{name}: {_header(msg, name)}" if _header(msg, name) else name
    # Not X-Auto-Response-Suppress (it asks others not to auto-reply, and is on people's mail
    # too), nor Precedence: bulk (constituent-mail systems send real answers with it).
    precedence = _header(msg, "Precedence")
    if precedence.strip().lower() == "auto_reply":
        return f"Precedence: {precedence}"
    return _subject_marker(_header(msg, "Subject"))


def _subject_marker(subject: str) -> str | None:
    marker = _AUTO_SUBJECT.match(subject)
    return f"Subject starts with {marker.group(0).strip()!r}" if marker else None


# -- HTML made plain --------------------------------------------------------------------------------

class _PlainText(HTMLParser):
    """What a reader of the page sees: scripts and styles dropped, paragraphs apart, lines on lines."""

    SKIP = {"script", "style", "template", "title"}
    PARAGRAPH = {"p", "h1", "h2", "h3", "h4", "h5", "h6", "blockquote", "pre", "table", "ul", "ol", "hr"}
    LINE = {"div", "li", "tr", "dt", "dd", "section", "article", "header", "footer", "address"}

    def __init__(self):
        super().__init__(convert_charrefs=True)
        self.out: list[str] = []
        self.skipping: list[str] = []
        self.pre = 0
        self.breaks = 0   # line breaks owed before the next text; blocks side by side share theirs

    def handle_starttag(self, tag, attrs):
        if tag in self.SKIP:
            self.skipping.append(tag)
        self.pre += tag == "pre"
        self.breaks += tag == "br"
        self._block(tag)
        if tag in ("td", "th") and self.out and not self.out[-1].endswith((" ", "\n")):
            self.out.append(" ")   # cells side by side stay apart
        if tag == "li":
            self.handle_data("- ")

    def handle_endtag(self, tag):
        if tag in self.skipping:   # closes it, and anything left open inside it
            del self.skipping[len(self.skipping) - 1 - self.skipping[::-1].index(tag):]
        if tag == "pre" and self.pre:
            self.pre -= 1
        self._block(tag)

    def _block(self, tag: str) -> None:
        if tag in self.PARAGRAPH or tag in self.LINE:
            self.breaks = max(self.breaks, 2 if tag in self.PARAGRAPH else 1)

    def handle_data(self, data):
        if self.skipping:
            return
        if not self.pre:
            data = re.sub(r"[ \t\r\n\f]+", " ", data)   # HTML's own white space; a no-break space stays
            if self.breaks or not self.out or self.out[-1].endswith("\n"):
                data = data.lstrip(" ")
        if data:
            self.out.append("\n" * self.breaks * bool(self.out) + data)
            self.breaks = 0


def html_to_text(html: str) -> str:
    """Readable plain text from an HTML body (html.parser: nothing is fetched or run)."""
    parser = _PlainText()
    try:
        parser.feed(html)
        parser.close()
    except Exception:  # noqa: BLE001 - what was read before the parser gave up is kept
        pass
    lines = [line.rstrip() for line in "".join(parser.out).splitlines()]
    return re.sub(r"\n{3,}", "\n\n", "\n".join(lines)).strip("\n")


# -- files ------------------------------------------------------------------------------------------

def read_mbox(path) -> Iterator[Reply]:
    """Each message of an mbox file, in order; ReplyError names the file (and message) that is bad."""
    import mailbox

    n, box = 0, None
    try:
        box = mailbox.mbox(str(path), create=False)
        for n, key in enumerate(box.keys(), 1):
            yield parse_message(box.get_bytes(key))
    except (OSError, mailbox.Error, ReplyError) as e:
        where = f"{path}, message {n}" if n else f"{path}"
        raise ReplyError(f"{where}: cannot read it ({getattr(e, 'strerror', None) or e})") from None
    finally:
        if box is not None:
            box.close()


def read_file(path) -> list[Reply]:
    """The replies in an .eml file (one) or an mbox (any number; it starts with "From ")."""
    try:
        with open(path, "rb") as f:
            start = f.read(5)
            if start == b"From ":
                return list(read_mbox(path))
            raw = start + f.read()
    except OSError as e:
        raise ReplyError(f"{path}: cannot read it ({e.strerror or e})") from None
    try:
        return [parse_message(raw)]
    except ReplyError as e:
        raise ReplyError(f"{path}: {e}") from None


# -- SendGrid Inbound Parse -------------------------------------------------------------------------

def verify_inbound_signature(public_key, headers, body: bytes) -> bool:
    """True if a post's headers (a case-insensitive mapping, as Starlette's) sign its exact raw body;
    check before parsing. The timestamp's age is the caller's to judge (`signature.timestamp_problem`)."""
    signature, timestamp = headers.get(SIGNATURE_HEADER), headers.get(TIMESTAMP_HEADER)
    return bool(signature and timestamp) and verify_signature(public_key, signature, timestamp, body)


def parse_inbound_post(content_type: str, body: bytes) -> Reply:
    """A Reply from Inbound Parse's multipart/form-data POST, in raw mode (`email`) or parsed mode."""
    fields, files = _form_parts(content_type, body)
    charsets = _json(fields.get("charsets", b""))

    def text(name: str) -> str:   # in the charset `charsets` names for the field, else UTF-8
        return _decode(fields.get(name, b""), charsets.get(name) or "utf-8")

    if "email" in fields:
        reply = parse_message(fields["email"])
    elif "headers" in fields or "from" in fields:
        reply = _parsed_mode(fields, files, text)
    else:
        raise ReplyError("an Inbound Parse post with neither an `email` field nor parsed fields (headers, from)")
    rcpts = _json(fields.get("envelope", b"")).get("to")
    rcpts = [rcpts] if isinstance(rcpts, str) else rcpts if isinstance(rcpts, list) else []
    reply.to = _unique([*reply.to, *(a.strip().lower() for a in rcpts if isinstance(a, str) and "@" in a)])
    reply.spam_score = _number(text("spam_score"))
    reply.spam_report = text("spam_report") or None
    return reply


def _parsed_mode(fields: dict[str, bytes], files: list[tuple[str, str, bytes]], text) -> Reply:
    """Parsed mode: ids, date and auto-reply markers from the header block; who, subject, body and
    files from the decoded fields."""
    block = fields.get("headers", b"").strip(b"\r\n")
    msg = _parse_bytes(block + b"\r\n\r\n") if block.strip() else Message()
    info = _json(fields.get("attachment-info", b""))
    attachments = []
    for name, filename, payload in files:   # attachment1..N, in the order posted
        described = info.get(name) if isinstance(info.get(name), dict) else {}
        attachments.append((filename or described.get("filename") or described.get("name") or name, len(payload)))
    raw = b"\0".join(fields.get(k, b"") for k in ("headers", "text", "html"))
    reply = _reply(msg, raw, text("text") or html_to_text(text("html")), attachments)
    name, sender = parseaddr(text("from"))
    if "@" in sender:
        reply.sender, reply.sender_name = sender.strip().lower(), name
    to = [a.strip().lower() for _, a in getaddresses([text("to"), text("cc")]) if "@" in a]
    reply.to = _unique([*to, *reply.to])
    subject = " ".join(text("subject").split())
    if subject:
        reply.subject = subject
        reply.auto_reply = reply.auto_reply or _subject_marker(subject)
    return reply


def _form_parts(content_type: str, body: bytes) -> tuple[dict[str, bytes], list[tuple[str, str, bytes]]]:
    """Fields and (field, file name, bytes) files of a multipart/form-data body, split on the boundary
    by hand so each value is its exact bytes, whatever its size; part headers are read by the stdlib."""
    import email.policy   # only here: its header registry costs 5 ms to import

    if "\r" in content_type or "\n" in content_type:
        raise ReplyError("the Content-Type header holds a line break")
    outer = Message()
    outer["Content-Type"] = content_type
    boundary = outer.get_param("boundary")
    if outer.get_content_type() != "multipart/form-data" or not isinstance(boundary, str) or not boundary:
        raise ReplyError(f"not a multipart/form-data body with a boundary (Content-Type: {content_type[:100]!r})")
    delimiter = b"--" + boundary.encode("latin-1", errors="replace")
    after = body[body.find(delimiter) + len(delimiter):].lstrip(b" \t-")
    newline = b"\r\n" if after.startswith(b"\r\n") else b"\n"
    data = newline + body
    # A delimiter is a whole line (RFC 2046): the boundary's text inside an attachment is not one.
    line = re.escape(newline + delimiter) + rb"(--)?[ \t]*(?=" + re.escape(newline) + rb"|\Z)"
    marks = list(re.finditer(line, data))
    if not marks:
        raise ReplyError("a multipart body without its parts (the boundary is not in it)")
    if not any(m.group(1) for m in marks):
        raise ReplyError("a multipart body cut short: it has no closing boundary")
    fields: dict[str, bytes] = {}
    files: list[tuple[str, str, bytes]] = []
    for mark, following in zip(marks, marks[1:]):
        if mark.group(1):
            break   # the closing delimiter: what follows is epilogue
        head, sep, content = data[mark.end():following.start()].partition(newline + newline)
        if not sep:
            raise ReplyError("a multipart part without a blank line after its headers")
        # The HTTP policy reads a raw UTF-8 file name (as SendGrid and browsers send it) as UTF-8.
        head = head.lstrip(b" \t").removeprefix(newline) + b"\n\n"
        part = BytesHeaderParser(policy=email.policy.HTTP).parsebytes(head)
        if part.get_content_disposition() != "form-data":
            continue
        name = part.get_param("name", header="content-disposition")
        name = name if isinstance(name, str) else ""
        if part.get_param("filename", header="content-disposition") is not None:
            files.append((name, part.get_filename() or "", content))
        elif name:
            fields.setdefault(name, content)
    return fields, files


def _json(raw: bytes) -> dict:
    """A JSON object from a form field; {} if it is absent, broken, or not an object."""
    try:
        value = json.loads(raw.decode("utf-8", errors="replace"))
    except ValueError:
        return {}
    return value if isinstance(value, dict) else {}


def _number(text: str) -> float | None:
    try:
        return float(text) if math.isfinite(float(text)) else None
    except ValueError:
        return None
