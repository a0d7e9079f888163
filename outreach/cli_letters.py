"""`outreach preview` and `outreach send`: each one campaign run (outreach.run), printed."""

from __future__ import annotations

import os
import signal
import sys
from pathlib import Path

import click

from outreach.cli_base import App, campaign_option, echo, pass_app, shown
from outreach.errors import EXIT_OK, UserError
from outreach.text import count

contacts_option = click.option("--contacts", "contacts_file", type=click.Path(path_type=Path),
                               metavar="FILE", help="Use this contact list instead of the campaign's.")


def positive(ctx, param, value):
    if value is not None and value < 1:
        raise click.BadParameter("must be at least 1")
    return value


@click.command()
@campaign_option
@contacts_option
@click.option("--to", "to", multiple=True, metavar="BIOGUIDE_OR_EMAIL",
              help="Preview the letter of this recipient (repeatable).")
@click.option("--limit", type=int, callback=positive,
              help="How many letters: the first N still to send (default 1 without --to).")
@click.option("--format", "fmt", type=click.Choice(["text", "html", "eml"]), default="text", show_default=True)
@click.option("--out", type=click.Path(file_okay=False, path_type=Path), metavar="DIR",
              help="Write the previews as files into DIR instead of printing them.")
@pass_app
def preview(app: App, campaign, contacts_file, to, limit, fmt, out) -> int:
    """Show letters as the recipients will get them, in the order a send takes them. Nothing is sent or recorded."""
    from outreach.message import message_for, to_eml
    from outreach.plan import shown_reason
    from outreach.run import PREVIEW, CampaignRun, Request
    from outreach.states import TERM_ENDED_PREFIX

    cfg = app.config
    summary = CampaignRun(cfg, Request(PREVIEW, campaign, contacts_file, limit, tuple(to))).prepare()
    plan = summary.plan
    for contact, reason in plan.left_out:
        if not reason.startswith(TERM_ENDED_PREFIX):
            echo(f"note: {contact.email} is {shown_reason(reason)} and will be skipped", err=True)
    for line in summary.warnings:
        echo(f"warning: {line}", err=True)
    if not summary.letters:
        echo(f"{plan.name}: no letter left to send (every recipient in the audience has one); "
                   "`--to BIOGUIDE_OR_EMAIL` previews a recipient's letter", err=True)
    if out is not None:
        try:
            out.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise UserError(f"{out}: cannot create the folder: {e.strerror}") from None
    for letter in summary.letters:
        known = plan.letter_of(letter.contact)
        if known is not None and to:
            echo(f"note: {letter.contact.email} already has a letter in the ledger ({known.status})", err=True)
        message = message_for(letter, cfg.sender, plan.name, cfg.replies.address)
        if fmt == "eml":
            body = to_eml(message).decode("utf-8")
        elif fmt == "html":
            body = letter.html
        else:
            body = f"To: {message.to_name} <{message.to_email}>\nSubject: {message.subject}\n\n{letter.text}"
        if out is not None:
            path = out / f"{letter.letter_id}.{ {'text': 'txt'}.get(fmt, fmt) }"
            try:
                path.write_text(body, encoding="utf-8")
            except OSError as e:
                raise UserError(f"{path}: cannot write the preview: {e.strerror}") from None
            echo(f"{shown(path)}  {message.to_name} <{message.to_email}>")
        else:
            if len(summary.letters) > 1:
                echo(f"----- {letter.letter_id} -----")
            echo(body)
    return EXIT_OK


@click.command()
@campaign_option
@contacts_option
@click.option("--dry-run", "dry_run_flag", is_flag=True, help="Write the letters to the outbox only (the default).")
@click.option("--live", is_flag=True, help="Send for real, recording every letter in the ledger.")
@click.option("--yes", "-y", is_flag=True, help="Do not ask for confirmation (required without a terminal).")
@click.option("--limit", type=int, callback=positive,
              help="At most N letters in this run: the first N still to send, in the campaign's order.")
@click.option("--test-to", "test_to", metavar="ADDRESS",
              help="Send the letters to ADDRESS instead, subject marked [TEST]; nothing is recorded.")
@click.option("--to", "to", multiple=True, metavar="BIOGUIDE_OR_EMAIL",
              help="With --test-to: whose letters to send (repeatable; default the first).")
@click.option("--retry-failed", is_flag=True,
              help="Send again only the letters that never reached the office (failed, or bounced as blocked).")
@pass_app
def send(app: App, campaign, contacts_file, dry_run_flag, live, yes, limit, test_to, to, retry_failed) -> int:
    """Send a campaign. Without --live this is a dry run: .eml files in the outbox, nothing sent."""
    from outreach.run import DRY_RUN, LIVE, RETRY, TEST, CampaignRun, Request

    if live and dry_run_flag:
        raise UserError("--live and --dry-run contradict each other; choose one")
    if test_to and (live or dry_run_flag):
        raise UserError("--test-to sends only to your own address; leave out --live and --dry-run")
    if to and not test_to:
        raise UserError("--to works with --test-to (or use `outreach preview --to`)")
    if retry_failed and test_to:
        raise UserError("--retry-failed and --test-to do not go together")
    if live and not yes and not sys.stdin.isatty():
        raise UserError("--live without a terminal needs --yes (nothing asks for confirmation); nothing was sent")
    if test_to:
        test_to = _address(test_to)
    mode = RETRY if retry_failed else TEST if test_to else LIVE if live else DRY_RUN
    from outreach.progress import Progress

    run = CampaignRun(app.config, Request(mode, campaign, contacts_file, limit, tuple(to), test_to, live),
                      progress=Progress)
    with _stop_on_signals(run, quiet=mode == DRY_RUN):
        summary = run.execute(confirm=_confirm(yes, mode))
    return _print(summary, app.config)


def _address(address: str) -> str:
    from outreach.addresses import normalise_email

    normal, reason = normalise_email(address.strip())
    if reason:
        raise UserError(f"--test-to {address!r}: not a valid email address: {reason}")
    return normal


def _confirm(yes: bool, mode: str):
    from outreach.run import RETRY

    def confirm(lines: list[str]) -> bool:
        for line in lines:
            echo(line)
        if yes:
            return True
        question = "Send these letters again now?" if mode == RETRY else "Send these letters now?"
        # Ctrl-C at the question aborts at once: nothing recorded, nothing sent.
        previous = signal.signal(signal.SIGINT, signal.default_int_handler)
        try:
            return click.confirm(question, default=False)
        finally:
            signal.signal(signal.SIGINT, previous)
    return confirm


def _print(summary, cfg) -> int:
    """What the run did, in the terminal's words; returns the exit code."""
    from outreach.run import DRY_RUN, RETRY, TEST

    mode, plan, d = summary.request.mode, summary.plan, summary.dispatched
    for line in summary.warnings if not summary.asked else ():
        echo(f"warning: {line}", err=True)
    if summary.stopped and d is None:
        done = "written" if mode == DRY_RUN else "sent or recorded"
        echo(f"outreach: interrupted before anything was {done}", err=True)
        return summary.exit_code
    if summary.orphans:
        echo(f"warning: {count(summary.orphans, 'letter')} {'was' if summary.orphans == 1 else 'were'} left `sending` by a run that stopped; they are now "
                   "`unknown` and will not be resent: review them with `outreach letters list --state unknown`",
                   err=True)
    if mode == DRY_RUN:
        if d is not None and d.stopped:
            echo("outreach: interrupted; the dry run was stopped and nothing was written", err=True)
            return 130
        _print_dry_run(summary)
    elif mode == TEST:
        errors = []   # each distinct reason said once, however many copies it stopped
        for letter, result in summary.tests:
            state = "accepted" if result.outcome == "accepted" else "not sent"
            echo(f"[TEST] {letter.to_name} ({letter.contact.email}) -> {summary.request.test_to}: {state}")
            if result.outcome != "accepted" and result.error not in errors:
                errors.append(result.error)
        for error in errors:
            echo(f"  {error}")
        ok = sum(1 for _, r in summary.tests if r.outcome == "accepted")
        echo(f"{count(ok, 'test letter')} accepted by {summary.transport}; nothing recorded in the ledger")
    elif mode == RETRY and not summary.chosen:
        for line in summary.retry_left_out:
            echo(f"  left out {line}")
        echo(f"{summary.name}: " + ("no failed or blocked letters to retry" if plan.campaign_id is not None
                                          else "no letters in the ledger yet; nothing to retry"))
    elif mode == RETRY and not summary.request.live:
        from outreach.run import describe

        for line in describe(summary, cfg):
            echo("Would retry" + line[len("Retrying"):] if line.startswith("Retrying") else line)
        echo("Dry run: nothing was sent; add --live to send them again.")
    elif not summary.chosen:
        already = ", ".join(f"{n} {s}" for s, n in sorted(plan.already.items()))
        waiting = f"; {len(plan.waiting)} wait to retry later" if plan.waiting else ""
        echo(f"Nothing to send for {plan.name}: all {len(plan.audience) - len(plan.left_out)} recipients "
                   f"already have a letter in the ledger ({already or 'none'}){waiting}.")
    elif not summary.confirmed:
        echo("Nothing was sent.")
    else:
        _print_sent(summary)
    return summary.exit_code


def _print_dry_run(summary) -> None:
    plan = summary.plan
    lst = plan.contact_list
    echo(f"Dry run of {plan.name}: nothing was sent.")
    echo(f"  contacts: {shown(plan.contacts_path)}: {count(lst.rows, 'row')}, {len(lst.contacts)} valid")
    echo(f"  audience: {count(len(plan.audience), 'recipient')} ({plan.selection.not_in_audience} not in the "
         "audience)")
    skipped = plan.skipped_lines()
    if skipped:
        rows, problems = plan.skipped_rows(), len(skipped)
        echo(f"  skipped: {count(rows, 'row')}" + (f" ({count(problems, 'problem')})" if problems != rows else ""))
        for line in skipped:
            echo(f"    {line}")
    for entry in plan.selection.unmatched:
        echo(f"  note: audience include/exclude entry {entry!r} matches nobody in the list")
    if plan.already or plan.waiting:
        states = ", ".join(f"{n} {s}" for s, n in sorted(plan.already.items()))
        echo(f"  already have a letter: {sum(plan.already.values())} ({states or 'none'}): not written again"
                   + (f"; {len(plan.waiting)} wait to retry later" if plan.waiting else ""))
    echo(f"  rendered: {count(len(summary.chosen), 'letter')}"
               + (f" (the first {len(summary.chosen)} of {len(plan.to_send)} still to send)"
                  if len(summary.chosen) < len(plan.to_send) else ""))
    echo(f"  folder: {shown(Path(summary.where))}/ (manifest.csv lists the letters)")


def _print_sent(summary) -> None:
    from outreach.states import TO_SEND

    d, counts = summary.dispatched, summary.counts
    echo(f"Sent {summary.name}: {d.accepted} accepted, {d.failed} failed, {d.unknown} unknown"
               + (f", {d.throttled} throttled and retried" if d.throttled else "")
               + (f", {d.retried} temporary errors retried" if d.retried else ""))
    if d.stopped:
        echo(f"  stopped early: {d.stopped}")
    for letter_id, status, reason in d.reasons[:20]:
        echo(f"  {status} {letter_id}: {reason}")
    if len(d.reasons) > 20:
        echo(f"  ... and {len(d.reasons) - 20} more: `outreach letters list --state failed`")
    left = sum(counts[s] for s in TO_SEND)
    echo(f"  ledger: {count(sum(counts.values()), 'letter')}; {left} still to send; {counts['unknown']} unknown; "
               f"{counts['failed']} failed (`outreach status` for all states)")
    if counts["unknown"]:
        echo("  unknown letters may have been accepted: they are never resent by themselves; "
                   "see `outreach letters list --state unknown`, then `outreach letters release` if they did not arrive")


class _stop_on_signals:
    """Ctrl-C and SIGTERM stop the run gracefully: no new letters, in-flight ones recorded.

    The handler only sets the run's flag (and says so with one write to stderr), so it is
    safe wherever the signal lands."""

    def __init__(self, run, quiet: bool = False):
        self.run = run
        self.quiet = quiet
        self.previous = {}

    def __enter__(self):
        def handler(signum, frame):
            if not self.quiet and not self.run.stopped:
                os.write(2, b"\nstopping: no new letters; finishing the ones in flight...\n")
            self.run.stop("interrupted")

        for sig in (signal.SIGINT, signal.SIGTERM):
            self.previous[sig] = signal.signal(sig, handler)
        return self

    def __exit__(self, *exc):
        for sig, previous in self.previous.items():
            signal.signal(sig, previous)
