"""`outreach preview` and `outreach send`: dry run by default, --test-to, and --live."""

from __future__ import annotations

import signal
import sys
from pathlib import Path

import click

from outreach.cli import App, cli, pass_app, shown
from outreach.errors import EXIT_ATTENTION, EXIT_BAD_INPUT, EXIT_OK, UserError

campaign_option = click.option("--campaign", "-c", metavar="NAME",
                               help="The campaign (may be left out when config.toml has one).")
contacts_option = click.option("--contacts", "contacts_file", type=click.Path(path_type=Path),
                               metavar="FILE", help="Use this contact list instead of the campaign's.")


def positive(ctx, param, value):
    if value is not None and value < 1:
        raise click.BadParameter("must be at least 1")
    return value


def choose(plan, to: tuple[str, ...], limit: int | None, default_limit: int | None):
    """The recipients named by --to, else the audience; cut to --limit (or the default)."""
    chosen = [plan.find(who) for who in to] if to else plan.recipients
    cap = limit if limit is not None else (None if to else default_limit)
    return chosen[:cap] if cap is not None else chosen


@cli.command()
@campaign_option
@contacts_option
@click.option("--to", "to", multiple=True, metavar="BIOGUIDE_OR_EMAIL",
              help="Preview the letter of this recipient (repeatable).")
@click.option("--limit", type=int, callback=positive, help="How many letters (default 1 without --to).")
@click.option("--format", "fmt", type=click.Choice(["text", "html", "eml"]), default="text", show_default=True)
@click.option("--out", type=click.Path(file_okay=False, path_type=Path), metavar="DIR",
              help="Write the previews as files into DIR instead of printing them.")
@pass_app
def preview(app: App, campaign, contacts_file, to, limit, fmt, out) -> int:
    """Show letters as the recipients will get them. Nothing is sent or recorded."""
    from outreach.campaign import plan_campaign
    from outreach.message import message_for, to_eml

    cfg = app.config
    plan = plan_campaign(cfg, campaign, contacts_file, ledger=_ledger_to_read(cfg))
    letters = plan.preflight(choose(plan, to, limit, 1))
    for contact, reason in plan.suppressed:
        click.echo(f"note: {contact.email} is suppressed ({reason}) and will be skipped", err=True)
    if out is not None:
        try:
            out.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise UserError(f"{out}: cannot create the folder: {e.strerror}") from None
    for letter in letters:
        message = message_for(letter, cfg.sender, plan.name)
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
            click.echo(f"{shown(path)}  {message.to_name} <{message.to_email}>")
        else:
            if len(letters) > 1:
                click.echo(f"----- {letter.letter_id} -----")
            click.echo(body)
    return EXIT_OK


@cli.command()
@campaign_option
@contacts_option
@click.option("--dry-run", "dry_run_flag", is_flag=True, help="Write the letters to the outbox only (the default).")
@click.option("--live", is_flag=True, help="Send for real, recording every letter in the ledger.")
@click.option("--yes", "-y", is_flag=True, help="Do not ask for confirmation (required without a terminal).")
@click.option("--limit", type=int, callback=positive, help="Send at most N letters in this run.")
@click.option("--test-to", "test_to", metavar="ADDRESS",
              help="Send the letters to ADDRESS instead, subject marked [TEST]; nothing is recorded.")
@click.option("--to", "to", multiple=True, metavar="BIOGUIDE_OR_EMAIL",
              help="With --test-to: whose letters to send (repeatable; default the first).")
@click.option("--retry-failed", is_flag=True,
              help="Send again only the letters that never reached the office (failed, or bounced as blocked).")
@pass_app
def send(app: App, campaign, contacts_file, dry_run_flag, live, yes, limit, test_to, to, retry_failed) -> int:
    """Send a campaign. Without --live this is a dry run: .eml files in the outbox, nothing sent."""
    if live and dry_run_flag:
        raise UserError("--live and --dry-run contradict each other; choose one")
    if test_to and (live or dry_run_flag):
        raise UserError("--test-to sends only to your own address; leave out --live and --dry-run")
    if to and not test_to:
        raise UserError("--to works with --test-to (or use `outreach preview --to`)")
    if retry_failed and test_to:
        raise UserError("--retry-failed and --test-to do not go together")
    from outreach.campaign import plan_campaign

    cfg = app.config
    if retry_failed:
        if live and not yes and not sys.stdin.isatty():
            raise UserError("--live without a terminal needs --yes (nothing asks for confirmation); nothing was sent")
        return _retry_failed(cfg, campaign, live, yes, limit)
    if test_to:
        return _send_tests(cfg, campaign, contacts_file, test_to, to, limit)
    if live:
        if not yes and not sys.stdin.isatty():
            raise UserError("--live without a terminal needs --yes (nothing asks for confirmation); nothing was sent")
        return _send_live(cfg, campaign, contacts_file, limit, yes)
    from outreach.dryrun import dry_run

    plan = plan_campaign(cfg, campaign, contacts_file, ledger=_ledger_to_read(cfg))
    result = dry_run(plan, cfg, limit)
    lst = plan.contact_list
    click.echo(f"Dry run of {plan.name}: nothing was sent.")
    click.echo(f"  contacts: {shown(plan.contacts_path)}: {lst.rows} rows, {len(lst.contacts)} valid")
    click.echo(f"  audience: {len(plan.recipients)} recipients"
               f" ({plan.selection.not_in_audience} not in the audience)")
    _print_skipped(plan)
    click.echo(f"  rendered: {result.written} letters")
    click.echo(f"  folder: {shown(result.folder)}/ (manifest.csv lists the letters)")
    return EXIT_ATTENTION if plan.skipped_lines() else EXIT_OK


def _ledger_to_read(cfg):
    """The ledger for suppressions and follow-ups, if there is one (SQLAlchemy is imported only then)."""
    if cfg.database_missing:
        return None  # and a dry run never creates one
    from outreach.ledger import Ledger

    return Ledger(cfg.database_url)


def _print_skipped(plan) -> None:
    skipped = plan.skipped_lines()
    if skipped:
        click.echo(f"  skipped: {len(skipped)}")
        for line in skipped:
            click.echo(f"    {line}")
    for entry in plan.selection.unmatched:
        click.echo(f"  note: audience include/exclude entry {entry!r} matches nobody in the list")


def _send_tests(cfg, campaign, contacts_file, address, to, limit) -> int:
    from outreach.addresses import normalise_email
    from outreach.campaign import plan_campaign
    from outreach.live import send_tests, transport_for

    address_ok, reason = normalise_email(address.strip())
    if reason:
        raise UserError(f"--test-to {address!r}: not a valid email address: {reason}")
    # Test copies go only to the organisation's own addresses: never to an office by mistake.
    allowed = {a.lower() for a in (cfg.sender.email, cfg.sender.reply_to, *cfg.sender.test_to) if a}
    if address_ok.lower() not in allowed:
        raise UserError(f"--test-to {address_ok}: not one of your own addresses; test copies go to [sender] "
                        f"email, reply_to or test_to in {cfg.path}; nothing was sent")
    plan = plan_campaign(cfg, campaign, contacts_file)
    letters = plan.preflight(choose(plan, to, limit, 1))
    transport = transport_for(cfg, purpose="test sends")
    failures = 0
    for letter, result in send_tests(transport, letters, cfg, plan.name, address_ok):
        ok = result.outcome == "accepted"
        failures += not ok
        state = "accepted" if ok else f"{result.outcome}: {result.error}"
        click.echo(f"[TEST] {letter.to_name} ({letter.contact.email}) -> {address_ok}: {state}")
    click.echo(f"{len(letters) - failures} test letters accepted by {transport.name}; nothing recorded in the ledger")
    return EXIT_ATTENTION if failures else EXIT_OK


def _send_live(cfg, campaign, contacts_file, limit, yes) -> int:
    from outreach.campaign import plan_campaign
    from outreach.dispatch import Dispatcher
    from outreach.ledger import open_ledger
    from outreach.live import check_sender, describe, message_factory, plan_live, sandbox_check, transport_for
    from outreach.message import message_for
    from outreach.progress import Progress

    transport = transport_for(cfg)
    check_sender(cfg)
    ledger = open_ledger(cfg)
    plan = plan_campaign(cfg, campaign, contacts_file, ledger=ledger)
    letters = plan.preflight(plan.recipients)
    with ledger.lock(f"send:{plan.name}", f"a send of campaign {plan.name}"):
        live = plan_live(ledger, plan, letters, limit)
        if live.orphans:
            click.echo(f"warning: {live.orphans} letters were left `sending` by a run that stopped; they are now "
                       "`unknown` and will not be resent: review them with `outreach letters list --state unknown`",
                       err=True)
        if live.to_send == 0:
            click.echo(f"Nothing to send for {plan.name}: all {live.recipients} recipients already have a letter "
                       f"in the ledger ({', '.join(f'{n} {s}' for s, n in sorted(live.existing.items()))}).")
            return _exit_for(ledger, live.campaign_id)
        if live.first is not None:
            sandbox_check(transport, message_for(live.first, cfg.sender, plan.name), cfg)
        else:  # only letters already recorded are due (retries waiting): check with one of them
            recorded = ledger.load_many(ledger.due(live.campaign_id, 20))
            if recorded:
                sandbox_check(transport, message_factory(cfg, plan.name)(next(iter(recorded.values()))), cfg)
        for line in describe(live, cfg, transport):
            click.echo(line)
        if not yes and not click.confirm("Send these letters now?", default=False):
            click.echo("Nothing was sent.")
            return EXIT_OK
        ledger.apply_settlement(live.changes)
        # Every letter, not only the new ones: a pending letter never tried gets today's text.
        ledger.record(live.campaign_id, letters, plan.templates.hash())
        ledger.record_skipped(live.campaign_id, plan.suppressed)
        with Progress(live.to_send, "sending") as progress:
            def done(_letter_id: str, status: str) -> None:
                if status != "retry_wait":  # a letter waiting to retry is not done yet
                    progress.advance()

            dispatcher = Dispatcher(ledger, live.campaign_id, transport, message_factory(cfg, plan.name),
                                    cfg.delivery, on_done=done)
            with _stop_on_signals(dispatcher):
                summary = dispatcher.run(limit=limit)
        transport.close()
        _print_summary(plan.name, summary, ledger, live.campaign_id)
        if summary.unauthorized:
            return EXIT_BAD_INPUT
        return _exit_for(ledger, live.campaign_id) if not summary.stopped else EXIT_ATTENTION


def _retry_failed(cfg, campaign, live, yes, limit) -> int:
    """Letters that never reached the office, sent again: never one that was delivered."""
    from outreach.campaign import plan_campaign
    from outreach.dispatch import Dispatcher
    from outreach.ledger import open_ledger
    from outreach.live import check_sender, message_factory, transport_for
    from outreach.progress import Progress

    name, _ = cfg.campaign(campaign)
    transport = transport_for(cfg) if live else None
    if live:
        check_sender(cfg)
    ledger = open_ledger(cfg)
    cid = ledger.campaign_id(name, create=False)
    if cid is None:
        click.echo(f"{name}: no letters in the ledger yet; nothing to retry")
        return EXIT_OK
    # Today's audience: a letter whose recipient was excluded or dropped from the list stays as it is.
    audience = {c.key for c in plan_campaign(cfg, name, ledger=ledger).recipients}
    with ledger.lock(f"send:{name}", f"a send of campaign {name}"):
        candidates, suppressed = ledger.retry_candidates(cid)
        for r in suppressed:
            click.echo(f"  left out {r.id[:12]}  {r.email:<40} the address is suppressed ({r.suppressed})")
        for r in candidates:
            if r.email_key not in audience:
                click.echo(f"  left out {r.id[:12]}  {r.email:<40} no longer in the audience or the contact list")
        candidates = [r for r in candidates if r.email_key in audience]
        candidates = candidates[:limit] if limit else candidates
        if not candidates:
            click.echo(f"{name}: no failed or blocked letters to retry")
            return EXIT_OK
        click.echo(f"{'Retrying' if live else 'Would retry'} {len(candidates)} letters of {name} that never "
                   "reached the office:")
        for r in candidates:
            click.echo(f"  {r.id[:12]}  {r.email:<40} {r.status}: {r.reason or ''}")
        if not live:
            click.echo("Dry run: nothing was sent; add --live to send them again.")
            return EXIT_OK
        if not yes and not click.confirm("Send these letters again now?", default=False):
            click.echo("Nothing was sent.")
            return EXIT_OK
        ids = [r.id for r in candidates]
        ledger.requeue(ids)
        with Progress(len(ids), "sending") as progress:
            dispatcher = Dispatcher(ledger, cid, transport, message_factory(cfg, name), cfg.delivery,
                                    on_done=lambda _id, status: progress.advance())
            with _stop_on_signals(dispatcher):
                summary = dispatcher.run(only=set(ids))
        transport.close()
        _print_summary(name, summary, ledger, cid)
        return EXIT_BAD_INPUT if summary.unauthorized else _exit_for(ledger, cid)


def _exit_for(ledger, campaign_id) -> int:
    counts = ledger.counts(campaign_id)
    waiting = counts["unknown"] + counts["failed"] + counts["pending"] + counts["retry_wait"] + counts["sending"]
    return EXIT_ATTENTION if waiting else EXIT_OK


def _print_summary(name: str, summary, ledger, campaign_id) -> None:
    counts = ledger.counts(campaign_id)
    click.echo(f"Sent {name}: {summary.accepted} accepted, {summary.failed} failed, {summary.unknown} unknown"
               + (f", {summary.throttled} throttled and retried" if summary.throttled else "")
               + (f", {summary.retried} temporary errors retried" if summary.retried else ""))
    if summary.stopped:
        click.echo(f"  stopped early: {summary.stopped}")
    for letter_id, status, reason in summary.reasons[:20]:
        click.echo(f"  {status} {letter_id}: {reason}")
    if len(summary.reasons) > 20:
        click.echo(f"  ... and {len(summary.reasons) - 20} more: `outreach letters list --state failed`")
    left = counts["pending"] + counts["retry_wait"]
    click.echo(f"  ledger: {sum(counts.values())} letters; {left} still to send; {counts['unknown']} unknown; "
               f"{counts['failed']} failed (`outreach status` for all states)")
    if counts["unknown"]:
        click.echo("  unknown letters may have been accepted: they are never resent by themselves; "
                   "see `outreach letters list --state unknown`, then `outreach letters release` if they did not arrive")


class _stop_on_signals:
    """Ctrl-C and SIGTERM stop the dispatcher gracefully: no new letters, in-flight ones recorded."""

    def __init__(self, dispatcher):
        self.dispatcher = dispatcher
        self.previous = {}

    def __enter__(self):
        def handler(signum, frame):
            click.echo("\nstopping: no new letters; finishing the ones in flight...", err=True)
            self.dispatcher.stop("interrupted")

        for sig in (signal.SIGINT, signal.SIGTERM):
            self.previous[sig] = signal.signal(sig, handler)
        return self

    def __exit__(self, *exc):
        for sig, previous in self.previous.items():
            signal.signal(sig, previous)
