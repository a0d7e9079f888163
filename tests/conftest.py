"""Shared fixtures: the CLI runner, the ../shared data, small files built per test."""

from __future__ import annotations

import os
import shutil
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared"
IN_CI = os.environ.get("CI", "").lower() == "true"


def need(condition: bool, reason: str) -> None:
    """Skip with a clear reason on a user's machine; in CI a missing dependency is a failure."""
    if condition:
        return
    if IN_CI:
        pytest.fail(f"CI=true but {reason}", pytrace=False)
    pytest.skip(reason)


# Term decisions read this moment, never the calendar: ../shared's list has term_end 2027-01-03
# for most members and 2026-11-03 for two appointed senators. Tests about ended terms set
# their own (monkeypatch.setenv); everything else runs as on this day of the 119th Congress.
TERMS_AT = "2026-10-01T10:00:00-04:00"
os.environ["OUTREACH_NOW"] = TERMS_AT


@pytest.fixture(scope="session")
def shared() -> Path:
    need((SHARED / "congress" / "contacts-congress.csv").exists(),
         f"the shared Congress data is not at {SHARED} (clone ../shared beside the project)")
    return SHARED


@dataclass
class Result:
    code: int
    out: str
    err: str


@pytest.fixture
def outreach(capsys, monkeypatch):
    """Run the real CLI in-process: outreach("contacts", "check", path) -> Result."""
    from outreach.cli import run

    def invoke(*args: str | os.PathLike, cwd: Path | None = None) -> Result:
        if cwd is not None:
            monkeypatch.chdir(cwd)
        capsys.readouterr()
        code = run([str(a) for a in args])
        captured = capsys.readouterr()
        return Result(code, captured.out, captured.err)

    return invoke


def assert_no_traceback(result: Result) -> None:
    text = result.out + result.err
    assert "Traceback" not in text, text
    assert "internal error" not in text, text


SAMPLE_CONFIG = """
[sender]
name = "Jordan Organizer"
email = "jordan@advocacy.example.org"
organization = "Advocacy Network"

[delivery]
outbox_dir = "outbox"

[campaigns.korea-exception]
contacts = "contacts.csv"
templates = "{templates}"
{extra}
"""


@dataclass
class Project:
    """A throwaway project folder: config.toml, a contact list, the real templates."""

    root: Path

    @property
    def config(self) -> Path:
        return self.root / "config.toml"

    def write_config(self, extra: str = "", templates: Path | None = None) -> Path:
        self.config.write_text(SAMPLE_CONFIG.format(
            templates=templates or ROOT / "templates" / "korea-exception", extra=extra), encoding="utf-8")
        return self.config

    def write_contacts(self, text: str, name: str = "contacts.csv") -> Path:
        path = self.root / name
        path.write_text(text, encoding="utf-8")
        return path

    def runs(self, campaign: str = "korea-exception") -> list[Path]:
        folder = self.root / "outbox" / campaign
        return sorted(p for p in folder.iterdir() if p.is_dir() and not p.name.startswith(".")) if folder.exists() else []

    def leftovers(self, campaign: str = "korea-exception") -> list[Path]:
        folder = self.root / "outbox" / campaign
        return list(folder.iterdir()) if folder.exists() else []


@pytest.fixture
def project(tmp_path) -> Project:
    p = Project(tmp_path)
    p.write_config()
    shutil.copy(ROOT / "contacts" / "sample.csv", tmp_path / "contacts.csv")
    return p


def free_port() -> int:
    """A TCP port nothing listens on right now, on 127.0.0.1."""
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for_port(port: int, timeout: float = 30.0, proc=None) -> None:
    """Until something accepts connections on 127.0.0.1:port; fails if `proc` exits first."""
    import socket
    import time

    deadline = time.time() + timeout
    while time.time() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
            return
        except OSError:
            if proc is not None and proc.poll() is not None:
                out = proc.stdout.read() if proc.stdout else ""
                pytest.fail(f"the server exited ({proc.returncode}): {str(out)[-2000:]}")
            time.sleep(0.1)
    pytest.fail(f"nothing listened on port {port} within {timeout:.0f} s")


def record_all(cfg, ledger, campaign: str | None = None) -> int:
    """Every letter of the campaign recorded as `pending` (as a live run does before it sends);
    returns the campaign's id."""
    from outreach.plan import plan_campaign

    plan = plan_campaign(cfg, campaign, ledger=ledger)
    cid = ledger.campaigns.id(plan.name)
    ledger.letters.record(cid, [plan.templates.render(c) for c in plan.to_send], "hash")
    return cid
