"""Statements compiled once and run on the database driver's cursor: the webhook's hot path.

At thousands of events a second SQLAlchemy's per-execution work (parameter
processing, result rows) costs more than the database's own: bench/webhook.py
drops from ~13,000 to ~9,500 events/s with 8 posters without this. The SQL is
still SQLAlchemy's, compiled for the connection's dialect, so any database it
supports works. Everywhere else the ledger uses SQLAlchemy's own execution
(and its statement cache): a claim costs ~70 us there, beside a ~1 ms commit.
"""

from __future__ import annotations

from typing import Callable

CHUNK = 512   # values per IN (...): well inside every database's parameter limit
_KEYS = [f"k{i}" for i in range(CHUNK)]


class Prepared:
    """One statement, compiled for one dialect; `of()` keeps each (dialect, name, size) once."""

    _cache: dict[tuple, "Prepared"] = {}

    @classmethod
    def of(cls, dialect, name: str, size: int, build: Callable[[int], object]) -> "Prepared":
        key = (dialect.name, name, size)
        found = cls._cache.get(key)
        if found is None:
            found = cls._cache[key] = cls(build(size), dialect)
        return found

    def __init__(self, stmt, dialect):
        compiled = stmt.compile(dialect=dialect)
        self.sql = compiled.string
        self.defaults = dict(compiled.params)
        self.order = list(compiled.positiontup) if compiled.positional else None

    def args(self, params: dict):
        merged = {**self.defaults, **params}
        return tuple([merged[k] for k in self.order]) if self.order is not None else merged

    def fetch(self, db, args) -> list[tuple]:
        cursor = db.connection.cursor()
        try:
            cursor.execute(self.sql, args)
            return cursor.fetchall()
        except db.dialect.dbapi.OperationalError as e:
            raise _as_sqlalchemy(self.sql, args, e) from None
        finally:
            cursor.close()

    def run_many(self, db, rows: list[dict]) -> None:
        cursor = db.connection.cursor()
        args = [self.args(r) for r in rows]
        try:
            cursor.executemany(self.sql, args)
        except db.dialect.dbapi.OperationalError as e:
            raise _as_sqlalchemy(self.sql, args[:1], e) from None
        finally:
            cursor.close()


def _as_sqlalchemy(sql: str, args, e: Exception):
    """The driver's own error (disk full, locked) as SQLAlchemy's, which the ledger turns into one line."""
    from sqlalchemy.exc import OperationalError

    return OperationalError(sql, args, e)


def keys(size: int) -> list:
    """`size` bound parameters for an IN (...) built by select_in."""
    from sqlalchemy import bindparam

    return [bindparam(k) for k in _KEYS[:size]]


def select_in(db, name: str, build: Callable[[int], object], values) -> list[tuple]:
    """The rows of the query `build(n)` (an IN over keys(n)) for these values, a chunk at a time."""
    values = list(values)
    out: list[tuple] = []
    for i in range(0, len(values), CHUNK):
        chunk = values[i:i + CHUNK]
        # Sizes are powers of two, so few statements are compiled; repeating a value
        # changes nothing in IN (...).
        size = 1 << (len(chunk) - 1).bit_length()
        prepared = Prepared.of(db.dialect, name, size, build)
        out.extend(prepared.fetch(db, prepared.args(dict(zip(_KEYS, chunk + chunk[-1:] * (size - len(chunk)))))))
    return out


def insert_once(db, table, values: dict) -> bool:
    """INSERT a row unless one with the same unique key is there (stored meanwhile by another
    process, say): True if this call inserted it. Never fails on the duplicate, so two
    processes storing the same thing at once both succeed."""
    from importlib import import_module

    from sqlalchemy import insert

    key = list(table.primary_key.columns)[0]
    if db.dialect.name in ("sqlite", "postgresql") and db.dialect.insert_returning:
        statement = import_module(f"sqlalchemy.dialects.{db.dialect.name}").insert(table).values(**values)
        # What the insert returned, not its rowcount: drivers count a skipped row differently.
        return db.execute(statement.on_conflict_do_nothing().returning(key)).first() is not None
    db.execute(insert(table).values(**values))
    return True
