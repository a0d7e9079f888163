"""`outreach report`: the delivery report as a terminal table, CSV, JSON or one HTML file."""

from __future__ import annotations

import sys
from pathlib import Path

import click

from outreach.cli_base import App, campaign_option, echo, pass_app, shown
from outreach.errors import EXIT_OK, UserError
from outreach.text import count


@click.command()
@campaign_option
@click.option("--format", "fmt", type=click.Choice(["table", "csv", "json", "html"]), default="table",
              show_default=True)
@click.option("--out", type=click.Path(dir_okay=False, path_type=Path), metavar="FILE",
              help="Write the report to FILE instead of the terminal.")
@pass_app
def report(app: App, campaign, fmt, out) -> int:
    """How far a campaign got: the funnel, breakdowns, what needs attention, every office."""
    from outreach.report_render import HTML_ROW_LIMIT, to_csv, to_html, to_table
    from outreach.reports import build_report, report_json

    cfg = app.config
    name, _ = cfg.campaign(campaign)
    ledger = app.ledger()
    if fmt == "json":
        from outreach.text import json_text

        text = report_json(ledger, name)
        if out is None and sys.stdout.isatty():   # for a person: indented, as `status --json` is
            import json

            text = json.dumps(json.loads(text), ensure_ascii=False, indent=2) + "\n"
        text = json_text(text)  # C1 and bidi controls as \u escapes: still the same JSON
        return _write(text, out, f"{name} (json)")
    data = build_report(ledger, name, letters="all", letters_limit=HTML_ROW_LIMIT if fmt == "html" else None)
    if fmt == "table" and out is None:
        from rich.console import Console

        to_table(data, Console())
        return EXIT_OK
    if fmt == "table":
        import io

        from rich.console import Console

        buffer = io.StringIO()
        to_table(data, Console(file=buffer, width=120, no_color=True))
        text = buffer.getvalue()
    else:
        text = {"csv": to_csv, "html": to_html}[fmt](data)
    return _write(text, out, f"{count(data['summary']['letters'], 'letter')} ({fmt})")


def _write(text: str, out: Path | None, what: str) -> int:
    if out is None:
        from outreach.text import visible

        # On a terminal no control character from the data may act; into a pipe, the file as it is.
        click.echo(visible(text, multiline=True) if sys.stdout.isatty() else text, nl=not text.endswith("\n"))
        return EXIT_OK
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(text, encoding="utf-8")
    except OSError as e:
        raise UserError(f"{out}: cannot write the report: {e.strerror}") from None
    echo(f"{shown(out)}: {what}")
    return EXIT_OK
