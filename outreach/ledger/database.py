"""The ledger's database: the engine, transactions, the schema's migrations, and the parts.

Every state change is committed before the next side effect, so a crash can
at worst leave a letter `sending`, which the next run turns into `unknown`:
visible, never silently resent.
"""

from __future__ import annotations

import contextlib
import os
import threading

from sqlalchemy import create_engine, event, func, insert, select
from sqlalchemy.engine import Engine
from sqlalchemy.exc import OperationalError, SQLAlchemyError

from outreach.config import sqlite_file
from outreach.errors import EXIT_ATTENTION, LedgerFailure, UserError
from outreach.ledger import schema as S
from outreach.ledger.campaigns import Campaigns
from outreach.ledger.event_store import EventStore
from outreach.ledger.letters import Letters
from outreach.ledger.locks import Lock
from outreach.ledger.replies import Replies
from outreach.ledger.report_queries import ReportQueries
from outreach.ledger.sessions import Sessions
from outreach.ledger.suppressions import Suppressions
from outreach.ledger.writer import GroupWriter, now


class Ledger:
    """The ledger in any SQLAlchemy database; SQLite (WAL) by default.

    Its parts, each a small object over the same database: `campaigns`,
    `letters`, `events`, `suppressions`, `replies`, `sessions` (the dashboard's), `reports`
    (read-only queries).
    """

    def __init__(self, url: str):
        self.url = url
        # SQLite has one writer at a time and its busy handler sleeps in steps of
        # milliseconds; our own threads queue here instead, without sleeping.
        self._write_lock = threading.Lock() if url.startswith("sqlite") else None
        self._writer: GroupWriter | None = None
        self._writer_lock = threading.Lock()
        try:
            self.engine = _engine(url)
            self.migrate()
        except UserError:
            raise
        except SQLAlchemyError as e:
            raise UserError(f"{safe_url(url)}: cannot open the ledger database: {short_error(e)}") from None
        self.campaigns = Campaigns(self)
        self.letters = Letters(self)
        self.events = EventStore(self)
        self.suppressions = Suppressions(self)
        self.replies = Replies(self)
        self.sessions = Sessions(self)
        self.reports = ReportQueries(self)

    @contextlib.contextmanager
    def write(self):
        """A write transaction, committed on exit."""
        try:
            if self._write_lock is None:
                with self.engine.begin() as db:
                    yield db
            else:
                with self._write_lock, self.engine.begin() as db:
                    yield db
        except OperationalError as e:
            raise failure(e, self.url) from None

    @contextlib.contextmanager
    def read(self):
        """A connection for reading."""
        try:
            with self.engine.connect() as db:
                yield db
        except OperationalError as e:
            raise failure(e, self.url) from None

    @property
    def writer(self) -> GroupWriter:
        """The one thread that commits this process's claims, finishes and event posts in groups."""
        with self._writer_lock:
            if self._writer is None or self._writer.closed:
                self._writer = GroupWriter(self)
            return self._writer

    def close(self) -> None:
        """Commit what the writer holds, then let go of the database's connections."""
        with self._writer_lock:
            writer, self._writer = self._writer, None
        if writer is not None:
            writer.close()
        self.engine.dispose()

    def lock(self, name: str, what: str) -> Lock:
        """Hold `name` for this process, or refuse naming who holds it; stale holders are taken over."""
        return Lock(self, name, what)

    # -- schema -----------------------------------------------------------------------------

    def migrate(self) -> int:
        """Bring the schema to the current version; returns the version found before."""
        with self.write() as db:
            S.schema_version.create(db, checkfirst=True)
            found = db.execute(select(func.max(S.schema_version.c.version))).scalar() or 0
            if found > S.CURRENT_VERSION:
                raise UserError(f"{safe_url(self.url)}: the ledger has schema version {found}, newer than this "
                                f"outreach ({S.CURRENT_VERSION}); upgrade outreach")
            for version, _, tables, steps in S.MIGRATIONS:
                if version > found:
                    S.metadata.create_all(db, tables=tables, checkfirst=True)
                    for step in steps:
                        step(db) if callable(step) else db.exec_driver_sql(step)
                    db.execute(insert(S.schema_version).values(version=version, applied_at=now()))
        return found

    def version(self) -> int:
        with self.read() as db:
            return db.execute(select(func.max(S.schema_version.c.version))).scalar() or 0


def _engine(url: str) -> Engine:
    if url.startswith("sqlite"):
        path = sqlite_file(url)
        if path:
            folder = os.path.dirname(path)
            if folder and not os.path.isdir(folder):
                raise UserError(f"{url}: the folder {folder} does not exist; create it or change [database] url")
        pool = {"pool_size": 16, "max_overflow": 64, "pool_use_lifo": True} if path else {}
        engine = create_engine(url, connect_args={"timeout": 30, "check_same_thread": False}, **pool)

        @event.listens_for(engine, "connect")
        def _pragmas(conn, _record):
            cur = conn.cursor()
            cur.execute("PRAGMA journal_mode=WAL")
            # FULL: a committed `sending` survives a power cut too, not only a crash.
            cur.execute("PRAGMA synchronous=FULL")
            cur.execute("PRAGMA foreign_keys=ON")
            cur.execute("PRAGMA busy_timeout=30000")
            # 64 MiB of page cache: index pages of a large campaign stay in memory across writes.
            cur.execute("PRAGMA cache_size=-65536")
            cur.close()
        return engine
    try:
        return create_engine(url, pool_pre_ping=True)
    except (ImportError, ModuleNotFoundError) as e:
        raise UserError(f"[database] url needs a driver that is not installed: {e}") from None
    except Exception as e:  # noqa: BLE001 - SQLAlchemy's URL errors have several types
        raise UserError(f"[database] url {safe_url(url)!r} is not usable: {short_error(e)}") from None


def safe_url(url: str) -> str:
    """The URL without its password; nothing of it when it cannot be parsed (it may hold one)."""
    from sqlalchemy.engine import make_url
    from sqlalchemy.exc import ArgumentError

    try:
        return make_url(url).render_as_string(hide_password=True)
    except (ArgumentError, ValueError):
        return "(the [database] url, which is not a valid URL)"


# What the database said -> what happened, in words (SQLite's and PostgreSQL's wordings).
FAILURES = (
    (("disk is full", "no space left", "could not extend file", "could not write to file"),
     "the disk is full: the ledger ({where}) cannot be written"),
    (("database is locked", "lock timeout", "canceling statement due to lock timeout"),
     "the ledger ({where}) stayed locked by another process for longer than 30 s"),
    (("unable to open database", "disk i/o error", "readonly database", "read-only"),
     "the ledger ({where}) cannot be written ({detail})"),
    (("could not connect", "connection refused", "server closed the connection", "connection is closed",
      "terminating connection", "could not translate host name", "timeout expired"),
     "the ledger's database ({where}) is unreachable ({detail})"),
)


def failure(e: OperationalError, url: str) -> UserError:
    """A one-line LedgerFailure for what the database said; anything else stays a bug (re-raised as is)."""
    detail = short_error(e)
    lowered = detail.lower()
    where = sqlite_file(url) or safe_url(url)
    for words, said in FAILURES:
        if any(w in lowered for w in words):
            return LedgerFailure(f"{said.format(where=where, detail=detail[:160])}; what was recorded is kept, "
                                 "and no letter is sent twice (one caught in flight is `unknown` at the next run)",
                                 exit_code=EXIT_ATTENTION)
    return e


def short_error(e: Exception) -> str:
    text = str(getattr(e, "orig", None) or e)
    return " ".join(text.split())[:300]


def open_ledger(cfg) -> Ledger:
    """The ledger named by [database] url in config (default: outreach.db next to config.toml)."""
    return Ledger(cfg.database_url)
