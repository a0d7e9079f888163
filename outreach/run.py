"""The campaign run: one way through for every command that sends, or shows what it would send.

    plan → preflight → choose → confirm → record → dispatch → summary

`outreach send` (a dry run, or --live), `send --retry-failed`, `send --test-to`,
follow-ups (campaigns like any other) and each scheduled tick go through
`CampaignRun.execute`; `preview` and a tick that is not live stop after
choosing. A dry run is the same run with the outbox transport and nothing
recorded, so it writes exactly the letters a live run would send, in the same
order.
"""

from __future__ import annotations

import queue
import random
import threading
import time
import uuid
from typing import Callable, Iterator

from outreach.dispatch import Dispatcher, DispatchSummary, NoRecord, Outgoing
from outreach.errors import UserError
from outreach.message import Message, message_for, replies_address
from outreach.plan import Plan, plan_campaign, skipped_ids
from outreach.progress import Quiet
from outreach.run_summary import (  # noqa: F401 - the run's vocabulary, used by its callers
    DRY_RUN, LIVE, PREVIEW, RETRY, TEST, Request, Summary, describe, still_sample,
)

SAMPLE_DOMAINS = ("example.org", "example.com", "example.net")
SAMPLE_SENDER = {"name": "Your Name", "organization": "Your Organization"}   # as config.toml ships
FIRST_CHUNK, CHUNK = 16, 64    # letters recorded before sending starts, then per transaction (a long
# transaction holds up every claim behind it: small ones cost the senders least)
RENDER_BATCH = 250             # a dry run's letters rendered before they are written


class CampaignRun:
    """One run of a campaign; `execute()` it (or `prepare()` to stop after choosing)."""

    def __init__(self, cfg, request: Request, *, ledger=None, transport=None,
                 clock: Callable[[], float] = time.time, rng: Callable[[], float] = random.random,
                 progress=None):
        self.cfg = cfg
        self.request = request
        self.ledger = ledger
        self.transport = transport
        self.clock = clock
        self.rng = rng
        self.progress = progress          # (total, label) -> a context manager with advance()
        self.stopped: str | None = None   # a stop asked for (a plain attribute: signal-safe)
        self._dispatcher: Dispatcher | None = None
        self._letters: dict = {}          # recipient key -> letter, rendered by the preflight

    @property
    def records(self) -> bool:
        """This run writes letters to the ledger (it sends for real)."""
        return self.request.mode == LIVE or (self.request.mode == RETRY and self.request.live)

    def stop(self, why: str = "interrupted") -> None:
        """Take no new letters; those in flight finish and are recorded. Safe in a signal handler."""
        self.stopped = self.stopped or why
        if self._dispatcher is not None:
            self._dispatcher.stop(why)

    # -- the run ---------------------------------------------------------------------------------

    def prepare(self) -> Summary:
        """Plan, preflight and choose; nothing is written or sent."""
        self._open_ledger(create=False)
        return self._prepare()

    def execute(self, confirm: Callable[[list[str]], bool] | None = None) -> Summary:
        """The whole run. `confirm(lines)` is asked before anything is recorded or sent (None: no question)."""
        mode = self.request.mode
        if mode == PREVIEW or (mode == RETRY and not self.request.live):
            return self.prepare()
        if mode == TEST:
            check_test_address(self.cfg, self.request.test_to)
        if self.records:
            check_sender(self.cfg)   # before anything else is asked of the user (a key, say)
        transport = self.transport or self._open_transport()
        complete, lock = False, None
        try:
            self._open_ledger(create=self.records)
            if self.records:
                lock = self.ledger.lock(f"send:{self._name()}", f"a send of campaign {self._name()}")
                lock.acquire()
            summary = self._prepare()
            summary.transport, summary.where = transport.name, transport.where
            if self.records and summary.plan.campaign_id is not None:
                summary.orphans = self.ledger.letters.orphans_to_unknown(summary.plan.campaign_id)
            if self.stopped:
                return self._finish(summary)
            if not summary.chosen:
                if self.records:  # nothing to send, but what the plan decided still holds
                    self._settle(summary)
                complete = True
                return self._finish(summary)
            if self.records:
                self._preflight(transport, summary)
                summary.asked = confirm is not None
                if confirm is not None and not confirm(describe(summary, self.cfg)):
                    return self._finish(summary)
            if self.stopped:
                return self._finish(summary)
            summary.confirmed = True
            outgoing = self._record(summary)
            summary.dispatched = self._dispatch(transport, outgoing, summary)
            complete = not summary.dispatched.stopped
            return self._finish(summary)
        finally:
            transport.close(complete=complete)
            if lock is not None:
                lock.release()

    # -- plan, preflight, choose -----------------------------------------------------------------

    def _prepare(self) -> Summary:
        r = self.request
        plan = plan_campaign(self.cfg, r.campaign, r.contacts, ledger=self.ledger, now=self.clock())
        summary = Summary(r, plan)
        if not self.records:   # a live run refuses a sample sender (check_sender); the others say so
            summary.sample_sender = sample_sender(self.cfg)
        if r.mode == RETRY:
            summary.chosen = self._retry_candidates(plan, summary)
            return summary
        default = 1 if r.mode in (PREVIEW, TEST) and not r.to else None
        # Test copies show the letter to whoever asks, sent or not: the audience, not what is left.
        among = [c for c in plan.audience if c.key not in dict(plan.left_out)] if r.mode == TEST else None
        summary.chosen = plan.choose(r.limit if r.limit is not None else default, r.to, among)
        # The preflight: every letter that may be sent is rendered before anything is sent, so
        # a template error in row 900 stops the run before row 1 goes. A dry run renders as it
        # writes instead (its folder is published only if every letter succeeded), and so
        # never holds 10,000 letters in memory.
        if r.mode != DRY_RUN:
            render = plan.templates.render
            self._letters = {c.key: render(c) for c in (plan.to_send if r.mode == LIVE else summary.chosen)}
            summary.letters = [self._letters[c.key] for c in summary.chosen]
        return summary

    def _retry_candidates(self, plan: Plan, summary: Summary) -> list:
        """Letters that never reached the office, in the campaign's order; those left out said why."""
        if plan.campaign_id is None:
            return []
        candidates, suppressed = self.ledger.letters.retry_candidates(plan.campaign_id)
        order = {c.key: i for i, c in enumerate(plan.audience)}
        for r in suppressed:
            summary.retry_left_out.append(f"{r.id[:12]}  {r.email:<40} the address is suppressed ({r.suppressed})")
        for r in candidates:
            if r.email_key not in order:
                summary.retry_left_out.append(f"{r.id[:12]}  {r.email:<40} no longer in the audience or the "
                                              "contact list")
        chosen = sorted((r for r in candidates if r.email_key in order), key=lambda r: order[r.email_key])
        return chosen[:self.request.limit] if self.request.limit is not None else chosen

    def _preflight(self, transport, summary: Summary) -> None:
        """The transport's own check (SendGrid's sandbox) with the first letter: nothing recorded if refused."""
        from outreach.transports import preflight

        first = next(iter(self._outgoing(summary, summary.chosen[:1])), None)
        if first is not None:
            preflight(transport, first.message)

    # -- record -------------------------------------------------------------------------------------

    def _record(self, summary: Summary) -> Iterator[Outgoing]:
        """The letters to send, each recorded before it is handed out (a live run; nothing otherwise).

        A live run records its chosen letters a chunk at a time, ahead of the dispatcher in a
        thread of its own, so sending starts while the rest is still being written; then the
        rest of the campaign's letters still to send (pending, for later runs)."""
        if not self.records:
            return self._dry(summary) if self.request.mode == DRY_RUN else iter(self._outgoing(summary, summary.chosen))
        cid = self._settle(summary)
        letters = self.ledger.letters
        if self.request.mode == RETRY:
            letters.requeue([r.id for r in summary.chosen])
            return iter(self._outgoing(summary, summary.chosen))
        return _Ahead(self._record_ahead(summary, cid))

    def _settle(self, summary: Summary) -> int:
        """What the plan decided for recorded letters (left the audience, suppressed, term ended or
        back), and a skipped letter for each recipient left out; returns the campaign's id."""
        plan = summary.plan
        cid = plan.campaign_id = plan.campaign_id or self.ledger.campaigns.id(plan.name)
        self.ledger.letters.settle(plan.changes)
        self.ledger.letters.record_skipped(cid, plan.left_out, skipped_ids(plan))
        return cid

    def _dry(self, summary: Summary) -> Iterator[Outgoing]:
        """A dry run's letters, rendered as they are written; then the rest still to send is
        rendered too (and not written), so a dry run with --limit checks what a live run would."""
        render = summary.plan.templates.render
        chosen = summary.chosen
        # Rendered a few hundred at a time, then written: alternating Jinja and file writes
        # letter by letter keeps evicting each other's working set from the CPU's caches.
        for start in range(0, len(chosen), RENDER_BATCH):
            batch = chosen[start:start + RENDER_BATCH]
            self._letters = {c.key: render(c) for c in batch}
            yield from self._outgoing(summary, batch)
        self._letters = {}
        for contact in summary.plan.to_send[len(summary.chosen):]:
            if self.stopped:
                return
            render(contact)

    def _record_ahead(self, summary: Summary, cid: int) -> Iterator[Outgoing]:
        plan, letters = summary.plan, self.ledger.letters
        template_hash = plan.templates.hash()
        chosen = summary.chosen
        start, size = 0, FIRST_CHUNK
        while start < len(chosen) and not self.stopped:
            chunk = chosen[start:start + size]
            letters.record(cid, [self._letters[c.key] for c in chunk], template_hash)
            yield from self._outgoing(summary, chunk)
            start, size = start + len(chunk), min(size * 2, CHUNK)
        rest = [self._letters[c.key] for c in plan.to_send[len(chosen):]]
        for i in range(0, len(rest), CHUNK):
            if self.stopped or (self._dispatcher is not None and self._dispatcher.summary.stopped):
                return  # recorded at the next run
            letters.record(cid, rest[i:i + CHUNK], template_hash)

    def _outgoing(self, summary: Summary, chosen: list) -> Iterator[Outgoing]:
        """What each chosen letter sends: the rendered letter, or, for a letter tried before,
        its archived message (what is archived is what goes out)."""
        plan, name, sender = summary.plan, summary.plan.name, self.cfg.sender
        replies = self.cfg.replies.address
        if self.request.mode == RETRY:
            records = self.ledger.letters.load([r.id for r in chosen])
            for r in chosen:
                if r.id in records:  # a letter without an archived message is never sent blind
                    yield Outgoing(r.id, archived_message(records[r.id], sender, name, replies=replies), 0)
            return
        tried = [c for c in chosen if (k := plan.letter_of(c)) is not None and (k.status != "pending" or k.attempts)]
        archive = self.ledger.letters.load([plan.letter_of(c).id for c in tried]) if tried else {}
        test_to = self.request.test_to if self.request.mode == TEST else None
        for contact in chosen:
            known = plan.letter_of(contact)
            letter = self._letters.get(contact.key) or plan.templates.render(contact)
            if known is not None and known.id in archive:
                message = archived_message(archive[known.id], sender, name, contact.bioguide_id, replies)
                attempts = known.attempts
            else:
                message = message_for(letter, sender, name, replies)
                attempts = known.attempts if known is not None else 0
            if test_to is not None:  # a test copy: to our own address, [TEST], nothing recorded
                yield Outgoing(letter.letter_id, message.as_test_to(test_to, sender.reply_to), 0)
            else:
                yield Outgoing(message.letter_id, message, attempts)

    # -- dispatch and summary ---------------------------------------------------------------------

    def _dispatch(self, transport, outgoing: Iterator[Outgoing], summary: Summary) -> DispatchSummary:
        d = self.cfg.delivery
        recorder = self.ledger.letters.sender(uuid.uuid4().hex) if self.records else NoRecord()
        total = len(summary.chosen)
        label = {DRY_RUN: "writing letters", TEST: "sending test copies"}.get(self.request.mode, "sending")
        by_id = {letter.letter_id: letter for letter in summary.letters}

        tests: dict[str, tuple] = {}   # each test copy's last answer (one refused, then accepted: accepted)
        with (self.progress(total, label) if self.progress else Quiet()) as bar:
            def done(item: Outgoing, status: str, result) -> None:
                if self.request.mode == TEST:
                    tests[item.letter_id] = (by_id[item.letter_id], result)
                if status != "retry_wait":  # a letter waiting to retry is not done yet
                    bar.advance()

            # Test copies go one after another, so they arrive in the order asked for.
            concurrency = 1 if self.request.mode == TEST else d.concurrency
            self._dispatcher = Dispatcher(transport, recorder, rate_per_minute=d.rate_per_minute,
                                          concurrency=concurrency, max_attempts=d.max_attempts, clock=self.clock,
                                          rng=self.rng, on_done=done)
            if self.stopped:
                self._dispatcher.stop(self.stopped)
            try:
                return self._dispatcher.run(outgoing)
            finally:
                summary.tests = list(tests.values())
                if isinstance(outgoing, _Ahead):
                    outgoing.close()

    def _finish(self, summary: Summary) -> Summary:
        summary.stopped = self.stopped
        if self.records and summary.plan.campaign_id is not None:
            summary.counts = self.ledger.letters.counts(summary.plan.campaign_id)
        return summary

    # -- opening what the run needs ------------------------------------------------------------------

    def _name(self) -> str:
        return self.cfg.campaign(self.request.campaign)[0]

    def _open_ledger(self, create: bool) -> None:
        if self.ledger is None and (create or not self.cfg.database_missing):
            from outreach.ledger import open_ledger

            self.ledger = open_ledger(self.cfg)

    def _open_transport(self):
        from outreach import transports

        if self.request.mode == DRY_RUN:
            return transports.open_dry_run(self.cfg, self._name())
        purpose = {TEST: "test sends"}.get(self.request.mode, "going live")
        return transports.open_transport(self.cfg, purpose=purpose)


def archived_message(record, sender, campaign: str, bioguide_id: str = "", replies: str | None = None) -> Message:
    """The message of a recorded letter, from its archive."""
    return Message(letter_id=record.id, campaign=campaign, from_name=sender.name, from_email=sender.email,
                   to_name=record.name, to_email=record.email, subject=record.subject, text=record.text,
                   html=record.html, reply_to=replies_address(replies, record.id) or sender.reply_to,
                   bioguide_id=bioguide_id)


def sample_sender(cfg) -> str | None:
    """What of [sender] is still the sample configuration's, in words ('name "Your Name" and ...'), or None."""
    sender, found = cfg.sender, []
    for key, value in (("name", sender.name), ("organization", sender.organization)):
        if value and " ".join(value.split()).lower() == SAMPLE_SENDER[key].lower():
            found.append(f'{key} "{value}"')
    domain = sender.email.rpartition("@")[2].lower()
    if domain in SAMPLE_DOMAINS or domain.endswith(tuple("." + d for d in SAMPLE_DOMAINS)):
        found.append(f"email {sender.email} (a sample address)")
    return (", ".join(found[:-1]) + " and " + found[-1] if len(found) > 1 else found[0]) if found else None


def check_sender(cfg) -> None:
    """Refuse to go live with a letter signed by a placeholder, or from the sample address."""
    sample = sample_sender(cfg)
    if sample:
        raise UserError(f"{cfg.path}: [sender] {sample} {still_sample(sample)}: put your own there before going "
                        "live; nothing was sent")


def check_test_address(cfg, address: str | None) -> None:
    """Test copies go only to the organisation's own addresses: never to an office by mistake."""
    allowed = {a.lower() for a in (cfg.sender.email, cfg.sender.reply_to, *cfg.sender.test_to) if a}
    if not address or address.lower() not in allowed:
        raise UserError(f"--test-to {address}: not one of your own addresses; test copies go to [sender] "
                        f"email, reply_to or test_to in {cfg.path}; nothing was sent")


class _Ahead:
    """Runs a generator in a thread of its own, a bounded queue ahead of whoever iterates it:
    the run records letters while the dispatcher sends those recorded already."""

    _END = object()

    def __init__(self, items: Iterator, depth: int = 1024):
        self._items = items
        self._queue: queue.Queue = queue.Queue(depth)
        self._closing = False
        self._thread = threading.Thread(target=self._fill, name="recorder", daemon=True)
        self._thread.start()

    def _fill(self) -> None:
        try:
            for item in self._items:
                if not self._put(item):
                    return
            self._put(self._END)
        except BaseException as e:  # noqa: BLE001 - raised where the letters are taken
            self._put(_Failed(e))

    def _put(self, item) -> bool:
        while not self._closing:
            try:
                self._queue.put(item, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def __iter__(self):
        return self

    def __next__(self):
        item = self._queue.get()
        if item is self._END:
            self._queue.put(item)  # every later call ends too
            raise StopIteration
        if isinstance(item, _Failed):
            self._queue.put(item)
            raise item.error
        return item

    def close(self) -> None:
        """Stop taking letters; wait for what is being recorded to be committed."""
        self._closing = True
        self._thread.join()


class _Failed:
    def __init__(self, error: BaseException):
        self.error = error
