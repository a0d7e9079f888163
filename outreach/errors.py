"""The errors a user can cause, each shown as one line and an exit code."""

from __future__ import annotations

import sys

# Exit codes (DESIGN.md): 0 done, 1 ran but something needs attention,
# 2 bad input or configuration and nothing was done, 3 an internal error (a bug: never 1,
# which scripts read as "ran, needs attention"); 130 stopped by Ctrl-C or SIGTERM.
EXIT_OK = 0
EXIT_ATTENTION = 1
EXIT_BAD_INPUT = 2
EXIT_BUG = 3
EXIT_INTERRUPTED = 130


def one_line(text: str) -> str:
    """Text with any line breaks folded, so data cannot split a message."""
    return " ".join(str(text).split("\n")).replace("\r", " ")


class UserError(Exception):
    """A problem the user can fix: one line per problem, naming the file, row or key."""

    def __init__(self, *problems: str, exit_code: int = EXIT_BAD_INPUT):
        self.problems = [one_line(p) for p in problems]
        self.exit_code = exit_code
        super().__init__("\n".join(self.problems))


class LedgerFailure(UserError):
    """The ledger's database failed under us (disk full, locked too long, unreachable): one line
    saying what happened and what is safe, never a traceback with SQL."""


def missing_module(e: ModuleNotFoundError) -> str:
    """One line for a Python that lacks what outreach needs: which module, and where to run it from."""
    return (f"the module {e.name or '?'} is not installed for this Python ({sys.executable}): run it from the "
            "project's environment, `.venv/bin/outreach ...` or `.venv/bin/python scheduler.py` (or "
            "`source .venv/bin/activate` first; set-up: `python3 -m venv .venv && .venv/bin/pip install -e .`)")
