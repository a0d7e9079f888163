"""Transports: how a letter leaves. One small interface, chosen by name here and nowhere else.

A transport knows nothing of campaigns or ledgers. It has:

- `send(message) -> SendResult`, which never raises for what the service answers;
- `close(complete=True)`: the run is over (`complete=False`: it was cut short,
  and a transport that stages its output, the outbox, throws it away);
- `name` (recorded with each attempt), `where` (shown before a live run), and
  `paced` (True: a service, sent at the configured rate and concurrency;
  False: written here, one after another, as fast as the machine goes);
- optionally `preflight(message)`, which raises UserError if the service would
  refuse the run (SendGrid's sandbox mode), before anything is recorded.

What an answer means, in `SendResult.outcome`:

- accepted:     the service took the message (SendGrid's 202 is not delivery);
- throttled:    refused for rate (429); `reset_at` says when to try again;
- retry:        never left or refused for a passing reason (5xx, refused connection, connect timeout);
- failed:       refused for good (400, 403, 413, ...), with the service's own reason;
- unauthorized: the credentials were refused (401): stop everything;
- unknown:      the request left and no answer came (read timeout, cut connection): it may
                have been accepted, so it must never be resent blindly.

Adding a transport is one module here (its class, `read_settings` for its
config table, `from_config`, `secret_variables`, and DELIVERS) and one line in
TRANSPORTS.
"""

from __future__ import annotations

from dataclasses import dataclass
from importlib import import_module
from typing import Protocol

from outreach.errors import UserError
from outreach.message import Message

OUTCOMES = ("accepted", "throttled", "retry", "failed", "unauthorized", "unknown")

# name -> module. `[delivery] transport` names one; each module may read a config table of its name.
TRANSPORTS = {
    "outbox": "outreach.transports.outbox",
    "sendgrid": "outreach.transports.sendgrid",
    "smtp": "outreach.transports.smtp",
}
DRY_RUN = "outbox"   # what a dry run writes with, whatever the config says


@dataclass(frozen=True)
class SendResult:
    outcome: str
    status: int | None = None
    message_id: str | None = None
    error: str | None = None
    reset_at: float | None = None   # throttled: epoch seconds when the limit resets


class Transport(Protocol):
    name: str
    where: str
    paced: bool

    def send(self, message: Message) -> SendResult: ...

    def close(self, complete: bool = True) -> None: ...


class Scrubber:
    """Removes a secret from any text before it is shown, logged or stored: the whole value, and
    anything that starts as it does (a key cut short, or one line of a key pasted with a break)."""

    PREFIX = 8   # characters of a secret that already say too much

    def __init__(self, *secrets: str | None):
        import re

        parts = {p for s in secrets if s for p in [s, *s.split()] if len(p) >= self.PREFIX}
        # Longest first, so a whole value goes before its parts; each also by its prefix.
        self._patterns = [re.compile(re.escape(p[:self.PREFIX]) + r"\S*") for p in sorted(parts, key=len, reverse=True)]
        self._whole = sorted((s for s in secrets if s and len(s) >= 4), key=len, reverse=True)

    def __call__(self, text: str | None) -> str | None:
        if text is None:
            return None
        for s in self._whole:
            text = text.replace(s, "***")
        for pattern in self._patterns:
            text = pattern.sub("***", text)
        return text


def usable_secret(env: str, value: str, what: str, token: bool = True) -> str:
    """The secret from $env, stripped; refused (one line, never the value) if it holds what it never
    holds: a line break or a control character (a bad paste); a token, also a space or non-ASCII
    (and is stripped; a password is taken as it is)."""
    value = value.strip() if token else value
    if value and not (value.isprintable() and (not token or (value.isascii() and " " not in value))):
        raise UserError(f"${env} holds a line break or another character {what} never has "
                        f"(a bad paste?): export it again; nothing was sent")
    return value


def module(name: str):
    return import_module(TRANSPORTS[name])


def read_settings(table_of) -> dict:
    """Each transport's settings from its config table (`table_of(name)` gives the table reader)."""
    return {name: module(name).read_settings(table_of) for name in TRANSPORTS}


def open_transport(cfg, *, purpose: str = "going live"):
    """The transport that delivers, named by [delivery] transport, its secrets from the environment."""
    name = cfg.delivery.transport
    found = module(name)
    if not found.DELIVERS:
        delivering = ", ".join(f'"{n}"' for n in TRANSPORTS if module(n).DELIVERS)
        raise UserError(f"{cfg.path}: [delivery] transport is \"{name}\", which only writes files; set it to "
                        f"{delivering} for {purpose}")
    return found.from_config(cfg)


def secret_variables(cfg) -> list[str]:
    """The environment variables the configured transport reads its secrets from (never their values)."""
    return module(cfg.delivery.transport).secret_variables(cfg)


def open_dry_run(cfg, campaign: str):
    """The transport of a dry run: the outbox, in a new folder of the campaign's."""
    return module(DRY_RUN).from_config(cfg, campaign=campaign)


def preflight(transport, message: Message) -> None:
    """The transport's own check before a live run, if it has one (raises UserError)."""
    check = getattr(transport, "preflight", None)
    if check is not None:
        check(message)
