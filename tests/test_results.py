"""Acting on results: suppressions, retrying what never arrived, follow-up letters."""

from __future__ import annotations

import time

import pytest
from sqlalchemy import update

from conftest import ROOT
from mockgrid import MockGrid
from outreach.ledger import schema as S
from test_live import KEY, campaign_letters, ledger_of, write_live_config

FOLLOW_UP = """
[campaigns.follow-up]
contacts = "contacts.csv"
templates = "templates"
follow_up_of = "korea-exception"
after_days = 3
[campaigns.follow-up.audience]
status = "{status}"
"""


@pytest.fixture
def grid():
    with MockGrid(api_key=KEY) as g:
        yield g


@pytest.fixture
def live(project, grid, monkeypatch):
    monkeypatch.setenv("SENDGRID_API_KEY", KEY)
    write_live_config(project, grid)
    return project


def set_states(project, campaign: str, states: dict[str, str], days_ago: float = 10, reason: str | None = None):
    """Move letters (by email) to states, as events would, `days_ago` after they were accepted."""
    ledger = ledger_of(project)
    L = S.letters.c
    cid = ledger.campaigns.id(campaign)
    with ledger.write() as db:
        for email, status in states.items():
            db.execute(update(S.letters).where(L.campaign_id == cid, L.email_key == email)
                       .values(status=status, accepted_at=time.time() - days_ago * 86400,
                               reason=reason if status in ("bounced", "failed") else None))


def by_email(project, campaign="korea-exception"):
    ledger = ledger_of(project)
    return {r.email: r for r in ledger.letters.listing(ledger.campaigns.id(campaign, create=False))}


def test_a_suppressed_address_is_skipped_with_its_reason(live, grid, outreach):
    r = outreach("--config", live.config, "suppressions", "add", "Dan.Sullivan@senate.example.org",
                 "--reason", "asked not to be contacted")
    assert r.code == 0
    assert "dan.sullivan@senate.example.org" in outreach("--config", live.config, "suppressions", "list").out.lower()
    # The dry run says who is skipped and why ...
    r = outreach("--config", live.config, "send")
    assert "rendered: 13 letters" in r.out and "suppressed (manual)" in r.out
    # ... the preview refuses to pretend ...
    r = outreach("--config", live.config, "preview", "--to", "S001198")
    assert r.code == 2 and "suppressed (manual)" in r.err
    # ... and the live run records a skipped letter and sends nothing to it.
    r = outreach("--config", live.config, "send", "--live", "--yes")
    assert r.code == 0, r.out + r.err
    assert "dan.sullivan@senate.example.org" not in {d.to for d in grid.deliveries()}
    row = by_email(live)["dan.sullivan@senate.example.org"]
    assert (row.status, row.reason) == ("skipped", "suppressed: manual")
    # Removing the suppression revives the letter at the next run.
    assert outreach("--config", live.config, "suppressions", "remove", "dan.sullivan@senate.example.org").code == 0
    assert outreach("--config", live.config, "send", "--live", "--yes").code == 0
    assert by_email(live)["dan.sullivan@senate.example.org"].status == "accepted"
    assert max(grid.received.values()) == 1


def test_a_pending_letter_to_a_newly_suppressed_address_is_skipped(live, grid, outreach):
    outreach("--config", live.config, "send", "--live", "--yes", "--limit", "2")
    pending = [e for e, r in by_email(live).items() if r.status == "pending"]
    outreach("--config", live.config, "suppressions", "add", pending[0], "--reason", "moved office")
    outreach("--config", live.config, "send", "--live", "--yes")
    assert by_email(live)[pending[0]].status == "skipped"
    assert pending[0] not in {d.to for d in grid.deliveries()}


def test_retry_failed_sends_only_what_never_reached_the_office(live, grid, outreach):
    outreach("--config", live.config, "send", "--live", "--yes")
    set_states(live, "korea-exception", {
        "dan.sullivan@senate.example.org": "failed",
        "roger.wicker@senate.example.org": "bounced",      # blocked: retried
        "timothy.kaine@senate.example.org": "delivered",
        "jeanne.shaheen@senate.example.org": "opened",
    })
    set_states(live, "korea-exception", {"roger.wicker@senate.example.org": "bounced"},
               reason="blocked: 550 temporary policy block")
    set_states(live, "korea-exception", {"james.risch@senate.example.org": "bounced"},
               reason="bounce: 550 mailbox does not exist")
    set_states(live, "korea-exception", {"dan.sullivan@senate.example.org": "failed"},
               reason="HTTP 400: Invalid reply_to")
    before = len(grid.deliveries())
    r = outreach("--config", live.config, "send", "--retry-failed")
    assert r.code == 0 and "Would retry 2 letters" in r.out and "Invalid reply_to" in r.out
    assert len(grid.deliveries()) == before
    r = outreach("--config", live.config, "send", "--live", "--yes", "--retry-failed")
    assert r.code == 0, r.out + r.err
    again = [d.to for d in grid.deliveries()[before:]]
    assert sorted(again) == ["dan.sullivan@senate.example.org", "roger.wicker@senate.example.org"]
    rows = by_email(live)
    assert rows["dan.sullivan@senate.example.org"].status == "accepted"
    assert rows["timothy.kaine@senate.example.org"].status == "delivered"    # never a delivered one
    assert rows["james.risch@senate.example.org"].status == "bounced"        # a dead address is not retried


@pytest.mark.parametrize("status,expected", [
    ("not_opened", {"timothy.kaine@senate.example.org"}),
    ("delivered", {"timothy.kaine@senate.example.org", "jeanne.shaheen@senate.example.org",
                   "james.risch@senate.example.org"}),
    ("not_delivered", {"mike.rogers@house.example.org", "adam.smith@house.example.org"}),
])
def test_follow_up_audiences(live, grid, outreach, status, expected):
    write_live_config(live, grid, extra=FOLLOW_UP.format(status=status))
    outreach("--config", live.config, "send", "--live", "--yes", "--campaign", "korea-exception")
    everyone = {r.email for r in campaign_letters(live)}
    states = {e: "unsubscribed" for e in everyone}   # by default, not in any wanted state
    states.update({"timothy.kaine@senate.example.org": "delivered", "jeanne.shaheen@senate.example.org": "opened",
                   "james.risch@senate.example.org": "clicked", "mike.rogers@house.example.org": "accepted",
                   "adam.smith@house.example.org": "deferred"})
    set_states(live, "korea-exception", states, days_ago=5)
    set_states(live, "korea-exception", {"ben.lujan@senate.example.org": "delivered"}, days_ago=1)  # too recent
    before = len(grid.deliveries())
    r = outreach("--config", live.config, "send", "--live", "--yes", "--campaign", "follow-up")
    assert r.code == 0, r.out + r.err
    assert {d.to for d in grid.deliveries()[before:]} == expected
    # Each recipient gets a follow-up at most once: re-running sends nothing new.
    before = len(grid.deliveries())
    r = outreach("--config", live.config, "send", "--live", "--yes", "--campaign", "follow-up")
    assert r.code == 0 and len(grid.deliveries()) == before


def test_a_follow_up_skips_suppressed_addresses(live, grid, outreach):
    write_live_config(live, grid, extra=FOLLOW_UP.format(status="delivered"))
    outreach("--config", live.config, "send", "--live", "--yes", "--campaign", "korea-exception")
    set_states(live, "korea-exception", {e: "delivered" for e in by_email(live)}, days_ago=5)
    outreach("--config", live.config, "suppressions", "add", "adam.smith@house.example.org", "--reason", "asked")
    before = len(grid.deliveries())
    outreach("--config", live.config, "send", "--live", "--yes", "--campaign", "follow-up")
    sent = {d.to for d in grid.deliveries()[before:]}
    assert len(sent) == 13 and "adam.smith@house.example.org" not in sent
    assert by_email(live, "follow-up")["adam.smith@house.example.org"].status == "skipped"


def test_follow_up_settings_are_checked(project, outreach):
    project.write_config(extra='[campaigns.later]\ncontacts = "contacts.csv"\n'
                               f'templates = "{ROOT / "templates" / "korea-exception"}"\n'
                               'follow_up_of = "nope"\n[campaigns.later.audience]\nstatus = "maybe"\n')
    r = outreach("--config", project.config, "config", "check")
    assert r.code == 2
    assert "[campaigns.later] follow_up_of: no campaign 'nope'" in r.err
    assert "[campaigns.later.audience] status: should be one of not_opened, delivered, not_delivered" in r.err


def test_a_scheduled_follow_up_skips_suppressed_addresses(live, grid, outreach):
    """The scheduler's path: a follow-up on a fast schedule, one address suppressed."""
    import signal

    from test_schedule import FAST, start_scheduler, wait_for

    schedule = FAST.replace("korea-exception.schedule", "follow-up.schedule")
    write_live_config(live, grid, extra=FOLLOW_UP.format(status="delivered") + schedule)
    outreach("--config", live.config, "send", "--live", "--yes", "--campaign", "korea-exception")
    set_states(live, "korea-exception", {e: "delivered" for e in by_email(live)}, days_ago=5)
    outreach("--config", live.config, "suppressions", "add", "adam.smith@house.example.org", "--reason", "asked")
    before = len(grid.deliveries())
    proc = start_scheduler(live)
    try:
        wait_for(lambda: len(grid.deliveries()) - before >= 13, 40, "the follow-up letters")
        time.sleep(1.5)
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.communicate(timeout=60)
    sent = [d.to for d in grid.deliveries()[before:]]
    assert len(sent) == len(set(sent)) == 13 and "adam.smith@house.example.org" not in sent
    assert by_email(live, "follow-up")["adam.smith@house.example.org"].status == "skipped"


def test_events_drive_the_suppressions_retries_and_follow_up_audiences(live, grid, outreach, tmp_path):
    """A mix of SendGrid events, ingested; then each consequence, recipient by recipient."""
    import json

    from mockgrid import ACCEPT, status

    grid.behave = lambda n, body: status(400, {"errors": [{"message": "Invalid to email"}]}) \
        if body["personalizations"][0]["to"][0]["email"].startswith("eleanor.norton") else ACCEPT
    write_live_config(live, grid, extra=FOLLOW_UP.format(status="not_opened").replace("after_days = 3",
                                                                                       "after_days = 0"))
    outreach("--config", live.config, "send", "--live", "--yes", "--campaign", "korea-exception")
    ids = {r.email.split(".")[0] + "." + r.email.split(".")[1].split("@")[0]: r.id for r in campaign_letters(live)}
    t = int(time.time())  # events come after their letters were recorded (earlier ones are set aside)
    n = 0

    def ev(who, kind, **extra):
        nonlocal n
        n += 1
        email = next(r.email for r in campaign_letters(live) if r.id == ids[who])
        return {"email": email, "event": kind, "timestamp": t + n, "sg_event_id": f"mix-{n}",
                "letter_id": ids[who], "campaign_id": "korea-exception", **extra}

    events = [
        ev("dan.sullivan", "processed"), ev("dan.sullivan", "delivered"), ev("dan.sullivan", "open"),
        ev("roger.wicker", "processed"), ev("roger.wicker", "delivered"),
        ev("timothy.kaine", "processed"), ev("timothy.kaine", "bounce", type="bounce", reason="550 5.1.1 no such user"),
        ev("jeanne.shaheen", "processed"), ev("jeanne.shaheen", "bounce", type="blocked", reason="550 policy block"),
        ev("james.risch", "delivered"), ev("james.risch", "spamreport"),
        ev("ben.lujan", "delivered"), ev("ben.lujan", "unsubscribe"),
        ev("mike.rogers", "dropped", reason="Bounced Address"),
        ev("adam.smith", "processed"), ev("adam.smith", "deferred", response="421 try later"),
        ev("brian.mast", "delivered"), ev("brian.mast", "click", url="https://example.org"),
    ]
    exported = tmp_path / "events.json"
    exported.write_text(json.dumps(events))
    assert outreach("--config", live.config, "events", "ingest", exported).code == 0
    rows = by_email(live)
    state = {e.split("@")[0]: r.status for e, r in rows.items()}
    assert state["dan.sullivan"] == "opened" and state["roger.wicker"] == "delivered"
    assert state["timothy.kaine"] == "bounced" and state["jeanne.shaheen"] == "bounced"
    assert state["james.risch"] == "spamreport" and state["ben.lujan"] == "unsubscribed"
    assert state["mike.rogers"] == "dropped" and state["adam.smith"] == "deferred"
    assert state["brian.mast"] == "clicked" and state["eleanor.norton"] == "failed"
    # Suppressions: the hard bounce, the spam report, the unsubscribe; not the blocked bounce.
    listed = outreach("--config", live.config, "suppressions", "list").out
    suppressed = {line.split()[0].lower(): line.split()[1] for line in listed.splitlines() if "@" in line}
    assert suppressed == {"timothy.kaine@senate.example.org": "bounce", "james.risch@senate.example.org": "spamreport",
                          "ben.lujan@senate.example.org": "unsubscribe"}
    # Retries: only what never reached the office.
    r = outreach("--config", live.config, "send", "--retry-failed", "--campaign", "korea-exception")
    retried = {line.split()[1] for line in r.out.splitlines() if line.startswith("  ") and "left out" not in line}
    assert retried == {"jeanne.shaheen@senate.example.org", "eleanor.norton@house.example.org"}
    # The follow-up (not opened): delivered and never opened, nobody suppressed.
    before = len(grid.deliveries())
    assert outreach("--config", live.config, "send", "--live", "--yes", "--campaign", "follow-up").code == 0
    assert {d.to for d in grid.deliveries()[before:]} == {"roger.wicker@senate.example.org"}
    # Every later path skips the suppressed: the retry does not pick them up either, even a
    # failed letter whose address was suppressed by hand after it failed.
    assert outreach("--config", live.config, "suppressions", "add", "eleanor.norton@house.example.org",
                    "--reason", "asked not to be contacted").code == 0
    before = len(grid.deliveries())
    r = outreach("--config", live.config, "send", "--live", "--yes", "--retry-failed", "--campaign", "korea-exception")
    sent = {d.to for d in grid.deliveries()[before:]}
    assert sent == {"jeanne.shaheen@senate.example.org"}
    assert not sent & {*suppressed, "eleanor.norton@house.example.org"}
    assert "eleanor.norton@house.example.org" in next(line for line in r.out.splitlines() if "left out" in line)
    assert by_email(live)["eleanor.norton@house.example.org"].status == "failed"


def test_a_letter_sent_again_follows_its_new_send_not_the_old_bounce(tmp_path):
    """--retry-failed after a blocked bounce; the retry's answer is lost; its events say delivered."""
    import json
    from types import SimpleNamespace as NS

    from outreach.events import parse_body
    from outreach.ledger import Ledger

    ledger = Ledger(f"sqlite:///{tmp_path / 'l.db'}")
    cid = ledger.campaigns.id("c")
    contact = NS(key="a@house.example.org", email="a@house.example.org", bioguide_id="", chamber="house",
                 state="VA", district=1, party="", committees=(), full_name="A", term_end=None)
    ledger.letters.record(cid, [NS(contact=contact, letter_id="L1", subject="s", text="t", html="h", to_name="A")],
                          "h")
    attempt = dict(started_at=time.time(), duration_ms=1, transport="sendgrid", outcome="accepted",
                   http_status=202, error=None)
    first = ledger.letters.sender("run-1")
    assert first.claim("L1")
    first.finish("L1", "accepted", attempt=attempt, message_id="M1")
    first.close()
    t = time.time()

    def events(*items):
        ledger.events.ingest(parse_body(json.dumps([{"email": "a@house.example.org", "letter_id": "L1", **e}
                                                    for e in items])))

    events({"event": "processed", "timestamp": t, "sg_message_id": "M1.f1", "sg_event_id": "e1"},
           {"event": "bounce", "type": "blocked", "reason": "policy", "timestamp": t + 1, "sg_message_id": "M1.f1",
            "sg_event_id": "e2"})
    assert [r.id for r in ledger.letters.retry_candidates(cid)[0]] == ["L1"]
    assert ledger.letters.requeue(["L1"]) == 1
    second = ledger.letters.sender("run-2")
    assert second.claim("L1")
    second.finish("L1", "unknown", attempt={**attempt, "outcome": "unknown", "http_status": None}, reason="timeout")
    second.close()
    events({"event": "processed", "timestamp": t + 100, "sg_message_id": "M2.f1", "sg_event_id": "e3"},
           {"event": "delivered", "timestamp": t + 101, "sg_message_id": "M2.f1", "sg_event_id": "e4"})
    row = ledger.letters.listing(cid)[0]
    assert (row.status, row.provider_message_id) == ("delivered", "M2")
    assert ledger.letters.retry_candidates(cid) == ([], [])
    # A late event of the first send changes nothing.
    events({"event": "bounce", "type": "blocked", "reason": "late", "timestamp": t + 2, "sg_message_id": "M1.f1",
            "sg_event_id": "e5"})
    assert ledger.letters.listing(cid)[0].status == "delivered"
