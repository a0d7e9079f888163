"""An in-memory transport for tests: keeps what it was given and answers as it is told.

Not in TRANSPORTS: no config can choose it, so nothing a user runs can "send" into memory."""

from __future__ import annotations

import itertools
import threading
from typing import Callable

from outreach.errors import UserError
from outreach.message import Message
from outreach.transports import SendResult

class MemoryTransport:
    """`MemoryTransport(answer=lambda message, n: SendResult(...))`; `.sent` holds every message given.

    Without `answer` every message is accepted with a message id of its own.
    `refuse_preflight` makes the preflight fail with that reason.
    """

    name = "memory"
    where = "memory"

    def __init__(self, answer: Callable[[Message, int], SendResult] | None = None, *, paced: bool = True,
                 refuse_preflight: str | None = None):
        self.answer = answer
        self.paced = paced
        self.refuse_preflight = refuse_preflight
        self.sent: list[Message] = []
        self.preflights: list[Message] = []
        self.closed: bool | None = None     # complete or not, once closed
        self._count = itertools.count()
        self._lock = threading.Lock()

    def send(self, message: Message) -> SendResult:
        with self._lock:
            n = next(self._count)
            self.sent.append(message)
        if self.answer is not None:
            return self.answer(message, n)
        return SendResult("accepted", 202, message_id=f"memory-{n}")

    def preflight(self, message: Message) -> None:
        self.preflights.append(message)
        if self.refuse_preflight:
            raise UserError(f"the preflight refused: {self.refuse_preflight}; nothing was sent")

    def close(self, complete: bool = True) -> None:
        self.closed = complete
