"""The letter states: one list, the moves between them, and the groupings the views use."""

from __future__ import annotations

import pytest

from outreach import states


def test_every_grouping_and_move_names_known_states():
    known = set(states.STATES)
    for group in (states.TO_SEND, states.IN_FLIGHT, states.SENT, set(states.NEEDS_ATTENTION), states.UNFINISHED,
                  set(states.BESIDE), set(states.ATTENTION), *states.REACHED.values(), *states.FOLLOW_UP.values()):
        assert set(group) <= known, group
    for old, new in states.MOVES.items():
        assert old in known and new <= known


def test_the_groupings_agree_with_each_other():
    assert not states.SENT & states.TO_SEND and not states.SENT & states.IN_FLIGHT
    assert set(states.NEEDS_ATTENTION) <= states.UNFINISHED and not states.SENT & states.UNFINISHED
    # The funnel is cumulative up to clicked: each step's states are within the step before.
    # A reply proves delivery, not an open: replied sits within delivered, beside opened.
    steps = [states.REACHED[s] for s in states.FUNNEL[1:states.FUNNEL.index("clicked") + 1]]
    assert all(later <= earlier for earlier, later in zip(steps, steps[1:]))
    assert states.REACHED["replied"] <= states.REACHED["delivered"]
    assert not states.REACHED["replied"] & states.REACHED["opened"]
    assert not states.by_events("replied") and "replied" not in states.FOLLOW_UP["not_replied"]
    assert states.counts_template() == dict.fromkeys(states.STATES, 0)


@pytest.mark.parametrize("old,new,allowed", [
    ("pending", "sending", True), ("retry_wait", "sending", True), ("sending", "accepted", True),
    ("sending", "unknown", True), ("sending", "pending", True),           # credentials refused: given back
    ("unknown", "pending", True), ("failed", "pending", True), ("skipped", "pending", True),
    ("pending", "skipped", True), ("skipped", "skipped", True),           # skipped for another reason
    ("accepted", "pending", False), ("delivered", "sending", False), ("unknown", "sending", False),
    ("sending", "delivered", False), ("pending", "accepted", False), ("clicked", "skipped", False),
])
def test_moves_by_our_own_hand(old, new, allowed):
    assert states.can_move(old, new) is allowed


def test_what_may_be_sent_again_and_what_the_run_may_undo():
    assert states.retryable("failed", "HTTP 400: bad") and states.retryable("bounced", "blocked: policy")
    assert not states.retryable("bounced", "bounce: 550 no such user") and not states.retryable("accepted", None)
    assert states.skipped_by_run("suppressed: bounce") and states.skipped_by_run(states.FILTERED)
    assert not states.skipped_by_run("skipped by hand") and not states.skipped_by_run(None)
    assert states.by_events("unknown") and not states.by_events("skipped")


def test_the_ledger_refuses_a_move_the_states_do_not_allow(tmp_path):
    from outreach.ledger import Ledger
    from outreach.plan import Change

    ledger = Ledger(f"sqlite:///{tmp_path / 'l.db'}")
    with pytest.raises(AssertionError):
        ledger.letters.settle([Change("x", "x@house.example.org", "accepted", "pending", "no")])
    with pytest.raises(AssertionError):
        ledger.letters.sender("me").finish("x", "delivered", attempt={})
