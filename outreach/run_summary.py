"""What a campaign run did, or would do: the summary the CLI prints and the scheduler logs, its
exit code, and the lines of the confirmation asked before a live run."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from outreach import states
from outreach.dispatch import DispatchSummary
from outreach.errors import EXIT_ATTENTION, EXIT_BAD_INPUT, EXIT_INTERRUPTED, EXIT_OK
from outreach.plan import Plan
from outreach.terms import REFRESH_HINT
from outreach.text import count

PREVIEW, DRY_RUN, LIVE, TEST, RETRY = "preview", "dry run", "live", "test", "retry"


def still_sample(sample: str) -> str:
    """The verb for what [sender] still holds of the sample configuration."""
    return "still holds the sample value" if " and " not in sample else "still hold the sample values"


@dataclass(frozen=True)
class Request:
    """What to run. `live` matters for RETRY only (without it the letters are only listed)."""

    mode: str = DRY_RUN
    campaign: str | None = None
    contacts: Path | None = None
    limit: int | None = None
    to: tuple[str, ...] = ()          # preview and test copies: these recipients
    test_to: str | None = None        # test copies go to this address instead
    live: bool = False


@dataclass
class Summary:
    """What a run did (or, stopped before sending, would do): the CLI prints it, the scheduler logs it."""

    request: Request
    plan: Plan | None = None
    chosen: list = field(default_factory=list)       # recipients (or, retrying, recorded letters) chosen
    letters: list = field(default_factory=list)      # the rendered letters of the chosen (previews, tests)
    retry_left_out: list[str] = field(default_factory=list)
    asked: bool = False                              # the confirmation was shown (its lines say the warnings)
    stopped: str | None = None                       # asked to stop (Ctrl-C, SIGTERM) before it ended
    confirmed: bool = False
    dispatched: DispatchSummary | None = None
    where: str | None = None                         # where the letters went (transport.where)
    transport: str | None = None
    counts: dict | None = None                       # the campaign's letters by state, after a live run
    orphans: int = 0
    tests: list = field(default_factory=list)        # (letter, SendResult) of each test copy
    sample_sender: str | None = None                 # what of [sender] is still the sample's (not live)

    @property
    def warnings(self) -> list[str]:
        """One line each: a sender still the sample's; members whose term has ended (left out); a live
        run on a list that cannot tell."""
        plan, out = self.plan, []
        if self.sample_sender:
            signed = "these letters are signed by a placeholder, and " if "name" in self.sample_sender or \
                "organization" in self.sample_sender else ""
            out.append(f"[sender] {self.sample_sender} {still_sample(self.sample_sender)}: {signed}a live send "
                       "refuses them")
        if plan is None:
            return out
        if plan.term_ended:
            out.append(f"{plan.term_ended} recipient{'s' if plan.term_ended != 1 else ''} of {plan.name} "
                       f"{'have' if plan.term_ended != 1 else 'has'} a term that has ended (a new Congress?): "
                       f"left out; {REFRESH_HINT}")
        live = self.request.mode == LIVE or (self.request.mode == RETRY and self.request.live)
        if live and not plan.contact_list.has_term_end:
            out.append(f"{plan.contacts_path} has no term_end column, so a member whose term has ended cannot be "
                       f"left out; {REFRESH_HINT} to add it")
        return out

    @property
    def name(self) -> str:
        return self.plan.name if self.plan else (self.request.campaign or "")

    @property
    def exit_code(self) -> int:
        d, mode = self.dispatched, self.request.mode
        if d is not None and d.unauthorized:
            return EXIT_BAD_INPUT
        if self.stopped and d is None:
            return EXIT_INTERRUPTED  # stopped before anything was sent or written
        if mode == DRY_RUN:
            return EXIT_ATTENTION if self.plan and self.plan.skipped_lines() else EXIT_OK
        if mode == TEST:
            return EXIT_ATTENTION if any(r.outcome != "accepted" for _, r in self.tests) else EXIT_OK
        if self.chosen and not self.confirmed:
            return EXIT_OK  # only listed, or the operator declined: nothing was done
        if d is not None and d.stopped:
            return EXIT_ATTENTION
        if self.counts is not None:
            return EXIT_ATTENTION if any(self.counts[s] for s in states.UNFINISHED) else EXIT_OK
        return EXIT_OK


def describe(summary: Summary, cfg) -> list[str]:
    """The lines of the confirmation: who, how many, how fast, through what, from whom."""
    plan, d = summary.plan, cfg.delivery
    if summary.request.mode == RETRY:
        return [*(f"  left out {line}" for line in summary.retry_left_out),
                f"Retrying {count(len(summary.chosen), 'letter')} of {plan.name} that never reached the office:",
                *(f"  {r.id[:12]}  {r.email:<40} {r.status}: {r.reason or ''}" for r in summary.chosen)]
    already = ", ".join(f"{n} {s}" for s, n in sorted(plan.already.items())) or "none"
    recorded = sum(plan.already.values()) + sum(1 for c in plan.to_send if c.key in plan.known) + len(plan.waiting)
    minutes = len(summary.chosen) / d.rate_per_minute
    lines = [
        f"Campaign {plan.name}: LIVE send via {summary.transport} ({summary.where})",
        f"  from: {cfg.sender.name} <{cfg.sender.email}>" + (f", replies to {cfg.sender.reply_to}"
                                                              if cfg.sender.reply_to else ""),
        f"  recipients in the audience: {len(plan.audience)}",
        f"  already in the ledger: {recorded} ({already}); {sum(plan.already.values())} of them sent before "
        "and never sent again",
        f"  new: {plan.new}; recorded but not yet sent: {len(plan.to_send) - plan.new}"
        + (f"; waiting to retry later: {len(plan.waiting)}" if plan.waiting else ""),
        f"  this run sends: {count(len(summary.chosen), 'letter')}, at most {d.rate_per_minute:g} a minute with "
        f"{d.concurrency} at once (about {_duration(minutes)})",
    ]
    if plan.term_ended:
        lines.append(f"  term ended: {count(plan.term_ended, 'recipient')} left out (their term is over; {REFRESH_HINT})")
    skipped = plan.skipped_lines()
    if skipped:
        lines.append(f"  skipped: {len(skipped)}")
        lines += [f"    {line}" for line in skipped[:10]]
        if len(skipped) > 10:
            lines.append(f"    ... and {len(skipped) - 10} more (`outreach contacts check`, `outreach "
                         "suppressions list`)")
    if plan.filtered:
        lines.append(f"  left out: {count(plan.filtered, 'letter')} recorded earlier whose recipients are no longer in the "
                     "audience or the contact list (now skipped)")
    lines += [f"  warning: {line}" for line in summary.warnings]
    return lines


def _duration(minutes: float) -> str:
    if minutes < 1:
        return f"{max(1, round(minutes * 60))} s"
    if minutes < 90:
        return f"{round(minutes)} min"
    return f"{minutes / 60:.1f} h"
