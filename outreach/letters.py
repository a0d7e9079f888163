"""Letters: the Jinja2 environment, rendering one letter per recipient, and the preflight."""

from __future__ import annotations

import functools
import hashlib
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Iterator

from outreach.contacts import Contact
from outreach.errors import UserError
from outreach.forms import member_for

ENTRY_POINTS = ("subject.txt.j2", "letter.txt.j2", "letter.html.j2")
TEXT_WIDTH = 72


def letter_id(campaign: str, email: str) -> str:
    """Stable id for the letter of one campaign to one recipient (email compared case-insensitively)."""
    digest = hashlib.sha256(f"{campaign}\n{email.lower()}".encode()).hexdigest()
    return digest[:20]


# Most paragraphs are the same for every recipient, so their wrapping is remembered.
@functools.lru_cache(maxsize=2048)
def wrap(text: str, width: int = TEXT_WIDTH, hang: int = 0) -> str:
    """Fold a paragraph's whitespace and wrap it greedily; later lines indented by `hang` spaces.

    `hang` also shortens the first line, for list items whose marker the template writes.
    """
    words = text.split()
    if not words:
        return ""
    lines: list[str] = []
    current = words[0]
    limit = width - hang
    indent = " " * hang
    for word in words[1:]:
        if len(current) + 1 + len(word) <= limit:
            current += " " + word
        else:
            lines.append(current)
            current = word
    lines.append(current)
    return ("\n" + indent).join(lines)


@dataclass(frozen=True, slots=True)
class Letter:
    """One rendered letter, ready to be assembled into a message."""

    letter_id: str
    contact: Contact
    subject: str
    text: str
    html: str

    @property
    def to_email(self) -> str:
        return self.contact.email

    @property
    def to_name(self) -> str:
        return self.contact.full_name or f"{self.contact.first_name} {self.contact.last_name}".strip()


class TemplateSet:
    """A campaign's templates folder, loaded once; renders letters for contacts."""

    def __init__(self, folder: Path, sender, campaign: str, subject: str | None = None):
        import jinja2
        import jinja2.meta

        self.folder = folder
        self.campaign = campaign
        self.sender = sender
        if not folder.is_dir():
            raise UserError(f"{folder}: templates folder not found; "
                            f"it needs {', '.join(ENTRY_POINTS)}")
        missing = [name for name in ENTRY_POINTS if not (folder / name).is_file()
                   and not (name == "subject.txt.j2" and subject is not None)]
        if missing:
            raise UserError(f"{folder}: {', '.join(missing)} missing; a campaign's templates folder "
                            f"needs {', '.join(ENTRY_POINTS)}")
        common = dict(loader=jinja2.FileSystemLoader(str(folder)), undefined=jinja2.StrictUndefined,
                      keep_trailing_newline=True, trim_blocks=True, lstrip_blocks=True, auto_reload=False)
        # Escaping follows the entry point, not the file name, so one partial can
        # serve both letters and be escaped exactly when it lands in HTML.
        self._text_env = jinja2.Environment(autoescape=False, **common)
        self._html_env = jinja2.Environment(autoescape=True, extensions=[_escaped_partials()], **common)
        for env in (self._text_env, self._html_env):
            env.filters["wrap"] = wrap
        with self._template_errors(None):
            if subject is not None:
                source, self._subject_name = subject, "[campaign] subject"
            else:
                self._subject_name = "subject.txt.j2"
                source = (folder / self._subject_name).read_text(encoding="utf-8")
            self._subject = self._text_env.from_string(source)
            self._subject.name = self._subject_name
            # A subject that uses no variable is the same for everyone: render it once.
            self._fixed_subject = None
            if not jinja2.meta.find_undeclared_variables(self._text_env.parse(source)):
                self._fixed_subject = " ".join(self._subject.render().split())
            self._text = self._text_env.get_template("letter.txt.j2")
            self._html = self._html_env.get_template("letter.html.j2")

    def hash(self) -> str:
        """sha256 over every file in the folder: which template set wrote an archived letter."""
        h = hashlib.sha256()
        for path in sorted(p for p in self.folder.rglob("*") if p.is_file()):
            h.update(str(path.relative_to(self.folder)).encode() + b"\0" + path.read_bytes() + b"\0")
        return h.hexdigest()

    def render(self, contact: Contact) -> Letter:
        """Render one contact's letter; a template problem raises UserError naming file, line and recipient."""
        member = member_for(contact)
        context = {"member": member, "contact": contact.fields, "sender": self.sender,
                   "campaign": self.campaign}
        with _TemplateErrors(self.folder, contact, context):
            subject = self._fixed_subject
            if subject is None:
                subject = " ".join(self._subject.render(context).split())
            context["subject"] = subject
            text = self._text.render(context)
            html = self._html.render(context)
        if not subject:
            raise UserError(f"{self.folder / self._subject_name}: the subject is empty for "
                            f"{_who(contact)}; write a subject")
        return Letter(letter_id(self.campaign, contact.email), contact, subject, text, html)

    def render_all(self, contacts: Iterable[Contact]) -> Iterator[Letter]:
        for contact in contacts:
            yield self.render(contact)

    def _template_errors(self, contact: Contact | None):
        return _TemplateErrors(self.folder, contact)


@functools.cache
def _escaped_partials():
    """A Jinja2 extension for the HTML environment: the text written in a partial (`_*.j2`) is escaped.

    Autoescaping escapes values, not a template's own text, so `&` or `<` typed in a
    paragraph shared with the plain-text letter would go into the HTML raw. A partial
    serves both letters, so its text is prose, never markup: in HTML it is escaped as it
    is read. The entry points (letter.html.j2) are HTML and are left as written.
    """
    from jinja2.ext import Extension
    from jinja2.lexer import Token, TokenStream

    class EscapedPartials(Extension):
        def filter_stream(self, stream: TokenStream):
            if not Path(stream.name or "").name.startswith("_"):
                return stream
            return (Token(t.lineno, t.type, _escape_text(t.value)) if t.type == "data" else t for t in stream)

    return EscapedPartials


def _escape_text(text: str) -> str:
    """What text content needs in HTML (quotes matter only inside attributes)."""
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def _who(contact: Contact) -> str:
    ident = f", {contact.bioguide_id}" if contact.bioguide_id else ""
    return f"the recipient on line {contact.line} ({contact.email}{ident})"


def _did_you_mean(detail: str, context: dict) -> str:
    """' (did you mean `last_name`?)' for a misspelt name, from what the template could have used."""
    import difflib
    import re

    from jinja2.utils import object_type_repr

    attribute = re.search(r"^'(.+)' has no attribute '([^']+)'$", detail)
    if attribute:
        owner, name = attribute.groups()
        names: list[str] = []
        for value in context.values():
            if object_type_repr(value) == owner:
                names = (list(value) if isinstance(value, dict)
                         else [n for n in dir(value) if not n.startswith("_")])
                break
    else:
        variable = re.search(r"^'([^']+)' is undefined$", detail)
        if not variable:
            return ""
        name, names = variable.group(1), list(context)
    close = difflib.get_close_matches(name, names, n=1, cutoff=0.6)
    return f" (did you mean `{close[0]}`?)" if close else ""


class _TemplateErrors:
    """Turns Jinja2 errors into one line: template file and line, the problem, the recipient."""

    def __init__(self, folder: Path, contact: Contact | None, context: dict | None = None):
        self.folder = folder
        self.contact = contact
        self.context = context or {}

    def __enter__(self):
        return self

    def __exit__(self, kind, exc, tb):
        import jinja2

        if isinstance(exc, UnicodeDecodeError):
            raise UserError(f"{self.folder}: a template is not UTF-8 text ({exc.reason} at byte {exc.start}); "
                            "save the templates as UTF-8") from None
        if isinstance(exc, OSError) and not isinstance(exc, jinja2.TemplateError):
            raise UserError(f"{getattr(exc, 'filename', None) or self.folder}: cannot read the template: "
                            f"{exc.strerror or exc}") from None
        if exc is None or isinstance(exc, UserError) or not isinstance(exc, Exception):
            return False
        who = f", first failing for {_who(self.contact)}" if self.contact else ""
        if not isinstance(exc, jinja2.TemplateError):
            # An error raised by the template's own code (`member.district + 1` for a senator, say)
            # is the template's to fix; one raised elsewhere stays a bug of ours.
            where = self._template_line(tb)
            if where is None or not self._raised_in_template(tb):
                return False  # raised in our own code (a filter, say), even if a template called it
            raise UserError(f"{where}: the template failed: {type(exc).__name__}: {exc}{who}; "
                            "fix the template or the contact list") from None
        if isinstance(exc, jinja2.TemplateSyntaxError):
            where = f"{self.folder / (exc.name or '?')}, line {exc.lineno}"
            raise UserError(f"{where}: template syntax error: {exc.message}; fix the template") from None
        if isinstance(exc, jinja2.TemplateNotFound):
            raise UserError(f"{self.folder}: template {exc.name!r} not found (included or imported "
                            "by another template)") from None
        where = self._template_line(tb) or str(self.folder)
        detail = str(exc.message if hasattr(exc, "message") else exc)
        if isinstance(exc, jinja2.UndefinedError):
            detail = f"undefined variable: {detail}{_did_you_mean(detail, self.context)}"
        raise UserError(f"{where}: {detail}{who}; fix the template or the contact list") from None

    def _is_template(self, filename: str) -> bool:
        return filename.startswith(str(self.folder.resolve())) or filename.endswith(".j2")

    def _raised_in_template(self, tb) -> bool:
        while tb.tb_next is not None:
            tb = tb.tb_next
        return self._is_template(tb.tb_frame.f_code.co_filename)

    def _template_line(self, tb) -> str | None:
        found = None
        while tb is not None:
            filename = tb.tb_frame.f_code.co_filename
            if self._is_template(filename):
                found = f"{filename}, line {tb.tb_lineno}"
            tb = tb.tb_next
        return found
