"""Load and validate config.toml: unknown keys are errors, paths are relative to the file.

Validation is plain code rather than a schema library: it keeps every command's
start-up instant and lets each message name the exact key and say what to write.
"""

from __future__ import annotations

import dataclasses
import os
import re
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from outreach.config_schedule import Schedule, read_schedule
from outreach.config_table import Table, email_problem, env_problem, url_problem
from outreach.errors import UserError

DEFAULT_CONFIG = "config.toml"
CAMPAIGN_NAME = re.compile(r"^[a-z0-9][a-z0-9_-]{0,62}$")


@dataclass(frozen=True)
class Sender:
    name: str
    email: str
    reply_to: str | None = None
    organization: str | None = None
    address: str | None = None
    phone: str | None = None
    test_to: tuple[str, ...] = ()      # who else may receive --test-to copies (besides email, reply_to)


@dataclass(frozen=True)
class Delivery:
    transport: str = "outbox"
    outbox_dir: Path = Path("outbox")
    batch_size: int = 100
    rate_per_minute: float = 60.0
    concurrency: int = 4
    max_attempts: int = 5
    timeout_s: float = 30.0
    keep_runs: int = 10        # dry-run folders kept per campaign, newest first; 0 keeps them all


@dataclass(frozen=True)
class Webhook:
    max_age_s: float = 600.0                 # older (or future) signed timestamps are refused
    max_body_bytes: int = 16 * 1024 * 1024   # larger posts get 413


@dataclass(frozen=True)
class Legislators:
    base_url: str = "https://unitedstates.github.io/congress-legislators"   # where --download fetches from


@dataclass(frozen=True)
class Dashboard:
    token_env: str = "OUTREACH_DASHBOARD_TOKEN"   # unset: `serve` makes a token for each run


FOLLOW_UP_STATUSES = ("not_opened", "delivered", "not_delivered", "not_replied")   # outreach.states.FOLLOW_UP


@dataclass(frozen=True)
class Replies:
    """Where offices' replies come back: each letter's Reply-To is `local+LETTER_ID@domain` of it."""

    address: str | None = None                              # e.g. replies@inbound.your-org.org; None: off
    public_key_env: str = "SENDGRID_INBOUND_PUBLIC_KEY"     # Inbound Parse's verification key
    max_body_bytes: int = 40 * 1024 * 1024                  # above SendGrid's own 30 MB inbound limit


@dataclass(frozen=True)
class Audience:
    chamber: str | None = None
    states: tuple[str, ...] = ()
    parties: tuple[str, ...] = ()
    committees: tuple[str, ...] = ()
    include: tuple[str, ...] = ()
    exclude: tuple[str, ...] = ()
    status: str | None = None          # follow-ups: the state of the first letter (FOLLOW_UP_STATUSES)


@dataclass(frozen=True)
class Campaign:
    contacts: Path
    templates: Path
    audience: Audience = Audience()
    subject: str | None = None
    schedule: Schedule | None = None
    follow_up_of: str | None = None    # a follow-up writes to recipients of that campaign ...
    after_days: int = 0                # ... at least this many days after their letter


@dataclass(frozen=True)
class Settings:
    sender: Sender
    delivery: Delivery = Delivery()
    database_url: str | None = None
    campaigns: dict[str, Campaign] = field(default_factory=dict)
    webhook: Webhook = Webhook()
    dashboard: Dashboard = Dashboard()
    transports: dict[str, Any] = field(default_factory=dict)   # each transport's own table, read by it
    legislators: Legislators = Legislators()
    replies: Replies = Replies()


def _read_settings(data: dict, path: Path) -> Settings:
    problems: list[str] = []
    top = Table(data, "", problems, path)

    s = top.table("sender", required=True)
    sender = Sender(
        name=s.text("name", check=lambda v: None if v.strip() else "should not be empty"),
        email=s.text("email", check=email_problem),
        reply_to=s.text("reply_to", None, check=email_problem),
        organization=s.text("organization", None),
        address=s.text("address", None),
        phone=s.text("phone", None),
        test_to=tuple(s.strings("test_to", check=email_problem)),
    )
    s.done()

    from outreach.transports import TRANSPORTS, read_settings as transport_settings

    d = top.table("delivery")
    delivery = Delivery(
        transport=d.text("transport", "outbox",
                         check=lambda v: None if v in TRANSPORTS else f"should be one of {', '.join(TRANSPORTS)}"),
        outbox_dir=Path(d.text("outbox_dir", "outbox")),
        batch_size=d.number("batch_size", 100, 0, 100_000, integer=True),
        rate_per_minute=d.number("rate_per_minute", 60.0, 0, 60_000),
        concurrency=d.number("concurrency", 4, 0, 64, integer=True),
        max_attempts=d.number("max_attempts", 5, 0, 20, integer=True),
        timeout_s=d.number("timeout_s", 30.0, 0, 600),
        keep_runs=d.number("keep_runs", 10, 0, 100_000, integer=True),
    )
    d.done()

    transports = transport_settings(top.table)

    w = top.table("webhook")
    webhook = Webhook(
        max_age_s=w.number("max_age_s", Webhook.max_age_s, 0, 7 * 86400),
        max_body_bytes=w.number("max_body_bytes", Webhook.max_body_bytes, 0, 1 << 30, integer=True),
    )
    w.done()

    g = top.table("legislators")
    legislators = Legislators(base_url=(g.text("base_url", Legislators.base_url, check=url_problem) or "").rstrip("/"))
    g.done()

    r = top.table("replies")
    replies = Replies(
        address=r.text("address", None, check=_replies_address_problem),
        public_key_env=r.text("public_key_env", Replies.public_key_env, check=env_problem),
        max_body_bytes=r.number("max_body_bytes", Replies.max_body_bytes, 1 << 20, 1 << 31, integer=True),
    )
    r.done()

    b = top.table("dashboard")
    dashboard = Dashboard(token_env=b.text("token_env", Dashboard.token_env, check=env_problem))
    b.done()

    db = top.table("database")
    database_url = db.text("url", None)
    db.done()

    campaigns: dict[str, Campaign] = {}
    all_campaigns = top.table("campaigns")
    for name in list(all_campaigns.data):
        if not CAMPAIGN_NAME.match(name):
            problems.append(f"{path}: campaign name {name!r}: use lower-case letters, digits, - and _ "
                            "(it names folders and SendGrid categories)")
            all_campaigns.seen.add(name)
            continue
        c = all_campaigns.table(name)
        campaigns[name] = Campaign(
            contacts=Path(c.text("contacts") or "."),
            templates=Path(c.text("templates") or "."),
            audience=_read_audience(c.table("audience")),
            subject=c.text("subject", None),
            schedule=read_schedule(c.table("schedule")) if "schedule" in c.data else _seen(c, "schedule"),
            follow_up_of=c.text("follow_up_of", None),
            after_days=c.number("after_days", 0, -1, 3650, integer=True),
        )
        c.done()
        campaign = campaigns[name]
        if campaign.follow_up_of is not None and campaign.follow_up_of not in all_campaigns.data:
            c.problem("follow_up_of", f"no campaign {campaign.follow_up_of!r} in this file")
        if campaign.follow_up_of is not None and campaign.audience.status is None:
            campaigns[name] = dataclasses.replace(
                campaign, audience=dataclasses.replace(campaign.audience, status="not_opened"))
        if campaign.follow_up_of is None and campaign.audience.status is not None:
            c.problem("audience", "status applies only to a follow-up: set follow_up_of too")
    top.done()
    if problems:
        raise UserError(*problems)
    return Settings(sender, delivery, database_url, campaigns, webhook, dashboard, transports, legislators, replies)


def _replies_address_problem(value: str) -> str | None:
    """The replies address takes a +LETTER_ID tag, so it may not carry one itself."""
    problem = email_problem(value)
    if problem:
        return problem
    if "+" in value.partition("@")[0]:
        return "no + in it: each letter's Reply-To adds +LETTER_ID to it"
    return None


def _seen(table: Table, key: str) -> None:
    table.seen.add(key)
    return None


def _read_audience(a: Table) -> Audience:
    from outreach.contacts import normalise_chamber
    from outreach.geography import normalise_state

    chamber = a.text("chamber", None, check=lambda v: None if normalise_chamber(v)
                     else "should be \"senate\" or \"house\"")
    audience = Audience(
        chamber=normalise_chamber(chamber) if chamber else None,
        states=tuple(normalise_state(s) for s in a.strings(
            "states", check=lambda v: None if normalise_state(v) else "not a U.S. state or territory code")),
        parties=tuple(a.strings("parties")),
        committees=tuple(c.strip().upper() for c in a.strings(
            "committees", check=lambda v: None if re.match(r"^[A-Za-z]{4}(\d{2})?$", v.strip())
            else "not a committee code like SSAS or HSFA")),
        include=tuple(a.strings("include")),
        exclude=tuple(a.strings("exclude")),
        status=a.text("status", None, check=lambda v: None if v in FOLLOW_UP_STATUSES
                      else f"should be one of {', '.join(FOLLOW_UP_STATUSES)}"),
    )
    a.done()
    return audience


class Config:
    """A validated config.toml with every path resolved against the file's folder."""

    def __init__(self, path: Path, settings: Settings):
        self.path = path
        self.base_dir = path.parent
        self.settings = settings

    @property
    def sender(self) -> Sender:
        return self.settings.sender

    @property
    def delivery(self) -> Delivery:
        return self.settings.delivery

    @property
    def sendgrid(self):
        """The [sendgrid] table (the webhook's key comes from it too)."""
        return self.settings.transports["sendgrid"]

    def transport_settings(self, name: str):
        """A transport's own config table, as that transport read it (None: no table)."""
        return self.settings.transports.get(name)

    @property
    def campaigns(self) -> dict[str, Campaign]:
        return self.settings.campaigns


    @property
    def webhook(self) -> Webhook:
        return self.settings.webhook

    @property
    def legislators(self) -> Legislators:
        return self.settings.legislators

    @property
    def replies(self) -> Replies:
        return self.settings.replies

    @property
    def dashboard(self) -> Dashboard:
        return self.settings.dashboard

    def resolve(self, p: Path) -> Path:
        """A path from the config, made absolute against the config file's folder."""
        return p if p.is_absolute() else (self.base_dir / p)

    @property
    def outbox_dir(self) -> Path:
        return self.resolve(self.delivery.outbox_dir)

    @property
    def database_url(self) -> str:
        url = self.settings.database_url
        if url is None:
            return f"sqlite:///{self.base_dir / 'outreach.db'}"
        # A relative SQLite path is relative to the config file, like every other path.
        m = re.match(r"^(sqlite(?:\+\w+)?:///)(?!/)(.+)$", url)
        if m and m.group(2) != ":memory:":
            return m.group(1) + str(self.base_dir / m.group(2))
        return url

    @property
    def database_missing(self) -> bool:
        """True when the ledger is an SQLite file not yet created (or in memory): nothing to read."""
        url = self.database_url
        return url.startswith("sqlite") and not ((path := sqlite_file(url)) and os.path.exists(path))

    def campaign(self, name: str | None) -> tuple[str, Campaign]:
        """The campaign called `name`, or the only one when `name` is None."""
        names = sorted(self.campaigns)
        if name is None:
            if len(names) == 1:
                return names[0], self.campaigns[names[0]]
            if not names:
                raise UserError(f"{self.path}: no [campaigns.NAME] section; add one")
            raise UserError(f"{self.path} has {len(names)} campaigns ({', '.join(names)}): "
                            "choose one with --campaign NAME")
        if name not in self.campaigns:
            known = ", ".join(names) or "none"
            raise UserError(f"{self.path}: no campaign {name!r} (campaigns: {known})")
        return name, self.campaigns[name]


def sqlite_file(url: str) -> str | None:
    """The file of an SQLite URL; None for an in-memory database (or a URL of another kind)."""
    path = url.split(":///", 1)[1] if url.startswith("sqlite") and ":///" in url else ""
    return path if path and path != ":memory:" else None


def load_config(path: str | Path = DEFAULT_CONFIG) -> Config:
    """Read and validate a config file; raise UserError with one line per problem."""
    path = Path(path)
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        raise UserError(f"{path}: config file not found; run from the project folder or pass --config PATH") from None
    except IsADirectoryError:
        raise UserError(f"{path}: is a folder; --config takes the config.toml file") from None
    except OSError as e:
        raise UserError(f"{path}: cannot read config file: {e.strerror}") from None
    try:
        data = tomllib.loads(raw.decode("utf-8-sig"))
    except UnicodeDecodeError:
        raise UserError(f"{path}: not UTF-8 text; save it as UTF-8") from None
    except tomllib.TOMLDecodeError as e:
        hint = ""
        if str(e).startswith("Invalid value"):   # most often text without its quotes: name = Jordan
            hint = '; text needs quotes (name = "Jordan Organizer"), lists brackets (states = ["VA"])'
        raise UserError(f"{path}: invalid TOML: {e}{hint}") from None
    return Config(path.resolve(), _read_settings(data, path))
