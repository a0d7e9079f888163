"""Replies from offices: matched to their letters, `replied` in every view, follow-ups stop on reply."""

from __future__ import annotations

import json
import mailbox

import pytest
from sqlalchemy import update

from conftest import assert_no_traceback, record_all
from outreach.config import load_config
from outreach.ledger import Ledger
from outreach.ledger import schema as S

SULLIVAN = "dan.sullivan@senate.example.org"
KAINE = "timothy.kaine@senate.example.org"
SMITH = "adam.smith@house.example.org"


def eml(sender: str, subject: str = "Re: End the Korea landmine exception", body: str = "Thank you for writing.",
        to: str = "jordan@advocacy.example.org", headers: str = "", message_id: str | None = "<r1@senate.example.org>"
        ) -> bytes:
    mid = f"Message-ID: {message_id}\n" if message_id else ""
    return (f"From: Staffer <{sender}>\nTo: {to}\nSubject: {subject}\nDate: Mon, 07 Dec 2026 15:00:00 +0000\n"
            f"{mid}{headers}MIME-Version: 1.0\nContent-Type: text/plain; charset=utf-8\n\n{body}\n").encode()


@pytest.fixture
def sent(project):
    """The sample campaign recorded and every letter accepted, as after a live send."""
    cfg = load_config(project.config)
    ledger = Ledger(cfg.database_url)
    record_all(cfg, ledger)
    with ledger.write() as db:
        db.execute(update(S.letters).values(status="delivered", accepted_at=1.0e9))
    project.ledger = ledger
    project.ids = _ids(ledger)
    return project


def _ids(ledger) -> dict[str, str]:
    from sqlalchemy import select

    with ledger.read() as db:
        return {r.email_key: r.id for r in db.execute(select(S.letters.c.email_key, S.letters.c.id))}


def status_of(ledger, email: str) -> str:
    from sqlalchemy import select

    with ledger.read() as db:
        return db.execute(select(S.letters.c.status).where(S.letters.c.email_key == email)).scalar_one()


def ingest(project, outreach, *messages: bytes, name: str = "replies.mbox"):
    path = project.root / name
    if len(messages) == 1 and name.endswith(".eml"):
        path.write_bytes(messages[0])
    else:
        box = mailbox.mbox(str(path))
        for m in messages:
            box.add(m)
        box.close()
    return outreach("--config", project.config, "replies", "ingest", path)


def test_a_reply_to_the_letters_own_address_is_matched_even_from_elsewhere(sent, outreach):
    letter = sent.ids[KAINE]
    r = ingest(sent, outreach, eml("forwarded@elsewhere.example.org", to=f"replies+{letter}@inbound.example.org"),
               name="one.eml")
    assert r.code == 0, r.err
    assert "1 reply, 1 new (0 already recorded); 1 matched a letter (1 by address), 1 letter now replied" in r.out
    assert status_of(sent.ledger, KAINE) == "replied"


def test_a_reply_with_only_in_reply_to_is_matched_by_its_thread(sent, outreach):
    letter = sent.ids[SMITH]
    r = ingest(sent, outreach, eml("someone@else.example.org",
                                   headers=f"In-Reply-To: <{letter}.korea-exception@advocacy.example.org>\n"))
    assert "(1 by thread)" in r.out and status_of(sent.ledger, SMITH) == "replied"


def test_a_reply_from_a_known_office_address_is_matched_to_its_latest_letter(sent, outreach):
    r = ingest(sent, outreach, eml(SULLIVAN))
    assert "(1 by sender)" in r.out and status_of(sent.ledger, SULLIVAN) == "replied"


def test_a_reply_to_a_test_copy_is_never_taken_for_the_offices(sent, outreach):
    letter = sent.ids[SMITH]
    r = ingest(sent, outreach, eml("me@advocacy.example.org",
                                   headers=f"In-Reply-To: <test-{letter}.korea-exception@advocacy.example.org>\n"))
    assert "1 reply matched no letter" in r.out and status_of(sent.ledger, SMITH) == "delivered"


def test_an_out_of_office_reply_is_recorded_but_the_letter_is_not_replied(sent, outreach):
    r = ingest(sent, outreach, eml(SULLIVAN, subject="Out of Office: back on Monday",
                                   headers="Auto-Submitted: auto-replied\n"))
    assert "1 automatic reply" in r.out and status_of(sent.ledger, SULLIVAN) == "delivered"
    listed = json.loads(outreach("--config", sent.config, "replies", "list", "--json").out)
    assert listed[0]["automatic"] and listed[0]["office_email"] == SULLIVAN


def test_the_same_reply_twice_is_stored_once(sent, outreach):
    ingest(sent, outreach, eml(SULLIVAN))
    r = ingest(sent, outreach, eml(SULLIVAN), name="again.mbox")
    assert "1 reply, 0 new (1 already recorded)" in r.out
    without_id = eml(KAINE, message_id=None)
    ingest(sent, outreach, without_id, name="a.mbox")
    r = ingest(sent, outreach, without_id, name="b.mbox")
    assert "0 new (1 already recorded)" in r.out
    assert len(json.loads(outreach("--config", sent.config, "replies", "list", "--json").out)) == 2


def test_a_bounce_after_a_reply_does_not_undo_it(sent, outreach):
    import time

    from outreach.events import parse_events
    from test_events import ev

    ingest(sent, outreach, eml(SULLIVAN))
    sent.ledger.events.ingest(parse_events([ev("bounce", time.time(), letter_id=sent.ids[SULLIVAN],
                                               sg_event_id="b1", type="bounce", reason="550 gone")]))
    assert status_of(sent.ledger, SULLIVAN) == "replied"


def test_replied_is_in_status_json_and_in_the_report(sent, outreach):
    ingest(sent, outreach, eml(SULLIVAN))
    status = json.loads(outreach("--config", sent.config, "status", "--json").out)
    assert status["counts"]["replied"] == 1 and status["counts"]["delivered"] == 13
    report = json.loads(outreach("--config", sent.config, "report", "--format", "json").out)
    funnel = report["summary"]["funnel"]
    assert funnel["delivered"] == 14 and funnel["replied"] == 1 and funnel["opened"] == 0


def test_a_reply_is_shown_as_text(sent, outreach):
    ingest(sent, outreach, eml(SULLIVAN, body="We will look at it.\x1b[2J <script>alert(1)</script>"))
    [row] = json.loads(outreach("--config", sent.config, "replies", "list", "--json").out)
    r = outreach("--config", sent.config, "replies", "show", str(row["id"]))
    assert r.code == 0 and "We will look at it." in r.out and "\x1b" not in r.out
    assert "matched by sender" in r.out
    missing = outreach("--config", sent.config, "replies", "show", "999")
    assert missing.code == 2 and "no reply 999" in missing.err
    assert_no_traceback(missing)


def test_an_unreadable_file_is_one_line(project, outreach):
    path = project.root / "nothing.mbox"
    path.write_bytes(b"")
    r = outreach("--config", project.config, "replies", "ingest", path)
    assert_no_traceback(r)
    r = outreach("--config", project.config, "replies", "ingest", project.root / "missing.eml")
    assert r.code == 2 and "missing.eml" in r.err and len(r.err.strip().splitlines()) == 1


def test_a_not_replied_follow_up_skips_exactly_the_offices_that_replied(sent, outreach):
    """Sullivan replied to the campaign; Kaine to an earlier follow-up: neither gets the later one."""
    cfg_text = sent.config.read_text()
    templates = load_config(sent.config).campaigns["korea-exception"].templates
    sent.config.write_text(cfg_text + f'''
[campaigns.reminder]
contacts = "contacts.csv"
templates = "{templates}"
follow_up_of = "korea-exception"
after_days = 0
[campaigns.reminder.audience]
status = "delivered"

[campaigns.last-call]
contacts = "contacts.csv"
templates = "{templates}"
follow_up_of = "korea-exception"
after_days = 0
[campaigns.last-call.audience]
status = "not_replied"
''')
    ingest(sent, outreach, eml(SULLIVAN))
    cfg = load_config(sent.config)
    from outreach.letters import letter_id
    from outreach.plan import plan_campaign

    # Kaine got the reminder and replied to it.
    reminder = sent.ledger.campaigns.id("reminder")
    record_all(cfg, sent.ledger, "reminder")
    with sent.ledger.write() as db:
        db.execute(update(S.letters).where(S.letters.c.campaign_id == reminder).values(status="delivered",
                                                                                    accepted_at=1.1e9))
    ingest(sent, outreach, eml("x@y.example.org", message_id="<r2@x>",
                               to=f"replies+{letter_id('reminder', KAINE)}@inbound.example.org"), name="k.mbox")
    assert status_of_letter(sent.ledger, letter_id("reminder", KAINE)) == "replied"
    plan = plan_campaign(cfg, "last-call", ledger=sent.ledger)
    chosen = {c.key for c in plan.audience}
    assert SULLIVAN not in chosen and KAINE not in chosen
    assert len(chosen) == 12


def status_of_letter(ledger, letter: str) -> str:
    from sqlalchemy import select

    with ledger.read() as db:
        return db.execute(select(S.letters.c.status).where(S.letters.c.id == letter)).scalar_one()
