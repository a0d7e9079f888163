"""A TOML table being read: typed getters that record problems instead of raising, and the
checks config keys share. config.py reads config.toml with it; each transport reads its own table."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any, Callable

ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
_MISSING: Any = object()


class Table:
    """One TOML table being read: typed getters that record problems instead of raising."""

    def __init__(self, data: dict, where: str, problems: list[str], path: Path, present: bool = True):
        self.data = data
        self.where = where          # "[delivery]" or "[campaigns.x.audience]"
        self.present = present      # the file has this table
        self.problems = problems
        self.path = path
        self.seen: set[str] = set()

    def _key(self, key: str) -> str:
        return f"{self.where} {key}" if self.where else key

    def problem(self, key: str, message: str) -> None:
        self.problems.append(f"{self.path}: {self._key(key)}: {message}")

    def get(self, key: str, kind: type | tuple, default: Any = _MISSING, what: str = "",
            check: Callable[[Any], str | None] | None = None) -> Any:
        self.seen.add(key)
        if key not in self.data:
            if default is _MISSING:
                self.problems.append(f"{self.path}: {self._key(key)} is required")
                return None
            return default
        value = self.data[key]
        kinds = kind if isinstance(kind, tuple) else (kind,)
        # TOML integers are fine where a number is wanted; booleans never are.
        if isinstance(value, bool) and bool not in kinds or not isinstance(value, kinds):
            self.problem(key, f"should be {what or _kind_name(kinds)} (got {value!r})")
            return default if default is not _MISSING else None
        if check is not None:
            message = check(value)
            if message:
                self.problem(key, f"{message} (got {value!r})")
                return default if default is not _MISSING else None
        return value

    def text(self, key: str, default: Any = _MISSING, check=None) -> Any:
        return self.get(key, str, default, "a string in quotes", check)

    def number(self, key: str, default: Any, low: float, high: float, integer: bool = False) -> Any:
        def in_range(v):
            return None if low < v <= high else f"should be more than {low:g} and at most {high:g}"

        value = self.get(key, int if integer else (int, float), default,
                         "a whole number" if integer else "a number", in_range)
        return value if integer or value is None else float(value)

    def strings(self, key: str, check=None) -> list[str]:
        value = self.get(key, list, [], "a list of strings, like [\"a\", \"b\"]")
        out = []
        for item in value or []:
            if not isinstance(item, str):
                self.problem(key, f"should hold only strings (got {item!r})")
                continue
            message = check(item) if check else None
            if message:
                self.problem(key, f"{message} (got {item!r})")
                continue
            out.append(item)
        return out

    def table(self, key: str, required: bool = False) -> "Table":
        self.seen.add(key)
        value = self.data.get(key, _MISSING)
        where = f"[{key}]" if not self.where else f"[{self.where.strip('[]')}.{key}]"
        if value is _MISSING:
            if required:
                self.problems.append(f"{self.path}: {where} is required")
            return Table({}, where, self.problems, self.path, present=False)
        elif not isinstance(value, dict):
            self.problems.append(f"{self.path}: {self._key(key)}: should be a table ([{key}] section)")
            value = {}
        return Table(value, where, self.problems, self.path)

    def done(self) -> None:
        """Every key not read is unknown: name it."""
        for key in self.data:
            if key not in self.seen:
                self.problems.append(f"{self.path}: unknown key {self._key(key)}; "
                                     "check its spelling or remove it")


def _kind_name(kinds: tuple) -> str:
    names = {str: "a string", int: "a number", float: "a number", bool: "true or false",
             list: "a list", dict: "a table"}
    return " or ".join(dict.fromkeys(names.get(k, k.__name__) for k in kinds))


def email_problem(value: str) -> str | None:
    from outreach.addresses import check_email

    problem = check_email(value)
    return f"not a valid email address: {problem}" if problem else None


def env_problem(value: str) -> str | None:
    if ENV_NAME.match(value):
        return None
    return "should be the NAME of an environment variable (letters, digits, _), not its value"


def url_problem(value: str) -> str | None:
    return None if re.match(r"^https?://[^/\s]+", value) else "should be a URL like https://api.sendgrid.com"
