"""The dashboard: read-only pages in a real browser, a token beyond loopback, the webhook still open."""

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
from outreach.dashboard import dashboard_routes, is_loopback
from outreach.ledger import Ledger
from test_reports import EXPECTED_FUNNEL, browser, build_ledger  # noqa: F401 - the browser fixture
from test_webhook import WebhookServer, public_b64, signed, signing_key  # noqa: F401 - fixtures

TOKEN = "dashboard-token-7f3a9c"


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


def app_for(project, token: str | None, private_key):
    from outreach.webhook import create_app, load_public_key

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


def test_loopback_rules():
    assert is_loopback("127.0.0.1") and is_loopback("::1") and is_loopback("localhost")
    assert not is_loopback("0.0.0.0") and not is_loopback("192.168.1.5") and not is_loopback("")


def test_every_page_in_chromium_with_the_ledger_figures(ledger_project, browser, tmp_path, signing_key):
    with WebhookServer(app_for(ledger_project, None, signing_key)) as server:
        page = browser.new_page(viewport={"width": 1200, "height": 900})
        errors, external = [], []
        page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
        page.on("pageerror", lambda e: errors.append(str(e)))
        page.on("request", lambda r: external.append(r.url) if not r.url.startswith(base(server)) else None)

        page.goto(base(server) + "/")
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
        page.close()
    assert errors == [] and external == []


def test_pages_change_nothing(ledger_project, signing_key):
    with WebhookServer(app_for(ledger_project, None, signing_key)) as server:
        for path in ("/", "/campaigns/korea-exception", "/offices?q=a", "/unmatched",
                     "/campaigns/korea-exception?page=%C2%B2"):  # "²", which isdigit() takes
            assert get(base(server) + path)[0] == 200, path
        req = urllib.request.Request(base(server) + "/campaigns/korea-exception", method="POST", data=b"x")
        try:
            urllib.request.urlopen(req, timeout=10)
            status = 200
        except urllib.error.HTTPError as e:
            status = e.code
        assert status == 405
    ledger = Ledger(f"sqlite:///{ledger_project.root / 'outreach.db'}")
    assert ledger.letters.counts(ledger.campaigns.id("korea-exception"))["clicked"] == 1


def test_without_a_token_only_this_machine_is_answered(ledger_project, signing_key):
    with WebhookServer(app_for(ledger_project, None, signing_key)) as server:
        assert get(base(server) + "/")[0] == 200
        # Through a reverse proxy, or from a page that rebound its name to 127.0.0.1: refused.
        assert get(base(server) + "/", {"X-Forwarded-For": "203.0.113.9"})[0] == 403
        assert get(base(server) + "/", {"Forwarded": "for=203.0.113.9"})[0] == 403
        assert get(base(server) + "/", {"Host": "evil.example.org"})[0] == 403
        # The webhook is not a dashboard page: its signature is its check, proxy or not.
        assert get(base(server) + "/webhooks/sendgrid", {"X-Forwarded-For": "203.0.113.9"})[0] == 405


def test_a_token_is_required_beyond_loopback_by_header_or_login(ledger_project, signing_key):
    with WebhookServer(app_for(ledger_project, TOKEN, signing_key)) as server:
        for path in ("/", "/campaigns/korea-exception", "/offices?q=a", "/letters/abc", "/unmatched"):
            assert get(base(server) + path)[0] == 401, path
        assert get(base(server) + "/", {"Authorization": "Bearer wrong"})[0] == 401
        status, body, _ = get(base(server) + "/", {"Authorization": f"Bearer {TOKEN}"})
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


def test_serve_beyond_loopback_needs_the_token_and_the_webhook_still_works(ledger_project, signing_key):
    env = {**os.environ, "SENDGRID_WEBHOOK_PUBLIC_KEY": public_b64(signing_key)}
    env.pop("OUTREACH_DASHBOARD_TOKEN", None)
    cmd = [sys.executable, "-m", "outreach", "--config", str(ledger_project.config), "serve", "--host", "0.0.0.0"]
    # Without the token in the environment, serving beyond loopback is refused.
    proc = subprocess.run(cmd + ["--port", str(free_port())], env=env, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2 and "OUTREACH_DASHBOARD_TOKEN" in proc.stderr
    port = free_port()
    server = subprocess.Popen(cmd + ["--port", str(port)], env={**env, "OUTREACH_DASHBOARD_TOKEN": TOKEN},
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        url = f"http://127.0.0.1:{port}"
        wait_for_port(port, 30, server)
        assert get(url + "/")[0] == 401
        assert get(url + "/", {"Authorization": f"Bearer {TOKEN}"})[0] == 200
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
        server.communicate(timeout=30)
