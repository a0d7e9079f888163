"""The same ledger on PostgreSQL: a live run, events, reports, retries and locks.

Needs a PostgreSQL server named by $OUTREACH_TEST_POSTGRES_URL (an SQLAlchemy URL
such as postgresql+psycopg://USER@127.0.0.1:5432/postgres, for a role that may
create databases). `.ci/run` starts a throwaway server and sets it. Each test
gets a database of its own, dropped afterwards.
"""

from __future__ import annotations

import json
import os
import random
import re
import secrets
import signal
import socket
import subprocess
import sys
import threading
import time
from collections import Counter

import pytest

from conftest import ROOT, free_port, need, wait_for_port
from mockgrid import ACCEPT, MockGrid, status
from test_crash import many_contacts
from test_live import KEY, write_live_config
from test_schedule import FAST, _no_scheduler_left_behind, start_scheduler, wait_for  # noqa: F401 - a fixture
from test_webhook import PATH, post, public_b64, signed, signing_key  # noqa: F401 - a fixture

ADMIN_URL = os.environ.get("OUTREACH_TEST_POSTGRES_URL", "")


@pytest.fixture
def pg_url():
    need(bool(ADMIN_URL), "no PostgreSQL server: set OUTREACH_TEST_POSTGRES_URL (.ci/run starts one)")
    from sqlalchemy import create_engine, text
    from sqlalchemy.engine import make_url

    name = f"outreach_test_{secrets.token_hex(4)}"
    admin = create_engine(ADMIN_URL, isolation_level="AUTOCOMMIT")
    with admin.connect() as db:
        db.execute(text(f'CREATE DATABASE "{name}"'))
    url = make_url(ADMIN_URL).set(database=name).render_as_string(hide_password=False)
    try:
        yield url
    finally:
        from sqlalchemy.pool import NullPool

        # Connections of the test's own engines may linger: end them, then drop the database.
        with create_engine(ADMIN_URL, isolation_level="AUTOCOMMIT", poolclass=NullPool).connect() as db:
            db.execute(text("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = :n"),
                       {"n": name})
            db.execute(text(f'DROP DATABASE IF EXISTS "{name}"'))
        admin.dispose()


def database(url: str) -> str:
    return f'\n[database]\nurl = "{url}"\n'


def letters_of(url: str, campaign: str = "korea-exception"):
    from outreach.ledger import Ledger

    ledger = Ledger(url)
    try:
        return ledger.letters.listing(ledger.campaigns.id(campaign, create=False))
    finally:
        ledger.engine.dispose()


def test_a_live_run_then_events_retries_and_reports_on_postgresql(project, outreach, monkeypatch, pg_url, tmp_path):
    monkeypatch.setenv("SENDGRID_API_KEY", KEY)
    refused = "ben.lujan@senate.example.org"
    with MockGrid(api_key=KEY) as grid:
        grid.behave = lambda n, body: status(400, {"errors": [{"message": "Invalid to email"}]}) \
            if body["personalizations"][0]["to"][0]["email"] == refused else ACCEPT
        write_live_config(project, grid, extra=database(pg_url))
        r = outreach("--config", project.config, "send", "--live", "--yes", "--limit", "6")
        assert r.code == 1, r.err
        r = outreach("--config", project.config, "send", "--live", "--yes")
        assert "internal error" not in r.err, r.err
        rows = {x.email: x for x in letters_of(pg_url)}
        assert len(rows) == 14 and rows[refused].status == "failed"
        assert {x.status for e, x in rows.items() if e != refused} == {"accepted"}
        assert max(grid.received.values()) == 1
        # A second run sends nothing.
        before = len(grid.deliveries())
        outreach("--config", project.config, "send", "--live", "--yes")
        assert len(grid.deliveries()) == before

        # Events, by letter id: delivered and opened, a hard bounce that suppresses.
        t = int(time.time())  # after the letters were recorded: earlier events are set aside
        events, n = [], 0
        for email, kinds in {"dan.sullivan@senate.example.org": ["processed", "delivered", "open"],
                             "roger.wicker@senate.example.org": ["processed", "delivered"],
                             "timothy.kaine@senate.example.org": ["processed", "bounce"]}.items():
            for kind in kinds:
                n += 1
                events.append({"email": email, "event": kind, "timestamp": t + n, "sg_event_id": f"pg-{n}",
                               "letter_id": rows[email].id, "campaign_id": "korea-exception",
                               **({"type": "bounce", "reason": "550 5.1.1 no such user"} if kind == "bounce" else {})})
        events.append({"email": "nobody@example.org", "event": "delivered", "timestamp": t, "sg_event_id": "pg-x"})
        exported = tmp_path / "events.json"
        exported.write_text(json.dumps(events))
        assert outreach("--config", project.config, "events", "ingest", exported).code == 0
        assert outreach("--config", project.config, "events", "ingest", exported).code == 0  # idempotent
        rows = {x.email: x for x in letters_of(pg_url)}
        assert rows["dan.sullivan@senate.example.org"].status == "opened"
        assert rows["roger.wicker@senate.example.org"].status == "delivered"
        assert rows["timothy.kaine@senate.example.org"].status == "bounced"
        assert "timothy.kaine@senate.example.org" in outreach("--config", project.config,
                                                              "suppressions", "list").out

        # The report, in JSON and HTML, from PostgreSQL.
        r = outreach("--config", project.config, "report", "--format", "json")
        assert r.code == 0, r.err
        summary = json.loads(r.out)["summary"]
        assert summary["funnel"]["targeted"] == 14 and summary["funnel"]["accepted"] == 13
        assert summary["funnel"]["delivered"] == 2 and summary["funnel"]["opened"] == 1
        assert summary["counts"]["failed"] == 1 and summary["counts"]["bounced"] == 1
        html = tmp_path / "report.html"
        assert outreach("--config", project.config, "report", "--format", "html", "--out", html).code == 0
        assert 'data-funnel="delivered">2<' in html.read_text(encoding="utf-8")

        # Retrying the failure once the server takes it; the suppressed bounce stays out.
        grid.behave = lambda n, body: ACCEPT
        before = len(grid.deliveries())
        assert outreach("--config", project.config, "send", "--live", "--yes", "--retry-failed").code == 0
        assert [d.to for d in grid.deliveries()[before:]] == [refused]


def test_the_send_lock_and_the_scheduler_lock_hold_on_postgresql(pg_url):
    from outreach.errors import UserError
    from outreach.ledger import Ledger

    ledger = Ledger(pg_url)
    other = Ledger(pg_url)
    try:
        with ledger.lock("send:c", "a send of campaign c"):
            with pytest.raises(UserError, match="already running"):
                other.lock("send:c", "a send of campaign c").acquire()
        with other.lock("send:c", "a send of campaign c"):
            pass
    finally:
        ledger.engine.dispose()
        other.engine.dispose()


def test_the_signed_webhook_and_the_dashboard_on_postgresql(project, pg_url, signing_key):
    from test_dashboard import BEARER, TOKEN, app_for, base, get
    from test_reports import EXPECTED_FUNNEL, build_ledger
    from test_webhook import WebhookServer, post, signed

    project.write_config(extra=database(pg_url))
    ledger = build_ledger(project)
    moylan = next(x for x in ledger.letters.listing(ledger.campaigns.id("korea-exception"))
                  if x.email == "james.moylan@house.example.org")
    ledger.engine.dispose()
    with WebhookServer(app_for(project, TOKEN, signing_key)) as server:
        body = json.dumps([{"email": moylan.email, "event": "click", "timestamp": int(time.time()),
                            "sg_event_id": "pg-click", "letter_id": moylan.id,
                            "campaign_id": "korea-exception", "url": "https://example.org"}]).encode()
        code, answer = post(server.url, body, signed(signing_key, body))
        assert code == 200 and answer["stored"] == 1
        assert post(server.url, body, signed(signing_key, body))[1]["stored"] == 0  # a duplicate
        # A NUL, which PostgreSQL's text refuses, costs only its own event.
        nul = ('[{"event":"open","timestamp":%d,"letter_id":"%s","sg_event_id":"pg-nul","useragent":"x",'
               '"email":"a\\u0000@x.org"},{"event":"open","timestamp":%d,"letter_id":"%s","sg_event_id":"pg-open"}]'
               % (int(time.time()), moylan.id, int(time.time()), moylan.id)).encode()
        code, answer = post(server.url, nul, signed(signing_key, nul))
        assert code == 200 and (answer["stored"], answer["set_aside"]) == (1, 1), answer
        root = base(server)
        page = get(root + "/campaigns/korea-exception", BEARER)
        assert page[0] == 200
        assert f'data-funnel="clicked">{EXPECTED_FUNNEL["clicked"] + 1}<' in page[1]
        for path, expect in [("/", "korea-exception"), ("/offices?q=Moylan", "M001219"),
                             ("/offices?q=gu", "james.moylan@house.example.org"), (f"/letters/{moylan.id}", "click"),
                             ("/unmatched", "Unmatched events")]:
            got = get(root + path, BEARER)
            assert got[0] == 200 and expect in got[1], path
        # `%` and `_` are themselves on PostgreSQL too: no office holds them.
        assert "M001219" not in get(root + "/offices?q=%25", BEARER)[1]
        assert "M001219" not in get(root + "/offices?q=_", BEARER)[1]
    assert next(x for x in letters_of(pg_url) if x.id == moylan.id).status == "clicked"


# -- separate processes on one PostgreSQL ledger ----------------------------------------------------------

def counts_of(url: str, campaign: str = "korea-exception") -> Counter:
    return Counter(x.status for x in letters_of(url, campaign))


def make_schema(url: str) -> None:
    """The tables made once, so processes started together race on what is under test, not on CREATE TABLE."""
    from outreach.ledger import Ledger

    Ledger(url).engine.dispose()


def test_two_live_sends_of_one_campaign_started_at_once_on_postgresql(project, pg_url):
    """Two `send --live --yes` processes at the same moment, several times over (a campaign each
    time): one sends, the other is refused at once with one line naming the one that holds the
    campaign (its pid and host) while it is still sending; every letter goes out exactly once."""
    many_contacts(project, 40)
    make_schema(pg_url)
    host = socket.gethostname()
    env = {**os.environ, "SENDGRID_API_KEY": KEY}
    with MockGrid(api_key=KEY, latency=0.2) as grid:
        write_live_config(project, grid, extra=database(pg_url), concurrency=2)
        base = project.config.read_text()
        for round_ in range(3):
            campaign = f"korea-exception-{round_}"
            project.config.write_text(base.replace("[campaigns.korea-exception]", f"[campaigns.{campaign}]"))
            cmd = [sys.executable, "-m", "outreach", "--config", str(project.config), "send", "--live", "--yes"]
            procs = [subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                      text=True) for _ in range(2)]
            sent_when_done: dict[int, int] = {}
            deadline = time.time() + 30
            while len(sent_when_done) < 2 and time.time() < deadline:
                for p in procs:
                    if p.pid not in sent_when_done and p.poll() is not None:
                        sent_when_done[p.pid] = len([d for d in grid.deliveries()
                                                     if d.body.get("categories") == [campaign]])
                time.sleep(0.02)
            results = []
            for p in procs:
                try:
                    out, err = p.communicate(timeout=max(1.0, deadline - time.time()))
                except subprocess.TimeoutExpired:
                    for q in procs:
                        q.kill()
                    pytest.fail(f"round {round_}: a send did not finish within 30 s")
                results.append((p, out, err))
            codes = sorted(p.returncode for p, _, _ in results)
            assert codes == [0, 2], f"round {round_}: " + "\n".join(f"exit {p.returncode}: {o}{e}"
                                                                    for p, o, e in results)
            (winner, _, won_err), = [(p, o, e) for p, o, e in results if p.returncode == 0]
            (loser, lost_out, lost_err), = [(p, o, e) for p, o, e in results if p.returncode == 2]
            assert "Traceback" not in won_err + lost_err and "internal error" not in won_err + lost_err
            lines = [line for line in (lost_out + lost_err).splitlines() if line.strip()]
            assert len(lines) == 1, lines
            assert lines[0].startswith(f"outreach: a send of campaign {campaign} is already running "
                                       f"(pid {winner.pid} on {host}, since "), lines
            # Refused while the other was still sending, not after it had finished.
            assert sent_when_done[loser.pid] < 40, (round_, sent_when_done)
            assert sent_when_done[winner.pid] == 40
            sent = [d.to for d in grid.deliveries() if d.body.get("categories") == [campaign]]
            assert len(sent) == 40 and len(set(sent)) == 40, Counter(sent).most_common(3)
            assert counts_of(pg_url, campaign) == {"accepted": 40}
        assert max(grid.received.values()) == 1


def test_the_scheduler_lock_on_postgresql_refuses_a_second_and_is_taken_over_after_sigkill(project, pg_url):
    """A second scheduler on the same PostgreSQL ledger refuses to start with one line; after
    `kill -9` of the first, a new one takes the lock over at once (its holder's pid is gone on this
    host: no wait for the 60 s heartbeat staleness) and finishes the campaign, no letter twice."""
    many_contacts(project, 30)
    host = socket.gethostname()
    with MockGrid(api_key=KEY, latency=0.05) as grid:
        write_live_config(project, grid, extra=FAST + database(pg_url), concurrency=2)
        first = start_scheduler(project)
        wait_for(lambda: len(grid.deliveries()) >= 6 or first.proc.poll() is not None, 30, "the first batches")
        assert first.proc.poll() is None, first.log
        second = start_scheduler(project)
        assert second.wait(30) == 2, second.log
        lines = [line for line in second.log.splitlines() if line.strip()]
        assert len(lines) == 1, second.log
        assert "a scheduler on this database is already running" in lines[0]
        assert f"(pid {first.proc.pid} on {host}, since " in lines[0], lines[0]
        assert first.proc.poll() is None, "the refused scheduler stopped the first: " + first.log
        first.send_signal(signal.SIGKILL)
        first.wait()
        killed_at = time.time()
        sent_before_kill = len(grid.deliveries())
        assert sent_before_kill < 30
        third = start_scheduler(project)
        wait_for(lambda: "took over the scheduler lock" in third.log or third.proc.poll() is not None, 30,
                 "the take-over")
        took = time.time() - killed_at
        assert third.proc.poll() is None, third.log
        assert f"took over the scheduler lock from pid {first.proc.pid} on {host}" in third.log, third.log

        def finished():
            c = counts_of(pg_url)
            return c["pending"] + c["retry_wait"] + c["sending"] == 0 and sum(c.values()) == 30

        wait_for(finished, 30, "the campaign to finish")
        third.send_signal(signal.SIGTERM)
        assert third.wait(30) == 0, third.log
        sent = [d.to for d in grid.deliveries()]
        received = grid.received
    assert took < 15, f"the take-over took {took:.1f} s"
    assert "Traceback" not in third.log and "campaign finished" in third.log
    assert max(received.values()) == 1 and len(sent) == len(set(sent)), Counter(sent).most_common(3)
    statuses = counts_of(pg_url)
    assert sum(statuses.values()) == 30 and set(statuses) <= {"accepted", "unknown"}, statuses
    # An `unknown` letter is one caught in flight by the kill: never sent by the one that took over.
    assert len(sent) + statuses["unknown"] >= 30


def errors_in(log: list[str]) -> list[str]:
    return [line.strip() for line in log if any(w in line for w in (" ERROR ", "Traceback", "could not store"))]


def _event(letter, kind: str, at: float, sg_event_id: str) -> dict:
    e = {"email": letter.email, "event": kind, "timestamp": int(at), "sg_event_id": sg_event_id,
         "letter_id": letter.id, "campaign_id": "korea-exception"}
    if kind == "bounce":
        e.update(type="bounce", reason="550 5.1.1 no such user")
    if kind == "click":
        e["url"] = "https://example.org/treaty"
    return e


def test_events_ingest_and_serve_storing_the_same_events_at_once_on_postgresql(project, outreach, monkeypatch,
                                                                                pg_url, signing_key, tmp_path):
    """`outreach events ingest FILE` while `outreach serve` receives the same events, signed, from
    several posters in other orders, round after round (each round its new events and the previous
    round's again): each event stored once, counted as new by exactly one of them, every post 200,
    every ingest exit 0, and each letter in the state its events say."""
    many_contacts(project, 40)
    monkeypatch.setenv("SENDGRID_API_KEY", KEY)
    with MockGrid(api_key=KEY) as grid:
        write_live_config(project, grid, extra=database(pg_url))
        r = outreach("--config", project.config, "send", "--live", "--yes")
        assert r.code == 0, r.err
    letters = sorted(letters_of(pg_url), key=lambda x: x.email)
    assert len(letters) == 40 and {x.status for x in letters} == {"accepted"}
    bounced = letters[1]
    t0 = time.time() + 5
    even = [x for i, x in enumerate(letters) if i % 2 == 0]
    rounds: list[list[dict]] = [
        [_event(x, k, t0 + n, f"r0-{x.id}-{k}") for x in letters
         for n, k in enumerate(("processed", "bounce") if x is bounced else ("processed", "delivered"))],
        [_event(x, "open", t0 + 10 + n, f"r1-{x.id}-{n}") for x in even for n in range(15)],
        [_event(x, "click", t0 + 30, f"r2-{x.id}") for x in even[::2]]
        + [_event(x, "open", t0 + 31 + n, f"r2-{x.id}-{n}") for x in even for n in range(15)],
        [_event(x, "open", t0 + 50 + n, f"r3-{x.id}-{n}") for x in even for n in range(15)],
    ]
    expected = {x.id: "bounced" if x is bounced else "clicked" if i % 4 == 0 else "opened" if i % 2 == 0
                else "delivered" for i, x in enumerate(letters)}

    from sqlalchemy import create_engine, text
    from sqlalchemy.pool import NullPool

    engine = create_engine(pg_url, poolclass=NullPool)

    def connected(name: str) -> bool:
        with engine.connect() as db:
            return bool(db.execute(text("SELECT count(*) FROM pg_stat_activity WHERE application_name = :a"),
                                   {"a": name}).scalar())

    port = free_port()
    env = {**os.environ, "SENDGRID_WEBHOOK_PUBLIC_KEY": public_b64(signing_key),
           "OUTREACH_DASHBOARD_TOKEN": "d" * 32}
    serve = subprocess.Popen([sys.executable, "-m", "outreach", "--config", str(project.config), "serve",
                              "--port", str(port)], cwd=ROOT, env=env, stdout=subprocess.PIPE,
                             stderr=subprocess.STDOUT, text=True)
    log: list[str] = []
    problems: list[str] = []
    try:
        wait_for_port(port, 30, proc=serve)
        threading.Thread(target=lambda: log.extend(iter(serve.stdout.readline, "")), daemon=True).start()
        url = f"http://127.0.0.1:{port}{PATH}"
        rng = random.Random(7)
        distinct: set[str] = set()
        for n, new in enumerate(rounds):
            events = new + (rounds[n - 1] if n else [])
            distinct.update(e["sg_event_id"] for e in new)
            exported = tmp_path / f"events-{n}.json"
            exported.write_text(json.dumps(events))
            orders = [rng.sample(events, len(events)) for _ in range(4)]
            stored = Counter()

            def poster(order, who):
                for i in range(0, len(order), 20):
                    body = json.dumps(order[i:i + 20]).encode()
                    try:
                        code, answer = post(url, body, signed(signing_key, body))
                    except OSError as e:
                        problems.append(f"round {n} poster {who}: {e}")
                        return
                    if code != 200:
                        problems.append(f"round {n} poster {who}: HTTP {code} {answer}")
                    else:
                        stored[who] += answer["stored"]

            # The posters start the moment the ingest has connected to the ledger (its application
            # name), so both store the same new events at once, not one after the other.
            ingest = subprocess.Popen([sys.executable, "-m", "outreach", "--config", str(project.config),
                                       "events", "ingest", str(exported)], cwd=ROOT,
                                      env={**env, "PGAPPNAME": f"outreach-ingest-{n}"},
                                      stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
            threads = [threading.Thread(target=poster, args=(o, w)) for w, o in enumerate(orders)]
            wait_for(lambda: connected(f"outreach-ingest-{n}") or ingest.poll() is not None, 20,
                     "the ingest to connect")
            for th in threads:
                th.start()
            try:
                out, err = ingest.communicate(timeout=30)
            except subprocess.TimeoutExpired:
                ingest.kill()
                out, err = ingest.communicate()
                problems.append(f"round {n}: ingest did not finish within 30 s")
            for th in threads:
                th.join(30)
            if ingest.returncode != 0:
                problems.append(f"round {n}: ingest exit {ingest.returncode}: {(out + err).strip()}")
            assert not problems, "\n".join(problems + ["serve's errors:"] + errors_in(log))
            found = re.search(r"(\d+) new", out)
            assert found, out
            # Each new event was stored by exactly one of them; the previous round's, by none.
            assert int(found.group(1)) + sum(stored.values()) == len(new), (found.group(0), stored, len(new))
            print(f"round {n}: ingest stored {found.group(1)}, posters {dict(stored)} of {len(new)} new")
    finally:
        serve.send_signal(signal.SIGINT)
        try:
            serve.wait(15)
        except subprocess.TimeoutExpired:
            serve.kill()
            serve.wait()
    assert serve.returncode == 0, "".join(log[-20:])
    assert not errors_in(log), errors_in(log)

    try:
        with engine.connect() as db:
            total = db.execute(text("SELECT count(*) FROM events")).scalar()
            keys = db.execute(text("SELECT count(DISTINCT sg_event_id) FROM events")).scalar()
    finally:
        engine.dispose()
    assert total == keys == len(distinct)
    assert {x.id: x.status for x in letters_of(pg_url)} == expected
