"""What SendGrid's events mean for each letter: checking, matching, state precedence, storing once."""

from __future__ import annotations

import itertools
import json
import time

import pytest
from sqlalchemy import func, insert, select

from outreach.ledger import schema as S
from outreach.events import (
    Candidate, EventError, Seen, dedupe_key, latest_send, letter_state, match_event, next_state, parse_body,
    parse_event,
)
from outreach.ledger import Ledger

T0 = 1_780_000_000.0


def ev(event: str, at: float = T0, **fields) -> dict:
    """One event as SendGrid posts it."""
    return {"event": event, "timestamp": int(at), **fields}


# -- checking events -----------------------------------------------------------------------------

def test_a_well_formed_post_is_read_with_its_details():
    [bounce, click] = parse_body(json.dumps([
        ev("bounce", email="a@senate.example.org", type="blocked", reason="550 5.7.1 policy", sg_event_id="e1",
           sg_message_id="X1.filter0001", letter_id="abc", campaign_id="korea-exception"),
        ev("click", url="https://example.org/treaty", sg_event_id="e2")]))
    assert (bounce.event, bounce.type, bounce.detail, bounce.letter_id) == ("bounce", "blocked", "550 5.7.1 policy",
                                                                            "abc")
    assert bounce.occurred_at == T0 and bounce.dedupe_key == "sg:e1"
    assert click.detail == "https://example.org/treaty" and click.type is None


@pytest.mark.parametrize("body,expected", [
    (b'{"event": "open"}', "expected a JSON array of events, got an object"),
    (b'[{"event": "open", "timestamp": 1}, ', "not JSON (line 1"),
    (b'\xff\xfe[]', "not JSON"),
    (b"[" * 100_000 + b"]" * 100_000, "nested too deeply"),
    (json.dumps([ev("open"), "open"]).encode(), "event 1: expected an object, got a string"),
    (json.dumps([{"event": "open"}]).encode(), "event 0: `timestamp` is missing"),
    (json.dumps([{"event": "open", "timestamp": True}]).encode(), "`timestamp` is missing or not a number"),
    (json.dumps([ev("open", T0 * 1000)]).encode(), "is not UNIX seconds"),
    (json.dumps([{"timestamp": T0}]).encode(), "event 0: `event` is missing"),
    (json.dumps([ev("open", sg_event_id=42)]).encode(), "`sg_event_id` should be a string"),
    (json.dumps([ev("open", email=["a@b.org"])]).encode(), "`email` should be a string"),
])
def test_a_malformed_post_is_refused_with_a_reason_naming_the_event(body, expected):
    with pytest.raises(EventError) as e:
        parse_body(body)
    assert expected in str(e.value)


def test_each_event_is_kept_exactly_as_sendgrid_sent_it():
    body = ('\ufeff [ {"event":"open", "timestamp": 1780000000, "email":"a@b.org"} ,\n'
            '{"timestamp":1780000001,"event":"click"}]\n')
    [a, b] = parse_body(body.encode("utf-8"))
    assert a.raw == '{"event":"open", "timestamp": 1780000000, "email":"a@b.org"}'
    assert b.raw == '{"timestamp":1780000001,"event":"click"}'
    assert parse_body(b" [ ] ") == []


@pytest.mark.parametrize("body", [b'[{"event": "open", "timestamp": 1} {"event": "open", "timestamp": 2}]',
                                  b'[{"event": "open", "timestamp": 1}] trailing',
                                  b'[{"event": "open", "timestamp": 1}', b"", b"   "])
def test_a_broken_array_is_not_json(body):
    with pytest.raises(EventError, match="not JSON"):
        parse_body(body)


def test_many_malformed_events_are_summarised_not_listed_one_by_one():
    with pytest.raises(EventError) as e:
        parse_body(json.dumps([{"event": "open"}] * 40))
    assert len(e.value.problems) == 6 and e.value.problems[-1] == "and 35 more malformed events"


def test_the_same_event_has_the_same_fallback_key_whatever_its_field_order():
    a = {"event": "open", "timestamp": 1, "email": "a@b.org"}
    b = {"email": "a@b.org", "timestamp": 1, "event": "open"}
    assert dedupe_key(a) == dedupe_key(b) != dedupe_key({**a, "timestamp": 2})
    assert dedupe_key({**a, "sg_event_id": "xyz"}) == "sg:xyz"


# -- state precedence -------------------------------------------------------------------------------

def seen(*events: tuple) -> list[Seen]:
    return [Seen(name, T0 + i, seq=i) if isinstance(name, str) else name for i, name in enumerate(events)]


def test_an_open_before_its_delivered_still_ends_opened():
    # Timestamps as SendGrid reports them, posted in a different order.
    events = [Seen("open", T0 + 60, seq=1), Seen("delivered", T0 + 5, seq=2), Seen("processed", T0, seq=3)]
    assert letter_state(events) == ("opened", None)


@pytest.mark.parametrize("names,expected", [
    (("processed",), "accepted"),
    (("processed", "deferred"), "deferred"),
    (("processed", "deferred", "delivered"), "delivered"),
    (("processed", "delivered", "open", "click"), "clicked"),
    (("processed", "delivered", "click"), "clicked"),
    (("processed", "delivered", "bounce"), "bounced"),
    (("processed", "dropped"), "dropped"),
    (("processed", "delivered", "open", "spamreport"), "spamreport"),
    (("processed", "delivered", "unsubscribe"), "unsubscribed"),
    (("processed", "bounce", "dropped"), "bounced"),
    (("processed", "delivered", "machine_opened"), "delivered"),
    (("something_new",), "accepted"),
])
def test_every_arrival_order_of_the_same_events_ends_in_the_same_state(names, expected):
    base = [Seen(name, T0 + i * 10) for i, name in enumerate(names)]
    for order in itertools.permutations(range(len(base))):
        events = [base[i]._replace(seq=n) for n, i in enumerate(order)]
        assert letter_state(events)[0] == expected, [e.event for e in events]


def test_a_blocked_bounce_keeps_its_type_and_reason():
    state = letter_state([Seen("processed", T0), Seen("bounce", T0 + 1, "blocked", "550 5.7.1 policy block")])
    assert state == ("bounced", "blocked: 550 5.7.1 policy block")
    assert letter_state([Seen("bounce", T0, "bounce", None)]) == ("bounced", "bounce")


def test_a_deferral_says_why_until_the_letter_is_delivered():
    deferred = [Seen("processed", T0), Seen("deferred", T0 + 1, detail="421 try again later")]
    assert letter_state(deferred) == ("deferred", "deferred: 421 try again later")
    assert letter_state(deferred + [Seen("delivered", T0 + 600)]) == ("delivered", None)


def test_the_latest_deferral_and_the_last_word_on_subscription_count_whatever_the_arrival_order():
    deferrals = [Seen("deferred", T0 + 60, detail="421 second try"), Seen("deferred", T0, detail="421 first try")]
    subscription = [Seen("group_unsubscribe", T0 + 10, detail="group 7"), Seen("group_resubscribe", T0 + 20),
                    Seen("group_unsubscribe", T0 + 30, detail="group 7")]
    for order in itertools.permutations(range(3)):
        shuffled = [subscription[i]._replace(seq=n) for n, i in enumerate(order)]
        assert letter_state(shuffled) == ("unsubscribed", "unsubscribed from group 7")
        # Without the second unsubscribe, the resubscribe has the last word.
        assert letter_state([e for e in shuffled if e.occurred_at < T0 + 30])[0] == "accepted"
    for order in itertools.permutations(range(2)):
        assert letter_state([deferrals[i]._replace(seq=n) for n, i in enumerate(order)]) \
            == ("deferred", "deferred: 421 second try")


def test_a_later_group_resubscribe_undoes_a_group_unsubscribe_but_not_a_global_one():
    unsub = Seen("group_unsubscribe", T0 + 10, detail="group 7")
    assert letter_state([Seen("delivered", T0), unsub]) == ("unsubscribed", "unsubscribed from group 7")
    assert letter_state([Seen("delivered", T0), unsub, Seen("group_resubscribe", T0 + 20)])[0] == "delivered"
    # Posted out of order: the resubscribe happened first, so the unsubscribe stands.
    assert letter_state([Seen("group_resubscribe", T0 + 5, seq=1), unsub._replace(seq=2),
                         Seen("delivered", T0)])[0] == "unsubscribed"
    # The same second: the safe side.
    assert letter_state([unsub, Seen("group_resubscribe", T0 + 10)])[0] == "unsubscribed"
    assert letter_state([Seen("unsubscribe", T0), Seen("group_resubscribe", T0 + 20)])[0] == "unsubscribed"


@pytest.mark.parametrize("current", ["unknown", "sending", "failed", "pending", "retry_wait", "accepted"])
def test_any_event_proves_sendgrid_took_the_letter(current):
    assert next_state(current, [Seen("processed", T0)]) == ("accepted", None)
    assert next_state(current, [Seen("delivered", T0)]) == ("delivered", None)


def test_a_skipped_letter_and_a_letter_without_events_are_left_alone():
    assert next_state("skipped", [Seen("delivered", T0)]) is None
    assert next_state("unknown", []) is None


def test_a_letter_sent_again_follows_its_new_send_not_the_old_bounce():
    events = [Seen("processed", T0, message_id="OLD"), Seen("bounce", T0 + 5, "blocked", "550", message_id="OLD"),
              Seen("processed", T0 + 900, message_id="NEW"), Seen("delivered", T0 + 905, message_id="NEW"),
              Seen("open", T0 + 2000)]  # an open without a message id counts
    assert letter_state(latest_send(events, "NEW")) == ("opened", None)
    assert letter_state(latest_send(events, None))[0] == "bounced"


# -- matching ---------------------------------------------------------------------------------------------

def cand(id: str, email: str, accepted_at: float | None = T0 - 100, message_id: str | None = None,
         status: str = "accepted") -> Candidate:
    return Candidate(id, 1, email, status, accepted_at, message_id)


def event_of(**fields):
    return parse_event(ev("delivered", **fields))


def test_an_event_matches_its_letter_id_first():
    a, b = cand("a", "x@h.org", message_id="M1"), cand("b", "y@h.org", message_id="M1")
    got = match_event(event_of(letter_id="a", sg_message_id="M1.f", email="y@h.org"), {"a": a}, {"M1": [a, b]}, {})
    assert got == (a, "letter_id")


def test_a_repeated_message_id_is_told_apart_by_the_address():
    a, b = cand("a", "x@h.org", message_id="mock-1"), cand("b", "y@h.org", message_id="mock-1")
    by_message = {"mock-1": [a, b]}
    for email, letter in (("Y@h.org", b), ("x@h.org", a)):
        assert match_event(event_of(sg_message_id="mock-1.filter", email=email), {}, by_message, {}) \
            == (letter, "message_id")


def test_an_event_with_only_an_address_matches_the_latest_letter_accepted_before_it():
    old, new = cand("old", "x@h.org", T0 - 86400 * 30), cand("new", "x@h.org", T0 - 60)
    later = cand("later", "x@h.org", T0 + 86400)
    pending = cand("p", "x@h.org", None, status="pending")
    by_email = {"x@h.org": [old, new, later, pending]}
    assert match_event(event_of(email="x@h.org"), {}, {}, by_email) == (new, "email")
    # A letter id we do not know falls through to the address too.
    assert match_event(event_of(email="x@h.org", letter_id="gone"), {}, {}, by_email) == (new, "email")


def test_a_test_copy_and_a_stranger_match_no_letter():
    a = cand("a", "x@h.org")
    assert match_event(event_of(test_of="a", letter_id="a", email="x@h.org"), {"a": a}, {}, {"x@h.org": [a]}) \
        == (None, "test")
    assert match_event(event_of(email="nobody@h.org", sg_message_id="ZZ.f"), {"a": a}, {}, {"x@h.org": [a]}) \
        == (None, None)


# -- ingestion into the ledger ---------------------------------------------------------------------------------

def ledger_with_letters(tmp_path, letters: dict[str, str], campaign: str = "korea-exception") -> Ledger:
    """A ledger holding letters {id: status}, addressed `<id>@house.example.org`, message id `msg-<id>`."""
    ledger = Ledger(f"sqlite:///{tmp_path / 'outreach.db'}")
    cid = ledger.campaigns.id(campaign)
    with ledger.write() as db:
        db.execute(insert(S.letters), [
            {"id": lid, "campaign_id": cid, "email": f"{lid}@house.example.org",
             "email_key": f"{lid}@house.example.org",
             "status": status, "attempts": 1, "created_at": T0 - 1000, "updated_at": T0 - 1000,
             "accepted_at": T0 - 500 if status == "accepted" else None,
             "provider_message_id": f"msg-{lid}" if status == "accepted" else None,
             "reason": "it may have been accepted" if status == "unknown" else None}
            for lid, status in letters.items()])
    return ledger


def post(ledger, events: list[dict]):
    return ledger.events.ingest(parse_body(json.dumps(events)))


def statuses(ledger) -> dict[str, str]:
    return {r.id: r.status for r in ledger.letters.listing()}


def stored_events(ledger) -> int:
    with ledger.engine.connect() as db:
        return db.execute(select(func.count()).select_from(S.events)).scalar()


def test_a_post_delivered_twice_is_stored_once(tmp_path):
    ledger = ledger_with_letters(tmp_path, {"a": "accepted", "b": "accepted"})
    events = [ev("processed", letter_id="a", sg_event_id="p-a"),
              ev("delivered", T0 + 1, letter_id="a", sg_event_id="d-a"),
              ev("delivered", T0 + 1, letter_id="b")]  # no sg_event_id: the fallback key
    first = post(ledger, events)
    assert (first.received, first.stored, first.matched, first.letters_changed) == (3, 3, 3, 2)
    again = post(ledger, events + events)
    assert (again.received, again.stored, again.duplicates, again.letters_changed) == (6, 0, 6, 0)
    assert stored_events(ledger) == 3
    assert statuses(ledger) == {"a": "delivered", "b": "delivered"}


def test_posts_arriving_out_of_order_end_in_the_right_state(tmp_path):
    ledger = ledger_with_letters(tmp_path, {"a": "accepted"})
    post(ledger, [ev("open", T0 + 300, letter_id="a")])
    assert statuses(ledger)["a"] == "opened"
    post(ledger, [ev("delivered", T0 + 5, letter_id="a")])
    post(ledger, [ev("processed", T0, letter_id="a")])
    [row] = ledger.letters.listing()
    assert (row.status, row.last_event, row.last_event_at) == ("opened", "open", T0 + 300)
    post(ledger, [ev("bounce", T0 + 4000, letter_id="a", type="blocked", reason="550 policy")])
    [row] = ledger.letters.listing()
    assert (row.status, row.reason) == ("bounced", "blocked: 550 policy")


def test_an_unknown_letter_is_reconciled_by_its_events_and_never_resent(tmp_path):
    ledger = ledger_with_letters(tmp_path, {"u": "unknown", "s": "sending", "f": "failed", "r": "retry_wait",
                                            "k": "skipped", "still": "unknown"})
    result = post(ledger, [ev("processed", letter_id=lid, sg_message_id=f"X{lid}.filter1") for lid in "usfrk"]
                  + [ev("delivered", T0 + 2, letter_id="u")])
    assert result.letters_changed == 4
    assert statuses(ledger) == {"u": "delivered", "s": "accepted", "f": "accepted", "r": "accepted",
                                "k": "skipped", "still": "unknown"}
    u = next(r for r in ledger.letters.listing() if r.id == "u")
    # It learns what our own send never recorded, and the crash's reason goes.
    assert (u.accepted_at, u.provider_message_id, u.reason) == (T0, "Xu", None)
    assert not {r.status for r in ledger.letters.listing()} & {"pending", "retry_wait"}


def test_a_post_sent_again_moves_no_letter_not_even_one_queued_again_since(tmp_path):
    """SendGrid retries a post that was stored: its events are duplicates, and a letter the
    operator queued again meanwhile (--retry-failed after a blocked bounce) stays queued."""
    ledger = ledger_with_letters(tmp_path, {"a": "accepted"})
    bounce = [ev("processed", letter_id="a", sg_event_id="p-a", sg_message_id="msg-a.f1"),
              ev("bounce", T0 + 1, letter_id="a", sg_event_id="b-a", sg_message_id="msg-a.f1", type="blocked",
                 reason="policy")]
    assert post(ledger, bounce).letters_changed == 1 and statuses(ledger) == {"a": "bounced"}
    assert ledger.letters.requeue(["a"]) == 1
    again = post(ledger, bounce)
    assert (again.stored, again.duplicates, again.letters_changed) == (0, 2, 0)
    assert statuses(ledger) == {"a": "pending"}


def test_events_about_test_copies_change_no_letter(tmp_path):
    ledger = ledger_with_letters(tmp_path, {"a": "accepted"})
    result = post(ledger, [ev("bounce", test_of="a", email="a@house.example.org", type="bounce",
                              reason="no such user")])
    assert (result.stored, result.tests, result.matched, result.unmatched) == (1, 1, 0, 0)
    assert statuses(ledger) == {"a": "accepted"}
    assert ledger.events.unmatched() == [] and ledger.events.of_letter("a") == []


def test_events_that_match_no_letter_are_kept_for_review(tmp_path):
    ledger = ledger_with_letters(tmp_path, {"a": "accepted"})
    result = post(ledger, [ev("delivered", email="stranger@senate.example.org", sg_message_id="Q.f"),
                           ev("delivered", letter_id="a")])
    assert (result.matched, result.unmatched) == (1, 1)
    [row] = ledger.events.unmatched()
    assert (row.event, row.email, row.sg_message_id) == ("delivered", "stranger@senate.example.org", "Q.f")
    assert ledger.events.count_unmatched() == 1


def test_a_delayed_bounce_without_our_arguments_finds_its_letter_by_address(tmp_path):
    ledger = ledger_with_letters(tmp_path, {"a": "accepted", "b": "accepted"})
    post(ledger, [ev("delivered", letter_id="a", sg_message_id="msg-a.filter")])
    result = post(ledger, [ev("bounce", T0 + 3600, email="A@house.example.org", type="bounce", reason="mailbox full")])
    assert result.matched == 1
    assert statuses(ledger) == {"a": "bounced", "b": "accepted"}
    assert [(e.event, e.detail) for e in ledger.events.of_letter("a")] == [("delivered", None),
                                                                     ("bounce", "bounce: mailbox full")]


def test_a_hard_bounce_suppresses_the_address_and_a_blocked_one_does_not(tmp_path):

    ledger = ledger_with_letters(tmp_path, {"a": "accepted", "b": "accepted", "c": "accepted"})
    result = post(ledger, [
        ev("bounce", letter_id="a", email="a@house.example.org", type="bounce", reason="no such user"),
        ev("bounce", letter_id="b", email="b@house.example.org", type="blocked", reason="policy"),
        ev("spamreport", letter_id="c", email="c@house.example.org")])
    assert result.suppressed == 2
    assert ledger.suppressions.reasons() == {"a@house.example.org": "bounce", "c@house.example.org": "spamreport"}


def test_a_letter_sent_again_after_a_blocked_bounce_follows_its_new_send(tmp_path):
    ledger = ledger_with_letters(tmp_path, {"a": "accepted"})
    post(ledger, [ev("bounce", T0 + 5, letter_id="a", sg_message_id="msg-a.f1", type="blocked", reason="policy")])
    assert statuses(ledger)["a"] == "bounced"
    # --retry-failed queued it again; the new send got a new X-Message-Id.
    L = S.letters.c
    with ledger.write() as db:
        db.execute(S.letters.update().where(L.id == "a").values(status="accepted", provider_message_id="msg-a2"))
    post(ledger, [ev("delivered", T0 + 900, letter_id="a", sg_message_id="msg-a2.f1")])
    [row] = ledger.letters.listing()
    assert (row.status, row.reason) == ("delivered", None)


def test_a_big_post_is_one_transaction_and_updates_each_letter_once(tmp_path):
    from sqlalchemy import event as sa_event

    ids = [f"l{i:04d}" for i in range(1000)]
    ledger = ledger_with_letters(tmp_path, dict.fromkeys(ids, "accepted"))
    statements: list[str] = []

    @sa_event.listens_for(ledger.engine, "connect")
    def trace(dbapi_connection, _record):
        dbapi_connection.set_trace_callback(statements.append)  # every statement SQLite runs

    ledger.engine.dispose()
    events = [ev(name, T0 + n, letter_id=lid, sg_event_id=f"{lid}-{name}")
              for lid in ids for n, name in enumerate(("processed", "delivered", "open"))]
    started = time.perf_counter()
    result = post(ledger, events)
    assert result.stored == 3000 and result.letters_changed == 1000
    assert sum(1 for s in statements if s.startswith("UPDATE letters")) == 1000
    assert [s.split()[0] for s in statements].count("COMMIT") == 1
    assert set(statuses(ledger).values()) == {"opened"}
    assert time.perf_counter() - started < 5


def test_posts_stored_together_each_say_what_they_did(tmp_path):
    ledger = ledger_with_letters(tmp_path, {"a": "accepted", "b": "accepted"})
    first = [ev("processed", letter_id="a", sg_event_id="p-a"),
             ev("delivered", T0 + 1, letter_id="a", sg_event_id="d-a")]
    second = [ev("delivered", T0 + 1, letter_id="a", sg_event_id="d-a"),  # the same event, posted twice
              ev("open", T0 + 9, letter_id="b", sg_event_id="o-b"), ev("open", email="nobody@else.org")]
    one, two = ledger.events.ingest_posts([parse_body(json.dumps(first)), parse_body(json.dumps(second))])
    assert (one.received, one.stored, one.matched, one.letters_changed) == (2, 2, 2, 1)
    assert (two.received, two.stored, two.duplicates, two.unmatched, two.letters_changed) == (3, 2, 1, 1, 2)
    assert stored_events(ledger) == 4
    assert statuses(ledger) == {"a": "delivered", "b": "opened"}


# -- the command line ----------------------------------------------------------------------------------------

def test_events_ingest_records_an_exported_file_and_letters_show_lists_them(project, outreach, tmp_path):
    ledger = ledger_with_letters(project.root, {"a": "accepted"})
    path = tmp_path / "export.json"
    path.write_text(json.dumps([ev("processed", letter_id="a"), ev("delivered", T0 + 3, letter_id="a"),
                                ev("open", email="someone@else.example.org")]))
    r = outreach("--config", project.config, "events", "ingest", path)
    assert r.code == 0, r.err
    assert "3 events, 3 new" in r.out and "1 event matched no letter" in r.out
    assert statuses(ledger)["a"] == "delivered"
    r = outreach("--config", project.config, "events", "ingest", path)
    assert "3 events, 0 new (3 already recorded)" in r.out
    r = outreach("--config", project.config, "letters", "show", "a")
    assert "state: delivered" in r.out and ": processed" in r.out and ": delivered" in r.out
    r = outreach("--config", project.config, "events", "unmatched")
    assert "someone@else.example.org" in r.out and "1 unmatched event" in r.out and "1 unmatched events" not in r.out
    data = json.loads(outreach("--config", project.config, "events", "unmatched", "--json").out)
    assert data["total"] == 1 and data["events"][0]["event"] == "open"


def test_events_ingest_of_a_bad_file_is_one_line_per_problem_and_records_nothing(project, outreach, tmp_path):
    ledger = ledger_with_letters(project.root, {"a": "accepted"})
    path = tmp_path / "export.json"
    path.write_text(json.dumps([ev("processed", letter_id="a"), {"event": "delivered"}]))
    r = outreach("--config", project.config, "events", "ingest", path)
    assert r.code == 2
    assert r.err.strip() == f"outreach: {path}: event 1: `timestamp` is missing or not a number; nothing was recorded"
    assert stored_events(ledger) == 0
    r = outreach("--config", project.config, "events", "ingest", tmp_path / "nope.json")
    assert r.code == 2 and "nope.json: not found" in r.err


def test_a_big_export_is_ingested_in_parts_and_again_adds_nothing(project, outreach, tmp_path):
    ledger = ledger_with_letters(project.root, {"a": "accepted"})
    path = tmp_path / "export.json"
    path.write_text(json.dumps([ev("open", T0 + i, letter_id="a", sg_event_id=f"o{i}") for i in range(10_001)]))
    r = outreach("--config", project.config, "events", "ingest", path)
    assert r.code == 0 and "10001 events, 10001 new" in r.out, r.out + r.err
    assert stored_events(ledger) == 10_001 and statuses(ledger)["a"] == "opened"
    r = outreach("--config", project.config, "events", "ingest", path)
    assert "10001 events, 0 new (10001 already recorded)" in r.out
