"""Hostile clients and hostile data: each attack that worked once, and what holds now."""

from __future__ import annotations

import csv
import email
import email.policy
import json
import os
import random
import socket
import subprocess
import sys
import threading
import time

import pytest

from conftest import ROOT, assert_no_traceback, free_port, wait_for_port
from mockgrid import MockGrid
from test_events import T0, ev, ledger_with_letters, statuses, stored_events
from test_live import KEY, campaign_letters, write_live_config
from test_webhook import (GOOD, PATH, WebhookServer, post, public_b64, send, signed,  # noqa: F401 - fixtures
                          signing_key, tracked)

from outreach.config import load_config
from outreach.webhook import create_app

# -- denial of service without credentials -------------------------------------------------------------

def stall(port: int, headers: dict, sent: int, declared: int, answers: list) -> None:
    """A post that claims `declared` bytes, sends `sent` and then stalls; its answer goes to `answers`."""
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=60) as s:
            head = "".join(f"{k}: {v}\r\n" for k, v in headers.items())
            s.sendall(f"POST {PATH} HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n{head}"
                      f"Content-Length: {declared}\r\n\r\n".encode())
            s.sendall(b"[" + b" " * (sent - 1))
            answers.append(s.recv(200).split(b"\r\n")[0].decode())
    except OSError as e:
        answers.append(f"{type(e).__name__}")


def test_a_signed_post_is_answered_while_idle_and_stalled_connections_are_open(project, signing_key):
    ledger = ledger_with_letters(project.root, {"a": "accepted"})
    port = free_port()
    env = {**os.environ, "SENDGRID_WEBHOOK_PUBLIC_KEY": public_b64(signing_key)}
    server = subprocess.Popen([sys.executable, "-m", "outreach", "--config", str(project.config), "serve",
                               "--port", str(port)], cwd=ROOT, env=env, stdout=subprocess.DEVNULL,
                              stderr=subprocess.PIPE, text=True)
    idle, stallers, answers = [], [], []
    try:
        wait_for_port(port, 30, server)
        # 300 connections that say nothing at all, and one that stops halfway through its headers.
        idle = [socket.create_connection(("127.0.0.1", port), timeout=30) for _ in range(300)]
        half = socket.create_connection(("127.0.0.1", port), timeout=30)
        half.sendall(b"POST /webhooks/sendgrid HTTP/1.1\r\nHost: x\r\nContent-Ty")
        idle.append(half)
        # 10 that look signed, claim 16 MB, send 15 MB each (more than the 64 MB the server
        # holds for bodies being read, even with what the kernel buffers) and stall.
        looks_signed = signed(signing_key, b"anything")
        stallers = [threading.Thread(target=stall, args=(port, looks_signed, 15_000_000, 16_000_000, answers),
                                     daemon=True) for _ in range(10)]
        for t in stallers:
            t.start()
        time.sleep(2.0)                      # the budget is full by now
        # A post of SendGrid's size (a few hundred KB): more than the crumbs of budget left.
        body = json.dumps(GOOD + [ev("open", T0 + i, letter_id="a", sg_event_id=f"open-{i}")
                                  for i in range(2500)]).encode()
        assert len(body) > 200_000
        start = time.monotonic()
        code, answer = post(f"http://127.0.0.1:{port}{PATH}", body, signed(signing_key, body))
        took = time.monotonic() - start
        assert code == 200 and answer["stored"] == 2501, answer
        assert took < 10, f"answered after {took:.1f} s"
        assert statuses(ledger)["a"] == "opened"
        for t in stallers:
            t.join(60)
        # Each stalled sender was cut off (408, or its connection closed under it) or, waiting for
        # room, turned away (503): none holds on.
        assert not any(t.is_alive() for t in stallers)
        assert len(answers) == 10 and all(a[9:12] in ("408", "503") or a.endswith("Error") for a in answers), answers
        # And the idle ones were closed by the server, the half-sent header too: none piles up.
        for s in idle[::30] + [half]:
            s.settimeout(5)
            assert s.recv(100) == b"", "an idle connection is still open"
    finally:
        for s in idle:
            s.close()
        server.terminate()
        _, err = server.communicate(timeout=30)
    assert "Traceback" not in err


# -- one bad event never costs the others --------------------------------------------------------------


def test_an_event_with_a_lone_surrogate_is_set_aside_and_the_rest_of_its_post_stored(tracked, signing_key):
    body = ('[{"event":"delivered","timestamp":%d,"email":"p\\ud800@x.org","letter_id":"a","sg_event_id":"bad"},'
            '{"event":"delivered","timestamp":%d,"letter_id":"b","sg_event_id":"good"}]' % (T0, T0)).encode()
    code, answer = post(tracked.url, body, signed(signing_key, body))
    assert code == 200, answer
    assert (answer["stored"], answer["set_aside"]) == (1, 1)
    assert statuses(tracked.ledger)["b"] == "delivered" and statuses(tracked.ledger)["a"] == "accepted"
    [aside] = tracked.ledger.events.set_aside()
    assert "not valid Unicode" in aside.reason and "\\ud800" in aside.raw
    # SendGrid sends it again: nothing more is kept.
    code, answer = post(tracked.url, body, signed(signing_key, body))
    assert code == 200 and tracked.ledger.events.count_set_aside() == 1 and answer["duplicates"] == 2


def test_posts_stored_together_are_not_failed_by_a_bad_neighbour(tracked, signing_key):
    """Forty good posts and one bad one arrive at once: every good one is answered 200."""
    import concurrent.futures

    bad = ('[{"event":"open","timestamp":%d,"email":"x\\udfff@y.org","letter_id":"c"}]' % T0).encode()
    goods = [json.dumps([ev("open", T0 + i, letter_id="d", sg_event_id=f"o{i}")]).encode() for i in range(40)]
    with concurrent.futures.ThreadPoolExecutor(16) as pool:
        futures = [pool.submit(post, tracked.url, body, signed(signing_key, body)) for body in [bad, *goods]]
    codes = [f.result()[0] for f in futures]
    assert codes == [200] * 41
    assert stored_events(tracked.ledger) == 40


def test_an_event_nested_990_levels_deep_is_set_aside_not_a_500(tracked, signing_key):
    deep = "[" * 990 + "]" * 990
    body = ('[{"event":"open","timestamp":%d,"letter_id":"a","x":%s},'
            '{"event":"open","timestamp":%d,"letter_id":"b","sg_event_id":"ok"}]' % (T0, deep, T0)).encode()
    code, answer = post(tracked.url, body, signed(signing_key, body))
    assert code == 200 and (answer["stored"], answer["set_aside"]) == (1, 1)
    assert "nested more than 400 levels deep" in tracked.ledger.events.set_aside()[0].reason


def test_events_ingest_of_such_an_event_is_one_line_not_an_internal_error(project, outreach, tmp_path):
    ledger_with_letters(project.root, {"a": "accepted"})
    path = tmp_path / "export.json"
    path.write_text('[{"event":"delivered","timestamp":%d,"email":"p\\ud800@x.org","letter_id":"a"}]' % T0)
    r = outreach("--config", project.config, "events", "ingest", path)
    assert r.code == 2 and "not valid Unicode" in r.err and len(r.err.strip().splitlines()) == 1
    assert_no_traceback(r)


def test_an_event_holding_a_nul_is_set_aside_on_any_database(tracked, signing_key, project, outreach, tmp_path):
    """PostgreSQL's text holds no NUL: such an event is set aside, whatever database the ledger is."""
    body = ('[{"event":"delivered","timestamp":%d,"email":"p\\u0000@x.org","letter_id":"a","sg_event_id":"nul"},'
            '{"event":"bounce","timestamp":%d,"letter_id":"c","reason":"550 \\u0000","sg_event_id":"nul2"},'
            '{"event":"delivered","timestamp":%d,"letter_id":"b","sg_event_id":"fine"}]' % (T0, T0, T0)).encode()
    code, answer = post(tracked.url, body, signed(signing_key, body))
    assert code == 200 and (answer["stored"], answer["set_aside"]) == (1, 2), answer
    assert all("NUL" in a.reason for a in tracked.ledger.events.set_aside())
    path = tmp_path / "export.json"
    path.write_bytes(body)
    r = outreach("--config", project.config, "events", "ingest", path)
    lines = r.err.strip().splitlines()   # one line per bad event, naming it
    assert r.code == 2 and [("event 0" in lines[0], "event 1" in lines[1])] == [(True, True)]
    assert all("NUL" in line for line in lines) and len(lines) == 2
    assert_no_traceback(r)


def test_a_lock_met_on_the_hot_path_is_one_line_saying_what_is_safe(tmp_path):
    """The webhook's statements run on the driver's cursor: its own errors are translated too."""
    import sqlite3

    from sqlalchemy import insert as sa_insert

    from outreach.errors import LedgerFailure
    from outreach.ledger import schema as S
    from outreach.ledger.prepared import Prepared

    ledger = ledger_with_letters(tmp_path, {"a": "accepted"})
    holder = sqlite3.connect(tmp_path / "outreach.db")
    holder.execute("BEGIN EXCLUSIVE")
    try:
        with pytest.raises(LedgerFailure) as e:
            with ledger.write() as db:
                db.exec_driver_sql("PRAGMA busy_timeout=100")   # not 30 s: the test need not wait
                stmt = Prepared.of(db.dialect, "test-insert", 1, lambda n: sa_insert(S.suppressions))
                stmt.run_many(db, [{"email_key": "x@y.org", "email": "x@y.org", "reason": "manual",
                                    "created_at": 1.0}])
    finally:
        holder.rollback()
        holder.close()
    assert "stayed locked by another process" in str(e.value) and "no letter is sent twice" in str(e.value)
    assert e.value.exit_code == 1


def test_no_header_line_passes_998_characters_whatever_a_cell_holds(project, outreach):
    text = (ROOT / "contacts" / "sample.csv").read_text()
    (project.root / "contacts.csv").write_text(text.replace("706 Hart Senate Office Building", "Z" * 3000))
    project.write_config(extra='subject = "For the office at {{ member.office_address }}"\n')
    assert "subject" in project.config.read_text()
    r = outreach("--config", project.config, "preview", "--to", "S001198", "--format", "eml", "--out",
                 project.root / "outbox")
    assert r.code == 0, r.err
    raw = next((project.root / "outbox").rglob("*.eml")).read_bytes()
    head = raw.split(b"\n\n", 1)[0]
    assert max(len(line) for line in head.split(b"\n")) <= 998
    subject = email.message_from_bytes(raw, policy=email.policy.default)["Subject"]
    assert subject.startswith("For the office at ZZZZ") and "Z" * 3000 in subject


# -- data that would break the views for good --------------------------------------------------------------

def test_an_event_dated_1970_or_next_week_is_kept_for_review_and_every_view_still_works(
        tracked, signing_key, project, outreach):
    week = time.time() + 7 * 86400
    code, answer = send(tracked, signing_key, [ev("delivered", 1, letter_id="a", sg_event_id="old"),
                                               ev("delivered", week, letter_id="b", sg_event_id="ahead")])
    assert code == 200 and answer["set_aside"] == 2 and answer["stored"] == 0
    assert {a.reason for a in tracked.ledger.events.set_aside()} == {
        "dated before its letter was recorded", "dated more than a day after it was received"}
    assert statuses(tracked.ledger)["a"] == "accepted"
    for fmt in ("html", "json", "csv", "table"):
        r = outreach("--config", project.config, "report", "--format", fmt)
        assert r.code == 0, (fmt, r.err)
    assert "2 events set aside for review" in outreach("--config", project.config, "events", "unmatched").out


@pytest.mark.parametrize("seed", range(3))
def test_every_view_survives_whatever_the_events_held(project, outreach, seed):
    """A fuzzer over event fields: types, sizes, dates, text; whatever was stored, no view fails."""
    import urllib.request

    from outreach.dashboard import dashboard_routes

    rng = random.Random(seed)
    ledger = ledger_with_letters(project.root, {f"l{i}": "accepted" for i in range(8)})
    values = [None, "", "x" * 5000, "=cmd|' /C calc'!A0", "[/x]", "\x1b]0;pwned\x07", "\u202egnp.exe", "日本",
              -1, 0, 1e300, True, [], {"a": {"b": [1]}}, "550 5.1.1 <script>alert(1)</script>"]
    names = ["processed", "delivered", "open", "click", "bounce", "dropped", "deferred", "spamreport",
             "unsubscribe", "group_unsubscribe", "group_resubscribe", "weird-event", "x" * 32]
    events = []
    for n in range(300):
        e = {"event": rng.choice(names), "timestamp": rng.choice([1, T0, T0 + rng.random() * 1e5, 9.9e10]),
             "letter_id": rng.choice([f"l{rng.randrange(8)}", None, "nope"]), "sg_event_id": f"s{seed}-{n}",
             "email": rng.choice([f"l{rng.randrange(8)}@house.example.org", None])}
        for key in ("reason", "response", "url", "type", "asm_group_id", "sg_message_id", "useragent"):
            if rng.random() < 0.4:
                e[key] = rng.choice(values)
        events.append({k: v for k, v in e.items() if v is not None})
    from outreach.events import parse_post

    ledger.events.ingest(*parse_post(json.dumps(events)))
    # And whatever a ledger written before these checks (or edited by hand) holds: times at 0,
    # 1970, before 1970, and past the year 9999.
    from sqlalchemy import insert, update

    from outreach.ledger import schema as S

    campaign_id = ledger.campaigns.id("korea-exception")
    with ledger.write() as db:
        for i, t in enumerate([0, 1, -86400, 1e11, 3e11]):
            db.execute(update(S.letters).where(S.letters.c.id == f"l{i}")
                       .values(status="delivered", accepted_at=t, last_event_at=t, last_event="delivered"))
            db.execute(insert(S.events).values(letter_id=f"l{i}", campaign_id=campaign_id, matched_by="letter_id",
                                               event="delivered", dedupe_key=f"raw-{seed}-{i}", occurred_at=t,
                                               received_at=t, raw="{}"))
    for fmt in ("html", "json", "csv", "table"):
        r = outreach("--config", project.config, "report", "--format", fmt)
        assert r.code == 0, (fmt, r.err)
        assert_no_traceback(r)
    cfg = load_config(project.config)
    token = "a-dashboard-token-long-enough-0123456789"
    app = create_app(cfg, ledger, public_key=_key(), routes=dashboard_routes(cfg, ledger, token))
    with WebhookServer(app) as server:
        pages = ["/", "/campaigns/korea-exception", "/unmatched", "/offices?q=l", "/offices?q=%25"]
        pages += [f"/letters/l{i}" for i in range(8)]
        for page in pages:
            request = urllib.request.Request(f"http://127.0.0.1:{server.port}{page}",
                                             headers={"Authorization": f"Bearer {token}"})
            with urllib.request.urlopen(request, timeout=30) as answer:
                assert answer.status == 200, page


def _key():
    from cryptography.hazmat.primitives.asymmetric import ec

    return ec.generate_private_key(ec.SECP256R1()).public_key()


# -- contact cells are data, never code ---------------------------------------------------------------------

HOSTILE = {"dan.sullivan@senate.example.org": ("full_name", '=HYPERLINK("http://evil.example","click")'),
           "roger.wicker@senate.example.org": ("party", "[/x]"),
           "timothy.kaine@senate.example.org": ("party", "[link=http://evil.example]R[/link]"),
           "jeanne.shaheen@senate.example.org": ("staffer", "+cmd|' /C calc'!A0")}


def hostile_contacts(project) -> None:
    with open(ROOT / "contacts" / "sample.csv", encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    for row in rows:
        column, value = HOSTILE.get(row["email"], (None, None))
        if column:
            row[column] = value
    with open(project.root / "contacts.csv", "w", encoding="utf-8", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(rows[0]), lineterminator="\n")
        w.writeheader()
        w.writerows(rows)


def test_csv_made_for_spreadsheets_neutralises_formulas_and_json_keeps_the_truth(project, outreach, monkeypatch):
    hostile_contacts(project)
    monkeypatch.setenv("SENDGRID_API_KEY", KEY)
    with MockGrid(api_key=KEY) as grid:
        write_live_config(project, grid)
        assert outreach("--config", project.config, "send", "--live", "--yes").code == 0
    rows = list(csv.DictReader(outreach("--config", project.config, "report", "--format", "csv").out.splitlines()))
    names = {r["email"]: r["name"] for r in rows}
    assert names["dan.sullivan@senate.example.org"] == "'" + HOSTILE["dan.sullivan@senate.example.org"][1]
    assert not any(cell.startswith(("=", "+", "-", "@")) for r in rows for cell in r.values())
    data = json.loads(outreach("--config", project.config, "report", "--format", "json").out)
    assert {r["email"]: r["name"] for r in data["letters"]}["dan.sullivan@senate.example.org"] == \
        HOSTILE["dan.sullivan@senate.example.org"][1]
    project.write_config()  # the sample project again (its dry run), the hostile cells kept
    hostile_contacts(project)
    assert outreach("--config", project.config, "send").code == 0
    [run] = project.runs()
    with open(run / "manifest.csv", encoding="utf-8") as f:
        manifest = list(csv.DictReader(f))
    assert not any(cell.startswith(("=", "+", "-", "@")) for r in manifest for cell in r.values())


def test_markup_and_terminal_escapes_in_data_are_printed_as_text(project, outreach, monkeypatch, tmp_path):
    hostile_contacts(project)
    text = (project.root / "contacts.csv").read_text().replace("Adam Smith", "Adam\x1b]0;pwned\x07 Smith")
    (project.root / "contacts.csv").write_text(text)
    monkeypatch.setenv("SENDGRID_API_KEY", KEY)
    with MockGrid(api_key=KEY) as grid:
        write_live_config(project, grid)
        r = outreach("--config", project.config, "send", "--live", "--yes")
    assert "holds control characters (\\x1b, \\x07)" in r.out   # the row is refused, said as text
    ids = {row.email: row.id for row in campaign_letters(project)}
    export = tmp_path / "events.json"
    export.write_text(json.dumps([
        {"event": "bounce", "timestamp": int(time.time()), "letter_id": ids["timothy.kaine@senate.example.org"],
         "type": "bounce", "reason": "550 \x1b[2J\x1b]0;pwned\x07 gone", "sg_event_id": "b1"},
        {"event": "open", "timestamp": int(time.time()), "email": "\u202eevil@x.org", "sg_event_id": "o1"}]))
    assert outreach("--config", project.config, "events", "ingest", export).code == 0
    r = outreach("--config", project.config, "report")
    assert r.code == 0 and "[/x]" in r.out and "[link=http://evil.example]" in r.out  # as text, not markup
    for args in (("report",), ("letters", "list"), ("letters", "show", ids["timothy.kaine@senate.example.org"]),
                 ("events", "unmatched"), ("preview", "--limit", "14"), ("status",), ("suppressions", "list")):
        r = outreach("--config", project.config, *args)
        shown = r.out + r.err
        assert r.code in (0, 1) and not any(c in shown for c in "\x1b\x07\u202e"), args
    assert "\\x1b[2J" in outreach("--config", project.config, "letters", "show",
                                    ids["timothy.kaine@senate.example.org"]).out


def test_contacts_check_reports_control_characters_and_bidi_overrides(project, outreach):
    text = (ROOT / "contacts" / "sample.csv").read_text().splitlines()
    text[1] = text[1].replace("Dan Sullivan", "Dan\x1b[2J Sullivan")
    text[2] = text[2].replace("Roger F. Wicker", "Roger F. \u202eWicker")
    text[3] = text[3].replace("Tim Kaine", '"Tim\nKaine"')  # a line break in a quoted cell is data, not an attack
    (project.root / "contacts.csv").write_text("\n".join(text) + "\n")
    r = outreach("contacts", "check", project.root / "contacts.csv")
    assert r.code == 1
    assert "line 2, column full_name:" in r.out and "holds control characters (\\x1b)" in r.out
    assert "line 3, column full_name:" in r.out and "holds control characters (\\u202e)" in r.out
    assert "\x1b" not in r.out and "\u202e" not in r.out


def test_a_huge_name_never_makes_a_header_line_over_998_characters(project, outreach):
    from outreach.message import Message, to_eml
    from outreach.transports.sendgrid import SendGridTransport

    m = Message(letter_id="abc", campaign="c", from_name="Org", from_email="org@example.org",
                to_name="A" * 108_000, to_email="a@b.example.org", subject="s", text="t", html="h")
    raw = to_eml(m)
    assert max(len(line) for line in raw.split(b"\n")) <= 998
    payload = SendGridTransport("SG.k", "http://127.0.0.1:9", 1).payload(m)
    assert payload["personalizations"][0]["to"][0]["name"] == \
        email.message_from_bytes(raw, policy=email.policy.default)["To"].addresses[0].display_name
    text = (ROOT / "contacts" / "sample.csv").read_text().replace("Dan Sullivan", "D" * 300)
    (project.root / "contacts.csv").write_text(text)
    r = outreach("contacts", "check", project.root / "contacts.csv")
    assert r.code == 1 and "longer than 200 characters" in r.out


@pytest.mark.parametrize("path", ["/dev/zero", "/dev/null"])
def test_a_device_as_the_contact_list_is_one_line(project, outreach, path):
    project.write_config()
    project.config.write_text(project.config.read_text().replace('contacts = "contacts.csv"', f'contacts = "{path}"'))
    r = outreach("--config", project.config, "send")
    assert r.code == 2 and "not a regular file" in r.err and len(r.err.strip().splitlines()) == 1


# -- errors that blame the right thing ------------------------------------------------------------------------

def test_a_full_disk_is_one_line_saying_what_is_safe(project, outreach, monkeypatch):
    """The ledger's disk fills up in the middle of a live send."""
    from sqlalchemy.exc import OperationalError

    import outreach.ledger.letters as letters

    monkeypatch.setenv("SENDGRID_API_KEY", KEY)
    calls = {"n": 0}
    real = letters._claims

    def claims(db, payloads):
        calls["n"] += 1
        if calls["n"] > 3:
            raise OperationalError("UPDATE letters", {}, Exception("database or disk is full"))
        return real(db, payloads)

    monkeypatch.setattr(letters, "_claims", claims)
    with MockGrid(api_key=KEY) as grid:
        write_live_config(project, grid, concurrency=1)
        r = outreach("--config", project.config, "send", "--live", "--yes")
        sent = len(grid.deliveries())
    assert r.code == 1 and "the disk is full: the ledger" in r.err and "no letter is sent twice" in r.err
    assert len(r.err.strip().splitlines()) == 1 and "UPDATE letters" not in r.err
    assert_no_traceback(r)
    monkeypatch.setattr(letters, "_claims", real)
    with MockGrid(api_key=KEY, port=grid.port) as again:
        outreach("--config", project.config, "send", "--live", "--yes")
        assert sent + len(again.deliveries()) == 14 and max(again.received.values()) == 1


# -- secrets -------------------------------------------------------------------------------------------------

def test_an_api_key_with_a_line_break_is_refused_at_start_and_never_echoed(project, outreach, monkeypatch):
    key = "SG.abcdefghijklmnop\nqrstuvwxyz0123456789"
    monkeypatch.setenv("SENDGRID_API_KEY", key)
    with MockGrid(api_key=KEY) as grid:
        write_live_config(project, grid)
        r = outreach("--config", project.config, "send", "--live", "--yes")
        assert grid.requests == []
    assert r.code == 2 and "$SENDGRID_API_KEY holds a line break" in r.err
    for part in key.split("\n"):
        assert part not in r.out + r.err
    assert campaign_letters(project) == []


def test_secrets_are_scrubbed_whole_and_by_what_they_start_with():
    from outreach.transports import Scrubber

    scrub = Scrubber("SG.abcdefghijklmnop.qrstuvwxyz")
    assert scrub("refused: Bearer SG.abcdefghijklmnop.qrstuvwxyz!") == "refused: Bearer ***!"
    assert "abcdefgh" not in scrub("header value b'Bearer SG.abcdefghij...'")
    assert scrub("nothing secret here") == "nothing secret here"


def test_control_characters_in_the_header_row_are_one_line_and_never_reach_the_terminal(tmp_path, outreach):
    path = tmp_path / "list.csv"
    path.write_text("email,full_name,chamber,state,district,\x1b]0;pwned\x07party\n"
                    "a@house.example.org,A B,house,AL,1,R\n", encoding="utf-8")
    r = outreach("contacts", "check", path)
    assert r.code == 2 and "line 1, column 6: the header holds control characters" in r.err
    assert "\x1b" not in r.err and "\x07" not in r.err and len(r.err.strip().splitlines()) == 1
