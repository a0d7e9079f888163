"""Progress for long runs: a bar on a terminal, a few plain lines otherwise."""

from __future__ import annotations

import sys


class Progress:
    """`with Progress(total, "rendering") as p: p.advance()`; quiet for short runs off a terminal."""

    def __init__(self, total: int, label: str, stream=None, lines: bool = True):
        self.total = total
        self.label = label
        self.stream = stream or sys.stderr
        self.done = 0
        self._bar = None
        # Off a terminal, a line at each quarter of a long run (`lines`); bytes are not worth it.
        self._next_line = max(total // 4, 1000) if lines else float("inf")

    def __enter__(self) -> "Progress":
        if self.total and getattr(self.stream, "isatty", lambda: False)():
            from rich.progress import BarColumn, MofNCompleteColumn, Progress as Bar, TimeRemainingColumn
            from rich.console import Console

            self._bar = Bar("[progress.description]{task.description}", BarColumn(), MofNCompleteColumn(),
                            TimeRemainingColumn(), console=Console(file=self.stream), transient=True)
            self._bar.start()
            self._task = self._bar.add_task(self.label, total=self.total)
        return self

    def advance(self, n: int = 1) -> None:
        self.done += n
        if self._bar is not None:
            self._bar.update(self._task, completed=self.done)
        elif self.done >= self._next_line and self.done < self.total:
            print(f"{self.label}: {self.done}/{self.total}", file=self.stream, flush=True)
            self._next_line += max(self.total // 4, 1000)

    def __exit__(self, *exc) -> None:
        if self._bar is not None:
            self._bar.stop()


class Quiet:
    """Progress that shows nothing: for callers with no one to show it to."""

    def __enter__(self) -> "Quiet":
        return self

    def advance(self, n: int = 1) -> None:
        pass

    def __exit__(self, *exc) -> None:
        return None
