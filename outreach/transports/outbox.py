"""The outbox: letters written as .eml files under OUTBOX_DIR/CAMPAIGN/RUN_ID/, with a manifest.

What a dry run sends through: nothing leaves the machine. Files go to a hidden
partial folder, published (renamed) only when the run completed, so a run cut
short or failed leaves nothing behind. Files are named so a person finds an
office (`0007-S001198-sullivan.eml`); the manifest keeps each letter's id.
Only the newest `[delivery] keep_runs` folders of a campaign are kept.
"""

from __future__ import annotations

import csv
import os
import re
import secrets
import shutil
import time
import unicodedata
from pathlib import Path

from outreach.errors import UserError
from outreach.message import Message, mail_date, to_eml
from outreach.text import spreadsheet_cell
from outreach.transports import SendResult

DELIVERS = False
MANIFEST_COLUMNS = ["letter_id", "email", "bioguide_id", "name", "subject", "file"]


def read_settings(table_of) -> None:
    """The outbox's folder is [delivery] outbox_dir: no table of its own."""
    return None


def secret_variables(cfg) -> list[str]:
    return []


def from_config(cfg, campaign: str) -> "OutboxTransport":
    return OutboxTransport(cfg.outbox_dir, campaign, keep_runs=cfg.delivery.keep_runs)


def new_run_id() -> str:
    """Sortable and unique: UTC time plus a few random characters."""
    return time.strftime("%Y%m%dT%H%M%SZ", time.gmtime()) + "-" + secrets.token_hex(2)


RUN_ID = re.compile(r"\d{8}T\d{6}Z-[0-9a-f]{4}")
LABEL_MAX = 40


def file_name(number: int, message: Message) -> str:
    """'0007-S001198-sullivan.eml': the letter's place in the run, then its office as a person finds it.

    The label is ASCII letters, digits and hyphens, at most LABEL_MAX characters, whatever
    the contact cell holds (accents are dropped, anything else becomes a hyphen).
    """
    who = message.last_name or (message.to_name.split() or [""])[-1] or message.to_email.partition("@")[0]
    label = "-".join(part for part in (_ascii(message.bioguide_id), _ascii(who).lower()) if part)
    label = label[:LABEL_MAX].rstrip("-") or "letter"
    return f"{number:04d}-{label}{'-test' if message.is_test else ''}.eml"


def _ascii(text: str) -> str:
    plain = unicodedata.normalize("NFKD", text).encode("ascii", "ignore").decode("ascii")
    return re.sub(r"[^A-Za-z0-9]+", "-", plain).strip("-")


class OutboxTransport:
    """One run's folder: each message an .eml file, the manifest written when the run completes."""

    name = "outbox"
    paced = False

    def __init__(self, outbox_dir: Path, campaign: str, run_id: str | None = None, keep_runs: int = 0):
        self.run_id = run_id or new_run_id()
        self.runs = outbox_dir / campaign
        self.folder = self.runs / self.run_id
        self.partial = self.runs / f".{self.run_id}.partial"
        self.keep_runs = keep_runs
        self.where = str(self.folder)
        self.rows: list[list[str]] = []
        self._date: tuple[int, str] | None = None
        self._dir_fd: int | None = None

    def _open(self) -> int:
        if self._dir_fd is None:
            try:
                self.partial.mkdir(parents=True)
                self._dir_fd = os.open(self.partial, os.O_RDONLY)
            except OSError as e:
                raise UserError(f"{self.partial}: cannot create the outbox folder: {e.strerror}") from None
        return self._dir_fd

    def send(self, message: Message) -> SendResult:
        """Write the message; a file that cannot be written stops the run (UserError)."""
        folder = self._open()
        name = file_name(len(self.rows) + 1, message)
        data = to_eml(message, self._now())
        try:
            # Relative to the open folder: no path lookup per file, which adds up over 10,000.
            fd = os.open(name, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644, dir_fd=folder)
            try:
                view = memoryview(data)
                while view:
                    view = view[os.write(fd, view):]
            finally:
                os.close(fd)
        except OSError as e:
            raise UserError(f"{self.partial / name}: cannot write to the outbox: {e.strerror}; "
                            "nothing was written") from None
        self.rows.append([message.letter_id, message.to_email, message.bioguide_id, message.to_name,
                          message.subject, name])
        return SendResult("accepted", message_id=name)

    def _now(self) -> str:
        # One Date per second is plenty and saves formatting it 10,000 times.
        second = int(time.time())
        if self._date is None or self._date[0] != second:
            self._date = (second, mail_date(second))
        return self._date[1]

    def close(self, complete: bool = True) -> None:
        """Publish the folder with its manifest if the run completed; otherwise remove it."""
        if self._dir_fd is not None:
            os.close(self._dir_fd)
            self._dir_fd = None
        if not complete:
            shutil.rmtree(self.partial, ignore_errors=True)
            return
        self.partial.mkdir(parents=True, exist_ok=True)  # a run of no letters still has its folder
        try:
            with open(self.partial / "manifest.csv", "w", newline="", encoding="utf-8") as f:
                w = csv.writer(f, lineterminator="\n")
                w.writerow(MANIFEST_COLUMNS)
                # Made for people to open in a spreadsheet: no cell starts a formula.
                w.writerows([spreadsheet_cell(v) for v in row] for row in self.rows)
            os.replace(self.partial, self.folder)
        except OSError as e:
            shutil.rmtree(self.partial, ignore_errors=True)
            raise UserError(f"{self.partial}: cannot finish the outbox folder: {e.strerror}; "
                            "nothing was written") from None
        self._prune()

    def _prune(self) -> None:
        """Remove this campaign's oldest run folders beyond keep_runs (run ids sort by time).

        Only folders named as runs are touched: anything else a person put there stays.
        """
        if not self.keep_runs:
            return
        runs = sorted(p.name for p in self.runs.iterdir() if RUN_ID.fullmatch(p.name) and p.is_dir())
        for name in runs[:-self.keep_runs]:
            shutil.rmtree(self.runs / name, ignore_errors=True)
