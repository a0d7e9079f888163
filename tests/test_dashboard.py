"""The dashboard: read-only pages in a real browser, never without the token (on any interface), the webhook still open."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
import urllib.error
import urllib.parse
import urllib.request

import pytest
from sqlalchemy import insert

from conftest import free_port, wait_for_port
from outreach.ledger import schema as S
from outreach.config import load_config
from outreach.dashboard import MIN_TOKEN, dashboard_routes, search_offices
from outreach.ledger import Ledger
from test_reports import EXPECTED_FUNNEL, browser, build_ledger  # noqa: F401 - the browser fixture
from test_webhook import WebhookServer, public_b64, signed, signing_key  # noqa: F401 - fixtures

TOKEN = "dashboard-token-7f3a9c-51d2e08b"
assert len(TOKEN) >= MIN_TOKEN
BEARER = {"Authorization": f"Bearer {TOKEN}"}


def base(server) -> str:
    """The server's root URL (WebhookServer.url is the webhook's own path)."""
    return f"http://127.0.0.1:{server.port}"


def get(url: str, headers: dict | None = None) -> tuple[int, str, dict]:
    req = urllib.request.Request(url, headers=headers or {})
    try:
        with urllib.request.urlopen(req, timeout=10) as r:
            return r.status, r.read().decode(), dict(r.headers)
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode(), dict(e.headers)


def app_for(project, token: str, private_key):
    from outreach.signature import load_public_key
    from outreach.webhook import create_app

    cfg = load_config(project.config)
    ledger = Ledger(cfg.database_url)
    return create_app(cfg, ledger, public_key=load_public_key(public_b64(private_key)),
                      routes=dashboard_routes(cfg, ledger, token))


@pytest.fixture
def ledger_project(project):
    ledger = build_ledger(project)
    with ledger.write() as db:
        db.execute(insert(S.events).values(letter_id=None, campaign_id=None, matched_by=None, event="bounce",
                                           sg_event_id="stray-1", dedupe_key="stray-1", email="someone@else.example.org",
                                           occurred_at=time.time() - 60, received_at=time.time(),
                                           detail="550 no such user", raw="{}"))
    return project


def test_every_page_in_chromium_with_the_ledger_figures(ledger_project, browser, tmp_path, signing_key):
    with WebhookServer(app_for(ledger_project, TOKEN, signing_key)) as server:
        page = browser.new_page(viewport={"width": 1200, "height": 900})
        errors, external = [], []
        page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
        page.on("pageerror", lambda e: errors.append(str(e)))
        page.on("request", lambda r: external.append(r.url) if not r.url.startswith(base(server)) else None)

        page.goto(base(server) + "/")          # no session yet: the sign-in form
        assert page.locator("input[name=token]").count() == 1
        page.goto(base(server) + f"/login?token={TOKEN}")   # the link `serve` prints on a terminal
        assert page.url == base(server) + "/"
        assert page.locator('[data-letters="korea-exception"]').inner_text() == "14"
        assert page.locator('[data-delivered="korea-exception"]').inner_text() == str(EXPECTED_FUNNEL["delivered"])
        page.screenshot(path=str(tmp_path / "campaigns.png"))

        page.click("text=korea-exception")
        shown = {step: int(page.locator(f'[data-funnel="{step}"]').inner_text()) for step in EXPECTED_FUNNEL}
        assert shown == EXPECTED_FUNNEL
        assert page.locator("#offices ~ .scroll tr").count() == 15  # header + 14 letters
        page.screenshot(path=str(tmp_path / "campaign.png"), full_page=True)

        page.click("nav >> text=Offices")
        page.fill("input[name=q]", "Sullivan")
        page.press("input[name=q]", "Enter")
        page.wait_for_url(re.compile(r".*/offices\?q=Sullivan.*"))
        assert page.locator("#results tr").count() == 2
        page.screenshot(path=str(tmp_path / "offices.png"))
        page.click("#results >> text=Dan Sullivan")
        assert page.locator("#letter-state").inner_text() == "clicked"
        assert page.locator("text=Dear Senator Sullivan:").count() >= 1
        assert page.locator("table >> text=click").count() >= 1
        page.screenshot(path=str(tmp_path / "letter.png"), full_page=True)

        page.goto(base(server) + "/offices?q=VA")  # by state
        assert "Tim Kaine" in page.content()
        page.goto(base(server) + "/offices?q=N000147")  # by bioguide id
        assert "Eleanor Holmes Norton" in page.content()

        page.click("nav >> text=Unmatched events")
        assert "Unmatched events (1)" in page.inner_text("h1")
        assert "someone@else.example.org" in page.content()
        page.screenshot(path=str(tmp_path / "unmatched.png"))

        page.click("nav >> text=Sign out")      # ends the session: the pages ask for the token again
        page.goto(base(server) + "/unmatched")
        assert page.locator("input[name=token]").count() == 1
        page.close()
    # A page answering 401 logs a console error in Chromium; nothing else may.
    assert [e for e in errors if "401" not in e] == [] and external == []


def test_pages_change_nothing(ledger_project, signing_key):
    with WebhookServer(app_for(ledger_project, TOKEN, signing_key)) as server:
        for path in ("/", "/campaigns/korea-exception", "/offices?q=a", "/unmatched",
                     "/campaigns/korea-exception?page=%C2%B2"):  # "²", which isdigit() takes
            assert get(base(server) + path, BEARER)[0] == 200, path
        req = urllib.request.Request(base(server) + "/campaigns/korea-exception", method="POST", data=b"x",
                                     headers=BEARER)
        try:
            urllib.request.urlopen(req, timeout=10)
            status = 200
        except urllib.error.HTTPError as e:
            status = e.code
        assert status == 405
    ledger = Ledger(f"sqlite:///{ledger_project.root / 'outreach.db'}")
    assert ledger.letters.counts(ledger.campaigns.id("korea-exception"))["clicked"] == 1


def test_no_page_without_the_token_even_from_this_machine(ledger_project, signing_key):
    """A stock nginx proxy_pass makes every request look local: loopback proves nothing."""
    with WebhookServer(app_for(ledger_project, TOKEN, signing_key)) as server:
        for headers in ({}, {"Host": "127.0.0.1"}, {"Host": "localhost"}, {"Host": "[::1]:8025"}):
            for path in ("/", "/campaigns/korea-exception", "/offices?q=a", "/letters/abc", "/unmatched"):
                assert get(base(server) + path, headers)[0] == 401, (path, headers)
        # The webhook is not a dashboard page: its signature is its check.
        assert get(base(server) + "/webhooks/sendgrid")[0] == 405


def test_the_token_opens_the_pages_by_header_or_sign_in(ledger_project, signing_key):
    with WebhookServer(app_for(ledger_project, TOKEN, signing_key)) as server:
        for path in ("/", "/campaigns/korea-exception", "/offices?q=a", "/letters/abc", "/unmatched"):
            assert get(base(server) + path)[0] == 401, path
        assert get(base(server) + "/", {"Authorization": "Bearer wrong"})[0] == 401
        status, body, _ = get(base(server) + "/", BEARER)
        assert status == 200 and "korea-exception" in body
        # A person signs in through the form; the cookie holds no token.
        opener = urllib.request.build_opener(urllib.request.HTTPCookieProcessor())
        form = urllib.parse.urlencode({"token": "nope", "next": "/"}).encode()
        with pytest.raises(urllib.error.HTTPError) as e:
            opener.open(base(server) + "/login", data=form, timeout=10)
        assert e.value.code == 401
        form = urllib.parse.urlencode({"token": TOKEN, "next": "/unmatched"}).encode()
        req = urllib.request.Request(base(server) + "/login", data=form)
        no_redirect = urllib.request.build_opener(_NoRedirect)
        with pytest.raises(urllib.error.HTTPError) as e:
            no_redirect.open(req, timeout=10)
        assert e.value.code == 303 and e.value.headers["Location"] == "/unmatched"
        cookie = e.value.headers["Set-Cookie"]
        assert "HttpOnly" in cookie and "Secure" in cookie and "SameSite=strict" in cookie
        assert TOKEN not in cookie
        value = cookie.split(";")[0]
        status, body, _ = get(base(server) + "/unmatched", {"Cookie": value})
        assert status == 200 and "Unmatched events (1)" in body
        assert get(base(server) + "/", {"Cookie": value.replace(value[-4:], "0000")})[0] == 401
        name = value.split("=", 1)[0]
        assert get(base(server) + "/", {"Cookie": f"{name}=\u00b2.x"})[0] == 401  # "²" passes isdigit()


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, *args, **kwargs):
        return None


def sign_in(server) -> str:
    """Sign in through the form; the session cookie ("name=value")."""
    form = urllib.parse.urlencode({"token": TOKEN, "next": "/"}).encode()
    with pytest.raises(urllib.error.HTTPError) as e:
        urllib.request.build_opener(_NoRedirect).open(urllib.request.Request(base(server) + "/login", data=form),
                                                      timeout=10)
    return e.value.headers["Set-Cookie"].split(";")[0]


def test_sign_out_ends_the_session_on_the_server(ledger_project, signing_key):
    with WebhookServer(app_for(ledger_project, TOKEN, signing_key)) as server:
        mine, other = sign_in(server), sign_in(server)
        assert mine != other
        assert get(base(server) + "/", {"Cookie": mine})[0] == 200
        req = urllib.request.Request(base(server) + "/logout", method="POST", data=b"", headers={"Cookie": mine})
        with pytest.raises(urllib.error.HTTPError) as e:
            urllib.request.build_opener(_NoRedirect).open(req, timeout=10)
        assert e.value.code == 303
        # The same cookie, kept by someone who copied it, opens nothing now; other sessions live on.
        assert get(base(server) + "/", {"Cookie": mine})[0] == 401
        assert get(base(server) + "/", {"Cookie": other})[0] == 200


def test_a_session_holds_on_every_serve_process_of_the_ledger_and_a_new_token_ends_it(ledger_project, signing_key):
    from sqlalchemy import select

    with WebhookServer(app_for(ledger_project, TOKEN, signing_key)) as first, \
            WebhookServer(app_for(ledger_project, TOKEN, signing_key)) as second:
        cookie = sign_in(first)
        assert get(base(second) + "/", {"Cookie": cookie})[0] == 200     # another worker, the same session
    # The ledger keeps no cookie: only an HMAC of it under the token.
    ledger = Ledger(load_config(ledger_project.config).database_url)
    with ledger.read() as db:
        keys = db.execute(select(S.dashboard_sessions.c.key)).scalars().all()
    assert len(keys) == 1 and cookie.split("=", 1)[1] not in keys[0]
    with WebhookServer(app_for(ledger_project, TOKEN, signing_key)) as restarted:
        assert get(base(restarted) + "/", {"Cookie": cookie})[0] == 200   # a restart keeps it
    with WebhookServer(app_for(ledger_project, "another-token-of-enough-length", signing_key)) as rotated:
        assert get(base(rotated) + "/", {"Cookie": cookie})[0] == 401     # a new token ends it


def test_each_wrong_token_costs_more_and_the_right_one_still_works(ledger_project, signing_key):
    with WebhookServer(app_for(ledger_project, TOKEN, signing_key)) as server:
        took = []
        for guess in ("a", "b", "c", "d"):
            start = time.monotonic()
            assert get(base(server) + "/", {"Authorization": f"Bearer {guess}"})[0] == 401
            took.append(time.monotonic() - start)
        # 0.25 s, 0.5 s, 1 s, 2 s: each at least what it should cost, and growing.
        assert [t >= floor for t, floor in zip(took, (0.25, 0.5, 1.0, 2.0))] == [True] * 4, took
        form = urllib.parse.urlencode({"token": "wrong-again", "next": "/"}).encode()
        start = time.monotonic()
        with pytest.raises(urllib.error.HTTPError) as e:
            urllib.request.urlopen(urllib.request.Request(base(server) + "/login", data=form), timeout=30)
        assert e.value.code == 401 and time.monotonic() - start >= 4.0
        # Never a lockout: behind a proxy every client looks the same, so the owner must get in, at once.
        start = time.monotonic()
        assert get(base(server) + "/", BEARER)[0] == 200
        assert time.monotonic() - start < 1.0


def test_the_price_of_wrong_tokens_tops_out_and_is_forgotten():
    from outreach.dashboard import FORGET_S, MAX_DELAY_S, Access

    now = [1000.0]
    access = Access(TOKEN, clock=lambda: now[0])
    prices = [access.price_of_a_wrong_token() for _ in range(12)]
    assert prices[:4] == [0.25, 0.5, 1.0, 2.0] and prices[-1] == MAX_DELAY_S == max(prices)
    assert access.token_is(TOKEN) and access.price_of_a_wrong_token() == MAX_DELAY_S  # a right one lowers nothing
    now[0] += FORGET_S + 1
    assert access.price_of_a_wrong_token() == 0.25


def test_percent_and_underscore_in_a_search_are_themselves(ledger_project):
    ledger = Ledger(f"sqlite:///{ledger_project.root / 'outreach.db'}")
    assert search_offices(ledger, "a")[0]                 # the control: a plain search finds offices
    for q in ("%", "_", "%%", "_a", "a%"):
        assert search_offices(ledger, q)[0] == [], q      # no name nor email holds these


def serve_cmd(project) -> list[str]:
    return [sys.executable, "-m", "outreach", "--config", str(project.config), "serve"]


def test_a_short_token_is_refused_at_start(ledger_project, signing_key):
    env = {**os.environ, "SENDGRID_WEBHOOK_PUBLIC_KEY": public_b64(signing_key),
           "OUTREACH_DASHBOARD_TOKEN": "short-but-secret-123"}
    proc = subprocess.run(serve_cmd(ledger_project) + ["--port", str(free_port())], env=env, capture_output=True,
                          text=True, timeout=60)
    assert proc.returncode == 2 and len(proc.stderr.strip().splitlines()) == 1, proc.stderr
    assert "OUTREACH_DASHBOARD_TOKEN" in proc.stderr and "at least 24" in proc.stderr
    assert "short-but-secret-123" not in proc.stderr + proc.stdout


def test_serve_makes_a_token_kept_in_an_owner_only_file_and_the_webhook_still_works(
        ledger_project, signing_key, tmp_path):
    env = {**os.environ, "SENDGRID_WEBHOOK_PUBLIC_KEY": public_b64(signing_key), "XDG_RUNTIME_DIR": str(tmp_path)}
    env.pop("OUTREACH_DASHBOARD_TOKEN", None)
    port = free_port()
    # Bound beyond loopback and with no token configured: served, but never without a token.
    server = subprocess.Popen(serve_cmd(ledger_project) + ["--host", "0.0.0.0", "--port", str(port)], env=env,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        url = f"http://127.0.0.1:{port}"
        wait_for_port(port, 30, server)
        token_file = tmp_path / "outreach" / f"dashboard-token-{port}"
        token = token_file.read_text().strip()
        assert len(token) >= MIN_TOKEN and token_file.stat().st_mode & 0o777 == 0o600
        assert get(url + "/")[0] == 401
        assert get(url + "/", {"Authorization": f"Bearer {token}"})[0] == 200
        ledger = Ledger(f"sqlite:///{ledger_project.root / 'outreach.db'}")
        letter = next(r for r in ledger.letters.listing() if r.email == "gregory.meeks@house.example.org")
        body = json.dumps([{"email": letter.email, "event": "delivered", "timestamp": int(time.time()),
                            "sg_event_id": "dash-1", "letter_id": letter.id}]).encode()
        req = urllib.request.Request(url + "/webhooks/sendgrid", data=body,
                                     headers={"Content-Type": "application/json", **signed(signing_key, body)})
        with urllib.request.urlopen(req, timeout=10) as r:
            assert 200 <= r.status < 300  # no dashboard token needed: the signature is its check
        assert ledger.letters.find(letter.id).status == "delivered"
    finally:
        server.terminate()
        out, err = server.communicate(timeout=30)
    # Not a terminal: the file's path is said, the token never (under systemd this is the journal).
    assert str(token_file) in err and token not in out + err


def test_on_a_terminal_serve_prints_a_sign_in_link(ledger_project, signing_key):
    import pty
    import select

    env = {**os.environ, "SENDGRID_WEBHOOK_PUBLIC_KEY": public_b64(signing_key)}
    env.pop("OUTREACH_DASHBOARD_TOKEN", None)
    port = free_port()
    leader, follower = pty.openpty()
    server = subprocess.Popen(serve_cmd(ledger_project) + ["--port", str(port)], env=env, stdout=follower,
                              stderr=subprocess.PIPE, text=True)
    os.close(follower)
    try:
        seen, deadline = b"", time.time() + 30
        while b"token=" not in seen or not seen.endswith(b"\n"):
            assert time.time() < deadline and server.poll() is None, seen
            if select.select([leader], [], [], 0.5)[0]:
                seen += os.read(leader, 4096)
        link = re.search(rb"(http://\S+/login\?token=(\S+))", seen)
        assert link, seen
        wait_for_port(port, 30, server)
        token = link.group(2).decode()
        assert get(f"http://127.0.0.1:{port}/", {"Authorization": f"Bearer {token}"})[0] == 200
    finally:
        server.terminate()
        _, err = server.communicate(timeout=30)
        os.close(leader)
    assert token not in err


def test_a_reply_holding_a_script_is_shown_as_text(ledger_project, browser, signing_key):
    from outreach.inbound import parse_message

    cfg = load_config(ledger_project.config)
    ledger = Ledger(cfg.database_url)
    hostile = ("From: Staffer <dan.sullivan@senate.example.org>\nTo: jordan@advocacy.example.org\n"
               "Subject: Re: <b>landmines</b>\nMessage-ID: <hostile@senate.example.org>\n"
               "Content-Type: text/plain; charset=utf-8\n\n"
               "Thanks. <script>document.title='owned'</script><img src=x onerror=alert(1)>\n").encode()
    assert ledger.replies.record([parse_message(hostile)]).matched == 1
    from outreach.letters import letter_id

    letter = ledger.letters.find(letter_id("korea-exception", "dan.sullivan@senate.example.org"))
    with WebhookServer(app_for(ledger_project, TOKEN, signing_key)) as server:
        page = browser.new_page()
        dialogs = []
        page.on("dialog", lambda d: (dialogs.append(d.message), d.dismiss()))
        page.goto(base(server) + f"/login?token={TOKEN}")
        page.goto(base(server) + f"/letters/{letter.id}")
        assert page.locator("#letter-state").inner_text() == "replied"
        shown = page.locator(".reply-text").inner_text()
        assert "<script>document.title='owned'</script>" in shown and "<img src=x" in shown
        assert page.title() != "owned" and dialogs == []
        assert page.locator(".reply img, .reply script").count() == 0
        assert "Re: <b>landmines</b>" in page.locator(".reply").inner_text()
        page.close()
