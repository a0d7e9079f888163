"""`outreach contacts`: check a list, build one from the official files, refresh one after a new Congress."""

from __future__ import annotations

from pathlib import Path

import click

from outreach.cli_base import App, echo, echo_json, pass_app, shown
from outreach.errors import EXIT_ATTENTION, EXIT_BAD_INPUT, EXIT_OK, UserError, one_line
from outreach.text import count


@click.group()
def contacts() -> None:
    """Check contact lists; build and refresh them from the official legislator files."""


@contacts.command("check")
@click.argument("file", type=click.Path(path_type=Path))
@click.option("--json", "as_json", is_flag=True, help="Print the result as JSON.")
def contacts_check(file: Path, as_json: bool) -> int:
    """Check a contact list: every problem with its line, column, value and reason.

    Exit 0 when every row is valid, 1 when some were rejected, 2 when the file
    cannot be used.
    """
    from outreach.contacts import read_contacts

    result = read_contacts(file)
    if as_json:
        echo_json(result.as_dict())
    else:
        delim = {"tab": "tab", ",": "comma", ";": "semicolon"}[result.delimiter]
        echo(f"{file}: {count(result.rows, 'row')}, {len(result.contacts)} valid, "
                   f"{len(result.rejected_lines)} rejected ({result.encoding}, {delim}-separated)")
        for note in result.notes:
            echo(f"note: {note}")
        for p in result.problems:
            value = f" {one_line(p.value)!r}" if p.value else ""
            echo(f"line {p.line}, column {p.column}:{value} {p.reason}")
        if not result.has_term_end:
            echo("note: no term_end column: after a new Congress, members whose term has ended cannot be "
                       "told apart; `outreach contacts refresh` adds it")
    if not result.contacts:
        if not as_json:
            echo(f"outreach: {file}: no valid row; fix the problems above", err=True)
        return EXIT_BAD_INPUT
    return EXIT_ATTENTION if result.problems else EXIT_OK


official_options = [
    click.option("--committees", "membership", type=click.Path(path_type=Path), metavar="FILE",
                 help="committee-membership-current.yaml (or the published CSV)."),
    click.option("--download", is_flag=True,
                 help="Fetch the current official files first (from [legislators] base_url)."),
]


def with_official(command):
    for option in reversed(official_options):
        command = option(command)
    return command


@contacts.command("import-legislators")
@click.argument("legislators", type=click.Path(path_type=Path), required=False)
@with_official
@click.option("--emails", "emails_csv", type=click.Path(path_type=Path), metavar="FILE",
              help="Your own CSV of bioguide_id,email (members publish no addresses).")
@click.option("--out", type=click.Path(dir_okay=False, path_type=Path), required=True, metavar="FILE",
              help="Where to write the contact list.")
@pass_app
def contacts_import(app: App, legislators: Path | None, membership: Path | None, download: bool,
                    emails_csv: Path | None, out: Path) -> int:
    """Build a contact list from the official files: legislators-current.yaml (or .csv) and committees.

    With --download, the current files are fetched first; no file needs giving.
    """
    from outreach.legislators import import_legislators

    roster = _roster(app, legislators, membership, download)
    result = import_legislators(roster, emails_csv, out)
    echo(f"{shown(out)}: {count(result.members, 'member')} ({count(result.senators, 'senator')}, "
         f"{count(result.representatives, 'House member')}), {result.with_committees} with committees")
    _terms_note(roster)
    if result.without_email:
        n = len(result.without_email)
        echo(f"{count(n, 'member')} {'has' if n == 1 else 'have'} no email yet; add them to "
                   f"{emails_csv or 'an --emails CSV (bioguide_id,email)'}:")
        for bioguide, name in result.without_email:
            echo(f"  {bioguide}  {name}")
        return EXIT_ATTENTION
    return EXIT_OK


@contacts.command("refresh")
@click.argument("contact_list", metavar="LIST", type=click.Path(path_type=Path))
@click.option("--legislators", "legislators", type=click.Path(path_type=Path), metavar="FILE",
              help="legislators-current.yaml (or the published CSV).")
@with_official
@click.option("--out", type=click.Path(dir_okay=False, path_type=Path), metavar="FILE",
              help="Write the refreshed list here (LIST itself is never changed).")
@click.option("--json", "as_json", is_flag=True, help="Print the changes as JSON.")
@pass_app
def contacts_refresh(app: App, contact_list: Path, legislators: Path | None, membership: Path | None,
                     download: bool, out: Path | None, as_json: bool) -> int:
    """Hold LIST against the current official data: who left, who arrived, what changed, office by office.

    Exit 0 when the list is current, 1 when it is not (or the refreshed list has rows to look at).
    """
    from outreach.refresh import refresh

    roster = _roster(app, legislators, membership, download)
    report = refresh(contact_list, roster, out)
    if as_json:
        echo_json(report.as_dict())
    else:
        _print_refresh(report, roster)
    attention = report.changed or report.without_email or report.needs_review
    return EXIT_ATTENTION if attention else EXIT_OK


def _roster(app: App, legislators: Path | None, membership: Path | None, download: bool):
    from outreach.legislators import today
    from outreach.official import LEGISLATORS, download as fetch, read_roster
    from outreach.progress import Progress

    if download:
        if legislators is not None or membership is not None:
            raise UserError("--download fetches both files: leave out the file names, or --download")
        base = app.config.legislators.base_url if app.config_path.exists() else None
        from outreach.config import Legislators

        legislators, membership = fetch(base or Legislators.base_url,
                                        progress=lambda total, label: Progress(total, label, lines=False))
    elif legislators is None:
        raise UserError(f"give the legislators file ({LEGISLATORS}, from the congress-legislators dataset) "
                        "or --download to fetch the current one")
    return read_roster(legislators, membership, today())


def _terms_note(roster) -> None:
    if not roster.has_terms:
        echo("note: the CSV form has no term dates or leadership roles: term_end and leadership are left as "
                   "they were; use legislators-current.yaml (or --download) to fill them")
    if roster.committees is None:
        echo("note: no committee file: committees are left empty; give --committees "
                   "committee-membership-current.yaml (or --download)")


def _print_refresh(report, roster) -> None:
    def offices(title: str, rows: list, line) -> None:
        echo(f"  {title}: {len(rows)}")
        for r in rows:
            echo(f"    {line(r)}")

    echo(f"{report.list_path} against the official data ({report.official_members} members): "
               f"{report.stayed} offices stayed")
    offices("left Congress", report.left, lambda d: f"{d['bioguide_id']}  {d['name']} ({d['seat']})"
            + (f", term ended {d['term_end']}" if d["term_end"] else ""))
    offices("new members with no row in the list", report.new, lambda o: f"{o.bioguide_id}  {o.name} ({o.seat})")
    offices(f"changed seat or chamber ({len(report.needs_review)} changed chamber: needs_review)", report.seat,
            lambda d: f"{d['bioguide_id']}  {d['name']}: {d['old']} -> {d['new']}"
            + ("  (needs_review)" if d["needs_review"] else ""))
    offices("changed party", report.party, lambda m: f"{m.bioguide_id}  {m.name}: {m.old} -> {m.new}")
    offices("changed office address", report.address, lambda m: f"{m.bioguide_id}  {m.name}: {m.new or '(none)'}")
    offices("changed phone", report.phone, lambda m: f"{m.bioguide_id}  {m.name}: {m.old or '-'} -> {m.new or '-'}")
    if roster.committees is not None:
        for code, moves in report.committees.items():
            echo(f"  {code}: {len(moves['joined'])} joined, {len(moves['left'])} left")
            for o in moves["joined"]:
                echo(f"    + {o.bioguide_id}  {o.name} ({o.seat})")
            for o in moves["left"]:
                echo(f"    - {o.bioguide_id}  {o.name} ({o.seat})")
    for m in report.matched_by_name:
        echo(f"  line {m['line']}: no bioguide id; matched {m['name']} to {m['bioguide_id']} by name and state")
    for u in report.unmatched:
        echo(f"  line {u['line']}: no bioguide id, and {u['why']} ({u['name']}, {u['state']}): kept as it is; "
                   "add its bioguide id")
    if roster.has_terms:
        echo(f"  term_end brought up to date: {report.terms_updated} offices")
    _terms_note(roster)
    if report.written:
        echo(f"{shown(Path(report.written))}: {count(report.rows_written, 'row')} written; departed members removed, "
                   f"{len(report.without_email)} new members without an email yet, "
                   f"{len(report.needs_review)} marked needs_review")
    elif report.changed:
        echo("the list is out of date: --out NEW.csv writes the refreshed list")
    else:
        echo("the list is up to date")
