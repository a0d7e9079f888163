"""A letter's states, the moves between them, and the groupings every view takes from here.

Pure: no database, no I/O. The ledger stores the state; this module says what
the states are and which moves are allowed, so changing the state machine is
a change in one place.

    pending ──▶ sending ──▶ accepted ──▶ delivered / opened / clicked
       │           │            └──▶ deferred ─▶ delivered | bounced
       │           ├──▶ retry_wait ──▶ sending        (429, 5xx, refused connection)
       │           ├──▶ failed                       (refused for good)
       │           └──▶ unknown                      (the request left, no answer came)
       └──▶ skipped (suppressed, no longer in the audience, term ended)
    accepted ──▶ bounced / dropped / spamreport / unsubscribed
    any letter sent ──▶ replied      (an office wrote back: it stays replied, whatever events follow)
"""

from __future__ import annotations

STATES = ("pending", "sending", "retry_wait", "accepted", "delivered", "opened", "clicked", "replied", "deferred",
          "bounced", "dropped", "spamreport", "unsubscribed", "failed", "unknown", "skipped")

# Recorded and still to send by the next live run.
TO_SEND = frozenset({"pending", "retry_wait"})
# A request may be in flight: only a running send leaves a letter here.
IN_FLIGHT = frozenset({"sending"})
# The mail service took the letter (or later): it is never sent again.
SENT = frozenset({"accepted", "delivered", "opened", "clicked", "replied", "deferred", "bounced", "dropped",
                  "spamreport", "unsubscribed"})
# Someone has to look: it may have been accepted (unknown), or it was refused (failed).
NEEDS_ATTENTION = ("unknown", "failed")
# Not finished: a run that leaves any letter here ends with "needs attention".
UNFINISHED = TO_SEND | IN_FLIGHT | frozenset(NEEDS_ATTENTION)

# The report's cumulative funnel: which current states have reached each step. A reply proves
# delivery, not an open or a click: it counts as delivered, and is its own step beside those.
FUNNEL = ("targeted", "accepted", "delivered", "opened", "clicked", "replied")
REACHED = {
    "accepted": SENT,
    "delivered": frozenset({"delivered", "opened", "clicked", "replied", "spamreport", "unsubscribed"}),
    "opened": frozenset({"opened", "clicked"}),
    "clicked": frozenset({"clicked"}),
    "replied": frozenset({"replied"}),
}
# Shown beside the funnel, each on its own.
BESIDE = ("skipped", "deferred", "bounced", "dropped", "failed", "unknown")
# The report's "needs attention" list (deferred only once it has waited too long).
ATTENTION = ("unknown", "failed", "bounced", "deferred")

# Follow-ups: which states of the first campaign's letter each `audience.status` means.
FOLLOW_UP = {
    "not_opened": frozenset({"delivered"}),                       # reached the office, never opened
    "delivered": frozenset({"delivered", "opened", "clicked"}),
    "not_delivered": frozenset({"accepted", "deferred", "bounced", "dropped", "failed", "unknown"}),
    # No reply from the office: every letter that left us, but a replied one (stop on reply
    # also leaves out recipients who replied to an earlier follow-up: see plan.py).
    "not_replied": frozenset({"accepted", "delivered", "opened", "clicked", "deferred", "unknown"}),
}
# A follow-up never goes to a recipient who replied to the campaign or any of its follow-ups:
# its letter is skipped for this reason (for good: a reply is not taken back).
STOPPED_ON_REPLY = "stopped on reply: the office replied to this campaign"

# A bounced letter's reason starts with its bounce type: "blocked: ..." is the receiving
# server refusing for now (worth sending again); "bounce: ..." is a dead address.
BLOCKED_PREFIX = "blocked"

# Why a letter is skipped, when the run decided it and may undo it (the recipient comes back,
# or a refreshed list gives a member a new term).
SUPPRESSED_PREFIX = "suppressed: "
FILTERED = "filtered: no longer in the audience or the contact list"
TERM_ENDED_PREFIX = "term ended "


def retryable(status: str, reason: str | None) -> bool:
    """`send --retry-failed` may send it again: refused (failed), or bounced as blocked."""
    return status == "failed" or (status == "bounced" and (reason or "").startswith(BLOCKED_PREFIX))


def skipped_by_run(reason: str | None) -> bool:
    """A skip the run decided (suppressed, left the audience, term ended): undone when the reason goes."""
    return (reason or "").startswith((SUPPRESSED_PREFIX, TERM_ENDED_PREFIX)) or reason == FILTERED


# Every move a letter may make, besides those its events decide (see `by_events`).
MOVES = {
    "pending": {"sending", "skipped"},                # claimed by a run; left out before sending
    "sending": {"accepted", "retry_wait", "failed", "unknown",
                "pending"},                           # credentials refused: the attempt is given back
    "retry_wait": {"sending", "skipped"},
    "unknown": {"pending"},                           # released by the operator
    "failed": {"pending"},                            # --retry-failed
    "bounced": {"pending"},                           # --retry-failed (blocked only)
    "skipped": {"pending", "retry_wait", "skipped"},  # its recipient is back; or skipped for another reason
}


def can_move(old: str, new: str) -> bool:
    """Whether a letter may go from `old` to `new` by our own hand (events aside)."""
    return new in MOVES.get(old, ())


def by_events(current: str) -> bool:
    """Whether a letter's events decide its state: any letter we may have sent. A skipped
    letter was never sent by us and stays skipped; a replied one stays replied (a bounce
    after a reply does not undo it)."""
    return current not in ("skipped", "replied")


def counts_template() -> dict[str, int]:
    """Every state at zero: the shape of `status --json`."""
    return dict.fromkeys(STATES, 0)
