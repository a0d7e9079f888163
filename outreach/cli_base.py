"""What every command of the CLI shares: the config it was given, options, how paths are shown."""

from __future__ import annotations

from pathlib import Path

import click


class App:
    """The config path of this invocation, loaded only by commands that need it."""

    def __init__(self, config_path: Path):
        self.config_path = config_path
        self._config = None

    @property
    def config(self):
        if self._config is None:
            from outreach.config import load_config

            self._config = load_config(self.config_path)
        return self._config

    def ledger(self):
        """The ledger named by the config (opened, and created if need be)."""
        from outreach.ledger import open_ledger

        return open_ledger(self.config)


pass_app = click.make_pass_decorator(App)

campaign_option = click.option("--campaign", "-c", metavar="NAME",
                               help="The campaign (may be left out when config.toml has one).")


def echo(text: str = "", err: bool = False) -> None:
    """Print a line of ours that may carry data (names, reasons, SendGrid's words): its control
    characters shown as escapes, so nothing from a contact list or an event acts on the terminal."""
    from outreach.text import visible

    click.echo(visible(text, multiline=True), err=err)


def echo_json(value) -> None:
    """Print JSON for scripts: every value true (UTF-8), no control character raw."""
    import json

    from outreach.text import json_text

    click.echo(json_text(json.dumps(value, ensure_ascii=False, indent=2)))


def shown(path: Path) -> str:
    """A path as the user best reads it: relative to the current folder when inside it."""
    try:
        return str(Path(path).resolve().relative_to(Path.cwd().resolve()))
    except ValueError:
        return str(path)
