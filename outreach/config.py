"""Load and validate config.toml: unknown keys are errors, paths are relative to the file."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from outreach.errors import UserError

DEFAULT_CONFIG = "config.toml"
CAMPAIGN_NAME = re.compile(r"^[a-z0-9][a-z0-9_-]{0,62}$")
ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


class _Section(BaseModel):
    # strict: "10" is not silently an integer, 1.5 is not silently a count.
    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)


def _check_email(value: str) -> str:
    from outreach.addresses import check_email

    problem = check_email(value)
    if problem:
        raise ValueError(problem)
    return value


def _check_env_name(value: str) -> str:
    if not ENV_NAME.match(value):
        raise ValueError(f"{value!r} is not an environment variable name (letters, digits, _)")
    return value


class Sender(_Section):
    name: str = Field(min_length=1)
    email: str
    reply_to: str | None = None
    organization: str | None = None
    address: str | None = None
    phone: str | None = None

    _email = field_validator("email", "reply_to")(
        lambda v: v if v is None else _check_email(v))


PositiveInt = Annotated[int, Field(gt=0)]


class Delivery(_Section):
    transport: Literal["outbox", "sendgrid", "smtp"] = "outbox"
    outbox_dir: Path = Path("outbox")
    batch_size: PositiveInt = 100
    rate_per_minute: Annotated[float, Field(gt=0, le=60_000)] = 60.0
    concurrency: Annotated[int, Field(gt=0, le=64)] = 4
    max_attempts: Annotated[int, Field(gt=0, le=20)] = 5
    timeout_s: Annotated[float, Field(gt=0, le=600)] = 30.0

    @field_validator("rate_per_minute", "timeout_s", mode="before")
    @classmethod
    def _int_is_a_number(cls, v: Any) -> Any:
        return float(v) if isinstance(v, int) and not isinstance(v, bool) else v

    @field_validator("outbox_dir", mode="before")
    @classmethod
    def _path(cls, v: Any) -> Any:
        return Path(v) if isinstance(v, str) else v


class SendGrid(_Section):
    api_host: str = "https://api.sendgrid.com"
    api_key_env: str = "SENDGRID_API_KEY"
    webhook_public_key_env: str = "SENDGRID_WEBHOOK_PUBLIC_KEY"

    _env = field_validator("api_key_env", "webhook_public_key_env")(_check_env_name)

    @field_validator("api_host")
    @classmethod
    def _host(cls, v: str) -> str:
        if not re.match(r"^https?://[^/\s]+", v):
            raise ValueError(f"{v!r} is not a URL like https://api.sendgrid.com")
        return v.rstrip("/")


class Database(_Section):
    url: str | None = None


class Audience(_Section):
    chamber: Literal["senate", "house"] | None = None
    states: list[str] = []
    parties: list[str] = []
    committees: list[str] = []
    include: list[str] = []
    exclude: list[str] = []

    @field_validator("chamber", mode="before")
    @classmethod
    def _chamber(cls, v: Any) -> Any:
        if isinstance(v, str):
            from outreach.contacts import normalise_chamber

            return normalise_chamber(v) or v
        return v

    @field_validator("states")
    @classmethod
    def _states(cls, v: list[str]) -> list[str]:
        from outreach.geography import normalise_state

        out = []
        for s in v:
            code = normalise_state(s)
            if code is None:
                raise ValueError(f"{s!r} is not a U.S. state or territory code")
            out.append(code)
        return out

    @field_validator("committees")
    @classmethod
    def _committees(cls, v: list[str]) -> list[str]:
        return [c.strip().upper() for c in v]


class Campaign(_Section):
    contacts: Path
    templates: Path
    audience: Audience = Audience()
    subject: str | None = None

    @field_validator("contacts", "templates", mode="before")
    @classmethod
    def _path(cls, v: Any) -> Any:
        return Path(v) if isinstance(v, str) else v


class Settings(_Section):
    sender: Sender
    delivery: Delivery = Delivery()
    sendgrid: SendGrid = SendGrid()
    database: Database = Database()
    campaigns: dict[str, Campaign] = {}

    @field_validator("campaigns")
    @classmethod
    def _names(cls, v: dict[str, Campaign]) -> dict[str, Campaign]:
        for name in v:
            if not CAMPAIGN_NAME.match(name):
                raise ValueError(
                    f"campaign name {name!r}: use lower-case letters, digits, - and _ "
                    "(it names folders and SendGrid categories)")
        return v


class Config:
    """A validated config.toml with every path resolved against the file's folder."""

    def __init__(self, path: Path, settings: Settings):
        self.path = path
        self.base_dir = path.parent
        self.settings = settings

    # Convenience views, so callers do not repeat the path arithmetic.
    @property
    def sender(self) -> Sender:
        return self.settings.sender

    @property
    def delivery(self) -> Delivery:
        return self.settings.delivery

    @property
    def sendgrid(self) -> SendGrid:
        return self.settings.sendgrid

    @property
    def campaigns(self) -> dict[str, Campaign]:
        return self.settings.campaigns

    def resolve(self, p: Path) -> Path:
        """A path from the config, made absolute against the config file's folder."""
        return p if p.is_absolute() else (self.base_dir / p)

    @property
    def outbox_dir(self) -> Path:
        return self.resolve(self.delivery.outbox_dir)

    @property
    def database_url(self) -> str:
        url = self.settings.database.url
        if url is None:
            return f"sqlite:///{self.base_dir / 'outreach.db'}"
        # A relative SQLite path is relative to the config file, like every other path.
        m = re.match(r"^(sqlite(?:\+\w+)?:///)(?!/)(.+)$", url)
        if m and m.group(2) != ":memory:":
            return m.group(1) + str(self.base_dir / m.group(2))
        return url

    def campaign(self, name: str | None) -> tuple[str, Campaign]:
        """The campaign called `name`, or the only one when `name` is None."""
        names = sorted(self.campaigns)
        if name is None:
            if len(names) == 1:
                return names[0], self.campaigns[names[0]]
            if not names:
                raise UserError(f"{self.path}: no [campaigns.NAME] section; add one")
            raise UserError(
                f"{self.path} has {len(names)} campaigns ({', '.join(names)}): "
                "choose one with --campaign NAME")
        if name not in self.campaigns:
            known = ", ".join(names) or "none"
            raise UserError(f"{self.path}: no campaign {name!r} (campaigns: {known})")
        return name, self.campaigns[name]


def _where(loc: tuple[Any, ...]) -> str:
    """('campaigns', 'x', 'audience', 'chamber') -> '[campaigns.x.audience] chamber'."""
    parts = [str(p) for p in loc if not isinstance(p, int)]
    if not parts:
        return "top level"
    if len(parts) == 1:
        return f"[{parts[0]}]" if parts[0] in Settings.model_fields else repr(parts[0])
    return f"[{'.'.join(parts[:-1])}] {parts[-1]}"


def describe_validation_error(path: Path, err: ValidationError) -> list[str]:
    """One line per problem, naming the file and the key."""
    lines = []
    for e in err.errors():
        loc = e["loc"]
        where = _where(loc)
        kind = e["type"]
        if kind == "extra_forbidden":
            msg = f"{path}: unknown key {where}; check its spelling or remove it"
        elif kind == "missing":
            msg = f"{path}: {where} is required"
        else:
            text = e["msg"].removeprefix("Value error, ")
            shown = e.get("input")
            suffix = f" (got {shown!r})" if kind != "value_error" and not isinstance(shown, dict) else ""
            msg = f"{path}: {where}: {text}{suffix}"
        lines.append(msg)
    return lines


def load_config(path: str | Path = DEFAULT_CONFIG) -> Config:
    """Read and validate a config file; raise UserError with one line per problem."""
    path = Path(path)
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        raise UserError(
            f"{path}: config file not found; run from the project folder or pass --config PATH") from None
    except OSError as e:
        raise UserError(f"{path}: cannot read config file: {e.strerror}") from None
    try:
        data = tomllib.loads(raw.decode("utf-8-sig"))
    except UnicodeDecodeError:
        raise UserError(f"{path}: not UTF-8 text; save it as UTF-8") from None
    except tomllib.TOMLDecodeError as e:
        raise UserError(f"{path}: invalid TOML: {e}") from None
    try:
        settings = Settings.model_validate(data)
    except ValidationError as e:
        raise UserError(*describe_validation_error(path, e)) from None
    return Config(path.resolve(), settings)
