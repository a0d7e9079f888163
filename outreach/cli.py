"""The `outreach` command line: a thin layer over the library; heavy imports stay inside commands.

The commands live in the cli_* modules; this one gathers them under one group.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import click

from outreach import __version__
from outreach.cli_base import App, pass_app
from outreach.cli_campaign import campaign
from outreach.cli_contacts import contacts
from outreach.cli_ledger import letters, status
from outreach.cli_letters import preview, send
from outreach.cli_replies import replies
from outreach.cli_report import report
from outreach.cli_schedule import schedule
from outreach.cli_suppressions import suppressions
from outreach.cli_tracking import events, serve
from outreach.errors import (
    EXIT_ATTENTION, EXIT_BAD_INPUT, EXIT_BUG, EXIT_INTERRUPTED, EXIT_OK, UserError, missing_module, one_line,
)


@click.group(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.option("--config", "config_path", type=click.Path(dir_okay=False, path_type=Path),
              default=Path("config.toml"), show_default=True, metavar="PATH",
              help="The campaign configuration.")
@click.version_option(__version__, prog_name="outreach")
@click.pass_context
def cli(ctx: click.Context, config_path: Path) -> None:
    """Letters to members of Congress, merged from a contact list and Jinja2 templates.

    Dry run is the default everywhere: nothing is sent without --live.
    """
    ctx.obj = App(config_path)


# -- config -------------------------------------------------------------------

@cli.group("config")
def config_group() -> None:
    """Check the configuration."""


@config_group.command("check")
@pass_app
def config_check(app: App) -> int:
    """Validate config.toml, render every campaign's letters, and say what it sets up (secrets are never shown)."""
    from outreach.ledger import safe_url
    from outreach.plan import render_every_letter
    from outreach.text import count, visible

    cfg = app.config
    click.echo(f"{cfg.path}: valid")
    click.echo(f"  sender: {cfg.sender.name} <{cfg.sender.email}>")
    click.echo(f"  transport: {cfg.delivery.transport}; database: {safe_url(cfg.database_url)}")
    problems = 0
    for name, campaign in sorted(cfg.campaigns.items()):
        missing = [f"{label} {path} not found"
                   for label, path in (("contacts", campaign.contacts), ("templates", campaign.templates))
                   if not cfg.resolve(path).exists()]
        head = f"  campaign {name}: {campaign.contacts} + {campaign.templates}"
        if missing:
            problems += 1
            click.echo(f"{head}: {'; '.join(missing)}")
            continue
        try:
            plan = render_every_letter(cfg, name)
        except UserError as e:
            problems += 1
            click.echo(f"{head}: {visible('; '.join(e.problems))}")
            continue
        rendered = len(plan.selection.recipients)
        skipped = len({p.line for p in plan.contact_list.problems})
        note = (f"; {count(skipped, 'row')} skipped: `outreach contacts check {campaign.contacts}` says why"
                if skipped else "")
        click.echo(f"{head}: ok, {count(rendered, 'letter')} render{'s' if rendered == 1 else ''}{note}")
    from outreach.transports import secret_variables

    for env in secret_variables(cfg):
        click.echo(f"  ${env}: {'set' if os.environ.get(env) else 'not set'}")
    if problems:
        click.echo(f"outreach: {count(problems, 'campaign')} cannot run as configured: fix what is named above",
                   err=True)
    return EXIT_BAD_INPUT if problems else EXIT_OK


# -- entry point ----------------------------------------------------------------

def main(argv: list[str] | None = None) -> None:
    """Run the CLI; every failure a user can cause ends as one line and an exit code."""
    import signal

    code = 130
    try:
        code = run(argv)
    except KeyboardInterrupt:  # a second Ctrl-C while the first was being reported
        pass
    finally:
        # The command is over; a Ctrl-C now (an impatient second press) would only make
        # Python print a traceback from its shutdown. One already pending is raised as
        # signal() is called, before it changes anything: it is dropped, and signal()
        # called again.
        while True:  # no call before the try, where the pending interrupt would be raised
            try:
                signal.signal(signal.SIGINT, signal.SIG_IGN)
                break
            except KeyboardInterrupt:
                code = code or 130
    sys.exit(code)


GLOBAL_OPTIONS = ("--config",)


def global_options_first(argv: list[str]) -> list[str]:
    """`outreach send --config FILE` as `outreach --config FILE send`: many people type a global
    option after the command. Nothing after `--` moves."""
    front, rest, i = [], [], 0
    while i < len(argv):
        arg = argv[i]
        if arg == "--":
            rest += argv[i:]
            break
        name = arg.split("=", 1)[0]
        if name in GLOBAL_OPTIONS:
            take = 1 if "=" in arg else 2
            front += argv[i:i + take]
            i += take
            continue
        rest.append(arg)
        i += 1
    return front + rest


def run(argv: list[str] | None = None) -> int:
    """Run the CLI and return its exit code (what main() passes to sys.exit)."""
    argv = global_options_first(list(sys.argv[1:] if argv is None else argv))
    try:
        rv = cli.main(args=argv, prog_name="outreach", standalone_mode=False)
    except click.exceptions.Exit as e:
        return e.exit_code
    except click.ClickException as e:
        e.show()
        return EXIT_BAD_INPUT
    except click.Abort as e:
        click.echo("outreach: aborted; nothing more was done", err=True)
        # Click turns a Ctrl-C it meets into Abort: an interruption still ends as one (130).
        return EXIT_INTERRUPTED if isinstance(e.__cause__, KeyboardInterrupt) else EXIT_ATTENTION
    except UserError as e:
        from outreach.text import visible

        for problem in e.problems:   # a problem may quote a cell: no control character acts on the terminal
            click.echo(f"outreach: {visible(problem)}", err=True)
        return e.exit_code
    except KeyboardInterrupt:
        click.echo("outreach: interrupted", err=True)
        return EXIT_INTERRUPTED
    except BrokenPipeError:
        # The reader went away (e.g. `| head`): not an error of ours.
        sys.stderr.close()
        return EXIT_OK
    except ModuleNotFoundError as e:   # run by a Python without the project's packages
        if os.environ.get("OUTREACH_DEBUG"):
            raise
        click.echo(f"outreach: {missing_module(e)}", err=True)
        return EXIT_BAD_INPUT
    except Exception as e:  # noqa: BLE001 - the last line of defence against tracebacks
        if os.environ.get("OUTREACH_DEBUG"):
            raise
        click.echo(f"outreach: internal error: {type(e).__name__}: {one_line(str(e))}; "
                   "this is a bug: run again with OUTREACH_DEBUG=1 for the details and report it",
                   err=True)
        return EXIT_BUG
    return rv if isinstance(rv, int) else EXIT_OK


for command in (contacts, preview, send, status, letters, report, serve, events, suppressions, schedule, campaign,
                replies):
    cli.add_command(command)
