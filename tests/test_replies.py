"""Replies from offices: matched to their letters, `replied` in every view, follow-ups stop on reply."""

from __future__ import annotations

import json
import mailbox

import pytest
from sqlalchemy import update

from conftest import assert_no_traceback, record_all
from test_webhook import signing_key  # noqa: F401 - a fixture
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


REPLIES = '\n[replies]\naddress = "replies@inbound.example.org"\n'


def test_a_reply_to_the_letters_own_address_is_matched_even_from_elsewhere(sent, outreach):
    sent.config.write_text(sent.config.read_text() + REPLIES)
    letter = sent.ids[KAINE]
    r = ingest(sent, outreach, eml("forwarded@elsewhere.example.org", to=f"replies+{letter}@inbound.example.org"),
               name="one.eml")
    assert r.code == 0, r.err
    assert "1 reply, 1 new (0 already recorded); 1 matched a letter (1 by address), 1 letter now replied" in r.out
    assert status_of(sent.ledger, KAINE) == "replied"


def test_only_the_configured_replies_address_names_a_letter(sent, outreach):
    """A tag on another domain (anyone can compute a letter id) or with [replies] unset names nothing."""
    letter = sent.ids[KAINE]
    r = ingest(sent, outreach, eml("evil@attacker.example.org", to=f"x+{letter}@attacker.example.org"), name="a.eml")
    assert "1 reply matched no letter" in r.out
    r = ingest(sent, outreach, eml("evil@attacker.example.org", message_id="<r9@x>",
                                   to=f"replies+{letter}@inbound.example.org"), name="b.eml")
    assert "1 reply matched no letter" in r.out and status_of(sent.ledger, KAINE) == "delivered"


def test_a_reply_naming_a_letter_not_sent_yet_leaves_it_to_be_sent(sent, outreach):
    with sent.ledger.write() as db:
        db.execute(update(S.letters).where(S.letters.c.email_key == KAINE).values(status="pending", accepted_at=None))
    sent.config.write_text(sent.config.read_text() + REPLIES)
    r = ingest(sent, outreach, eml("x@y.example.org", to=f"replies+{sent.ids[KAINE]}@inbound.example.org"),
               name="p.eml")
    assert "1 matched a letter" in r.out and "0 letters now replied" in r.out
    assert status_of(sent.ledger, KAINE) == "pending"


def test_a_nul_and_a_flood_of_references_are_stored_not_fatal(sent, outreach):
    refs = " ".join(f"<{i:020x}.c@x>" for i in range(70_000))
    r = ingest(sent, outreach, eml(SULLIVAN, subject="a\x00b", body="text\x00more",
                                   headers=f"References: {refs}\n"), name="n.eml")
    assert r.code == 0 and "(1 by sender)" in r.out, r.err
    [row] = json.loads(outreach("--config", sent.config, "replies", "list", "--json").out)
    assert row["subject"] == "ab"


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
    replies = {row["email"]: row["replies"] for row in report["letters"]}
    assert replies[SULLIVAN] == 1 and replies[KAINE] == 0
    csv_text = outreach("--config", sent.config, "report", "--format", "csv").out
    header, *rows = csv_text.splitlines()
    assert header.endswith(",replies") and any(SULLIVAN in r and r.endswith(",1") for r in rows)
    out = sent.root / "r.html"
    outreach("--config", sent.config, "report", "--format", "html", "--out", out)
    assert out.read_text().count('data-replies>1<') == 1
    assert "1 reply from the office" in outreach("--config", sent.config, "report").out


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
    sent.config.write_text(sent.config.read_text() + REPLIES)
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
    chosen = {c.key for c in plan.to_send}
    assert SULLIVAN not in chosen and KAINE not in chosen
    assert len(chosen) == 12
    from outreach import states

    assert {c.key: reason for c, reason in plan.left_out} == {SULLIVAN: states.STOPPED_ON_REPLY,
                                                              KAINE: states.STOPPED_ON_REPLY}
    # A follow-up letter recorded but not sent yet is stopped too, for good, saying why.
    record_all(cfg, sent.ledger, "last-call")
    smith_follow_up = letter_id("last-call", SMITH)
    assert status_of_letter(sent.ledger, smith_follow_up) == "pending"
    ingest(sent, outreach, eml(SMITH, message_id="<r3@x>"), name="s.mbox")
    plan = plan_campaign(cfg, "last-call", ledger=sent.ledger)
    assert [(c.old, c.new, c.reason) for c in plan.changes if c.letter_id == smith_follow_up] == \
        [("pending", "skipped", states.STOPPED_ON_REPLY)]


def status_of_letter(ledger, letter: str) -> str:
    from sqlalchemy import select

    with ledger.read() as db:
        return db.execute(select(S.letters.c.status).where(S.letters.c.id == letter)).scalar_one()


# -- Inbound Parse posts to `outreach serve` ------------------------------------------------------------

INBOUND = "/webhooks/inbound"


@pytest.fixture
def inbound_serve(sent, signing_key):
    """`outreach serve` on 127.0.0.1 with [replies] address set and both keys (test key pairs)."""
    import os
    import signal
    import socket
    import subprocess
    import sys
    import time
    import urllib.request

    from conftest import ROOT
    from test_webhook import public_b64

    sent.config.write_text(sent.config.read_text() + '\n[replies]\naddress = "replies@inbound.example.org"\n')
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = {**os.environ, "SENDGRID_WEBHOOK_PUBLIC_KEY": public_b64(signing_key),
           "SENDGRID_INBOUND_PUBLIC_KEY": public_b64(signing_key), "OUTREACH_DASHBOARD_TOKEN": "t" * 32}
    proc = subprocess.Popen([sys.executable, "-m", "outreach", "--config", str(sent.config), "serve", "--port",
                             str(port)], cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    lines = [proc.stderr.readline(), proc.stderr.readline()]
    assert any(f"127.0.0.1:{port}{INBOUND}" in line for line in lines), lines
    deadline = time.time() + 15
    while True:
        try:
            urllib.request.urlopen(f"http://127.0.0.1:{port}/login", timeout=5)
            break
        except OSError:
            assert time.time() < deadline and proc.poll() is None
            time.sleep(0.05)
    sent.url = f"http://127.0.0.1:{port}{INBOUND}"
    yield sent
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=15)
    assert proc.returncode == 0 and "Traceback" not in err, err


def post_form(url: str, content_type: str, body: bytes, headers: dict) -> tuple[int, dict]:
    import urllib.error
    import urllib.request

    request = urllib.request.Request(url, data=body, method="POST", headers={"Content-Type": content_type, **headers})
    try:
        with urllib.request.urlopen(request, timeout=60) as r:
            return r.status, json.loads(r.read())
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read() or b"{}")


def test_inbound_parse_posts_to_serve_are_matched_refused_or_kept(inbound_serve, signing_key):
    from test_inbound import form
    from test_webhook import signed

    s, url = inbound_serve, inbound_serve.url

    def post(parts, key=signing_key, sign=True, tamper=False):
        content_type, body = form(*parts)
        headers = signed(key, body) if sign else {}
        return post_form(url, content_type, body + (b" " if tamper else b""), headers)

    # Raw mode, to the letter's own address.
    to_kaine = eml("staffer@elsewhere.example.org", message_id="<p1@x>",
                   to=f"replies+{s.ids[KAINE]}@inbound.example.org")
    code, answer = post([("email", to_kaine), ("to", f"replies+{s.ids[KAINE]}@inbound.example.org")])
    assert code == 200 and answer["letters_replied"] == 1 and status_of(s.ledger, KAINE) == "replied"
    # The same post again: stored once.
    code, answer = post([("email", to_kaine), ("to", f"replies+{s.ids[KAINE]}@inbound.example.org")])
    assert code == 200 and answer["stored"] == 0 and answer["duplicates"] == 1
    # Parsed mode, with only In-Reply-To naming the letter.
    headers = (f"From: Someone <someone@else.example.org>\nTo: jordan@advocacy.example.org\n"
               f"Message-ID: <p2@x>\nIn-Reply-To: <{s.ids[SMITH]}.korea-exception@advocacy.example.org>\n"
               "Subject: Re: landmines\n")
    code, answer = post([("headers", headers), ("text", "We agree."), ("from", "Someone <someone@else.example.org>"),
                         ("to", "jordan@advocacy.example.org"), ("subject", "Re: landmines"),
                         ("envelope", '{"to":["replies@inbound.example.org"],"from":"someone@else.example.org"}'),
                         ("charsets", '{"text":"utf-8"}'), ("spam_score", "0.1")])
    assert code == 200 and answer["matched"] == 1 and status_of(s.ledger, SMITH) == "replied"
    # Raw mode, over 1 MB (one field), from a known office address without either: its latest letter.
    big = eml(SULLIVAN, message_id="<p3@x>", body="Our answer follows.\n" + "x" * 72 + ("\n" + "y" * 72) * 15000)
    assert len(big) > 1 << 20
    code, answer = post([("email", big)])
    assert code == 200 and answer["matched"] == 1 and status_of(s.ledger, SULLIVAN) == "replied"
    # An out-of-office reply: recorded, the letter not replied.
    wicker = "roger.wicker@senate.example.org"
    code, answer = post([("email", eml(wicker, message_id="<p4@x>", subject="Out of Office",
                                       headers="Auto-Submitted: auto-replied\n"))])
    assert code == 200 and answer["automatic"] == 1 and status_of(s.ledger, wicker) == "delivered"
    before = len(json.loads(outreach_json(s, "replies", "list", "--json")))
    # Unsigned, forged (another key), altered: 403, nothing stored.
    from cryptography.hazmat.primitives.asymmetric import ec

    other = ec.generate_private_key(ec.SECP256R1())
    for kwargs in ({"sign": False}, {"key": other}, {"tamper": True}):
        code, _ = post([("email", eml("x@y.example.org", message_id="<p5@x>"))], **kwargs)
        assert code == 403, kwargs
    assert len(json.loads(outreach_json(s, "replies", "list", "--json"))) == before
    # A signed post that cannot be read: kept whole as unmatched, answered 200 (SendGrid would drop it).
    body = b"--xYzZY\r\nthis is not a form"
    code, answer = post_form(url, "multipart/form-data; boundary=xYzZY", body, signed(signing_key, body))
    assert code == 200 and answer["stored"] == 1 and answer["unreadable"]
    listed = json.loads(outreach_json(s, "replies", "list", "--json"))
    assert len(listed) == before + 1 and listed[0]["unreadable"] and listed[0]["letter_id"] is None


def outreach_json(project, *args) -> str:
    import subprocess
    import sys

    from conftest import ROOT

    done = subprocess.run([sys.executable, "-m", "outreach", "--config", str(project.config), *args], cwd=ROOT,
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    return done.stdout


def test_serve_with_replies_but_no_inbound_key_refuses_to_start(sent, outreach, monkeypatch, signing_key):
    from test_webhook import public_b64

    sent.config.write_text(sent.config.read_text() + '\n[replies]\naddress = "replies@inbound.example.org"\n')
    monkeypatch.setenv("SENDGRID_WEBHOOK_PUBLIC_KEY", public_b64(signing_key))
    monkeypatch.delenv("SENDGRID_INBOUND_PUBLIC_KEY", raising=False)
    r = outreach("--config", sent.config, "serve", "--port", "0")
    assert r.code == 2 and "$SENDGRID_INBOUND_PUBLIC_KEY is not set" in r.err
    assert_no_traceback(r)


def test_each_letter_replies_to_its_own_address_and_carries_its_message_id(sent, outreach):
    import email

    sent.config.write_text(sent.config.read_text() + '\n[replies]\naddress = "replies@inbound.example.org"\n')
    r = outreach("--config", sent.config, "preview", "--to", "K000384", "--format", "eml")
    msg = email.message_from_string(r.out.split("\n", 1)[1] if r.out.startswith("==") else r.out)
    assert msg["Reply-To"] == f"replies+{sent.ids[KAINE]}@inbound.example.org"
    assert msg["Message-ID"] == f"<{sent.ids[KAINE]}.korea-exception@advocacy.example.org>"


def test_the_inbound_endpoint_cuts_off_a_stalled_body_asking_for_it_again(inbound_serve, signing_key):
    import socket
    import time
    import urllib.parse

    from test_webhook import signed

    url = urllib.parse.urlsplit(inbound_serve.url)
    head = "".join(f"{k}: {v}\r\n" for k, v in signed(signing_key, b"anything").items())
    with socket.create_connection((url.hostname, url.port), timeout=30) as s:
        s.sendall(f"POST {INBOUND} HTTP/1.1\r\nHost: x\r\nContent-Type: multipart/form-data; boundary=xYzZY\r\n"
                  f"{head}Content-Length: 100000\r\n\r\n--xYzZY\r\n".encode())
        started = time.monotonic()
        answer = s.recv(200).split(b"\r\n")[0]
    # 503, not the event webhook's 408: Inbound Parse retries only 5xx, and drops the rest.
    assert answer.startswith(b"HTTP/1.1 503") and time.monotonic() - started < 15
    with socket.create_connection((url.hostname, url.port), timeout=30) as s:
        s.sendall(f"POST {INBOUND} HTTP/1.1\r\nHost: x\r\nContent-Type: multipart/form-data; boundary=xYzZY\r\n"
                  f"{head}Content-Length: {41 * 1024 * 1024}\r\n\r\n".encode())
        answer = b""
        while b"}" not in answer:
            chunk = s.recv(1000)
            assert chunk, answer
            answer += chunk
    assert answer.startswith(b"HTTP/1.1 413") and b"[replies] max_body_bytes" in answer
