"""Compiled templates kept between runs: Jinja's own bytecode cache, made safe to lose.

Compiling a campaign's templates costs ~15 ms in every process that renders them
(the dry run's parent and each of its workers, every scheduled tick). Jinja can
keep the compiled code on disk, keyed by the template's path and checked against
its source, so an edited template is always compiled afresh.

The cache lives in $XDG_CACHE_HOME/outreach/templates (~/.cache/... by default),
and may be deleted at any time. It is used only when that folder is the user's
own and closed to others, since what it holds is loaded as code. A cache that
cannot be read or written is skipped: it never stops a run or changes a letter.
"""

from __future__ import annotations

import hashlib
import os
import stat
import sys
from pathlib import Path

import jinja2


class _QuietCache(jinja2.FileSystemBytecodeCache):
    """Jinja's file cache (atomic writes, source checksums), with failures treated as misses."""

    def load_bytecode(self, bucket: jinja2.bccache.Bucket) -> None:
        try:
            super().load_bytecode(bucket)
        except Exception:  # noqa: BLE001 - a damaged entry is a miss: the template is compiled
            bucket.reset()

    def dump_bytecode(self, bucket: jinja2.bccache.Bucket) -> None:
        try:
            super().dump_bytecode(bucket)
        except OSError:
            pass  # read-only or full disk: next time it is compiled again


def cache_folder() -> Path | None:
    """$XDG_CACHE_HOME/outreach/templates, else ~/.cache/...; None for a user without a home.
    A relative $XDG_CACHE_HOME is ignored, as the XDG specification says."""
    base = os.environ.get("XDG_CACHE_HOME")
    if not base or not os.path.isabs(base):
        home = os.path.expanduser("~")
        if home == "~":
            return None
        base = os.path.join(home, ".cache")
    return Path(base) / "outreach" / "templates"


def bytecode_caches(filters: dict, *settings: dict) -> list[jinja2.BytecodeCache | None]:
    """One cache per environment built with each of `settings` and given `filters`, or
    Nones where there is no safe place (the folder is checked once for all of them).

    Entries are named after everything that shapes the compiled code: the settings;
    the source of the modules defining the filters (Jinja runs a filter on constant
    text while compiling, and the filter may call helpers beside it); outreach's,
    Jinja's, MarkupSafe's (which escapes constant HTML while compiling) and Python's
    versions. So environments that differ, such as the autoescaped HTML one and the
    plain-text one, never share an entry, and a changed filter or upgrade never serves
    code compiled before it. The same code gives the same names in every process."""
    folder = _safe_folder()
    if folder is None:
        return [None] * len(settings)
    import markupsafe

    from outreach import __version__

    common = hashlib.sha256(repr((
        __version__, jinja2.__version__, _file_stamp(markupsafe.__file__), sys.version_info[:2])).encode())
    for name, function in sorted(filters.items()):
        function = getattr(function, "__wrapped__", function)  # under functools.lru_cache
        common.update(name.encode() + b"\0" + _source(function.__code__)
                      + repr((function.__defaults__, function.__kwdefaults__)).encode())
    caches = []
    for each in settings:
        shaping = common.copy()
        shaping.update(repr(sorted((key, repr(value)) for key, value in each.items() if key != "loader")).encode())
        caches.append(_QuietCache(str(folder), f"{shaping.hexdigest()[:16]}-%s.cache"))
    return caches


def _file_stamp(path: str) -> tuple[int, int]:
    """(size, modification time) of an installed file: changes when the package is upgraded."""
    try:
        info = os.stat(path)
    except OSError:
        return (0, 0)
    return info.st_size, info.st_mtime_ns


def _source(code) -> bytes:
    """The bytes of the file `code` comes from; without the file, the code's own bytecode and
    constants (nested code included), written out in an order that never varies."""
    try:
        with open(code.co_filename, "rb") as f:
            return f.read()
    except OSError:
        pass
    parts = [code.co_code, repr(code.co_names).encode()]
    for const in code.co_consts:
        if hasattr(const, "co_code"):
            parts.append(_source(const))
        elif isinstance(const, frozenset):
            parts.append(repr(sorted(map(repr, const))).encode())
        else:
            parts.append(repr(const).encode())
    return b"\0".join(parts)


def _safe_folder() -> Path | None:
    """The cache folder, made if need be, when it and the folder holding it are the user's own
    and closed to others, and no folder above them lets others rename them away (writable
    by all, without the sticky bit /tmp has): what is in it is loaded as code. Else None."""
    folder = cache_folder()
    if folder is None:
        return None
    try:
        folder.parent.parent.mkdir(parents=True, exist_ok=True)  # $XDG_CACHE_HOME, ~/.cache
        for above in folder.parent.parents:
            mode = above.stat().st_mode
            if mode & stat.S_IWOTH and not mode & stat.S_ISVTX:
                return None
        for part in (folder.parent, folder):  # .../outreach, .../outreach/templates
            part.mkdir(mode=0o700, exist_ok=True)
            info = part.lstat()
            if not stat.S_ISDIR(info.st_mode):
                return None
            if hasattr(os, "getuid") and (info.st_uid != os.getuid()
                                          or info.st_mode & (stat.S_IWGRP | stat.S_IWOTH)):
                return None
    except OSError:
        return None
    return folder
