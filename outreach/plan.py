"""What a run of a campaign would do, worked out without writing anything.

A plan reads the contact list, the templates, the audience filters and what
the ledger already holds, and says, in the campaign's order (the contact
list's): who is still to send, who already has a letter (and in which state),
who is left out and why, and which recorded letters the run would move
(`changes`: a recipient who left the audience, was suppressed, or came back).
The run carries those out under its lock; planning writes nothing.
"""

from __future__ import annotations

import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import NamedTuple

from outreach import states, terms
from outreach.audience import Selection, select
from outreach.contacts import Contact, ContactList, read_contacts
from outreach.errors import UserError
from outreach.letters import TemplateSet, letter_id


class Change(NamedTuple):
    """One recorded letter's move before a send: `old` -> `new` state, with the reason."""

    letter_id: str
    email_key: str
    old: str
    new: str
    reason: str


@dataclass
class Plan:
    name: str
    contacts_path: Path
    contact_list: ContactList
    selection: Selection
    templates: TemplateSet
    audience: list[Contact]                 # in the campaign's order, left-out recipients included
    campaign_id: int | None = None          # None: nothing of it in the ledger yet
    known: dict = field(default_factory=dict)                # email_key -> the recorded letter (ledger.Known)
    left_out: list[tuple[Contact, str]] = field(default_factory=list)   # (recipient, the skipped letter's reason)
    changes: list[Change] = field(default_factory=list)
    to_send: list[Contact] = field(default_factory=list)     # in order: no letter yet, or one still to send
    waiting: list[Contact] = field(default_factory=list)     # recorded, waiting to retry later
    already: Counter = field(default_factory=Counter)        # state -> recipients whose letter is past sending
    orphans: int = 0                        # letters left `sending` by a run that is gone
    not_due: int = 0                        # follow-ups: recipients of the first campaign not (yet) in the wanted state
    term_ended: int = 0                     # recipients left out: their term is over (a new Congress)

    @property
    def new(self) -> int:
        """Recipients still to send who have no letter in the ledger yet."""
        return sum(1 for c in self.to_send if c.key not in self.known)

    @property
    def filtered(self) -> int:
        """Recorded letters the run will skip: their recipient left the audience or the contact list."""
        return sum(1 for c in self.changes if c.reason == states.FILTERED)

    def skipped_lines(self) -> list[str]:
        """One line per row or recipient left out, with the reason (for summaries)."""
        out = [f"line {p.line}: {p.column}: {p.reason}" for p in self.contact_list.problems]
        out += [f"line {c.line}: {c.email}: excluded by the campaign's audience" for c in self.selection.excluded]
        out += [f"line {c.line}: {c.email}: {shown_reason(reason)}"
                + (": never written to again" if reason.startswith(states.SUPPRESSED_PREFIX) else "")
                for c, reason in self.left_out]
        return out

    def skipped_rows(self) -> int:
        """How many rows or recipients skipped_lines() is about (a row may have several problems)."""
        return len({p.line for p in self.contact_list.problems}) + len(self.selection.excluded) + len(self.left_out)

    def find(self, who: str) -> Contact:
        """The recipient with bioguide id or email `who`, from this campaign's audience."""
        key = who.strip()

        def match(c: Contact) -> bool:
            return key.upper() == c.bioguide_id or key.lower() == c.key

        left_out = dict((c.key, reason) for c, reason in self.left_out)
        for c in self.audience:
            if match(c):
                if c.key in left_out and left_out[c.key].startswith(states.SUPPRESSED_PREFIX):
                    raise UserError(f"{who}: {shown_reason(left_out[c.key])}; `outreach suppressions remove "
                                    f"{c.email}` if that was a mistake")
                if c.key in left_out:
                    raise UserError(f"{who}: {left_out[c.key]}")
                return c
        for c in self.contact_list.contacts:
            if match(c):
                raise UserError(f"{who}: in {self.contacts_path} (line {c.line}) but not in the audience "
                                f"of campaign {self.name!r}")
        line = self.contact_list.rejected.get(key.upper()) or self.contact_list.rejected.get(key.lower())
        if line is not None:
            why = "; ".join(f"{p.column}: {p.reason}" for p in self.contact_list.problems if p.line == line)
            raise UserError(f"{who}: line {line} of {self.contacts_path} was rejected by the contact check "
                            f"({why}); fix that row (`outreach contacts check {self.contacts_path}`)")
        raise UserError(f"{who}: no recipient with that bioguide id or email in {self.contacts_path}")

    def choose(self, limit: int | None = None, to: tuple[str, ...] = (), among: list[Contact] | None = None) \
            -> list[Contact]:
        """The recipients of a run: those named by `to`, else the first `limit` still to send (or of
        `among`), in the campaign's order: the same for a preview, a dry run and a live run."""
        if to:
            return [self.find(who) for who in to]
        pool = self.to_send if among is None else among
        return pool[:limit] if limit is not None else list(pool)

    def letter_of(self, contact: Contact):
        """The recorded letter of a recipient (after the planned changes), or None."""
        return self.known.get(contact.key)


def plan_campaign(cfg, name: str | None, contacts: Path | None = None, ledger=None,
                  now: float | None = None, terms_at: float | None = None) -> Plan:
    """What a run of campaign `name` would do; `contacts` overrides the configured list.

    Members whose term has ended at `terms_at` (default: outreach.terms.now()) are
    left out. Without a ledger (none yet), everyone else in the audience is still
    to send. With one, suppressed addresses are left out too, recipients who
    already have a letter are counted by state, and a follow-up keeps only the
    first campaign's recipients whose letter is in the wanted state for long enough.
    """
    now = time.time() if now is None else now
    terms_at = terms.now() if terms_at is None else terms_at
    name, campaign = cfg.campaign(name)
    path = contacts if contacts is not None else cfg.resolve(campaign.contacts)
    contact_list = read_contacts(path)
    if not contact_list.contacts:
        raise UserError(f"{path}: no valid row; run `outreach contacts check {path}` to see why")
    templates = TemplateSet(cfg.resolve(campaign.templates), cfg.sender, name, campaign.subject)
    selection = select(contact_list.contacts, campaign.audience)
    plan = Plan(name, path, contact_list, selection, templates, list(selection.recipients))
    replied: set[str] = set()
    if campaign.follow_up_of is not None:
        wanted, replied = _follow_up_audience(ledger, campaign, now, cfg)
        plan.not_due = sum(1 for c in plan.audience if c.key not in wanted and c.key not in replied)
        plan.audience = [c for c in plan.audience if c.key in wanted or c.key in replied]
    # Who gets no letter, and why (the first reason that holds).
    held = {c.key: terms.term_ended_reason(c.term_end) for c in plan.audience if terms.term_over(c.term_end, terms_at)}
    plan.term_ended = len(held)
    held.update((key, states.STOPPED_ON_REPLY) for key in replied)
    if ledger is not None:
        held.update((key, states.SUPPRESSED_PREFIX + reason) for key, reason in ledger.suppressions.reasons().items())
        plan.campaign_id = ledger.campaigns.id(name, create=False)
        plan.known = ledger.letters.known(plan.campaign_id)
    plan.changes = settle(plan.known, {c.key for c in plan.audience}, held)
    for c in plan.changes:
        plan.known[c.email_key] = plan.known[c.email_key]._replace(status=c.new, reason=c.reason)
    plan.orphans = sum(1 for k in plan.known.values() if k.status in states.IN_FLIGHT)
    for contact in plan.audience:
        entry = plan.known.get(contact.key)
        if contact.key in held:
            plan.left_out.append((contact, held[contact.key]))
        elif entry is None or entry.status == "pending":
            plan.to_send.append(contact)
        elif entry.status == "retry_wait":
            (plan.to_send if (entry.next_attempt_at or 0) <= now else plan.waiting).append(contact)
        else:
            # A letter left `sending` by a run that is gone becomes unknown: never sent again.
            plan.already["unknown" if entry.status in states.IN_FLIGHT else entry.status] += 1
    return plan


def settle(known: dict, audience: set[str], held: dict[str, str]) -> list[Change]:
    """Recorded letters not yet sent, held against today's audience and what holds recipients back.

    `held`: email_key -> why that recipient gets no letter (suppressed, term ended).
    Decided once per letter: a held recipient's letter is `skipped` with that reason;
    a recipient no longer in the audience (or the contact list) is `skipped` as
    FILTERED; a letter the run skipped whose recipient is back and not held waits
    again (`retry_wait` if it had a retry time, else `pending`).
    """
    changes = []
    for key, k in known.items():
        if k.status not in states.TO_SEND and k.status != "skipped":
            continue
        was_skipped = k.status == "skipped"
        if was_skipped and not states.skipped_by_run(k.reason):
            continue  # skipped for a reason this does not decide
        if key in held:
            status, reason = "skipped", held[key]
        elif key not in audience:
            status, reason = "skipped", states.FILTERED
        elif was_skipped:
            status = "retry_wait" if k.next_attempt_at is not None else "pending"
            reason = {states.FILTERED: "back in the audience"}.get(k.reason) or (
                "term renewed" if k.reason.startswith(states.TERM_ENDED_PREFIX) else "suppression removed")
        else:
            continue
        if (status, reason) != (k.status, k.reason):
            changes.append(Change(k.id, key, k.status, status, reason))
    return changes


def render_every_letter(cfg, name: str) -> Plan:
    """The preflight `config check` runs: every letter campaign `name` could send, rendered once.

    Its whole audience, follow-ups included, without a ledger: role-specific paragraphs
    show their errors only for some offices, so every recipient's letter is rendered.
    A template or contact problem raises UserError naming the file, line and first
    recipient it fails for.
    """
    plan = plan_campaign(cfg, name)
    render = plan.templates.render
    for contact in plan.selection.recipients:
        render(contact)
    return plan


def _follow_up_audience(ledger, campaign, now: float, cfg) -> tuple[set[str], set[str]]:
    """(wanted, replied): recipients (email keys) of the first campaign whose letter is in the
    wanted state for `after_days` days; and those who replied to it or to any of its follow-ups,
    whom no follow-up writes to again (stop on reply: the recipient is the unit)."""
    if ledger is None:
        return set(), set()
    first = ledger.campaigns.id(campaign.follow_up_of, create=False)
    if first is None:
        return set(), set()
    wanted = ledger.letters.in_states(first, states.FOLLOW_UP[campaign.audience.status],
                                      now - campaign.after_days * 86400)
    family = [campaign.follow_up_of] + [n for n, c in cfg.campaigns.items() if c.follow_up_of == campaign.follow_up_of]
    ids = [i for i in (ledger.campaigns.id(n, create=False) for n in family) if i is not None]
    replied = ledger.replies.repliers(ids)
    return wanted - replied, replied


def shown_reason(reason: str) -> str:
    """'suppressed: bounce' as a person reads it: 'suppressed (bounce)'."""
    if reason.startswith(states.SUPPRESSED_PREFIX):
        return f"suppressed ({reason[len(states.SUPPRESSED_PREFIX):]})"
    return reason


def skipped_ids(plan: Plan) -> dict[str, str]:
    """The letter id each left-out recipient's `skipped` letter gets."""
    return {c.key: letter_id(plan.name, c.email) for c, _ in plan.left_out}
