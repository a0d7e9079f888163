"""`outreach suppressions`: the addresses never written to again, and why."""

from __future__ import annotations

import click

from outreach.cli_base import App, echo, pass_app
from outreach.errors import EXIT_OK, UserError
from outreach.text import count, local_time


@click.group()
def suppressions() -> None:
    """Addresses never written to again (hard bounces, spam reports, unsubscribes, by hand)."""


@suppressions.command("list")
@pass_app
def suppressions_list(app: App) -> int:
    """Every suppressed address with its reason and when."""
    rows = app.ledger().suppressions.all()
    for r in rows:
        when = local_time(r.created_at, "%Y-%m-%d %H:%M")
        detail = f"  {r.detail}" if r.detail else ""
        echo(f"{r.email:<40} {r.reason:<12} {when}{detail}")
    echo(count(len(rows), "suppressed address", "suppressed addresses"))
    return EXIT_OK


@suppressions.command("add")
@click.argument("email")
@click.option("--reason", "-r", required=True, metavar="R", help="Why (e.g. \"asked not to be contacted\").")
@pass_app
def suppressions_add(app: App, email: str, reason: str) -> int:
    """Never write to EMAIL again, in any campaign."""
    from outreach.addresses import normalise_email

    normal, problem = normalise_email(email.strip())
    if problem:
        raise UserError(f"{email!r}: not a valid email address: {problem}")
    if app.ledger().suppressions.add(normal, "manual", reason):
        echo(f"{normal}: suppressed ({reason}); later sends and follow-ups skip it")
    else:
        echo(f"{normal}: already suppressed")
    return EXIT_OK


@suppressions.command("remove")
@click.argument("email")
@pass_app
def suppressions_remove(app: App, email: str) -> int:
    """Write to EMAIL again: its skipped letters go back to pending at the next live run."""
    if not app.ledger().suppressions.remove(email):
        raise UserError(f"{email}: not on the suppression list (`outreach suppressions list`)")
    echo(f"{email}: no longer suppressed")
    return EXIT_OK
