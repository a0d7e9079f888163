"""Named leases in the ledger: one send of a campaign at a time, one scheduler per database."""

from __future__ import annotations

import os
import socket
import threading
import time
import uuid

from sqlalchemy import insert, select, update
from sqlalchemy.exc import IntegrityError, SQLAlchemyError

from outreach.errors import UserError
from outreach.ledger import schema as S
from outreach.ledger.writer import now


class Lock:
    """A named lease in the database, kept alive by a heartbeat thread.

    A holder on this host whose process is gone, or any holder silent for
    STALE_AFTER seconds, is stale and is taken over.
    """

    HEARTBEAT = 5.0
    STALE_AFTER = 60.0

    def __init__(self, ledger, name: str, what: str):
        self.ledger = ledger
        self.name = name
        self.what = what
        self.owner = uuid.uuid4().hex
        self.took_over: dict | None = None
        # What the heartbeat knows: since when it has failed to reach the database (and
        # why), and whether another process took the lock over meanwhile.
        self.failing_since: float | None = None
        self.failure: Exception | None = None
        self.lost = False
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def __enter__(self) -> "Lock":
        self.acquire()
        return self

    def __exit__(self, *exc) -> None:
        self.release()

    def acquire(self) -> None:
        K = S.locks.c
        me = {"owner": self.owner, "pid": os.getpid(), "host": socket.gethostname()}
        for _ in range(5):
            t = now()
            with self.ledger.write() as db:
                held = db.execute(select(S.locks).where(K.name == self.name)).one_or_none()
                if held is None:
                    try:
                        db.execute(insert(S.locks).values(name=self.name, acquired_at=t, heartbeat_at=t, **me))
                    except IntegrityError:
                        continue
                    break
                if not _is_stale(held, t, self.STALE_AFTER):
                    since = time.strftime("%H:%M:%S", time.localtime(held.acquired_at))
                    raise UserError(f"{self.what} is already running (pid {held.pid} on {held.host}, since {since}); "
                                    "wait for it to finish or stop it first")
                n = db.execute(update(S.locks).where(K.name == self.name, K.owner == held.owner)
                               .values(acquired_at=t, heartbeat_at=t, **me)).rowcount
                if n == 1:
                    self.took_over = {"pid": held.pid, "host": held.host}
                    break
        else:
            raise UserError(f"could not take the lock for {self.what}; try again")
        self._thread = threading.Thread(target=self._beat, name=f"lock:{self.name}", daemon=True)
        self._thread.start()

    def _beat(self) -> None:
        K = S.locks.c
        while not self._stop.wait(self.HEARTBEAT):
            try:
                with self.ledger.write() as db:
                    held = db.execute(update(S.locks).where(K.name == self.name, K.owner == self.owner)
                                      .values(heartbeat_at=now())).rowcount
            except (SQLAlchemyError, UserError) as e:  # a busy database delays a beat; staleness allows many
                self.failing_since = self.failing_since or now()
                self.failure = e
                continue
            self.failing_since = self.failure = None
            if held == 0:
                self.lost = True
                return

    def release(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=self.HEARTBEAT + 1)
        K = S.locks.c
        try:
            with self.ledger.write() as db:
                db.execute(S.locks.delete().where(K.name == self.name, K.owner == self.owner))
        except (SQLAlchemyError, UserError):
            pass


def _is_stale(held, t: float, stale_after: float) -> bool:
    """A holder on this host whose process is gone, or any holder silent for `stale_after`
    (on this host too: its pid may have been reused by another process)."""
    if held.host == socket.gethostname() and not _pid_alive(held.pid):
        return True
    return t - held.heartbeat_at > stale_after


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # A zombie (killed, not yet reaped by its parent) is gone for our purposes.
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            return f.read().split(b") ", 1)[1][:1] != b"Z"
    except (OSError, IndexError):
        return True
