"""Going live: transports from config, the sandbox check, recording letters, and one careful run.

`outreach send --live` and the scheduler both come through here, so a letter is
recorded, claimed and sent the same way whoever starts the run.
"""

from __future__ import annotations

import os
from collections import Counter
from dataclasses import dataclass, field
from typing import Callable

from outreach.errors import UserError
from outreach.ledger import FILTERED, LEFT_US, TO_SEND, Ledger, LetterRecord
from outreach.message import Message, message_for

SAMPLE_DOMAINS = ("example.org", "example.com", "example.net")


def transport_for(cfg, *, purpose: str = "going live"):
    """The transport named by [delivery] transport, with its secret from the environment."""
    kind = cfg.delivery.transport
    if kind == "outbox":
        raise UserError(f"{cfg.path}: [delivery] transport is \"outbox\", which only writes files; set it to "
                        f"\"sendgrid\" (or \"smtp\") for {purpose}")
    if kind == "sendgrid":
        from outreach.transports import SendGridTransport

        env = cfg.sendgrid.api_key_env
        key = os.environ.get(env, "").strip()
        if not key:
            raise UserError(f"${env} is not set: export your SendGrid API key in it ({cfg.path}: "
                            "[sendgrid] api_key_env names the variable); nothing was sent")
        return SendGridTransport(key, cfg.sendgrid.api_host, cfg.delivery.timeout_s)
    if kind == "smtp":
        from outreach.smtp import smtp_transport_for

        return smtp_transport_for(cfg)
    raise UserError(f"{cfg.path}: [delivery] transport {kind!r} is not known")


def check_sender(cfg) -> None:
    """Refuse to go live from the sample sender address."""
    domain = cfg.sender.email.rpartition("@")[2].lower()
    if domain in SAMPLE_DOMAINS or domain.endswith(tuple("." + d for d in SAMPLE_DOMAINS)):
        raise UserError(f"{cfg.path}: [sender] email {cfg.sender.email} is a sample address; put your own "
                        "verified sender there before going live; nothing was sent")


def message_factory(cfg, campaign: str) -> Callable[[LetterRecord], Message]:
    """Builds the message for a recorded letter from its archive: what is archived is what is sent."""
    sender = cfg.sender

    def make(record: LetterRecord) -> Message:
        return Message(letter_id=record.id, campaign=campaign, from_name=sender.name, from_email=sender.email,
                       to_name=record.name, to_email=record.email, subject=record.subject, text=record.text,
                       html=record.html, reply_to=sender.reply_to)
    return make


def sandbox_check(transport, message: Message, cfg) -> None:
    """SendGrid validates key, sender and payload without delivering; any refusal stops here."""
    if transport.name != "sendgrid":
        return
    result = transport.send(message, sandbox=True)
    env = cfg.sendgrid.api_key_env
    if result.outcome == "accepted":
        return
    if result.outcome == "unauthorized":
        raise UserError(f"SendGrid refused the API key in ${env} ({result.error}); check the key; nothing was sent")
    if result.status == 403:
        raise UserError(f"SendGrid refused the sandbox check ({result.error}): the key needs the Mail Send "
                        f"permission and [sender] email {cfg.sender.email} must be a verified sender; nothing was sent")
    if result.outcome == "failed":
        raise UserError(f"SendGrid rejected the first letter in the sandbox check ({result.error}); nothing was sent")
    raise UserError(f"the sandbox check could not complete ({result.error or result.outcome}); "
                    f"check [sendgrid] api_host {cfg.sendgrid.api_host} and the network; nothing was sent")


@dataclass
class LivePlan:
    """What a live run will do, shown before the confirmation."""

    campaign: str
    campaign_id: int
    recipients: int
    new: list                      # rendered letters not yet in the ledger
    existing: Counter              # status -> count, for recipients already in the ledger
    due_existing: int              # already recorded and still to send (pending, retry_wait)
    to_send: int
    orphans: int = 0
    skipped: list[str] = field(default_factory=list)
    filtered: int = 0              # recorded letters to skip: their recipients left the audience
    changes: list = field(default_factory=list)   # Ledger.settlement, to apply once confirmed
    first: object = None           # the first letter this run sends (rendered now): for the sandbox check


def settlement(ledger: Ledger, campaign_id: int, plan) -> list:
    """Recorded letters not yet sent, held against today's audience and suppression list: the
    changes that make sure nobody removed from either gets a letter recorded earlier (read only)."""
    from outreach.suppressions import suppressed

    return ledger.settlement(campaign_id, {c.key for c in plan.recipients}, suppressed(ledger))


def plan_live(ledger: Ledger, plan, letters: list, limit: int | None) -> LivePlan:
    campaign_id = ledger.campaign_id(plan.name)
    orphans = ledger.orphans_to_unknown(campaign_id)
    changes = settlement(ledger, campaign_id, plan)  # carried out only once the operator confirms
    known = ledger.known(campaign_id)
    for c in changes:
        known[c.email_key] = (c.letter_id, c.new)
    filtered = sum(1 for c in changes if c.reason == FILTERED)
    new, existing = [], Counter()
    first = None
    for letter in letters:
        entry = known.get(letter.contact.key)
        if entry is None:
            new.append(letter)
        else:
            existing[entry[1]] += 1
        if first is None and (entry is None or entry[1] in TO_SEND):
            first = letter
    due_existing = sum(1 for _, status in known.values() if status in TO_SEND)
    to_send = len(new) + due_existing
    if limit is not None:
        to_send = min(to_send, limit)
    return LivePlan(plan.name, campaign_id, len(letters), new, existing, due_existing, to_send, orphans,
                    plan.skipped_lines(), filtered=filtered, first=first, changes=changes)


def describe(live: LivePlan, cfg, transport) -> list[str]:
    """The lines of the confirmation: who, how many, how fast, through what, from whom."""
    d = cfg.delivery
    already = ", ".join(f"{n} {s}" for s, n in sorted(live.existing.items())) or "none"
    sent_before = sum(n for s, n in live.existing.items() if s in LEFT_US)
    minutes = live.to_send / d.rate_per_minute
    where = cfg.sendgrid.api_host if transport.name == "sendgrid" else getattr(transport, "where", transport.name)
    lines = [
        f"Campaign {live.campaign}: LIVE send via {transport.name} ({where})",
        f"  from: {cfg.sender.name} <{cfg.sender.email}>" + (f", replies to {cfg.sender.reply_to}"
                                                              if cfg.sender.reply_to else ""),
        f"  recipients in the audience: {live.recipients}",
        f"  already in the ledger: {sum(live.existing.values())} ({already}); {sent_before} of them sent before "
        "and never sent again",
        f"  new: {len(live.new)}; recorded but not yet sent: {live.due_existing}",
        f"  this run sends: {live.to_send} letters, at most {d.rate_per_minute:g} a minute with {d.concurrency} "
        f"at once (about {_duration(minutes)})",
    ]
    if live.skipped:
        lines.append(f"  skipped: {len(live.skipped)}")
        lines += [f"    {line}" for line in live.skipped[:10]]
        if len(live.skipped) > 10:
            lines.append(f"    ... and {len(live.skipped) - 10} more (`outreach contacts check`, `outreach "
                         "suppressions list`)")
    if live.filtered:
        lines.append(f"  left out: {live.filtered} letters recorded earlier whose recipients are no longer in the "
                     "audience or the contact list (now skipped)")
    return lines


def _duration(minutes: float) -> str:
    if minutes < 1:
        return f"{max(1, round(minutes * 60))} s"
    if minutes < 90:
        return f"{round(minutes)} min"
    return f"{minutes / 60:.1f} h"


def send_tests(transport, letters: list, cfg, campaign: str, address: str) -> list[tuple[str, object]]:
    """Each letter to `address` instead of its recipient, subject marked [TEST]; nothing recorded."""
    out = []
    for letter in letters:
        message = message_for(letter, cfg.sender, campaign).as_test_to(address)
        out.append((letter, transport.send(message)))
    return out
