"""The outbox: letters written as .eml files under OUTBOX_DIR/CAMPAIGN/RUN_ID/, with a manifest."""

from __future__ import annotations

import contextlib
import csv
import io
import os
import secrets
import shutil
import time
from pathlib import Path

from outreach.errors import UserError
from outreach.message import Message, to_eml

MANIFEST_COLUMNS = ["letter_id", "email", "bioguide_id", "name", "subject", "file"]


def new_run_id() -> str:
    """Sortable and unique: UTC time plus a few random characters."""
    return time.strftime("%Y%m%dT%H%M%SZ", time.gmtime()) + "-" + secrets.token_hex(2)


class OutboxRun:
    """One run's folder. Files go to a hidden partial folder that is published only
    when every letter was written, so a failed run leaves nothing behind.

    `shield`, if given, is a context manager that holds off interrupts (see dryrun.py):
    making, publishing and removing the folder then each run to the end."""

    def __init__(self, outbox_dir: Path, campaign: str, run_id: str | None = None, shield=None):
        self._shield = shield or contextlib.nullcontext
        self.run_id = run_id or new_run_id()
        self.final_dir = outbox_dir / campaign / self.run_id
        self.partial_dir = outbox_dir / campaign / f".{self.run_id}.partial"
        self.rows: list[list[str]] = []
        self._manifest_parts: list[str] = []  # manifest lines already in CSV form (from workers)
        self._date = None
        self._dir_fd: int | None = None

    def __enter__(self) -> "OutboxRun":
        try:
            with self._shield():
                try:
                    self.partial_dir.mkdir(parents=True)
                except OSError as e:
                    raise UserError(f"{self.partial_dir}: cannot create the outbox folder: {e.strerror}") from None
                self._dir_fd = os.open(self.partial_dir, os.O_RDONLY)
        except BaseException:  # an interrupt held off until the folder was made: it goes again
            self.abort()
            raise
        return self

    def write(self, message: Message, bioguide_id: str = "") -> Path:
        name = f"{message.letter_id}.eml"
        data = to_eml(message, self._now())
        try:
            # Relative to the open folder: no path lookup per file, which adds up over 10,000.
            fd = os.open(name, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644, dir_fd=self._dir_fd)
            try:
                view = memoryview(data)
                while view:
                    view = view[os.write(fd, view):]
            finally:
                os.close(fd)
        except OSError as e:
            raise UserError(f"{self.partial_dir / name}: cannot write to the outbox: {e.strerror}") from None
        self.rows.append([message.letter_id, message.to_email, bioguide_id, message.to_name,
                          message.subject, name])
        return self.final_dir / name

    def _now(self) -> str:
        # One Date per second is plenty and saves formatting it 10,000 times.
        from email.utils import formatdate

        second = int(time.time())
        if self._date is None or self._date[0] != second:
            self._date = (second, formatdate(second, usegmt=True))
        return self._date[1]

    def _close_dir(self) -> None:
        if self._dir_fd is not None:
            os.close(self._dir_fd)
            self._dir_fd = None

    def take_manifest(self) -> str:
        """The manifest lines of the letters written so far, as CSV text; they are forgotten here
        (a worker process hands them to the parent's `add_manifest`)."""
        buffer = io.StringIO(newline="")
        csv.writer(buffer).writerows(self.rows)
        self.rows = []
        return buffer.getvalue()

    def add_manifest(self, text: str) -> None:
        self._manifest_parts.append(text)

    def publish(self) -> Path:
        with self._shield():
            return self._publish()

    def _publish(self) -> Path:
        self._close_dir()
        with open(self.partial_dir / "manifest.csv", "w", newline="", encoding="utf-8") as f:
            w = csv.writer(f)
            w.writerow(MANIFEST_COLUMNS)
            f.write("".join(self._manifest_parts))
            w.writerows(self.rows)
        os.replace(self.partial_dir, self.final_dir)
        return self.final_dir

    def abort(self) -> None:
        with self._shield():
            self._close_dir()
            shutil.rmtree(self.partial_dir, ignore_errors=True)

    def __exit__(self, kind, exc, tb) -> None:
        if exc is not None:
            self.abort()

