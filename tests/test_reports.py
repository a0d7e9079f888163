"""Delivery reports: a ledger with a known mix of states and events, its numbers checked in every format."""

from __future__ import annotations

import csv
import io
import json
import re
import time

import pytest
from sqlalchemy import insert, update

from conftest import need, record_all
from outreach.config import load_config
from outreach.ledger import Ledger
from outreach.ledger import schema as S

NOW = time.time()
DAY = 86400
# recipient -> (state, reason, hours since its last event)
MIX = {
    "dan.sullivan@senate.example.org": ("clicked", None, 30),
    "roger.wicker@senate.example.org": ("opened", None, 20),
    "timothy.kaine@senate.example.org": ("delivered", None, 50),
    "jeanne.shaheen@senate.example.org": ("delivered", None, 10),
    "james.risch@senate.example.org": ("bounced", "bounce: 550 5.1.1 user unknown", 40),
    "ben.lujan@senate.example.org": ("failed", "HTTP 400: Invalid email", 60),
    "mike.rogers@house.example.org": ("unknown", "no answer within 30 s; it may have been accepted", 70),
    "adam.smith@house.example.org": ("deferred", None, 30),          # deferred for over a day
    "brian.mast@house.example.org": ("deferred", None, 2),           # deferred, but only just
    "gregory.meeks@house.example.org": ("accepted", None, 3),
    "james.moylan@house.example.org": ("opened", None, 5),
    "aumua.radewagen@house.example.org": ("dropped", "Unsubscribed Address", 45),
    "pablo.hernandezrivera@house.example.org": ("skipped", "suppressed: spamreport", 80),
    "eleanor.norton@house.example.org": ("delivered", None, 8),
}
EVENTS = {"clicked": ["processed", "delivered", "open", "click"], "opened": ["processed", "delivered", "open"],
          "delivered": ["processed", "delivered"], "bounced": ["processed", "bounce"],
          "deferred": ["processed", "deferred"], "accepted": ["processed"], "dropped": ["dropped"]}


def build_ledger(project) -> Ledger:
    """The sample campaign recorded, then moved to MIX as events would have, with those events stored."""
    cfg = load_config(project.config)
    ledger = Ledger(cfg.database_url)
    cid = record_all(cfg, ledger)
    L = S.letters.c
    n = 0
    with ledger.write() as db:
        for email, (status, reason, hours) in MIX.items():
            at = NOW - hours * 3600
            sent = status not in ("failed", "skipped", "unknown")
            db.execute(update(S.letters).where(L.email_key == email).values(
                status=status, reason=reason, accepted_at=at - 600 if sent else None,
                last_event=EVENTS.get(status, [None])[-1], last_event_at=at if status in EVENTS else None))
            letter = db.execute(S.letters.select().where(L.email_key == email)).one()
            for k, kind in enumerate(EVENTS.get(status, [])):
                n += 1
                db.execute(insert(S.events).values(
                    letter_id=letter.id, campaign_id=cid, matched_by="letter_id", event=kind, sg_event_id=f"ev{n}",
                    dedupe_key=f"ev{n}", email=email, occurred_at=at - 300 + 60 * k, received_at=at, raw="{}"))
    return ledger


@pytest.fixture
def reported(project):
    build_ledger(project)
    return project


EXPECTED_FUNNEL = {"targeted": 13, "accepted": 11, "delivered": 6, "opened": 3, "clicked": 1, "replied": 0}
EXPECTED_BESIDE = {"skipped": 1, "deferred": 2, "bounced": 1, "dropped": 1, "failed": 1, "unknown": 1}


def test_json_has_the_documented_shape_and_the_right_numbers(reported, outreach):
    r = outreach("--config", reported.config, "report", "--format", "json")
    assert r.code == 0, r.err
    data = json.loads(r.out)
    assert set(data) >= {"summary", "breakdowns", "letters"}
    s = data["summary"]
    assert s["funnel"] == EXPECTED_FUNNEL
    assert s["beside"] == EXPECTED_BESIDE
    assert sum(s["counts"].values()) == 14 == len(data["letters"])
    assert s["counts"]["opened"] == 2 and s["counts"]["delivered"] == 3      # exclusive, unlike the funnel
    assert s["skipped_reasons"] == {"suppressed: spamreport": 1}
    b = data["breakdowns"]
    senate = next(row for row in b["chamber"] if row["key"] == "senate")
    assert (senate["targeted"], senate["accepted"], senate["delivered"], senate["failed"]) == (6, 5, 4, 1)
    ssas = next(row for row in b["committee"] if row["key"] == "SSAS")          # Sullivan, Wicker, Kaine, Shaheen
    assert (ssas["targeted"], ssas["delivered"], ssas["opened"]) == (4, 4, 2)
    assert {row["key"] for row in b["committee"]} == {"SSAS", "SSFR", "HSAS", "HSFA"}
    dem = next(row for row in b["party"] if row["key"] == "Democrat")
    assert dem["targeted"] == 6 and dem["delivered"] == 3                       # Kaine, Shaheen, Norton
    ak = next(row for row in b["state"] if row["key"] == "AK")
    assert ak["delivery_rate"] == 1.0
    attention = [(a["email"], a["status"]) for a in data["attention"]]
    assert attention == [("mike.rogers@house.example.org", "unknown"), ("ben.lujan@senate.example.org", "failed"),
                         ("james.risch@senate.example.org", "bounced"), ("adam.smith@house.example.org", "deferred")]
    assert data["timeline"]["accepted"][-1] == 11 and data["timeline"]["delivered"][-1] == 6
    letter = next(x for x in data["letters"] if x["email"] == "ben.lujan@senate.example.org")
    assert letter["status"] == "failed" and letter["reason"] == "HTTP 400: Invalid email"


def test_csv_has_one_row_per_letter(reported, outreach, tmp_path):
    out = tmp_path / "r.csv"
    assert outreach("--config", reported.config, "report", "--format", "csv", "--out", out).code == 0
    rows = list(csv.DictReader(io.StringIO(out.read_text(encoding="utf-8"))))
    assert len(rows) == 14
    by = {r["email"]: r for r in rows}
    assert by["mike.rogers@house.example.org"]["status"] == "unknown"
    assert by["james.moylan@house.example.org"]["district"] == "0"
    assert sum(r["status"] == "delivered" for r in rows) == 3


def test_the_terminal_table_shows_the_funnel_and_attention(reported, outreach):
    r = outreach("--config", reported.config, "report")
    assert r.code == 0
    lines = r.out.splitlines()
    for step, n in EXPECTED_FUNNEL.items():
        assert any(re.match(rf"\s*{step}\s+{n}\b", line) for line in lines), step
    assert "needs attention (4)" in r.out and "mike.rogers@house.example.org" in r.out
    assert "skipped 1: suppressed: spamreport" in r.out
    # Every office, with its seat, state and reason.
    assert "offices (14)" in r.out
    offices = lines[next(i for i, line in enumerate(lines) if "offices (14)" in line):]
    for email, (status, _, _) in MIX.items():
        assert any(email in line and status in line for line in offices), email
    assert any("AS-AL" in line for line in offices) and any("HTTP 400" in line for line in offices)
    assert all(len(line) <= 100 for line in lines[:lines.index(offices[0])])


def test_the_html_report_is_self_contained_with_the_right_numbers(reported, outreach, tmp_path):
    out = tmp_path / "report.html"
    assert outreach("--config", reported.config, "report", "--format", "html", "--out", out).code == 0
    html = out.read_text(encoding="utf-8")
    for step, n in EXPECTED_FUNNEL.items():
        assert f'data-funnel="{step}">{n}<' in html
    for state, n in EXPECTED_BESIDE.items():
        assert f'data-beside="{state}">{n}<' in html
    # Nothing is loaded from elsewhere: no scripts, stylesheets, images or fonts by URL.
    assert not re.search(r'<(script|link|img|iframe)\b|@import|url\(|src=', html)
    assert "<svg" in html and "@media print" in html
    assert html.count("<tr><td>") >= 14


def test_states_with_nothing_sent_yet_have_their_own_colour_not_the_red_of_bounces(project, outreach, tmp_path):
    """After `send --live --limit 3`: AK (Sullivan) bounced, MS (Wicker) delivered, the rest still to send."""
    from outreach.report_render import NOT_SENT, _color

    cfg = load_config(project.config)
    ledger = Ledger(cfg.database_url)
    record_all(cfg, ledger)
    L = S.letters.c
    with ledger.write() as db:
        for email, status in (("dan.sullivan@senate.example.org", "bounced"),
                              ("roger.wicker@senate.example.org", "delivered")):
            db.execute(update(S.letters).where(L.email_key == email).values(status=status, accepted_at=NOW))
    data = json.loads(outreach("--config", project.config, "report", "--format", "json").out)
    by_state = {row["key"]: row for row in data["breakdowns"]["state"]}
    assert by_state["AK"]["delivery_rate"] == 0.0 and by_state["MS"]["delivery_rate"] == 1.0
    assert by_state["VA"]["delivery_rate"] is None and by_state["VA"]["to_send"] == by_state["VA"]["targeted"] == 1
    out = tmp_path / "report.html"
    assert outreach("--config", project.config, "report", "--format", "html", "--out", out).code == 0
    html = out.read_text(encoding="utf-8")

    def fill(code: str) -> str:
        return re.search(r"<title>%s:[^<]*</title>\s*<rect [^>]*fill=\"([^\"]+)\"" % code, html).group(1)

    assert fill("AK") == _color(0.0) != NOT_SENT
    assert fill("VA") == NOT_SENT and fill("MS") == _color(1.0)
    assert "<title>VA: not sent yet (1 to send)</title>" in html
    assert f'<span style="background: {NOT_SENT}"></span>not sent yet' in html
    assert f'<span style="background: {_color(0.0)}"></span>0%' in html
    text = outreach("--config", project.config, "report").out
    assert "not sent" in text


def test_a_campaign_over_2000_letters_lists_2000_and_points_to_the_csv(project, outreach, tmp_path):
    cfg = load_config(project.config)
    ledger = Ledger(cfg.database_url)
    cid = ledger.campaigns.id("korea-exception")
    with ledger.write() as db:
        db.execute(insert(S.letters), [dict(id=f"{i:020x}", campaign_id=cid, email=f"o{i}@house.example.org",
                                            email_key=f"o{i}@house.example.org", name=f"Member {i}",
                                            chamber="house", state_code="TX", district=i % 38 + 1,
                                            status="failed" if i % 500 == 0 else "accepted", reason="x",
                                            attempts=1, created_at=NOW, updated_at=NOW, accepted_at=NOW)
                                       for i in range(2500)])
    out = tmp_path / "big.html"
    outreach("--config", project.config, "report", "--format", "html", "--out", out)
    html = out.read_text()
    assert "has 2500 letters; this page lists the first 2000" in html and "--format csv" in html
    assert html.split('id="offices"')[1].count("<tr><td>") == 2000
    assert html.split('id="attention"')[1].split('id="offices"')[0].count("status-failed") == 5


def test_an_empty_campaign_reports_zeros(project, outreach):
    r = outreach("--config", project.config, "report", "--format", "json")
    data = json.loads(r.out)
    assert data["summary"]["funnel"]["targeted"] == 0 and data["letters"] == []
    table = outreach("--config", project.config, "report")
    assert table.code == 0 and "no letters in the ledger yet" in table.out and "by chamber" not in table.out


# -- in a real browser -----------------------------------------------------------------------------------

def chromium_path() -> str | None:
    import shutil

    return shutil.which("chromium") or shutil.which("chromium-browser")


@pytest.fixture(scope="module")
def browser():
    path = chromium_path()
    need(path is not None, "Chromium is not installed (apt-get install chromium); .ci/run installs it")
    sync_api = pytest.importorskip("playwright.sync_api", reason="playwright is a test dependency")
    with sync_api.sync_playwright() as p:
        b = p.chromium.launch(executable_path=path, args=[
            "--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
            "--disable-sync", "--no-first-run"])
        yield b
        b.close()


def test_the_html_report_in_chromium(reported, outreach, tmp_path, browser):
    out = tmp_path / "report.html"
    outreach("--config", reported.config, "report", "--format", "html", "--out", out)
    page = browser.new_page(viewport={"width": 1200, "height": 900})
    errors, requests = [], []
    page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
    page.on("pageerror", lambda e: errors.append(str(e)))
    page.on("request", lambda r: requests.append(r.url))
    page.goto(out.as_uri())
    page.wait_for_load_state("networkidle")
    assert errors == []
    assert requests == [out.as_uri()]  # the file itself, nothing from the network
    shown = {step: int(page.locator(f'[data-funnel="{step}"]').inner_text()) for step in EXPECTED_FUNNEL}
    assert shown == EXPECTED_FUNNEL
    assert page.locator("svg rect").count() >= 56   # a tile per state and territory
    page.screenshot(path=str(tmp_path / "report.png"), full_page=True)
    page.close()
