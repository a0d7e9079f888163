"""The same ledger on PostgreSQL: a live run, events, reports, retries and locks.

Needs a PostgreSQL server named by $OUTREACH_TEST_POSTGRES_URL (an SQLAlchemy URL
such as postgresql+psycopg://USER@127.0.0.1:5432/postgres, for a role that may
create databases). `.ci/run` starts a throwaway server and sets it. Each test
gets a database of its own, dropped afterwards.
"""

from __future__ import annotations

import json
import os
import secrets
import time

import pytest

from conftest import need
from mockgrid import ACCEPT, MockGrid, status
from test_live import KEY, write_live_config
from test_webhook import signing_key  # noqa: F401 - a fixture

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
