"""SendGrid's events: checked, matched to letters, stored once, and turned into each letter's state.

The decisions are pure functions: `parse_events` (what is a well-formed event),
`dedupe_key`, `match_event` (which letter an event is about), `latest_send` and
`letter_state` (what a letter's events together mean), `suppression_for` (which
events put an address on the suppression list). outreach.ledger.event_store
runs them against the database.

State precedence (`letter_state`), computed from ALL the stored events of the
letter's latest send, so the order they arrive in does not matter:

1. spamreport      the recipient reported it as spam
2. unsubscribed    an `unsubscribe` (global: no event undoes it), or a `group_unsubscribe`
                   with no strictly later `group_resubscribe`
3. bounced         any `bounce`, type "bounce" or "blocked"; the reason reads "blocked: ..."
4. dropped         any `dropped`
5. the engagement chain, the highest reached: accepted (processed) < deferred < delivered
   < opened < clicked. Any other event still proves SendGrid took the letter: accepted.
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass
from operator import attrgetter
from typing import Any, Iterable, NamedTuple

from outreach import states
from outreach.errors import one_line

CHAIN = {"processed": 1, "deferred": 2, "delivered": 3, "open": 4, "click": 5}
CHAIN_STATES = ("accepted", "accepted", "deferred", "delivered", "opened", "clicked")
# An email-only match (a delayed bounce without our custom args) must not land on a letter
# accepted after the event happened; this allows for the two clocks disagreeing a little.
EMAIL_MATCH_SLACK_S = 300.0
MAX_PROBLEMS = 5
DETAIL_CHARS = 500
MAX_DEPTH = 400            # levels of nesting an event may have (SendGrid's have three or four)
FUTURE_SLACK_S = 86400.0   # an event dated further ahead than this is kept for review, not applied
# One encoder for every event (json.dumps with options builds a new one each call); sorted
# keys make the same event the same text, whatever order its fields came in.
_CANONICAL = json.JSONEncoder(ensure_ascii=False, separators=(",", ":"), sort_keys=True)


class EventError(ValueError):
    """A post or file that is not a JSON array of well-formed events; one line per problem."""

    def __init__(self, problems: list[str]):
        self.problems = problems
        super().__init__("; ".join(problems))


@dataclass(slots=True)
class Event:
    """One event as we store it."""

    event: str
    occurred_at: float
    email: str | None
    sg_event_id: str | None
    sg_message_id: str | None
    letter_id: str | None       # our custom arg
    test_of: str | None         # our custom arg on --test-to copies
    type: str | None
    detail: str | None
    dedupe_key: str
    raw: str


class SetAside(NamedTuple):
    """An event that cannot be used, kept for review instead of failing the events beside it."""

    reason: str
    raw: str


# -- reading events (pure) ---------------------------------------------------------------------

def parse_body(body: bytes | str) -> list[Event]:
    """An exported file: a JSON array of events, all well-formed; EventError says what is wrong."""
    return parse_events(_items(body))


def parse_post(body: bytes | str) -> tuple[list[Event], list[SetAside]]:
    """A webhook post: its usable events, and the others set aside with the reason. Only a body
    that is not a JSON array at all is refused (EventError): SendGrid drops a refused post's
    every event after a day of retries, so one bad event must not cost the rest."""
    events, aside = [], []
    for obj, raw in _items(body):
        try:
            events.append(parse_event(obj, raw))
        except EventError as e:
            aside.append(SetAside(e.problems[0], raw))
    return events, aside


def _items(body: bytes | str) -> list[tuple[Any, str]]:
    try:
        if isinstance(body, str):   # as bytes, so a surrogate character in it fails as it would from the network
            body = body.encode("utf-8", "surrogatepass")
        text = body.decode(json.detect_encoding(body))
        return _array_items(text.removeprefix("\ufeff"))
    except RecursionError:
        raise EventError(["the JSON is nested too deeply"]) from None
    except json.JSONDecodeError as e:
        raise EventError([f"not JSON (line {e.lineno}, column {e.colno}: {e.msg})"]) from None
    except UnicodeDecodeError as e:
        raise EventError([f"not JSON text: {e.reason} at byte {e.start}"]) from None


_WHITESPACE = re.compile(r"[ \t\n\r]*")
_DECODER = json.JSONDecoder()


def _array_items(text: str) -> list[tuple[Any, str]]:
    """Each element of a JSON array with its own text, so an event is stored exactly as it was sent."""
    i = _WHITESPACE.match(text).end()
    if not text.startswith("[", i):
        raise EventError([f"expected a JSON array of events, got {_json_kind(json.loads(text))}"])
    items = []
    i = _WHITESPACE.match(text, i + 1).end()
    if text.startswith("]", i):
        i += 1
    else:
        while True:
            obj, end = _DECODER.raw_decode(text, i)
            items.append((obj, text[i:end]))
            i = _WHITESPACE.match(text, end).end()
            if text.startswith(",", i):
                i = _WHITESPACE.match(text, i + 1).end()
            elif text.startswith("]", i):
                i += 1
                break
            else:
                raise json.JSONDecodeError("Expecting ',' delimiter", text, i)
    if _WHITESPACE.match(text, i).end() != len(text):
        raise json.JSONDecodeError("Extra data", text, i)
    return items


def parse_events(items: list) -> list[Event]:
    """Check every event (decoded objects, or (object, its JSON text) pairs); all or nothing (an
    exported file is fixed and ingested again)."""
    pairs = [item if isinstance(item, tuple) else (item, None) for item in items]
    events, problems = [], []
    for i, (obj, raw) in enumerate(pairs):
        try:
            events.append(parse_event(obj, raw))
        except EventError as e:
            problems.append(f"event {i}: {e.problems[0]}")
            if len(problems) == MAX_PROBLEMS:
                break
    if problems:
        bad = sum(1 for obj, raw in pairs if _unusable(obj, raw))
        if bad > len(problems):
            problems.append(f"and {bad - len(problems)} more malformed events")
        raise EventError(problems)
    return events


def parse_event(obj: Any, raw: str | None = None) -> Event:
    """One event object (and its JSON text, if known), checked field by field; EventError names the bad field."""
    problem = _problem(obj)
    if problem:
        raise EventError([problem])
    # Each level opens a bracket: an event's own text with few of them needs no walk (the usual case).
    if (raw is None or raw.count("[") + raw.count("{") > MAX_DEPTH) and _deeper_than(obj, MAX_DEPTH):
        raise EventError([f"nested more than {MAX_DEPTH} levels deep"])
    name = obj["event"]
    detail = None
    if name in ("bounce", "dropped", "deferred"):
        detail = obj.get("reason") or obj.get("response")
    elif name == "click":
        detail = obj.get("url")
    elif name in ("group_unsubscribe", "group_resubscribe") and obj.get("asm_group_id") is not None:
        detail = f"group {obj['asm_group_id']}"
    try:
        event = Event(
            event=name, occurred_at=float(obj["timestamp"]), email=obj.get("email"),
            sg_event_id=obj.get("sg_event_id"), sg_message_id=obj.get("sg_message_id"),
            letter_id=obj.get("letter_id"), test_of=obj.get("test_of"),
            type=(obj.get("type") or "bounce") if name == "bounce" else None,
            detail=one_line(str(detail))[:DETAIL_CHARS] if detail not in (None, "") else None,
            dedupe_key=dedupe_key(obj), raw=raw if raw is not None else _CANONICAL.encode(obj))
        # What is stored must be text a database takes: a lone surrogate ("\ud800") is not. Text
        # decoded from bytes holds none, so only an escape in the event's own text can make one.
        # Nor is a NUL in PostgreSQL's text; both come only from a \u escape.
        if raw is None or ("\\u" in raw and _UNSTORABLE_ESCAPE.search(raw)):
            for value in (event.event, event.email, event.sg_event_id, event.sg_message_id, event.letter_id,
                          event.test_of, event.type, event.detail, event.raw):
                if value is not None:
                    value.encode("utf-8")
                    if "\x00" in value:
                        raise EventError(["holds a NUL character (\\u0000), which no text column stores"])
    except UnicodeEncodeError:
        raise EventError(["holds text that is not valid Unicode (a lone surrogate)"]) from None
    return event


_UNSTORABLE_ESCAPE = re.compile(r"\\u(?:[dD][89a-fA-F]|0000)")   # a surrogate or NUL, escaped


def _deeper_than(obj: Any, limit: int) -> bool:
    """Whether any value sits more than `limit` levels down (walked without recursion)."""
    stack = [(obj, 1)]
    while stack:
        value, depth = stack.pop()
        if depth > limit:
            return True
        if isinstance(value, dict):
            stack.extend((v, depth + 1) for v in value.values())
        elif isinstance(value, list):
            stack.extend((v, depth + 1) for v in value)
    return False


def _unusable(obj: Any, raw: str | None) -> bool:
    try:
        parse_event(obj, raw)
    except EventError:
        return True
    return False


def _problem(obj: Any) -> str | None:
    if not isinstance(obj, dict):
        return f"expected an object, got {_json_kind(obj)}"
    name = obj.get("event")
    if not isinstance(name, str) or not 0 < len(name) <= 32:
        return "`event` is missing or not a short string"
    t = obj.get("timestamp")
    if isinstance(t, bool) or not isinstance(t, (int, float)):
        return "`timestamp` is missing or not a number"
    if not 0 < t < 1e11:
        return f"`timestamp` {t!r} is not UNIX seconds"
    for key, longest in (("sg_event_id", 100), ("sg_message_id", 255), ("email", 320), ("letter_id", 64),
                         ("test_of", 64)):
        value = obj.get(key)
        if value is not None and (not isinstance(value, str) or len(value) > longest):
            return f"`{key}` should be a string of at most {longest} characters"
    if "type" in obj and obj["type"] is not None and not isinstance(obj["type"], str):
        return "`type` should be a string"
    return None


def _json_kind(value: Any) -> str:
    names = {dict: "an object", list: "an array", str: "a string", bool: "true/false", type(None): "null"}
    return names.get(type(value), "a number")


def dedupe_key(obj: dict) -> str:
    """SendGrid's sg_event_id; without one, a hash of the whole event (a retried post repeats it exactly)."""
    if obj.get("sg_event_id"):
        return "sg:" + obj["sg_event_id"]
    # Sorted keys: the same event exported from SendGrid or posted by it gives the same key.
    return "h:" + hashlib.sha256(_CANONICAL.encode(obj).encode()).hexdigest()


def message_id_prefix(sg_message_id: str | None) -> str | None:
    """The X-Message-Id our send got back: sg_message_id up to its first '.'."""
    if not sg_message_id:
        return None
    return sg_message_id.split(".", 1)[0] or None


# -- matching (pure) ---------------------------------------------------------------------------------

class Candidate(NamedTuple):
    """A letter as matching sees it."""

    id: str
    campaign_id: int
    email_key: str
    status: str
    accepted_at: float | None
    provider_message_id: str | None
    created_at: float = 0.0       # when the letter was first recorded: no event of it can be older


def date_problem(ev: Event, letter: Candidate | None, received_at: float) -> str | None:
    """Why an event's date cannot be applied to its letter (kept for review instead), or None."""
    if letter is None:
        return None  # matched no letter: it changes nothing, and is listed as unmatched anyway
    if ev.occurred_at < letter.created_at - EMAIL_MATCH_SLACK_S:
        return "dated before its letter was recorded"
    if ev.occurred_at > received_at + FUTURE_SLACK_S:
        return "dated more than a day after it was received"
    return None


def match_event(ev: Event, by_id: dict[str, Candidate], by_message: dict[str, list[Candidate]],
                by_email: dict[str, list[Candidate]]) -> tuple[Candidate | None, str | None]:
    """(letter, how) for one event: by letter_id, else sg_message_id, else email; (None, None) if unmatched.

    A --test-to copy matches no letter: (None, "test").
    """
    if ev.test_of is not None:
        return None, "test"
    if ev.letter_id and ev.letter_id in by_id:
        return by_id[ev.letter_id], "letter_id"
    email = ev.email.strip().lower() if ev.email else None
    prefix = message_id_prefix(ev.sg_message_id)
    if prefix:
        found = by_message.get(prefix, [])
        # Message ids are not unique (mock servers repeat them): the address decides.
        if email is not None:
            found = [c for c in found if c.email_key == email]
        if found:
            return _latest(found), "message_id"
    if email is not None:
        found = [c for c in by_email.get(email, []) if c.status in states.SENT
                 and (c.accepted_at is None or c.accepted_at <= ev.occurred_at + EMAIL_MATCH_SLACK_S)]
        if found:
            return _latest(found), "email"
    return None, None


def _latest(found: list[Candidate]) -> Candidate:
    return max(found, key=lambda c: (c.accepted_at or 0.0, c.id))


# -- what the events mean (pure) ---------------------------------------------------------------------

_WHEN = attrgetter("occurred_at", "seq")


class Seen(NamedTuple):
    """A stored event as the state rules read it; `seq` orders events with the same timestamp."""

    event: str
    occurred_at: float
    type: str | None = None
    detail: str | None = None
    seq: int = 0
    message_id: str | None = None   # the X-Message-Id of the send it is about, when the event says


def letter_state(events: Iterable[Seen]) -> tuple[str, str | None]:
    """(state, reason) from all of a letter's events, whatever order they came in (see the module doc)."""
    rank = 0
    last: dict[str, Seen] = {}
    unsub_at = group_unsub_at = resub_at = None
    for e in sorted(events, key=_WHEN):
        last[e.event] = e
        rank = max(rank, CHAIN.get(e.event, 0))
        if e.event == "unsubscribe":
            unsub_at = e.occurred_at
        elif e.event == "group_unsubscribe":
            group_unsub_at = e.occurred_at
        elif e.event == "group_resubscribe":
            resub_at = e.occurred_at
    if "spamreport" in last:
        return "spamreport", "the recipient reported it as spam"
    if unsub_at is not None:
        return "unsubscribed", "unsubscribed from all mail"
    # A resubscribe at the same second as the unsubscribe does not undo it: the safe side.
    if group_unsub_at is not None and (resub_at is None or resub_at <= group_unsub_at):
        g = last["group_unsubscribe"]
        return "unsubscribed", "unsubscribed" + (f" from {g.detail}" if g.detail else " from a group")
    if "bounce" in last:
        b = last["bounce"]
        return "bounced", f"{b.type or 'bounce'}: {b.detail}" if b.detail else (b.type or "bounce")
    if "dropped" in last:
        d = last["dropped"]
        return "dropped", f"dropped: {d.detail}" if d.detail else "dropped"
    state = CHAIN_STATES[rank]
    if state == "deferred":
        d = last["deferred"]
        return state, f"deferred: {d.detail}" if d.detail else "deferred"
    return state, None


def latest_send(events: list[Seen], message_id: str | None) -> list[Seen]:
    """The events about the letter's latest send (X-Message-Id `message_id`), and those that do not say.

    A letter sent again (--retry-failed after a blocked bounce) gets a new
    X-Message-Id: the earlier send's events no longer decide its state.
    """
    if not message_id:
        return list(events)
    return [e for e in events if not e.message_id or e.message_id == message_id]


def next_state(current: str, events: list[Seen]) -> tuple[str, str | None] | None:
    """The letter's state after its events, or None to leave it as it is.

    Any event proves SendGrid took the letter, so a letter we thought pending,
    sending, retry_wait, failed or unknown becomes accepted (or later): it is
    never sent again. A skipped letter was never sent by us and stays skipped.
    """
    if not events or not states.by_events(current):
        return None
    return letter_state(events)


# Events that suppress an address, and the reason recorded for each.
SUPPRESSING_EVENTS = {"spamreport": "spamreport", "unsubscribe": "unsubscribe",
                      "group_unsubscribe": "unsubscribe"}


def suppression_for(event: str, bounce_type: str | None = None) -> str | None:
    """The suppression an event causes, if any: hard bounces, spam reports, unsubscribes.

    A bounce of type `blocked` is the receiving server refusing for now (often a
    policy or reputation block), not a dead address: it is retried, not suppressed.
    """
    if event == "bounce":
        return "bounce" if (bounce_type or "bounce") != "blocked" else None
    return SUPPRESSING_EVENTS.get(event)
