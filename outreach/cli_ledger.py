"""`outreach status` and `outreach letters`: what the ledger knows, letter by letter."""

from __future__ import annotations


import click

from outreach.cli_base import App, campaign_option, echo, echo_json, pass_app
from outreach.errors import EXIT_ATTENTION, EXIT_OK, UserError
from outreach.text import count, local_time, utc_iso


when = local_time
iso = utc_iso


def _open(app: App, campaign: str | None):
    name, _ = app.config.campaign(campaign)
    ledger = app.ledger()
    return ledger, name, ledger.campaigns.id(name, create=False)


@click.command()
@campaign_option
@click.option("--json", "as_json", is_flag=True, help="Print {campaign, counts, ...} as JSON.")
@pass_app
def status(app: App, campaign, as_json) -> int:
    """Letters of a campaign by state: every state, zero included."""
    from outreach.states import NEEDS_ATTENTION, STATES

    ledger, name, campaign_id = _open(app, campaign)
    counts = ledger.letters.counts(campaign_id)
    total = sum(counts.values())
    attention = {s: counts[s] for s in NEEDS_ATTENTION if counts[s]}
    if as_json:
        echo_json({"campaign": name, "counts": counts, "total": total, "needs_attention": attention})
        return EXIT_ATTENTION if attention else EXIT_OK
    echo(f"{name}: {count(total, 'letter')} in the ledger")
    width = max(len(s) for s in STATES)
    for s in STATES:
        if counts[s]:
            echo(f"  {s:<{width}} {counts[s]:>7}")
    if not total:
        echo("  (nothing sent yet: `outreach send` for a dry run, `outreach send --live` to send)")
    if attention:
        echo("needs attention: " + ", ".join(f"{n} {s}" for s, n in attention.items())
                   + " (`outreach letters list --state unknown`)")
    echo("accepted means SendGrid took the letter; delivered means the office's mail server did")
    return EXIT_ATTENTION if attention else EXIT_OK


@click.group()
def letters() -> None:
    """List, inspect and release letters recorded in the ledger."""


@letters.command("list")
@campaign_option
@click.option("--state", "state", metavar="STATE", help="Only letters in this state (e.g. unknown, failed).")
@click.option("--limit", type=click.IntRange(1), default=None, help="At most N letters.")
@pass_app
def letters_list(app: App, campaign, state, limit) -> int:
    """One line per letter: id, state, recipient, attempts, last change, reason."""
    from outreach.states import STATES

    if state is not None and state not in STATES:
        raise UserError(f"--state {state!r} is not a state; states: {', '.join(STATES)}")
    ledger, name, campaign_id = _open(app, campaign)
    if campaign_id is None:
        echo(f"{name}: no letters in the ledger yet")
        return EXIT_OK
    rows = ledger.letters.listing(campaign_id, state, limit)
    for r in rows:
        # An accepted or delivered letter's reason is history (an earlier try's error): not shown.
        reason = f"  {r.reason}" if r.reason and r.status not in ("accepted", "delivered") else ""
        echo(f"{r.id[:12]}  {r.status:<12} {r.email:<40} {r.attempts:>2}  {when(r.updated_at)}{reason}")
    echo(count(len(rows), "letter") + (f" {state}" if state else ""))
    return EXIT_OK


@letters.command("show")
@click.argument("letter_id")
@click.option("--html", "show_html", is_flag=True, help="Show the archived HTML instead of the text.")
@pass_app
def letters_show(app: App, letter_id, show_html) -> int:
    """One letter: its state, the archived message exactly as sent, its attempts and events."""
    ledger = app.ledger()
    r = ledger.letters.find(letter_id)
    echo(f"letter {r.id} ({r.campaign})")
    echo(f"  to: {r.name} <{r.email}>  {r.bioguide_id}")
    echo(f"  state: {r.status}" + (f" ({r.reason})" if r.reason else ""))
    echo(f"  recorded {when(r.created_at)}; last change {when(r.updated_at)}; attempts {r.attempts}")
    if r.provider_message_id:
        echo(f"  provider message id: {r.provider_message_id}")
    for a in ledger.letters.attempts_of(r.id):
        status = f" HTTP {a.http_status}" if a.http_status else ""
        error = f": {a.error}" if a.error else ""
        echo(f"  attempt {when(a.started_at)} via {a.transport}: {a.outcome}{status} "
                   f"({a.duration_ms} ms){error}")
    for e in ledger.events.of_letter(r.id):
        echo(f"  event {when(e.occurred_at)}: {e.event}" + (f" ({e.detail})" if e.detail else ""))
    archived = ledger.letters.archived(r.id)
    if archived:
        echo(f"  template set: {archived['template_hash'][:16]}")
        echo(f"\nSubject: {archived['subject']}\n")
        echo(archived["html"] if show_html else archived["text"])
    return EXIT_OK


@letters.command("release")
@click.argument("ids", nargs=-1, metavar="ID...")
@click.option("--all-unknown", is_flag=True, help="Release every unknown letter of the campaign.")
@campaign_option
@click.option("--yes", "-y", is_flag=True, help="Do not ask for confirmation.")
@pass_app
def letters_release(app: App, ids, all_unknown, campaign, yes) -> int:
    """Put `unknown` letters back to pending, so the next live run sends them.

    Only do this when you know the letter did not arrive (SendGrid's activity
    feed, or no events for it): an unknown letter may have been accepted.
    """
    if bool(ids) == bool(all_unknown):
        raise UserError("give letter ids or --all-unknown (one of the two)")
    ledger, name, campaign_id = _open(app, campaign) if all_unknown else (app.ledger(), None, None)
    if all_unknown:
        if campaign_id is None:
            echo(f"{name}: no letters in the ledger")
            return EXIT_OK
        unknown = ledger.letters.counts(campaign_id)["unknown"]
        if not unknown:
            echo(f"{name}: no unknown letters")
            return EXIT_OK
        if not yes and not click.confirm(f"Release {count(unknown, 'unknown letter')} of {name} to be sent again?",
                                         default=False):
            echo("Nothing released.")
            return EXIT_OK
    released = ledger.letters.release(campaign_id, list(ids) if ids else None, all_unknown=all_unknown)
    for letter_id in released:
        echo(f"released {letter_id}: pending; the next `outreach send --live` sends it")
    echo(f"{count(len(released), 'letter')} released")
    return EXIT_OK
