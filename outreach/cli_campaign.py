"""`outreach campaign new NAME`: a second campaign starts from the first one's letters, not a blank page."""

from __future__ import annotations

import click

from outreach.cli_base import App, echo, pass_app, shown
from outreach.errors import EXIT_OK, UserError


@click.group()
def campaign() -> None:
    """Campaigns in config.toml."""


@campaign.command("new")
@click.argument("name")
@click.option("--from", "source", metavar="CAMPAIGN",
              help="Copy this campaign's templates and contact list (default: the only one, or the first).")
@pass_app
def campaign_new(app: App, name: str, source: str | None) -> int:
    """Add campaign NAME: copy an existing campaign's templates to templates/NAME, and add its
    [campaigns.NAME] table to config.toml (comments and all else left as they are)."""
    import shutil

    from outreach.config import CAMPAIGN_NAME, load_config

    cfg = app.config
    if not CAMPAIGN_NAME.match(name):
        raise UserError(f"campaign name {name!r}: use lower-case letters, digits, - and _ "
                        "(it names folders and SendGrid categories)")
    if name in cfg.campaigns:
        raise UserError(f"{cfg.path}: campaign {name!r} is already there; choose another name")
    if source is None and cfg.campaigns:
        source = sorted(cfg.campaigns)[0]
    if source is None:
        raise UserError(f"{cfg.path}: no campaign to copy yet; add a [campaigns.NAME] table by hand "
                        "(README: Configuration)")
    source, original = cfg.campaign(source)
    from_folder = cfg.resolve(original.templates)
    if not from_folder.is_dir():
        raise UserError(f"{from_folder}: the templates of campaign {source!r} are not there to copy")
    relative = original.templates.parent / name if not original.templates.is_absolute() else None
    to_folder = cfg.resolve(relative) if relative is not None else cfg.base_dir / "templates" / name
    if to_folder.exists():
        raise UserError(f"{to_folder}: already exists; move it away or choose another name")

    table = (f"\n# Added by `outreach campaign new {name}` (a copy of {source}): edit its letters in\n"
             f"# {relative or to_folder}/, then `outreach preview --campaign {name}`.\n"
             f"[campaigns.{name}]\n"
             f"contacts = {_toml_string(original.contacts.as_posix())}\n"
             f"templates = {_toml_string((relative or to_folder).as_posix())}\n")
    text = cfg.path.read_text(encoding="utf-8")
    updated = text + ("" if text.endswith("\n") or not text else "\n") + table
    staged = cfg.path.with_name(f".{cfg.path.name}.new")
    try:
        shutil.copytree(from_folder, to_folder)
        staged.write_text(updated, encoding="utf-8")
        load_config(staged)             # what is written is a config that loads
        staged.replace(cfg.path)
    except UserError as e:
        shutil.rmtree(to_folder, ignore_errors=True)
        staged.unlink(missing_ok=True)
        raise UserError(f"{cfg.path}: adding the campaign would break it ({e.problems[0]}); nothing was "
                        "changed") from None
    except OSError as e:
        shutil.rmtree(to_folder, ignore_errors=True)
        staged.unlink(missing_ok=True)
        raise UserError(f"{e.filename or cfg.path}: cannot write: {e.strerror or e}; nothing was changed") from None
    echo(f"campaign {name}: letters copied from {source} to {shown(to_folder)}/, and [campaigns.{name}] "
         f"added to {shown(cfg.path)} (contacts: {original.contacts.as_posix()})")
    echo(f"next: edit the letters, then `outreach preview --campaign {name}`; with two campaigns, "
         "every command takes --campaign NAME")
    return EXIT_OK


def _toml_string(value: str) -> str:
    """A TOML basic string."""
    import json

    return json.dumps(value, ensure_ascii=False)
