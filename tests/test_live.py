"""Going live against a recording server: every letter recorded, nothing ever sent twice, secrets kept."""

from __future__ import annotations

import json
import logging
import shutil

import pytest

from conftest import ROOT, assert_no_traceback
from mockgrid import ACCEPT, MockGrid, status
from outreach.ledger import Ledger
from outreach.states import STATES

KEY = "SG.live-test-key-0123456789abcdef.XYZ"
SENDER_BLOCK = """
[sender]
name = "Jordan Organizer"
email = "jordan@mine-ban-advocates.org"
organization = "Advocacy Network"
"""


@pytest.fixture
def grid():
    with MockGrid(api_key=KEY) as g:
        yield g


@pytest.fixture
def live(project, grid, monkeypatch):
    """The sample project pointed at the recording server, the key in the environment."""
    monkeypatch.setenv("SENDGRID_API_KEY", KEY)
    write_live_config(project, grid)
    return project


def write_live_config(project, grid, extra: str = "", **delivery):
    """config.toml for a live run against `grid`; keyword arguments override [delivery] keys."""
    templates = project.root / "templates"
    if not templates.exists():
        shutil.copytree(ROOT / "templates" / "korea-exception", templates)
    settings = {"transport": '"sendgrid"', "rate_per_minute": 60000, "concurrency": 4, "timeout_s": 2,
                **{k: (f'"{v}"' if isinstance(v, str) else v) for k, v in delivery.items()}}
    lines = "\n".join(f"{k} = {v}" for k, v in settings.items())
    project.config.write_text(f"""{SENDER_BLOCK}
[delivery]
{lines}

[sendgrid]
api_host = "{grid.url}"

[campaigns.korea-exception]
contacts = "contacts.csv"
templates = "templates"
{extra}
""")


def ledger_of(project) -> Ledger:
    return Ledger(f"sqlite:///{project.root / 'outreach.db'}")


def campaign_letters(project):
    ledger = ledger_of(project)
    return ledger.letters.listing(ledger.campaigns.id("korea-exception", create=False))


def test_a_full_live_run_records_every_letter_accepted(live, grid, outreach):
    r = outreach("--config", live.config, "send", "--live", "--yes")
    assert r.code == 0, r.out + r.err
    rows = campaign_letters(live)
    assert len(rows) == 14
    assert all(row.status == "accepted" for row in rows)
    assert all(row.provider_message_id and row.provider_message_id.startswith("mock-") for row in rows)
    assert sorted(grid.received.values()) == [1] * 14
    # One sandbox check came first, for the first letter.
    assert grid.requests[0].sandbox and not any(r.sandbox for r in grid.requests[1:])
    # custom_args carry identifiers only; the campaign is the category.
    body = grid.deliveries()[0].body
    assert set(body["custom_args"]) == {"letter_id", "campaign_id"}
    assert body["categories"] == ["korea-exception"]
    assert "Sent korea-exception: 14 accepted, 0 failed, 0 unknown" in r.out


def test_a_second_run_sends_nothing(live, grid, outreach):
    outreach("--config", live.config, "send", "--live", "--yes")
    before = len(grid.requests)
    r = outreach("--config", live.config, "send", "--live", "--yes")
    assert r.code == 0
    assert "Nothing to send" in r.out
    assert len(grid.requests) == before


def test_an_accepted_letter_is_never_sent_again_even_if_the_template_changed(live, grid, outreach):
    outreach("--config", live.config, "send", "--live", "--yes")
    (live.root / "templates" / "subject.txt.j2").write_text("A new subject\n")
    rows = (live.root / "contacts.csv").read_text().splitlines()
    rows[1] = rows[1].replace("Republican", "Independent")
    (live.root / "contacts.csv").write_text("\n".join(rows) + "\n")
    before = len(grid.requests)
    r = outreach("--config", live.config, "send", "--live", "--yes")
    assert r.code == 0 and len(grid.requests) == before


def test_one_new_office_sends_exactly_one_letter(live, grid, outreach):
    outreach("--config", live.config, "send", "--live", "--yes")
    with open(live.root / "contacts.csv", "a", encoding="utf-8") as f:
        f.write("P000197,Nancy,Pelosi,,Nancy Pelosi,house,CA,11,Democrat,202-225-4965,,"
                "nancy.pelosi@house.example.org,,\n")
    before = len(grid.deliveries())
    r = outreach("--config", live.config, "send", "--live", "--yes")
    assert r.code == 0, r.err
    new = grid.deliveries()[before:]
    assert [d.to for d in new] == ["nancy.pelosi@house.example.org"]
    assert "new: 1" in r.out


def test_limit_sends_only_n_then_the_rest(live, grid, outreach):
    r = outreach("--config", live.config, "send", "--live", "--yes", "--limit", "5")
    assert r.code == 1  # letters remain to be sent
    assert len(grid.deliveries()) == 5
    counts = ledger_of(live).letters.counts(ledger_of(live).campaigns.id("korea-exception"))
    assert (counts["accepted"], counts["pending"]) == (5, 9)
    r = outreach("--config", live.config, "send", "--live", "--yes")
    assert r.code == 0 and len(grid.deliveries()) == 14 and max(grid.received.values()) == 1


def test_a_recorded_letter_follows_the_audience_until_it_goes_out(live, grid, outreach):
    """Excluded (or dropped from the list) after its letter was recorded: that letter is skipped, not
    sent; back in the audience, it goes out."""
    assert outreach("--config", live.config, "send", "--live", "--yes", "--limit", "5").code == 1
    waiting = next(r for r in campaign_letters(live) if r.status == "pending")
    config = live.config.read_text()
    live.config.write_text(config + f'\n[campaigns.korea-exception.audience]\nexclude = ["{waiting.email}"]\n')
    r = outreach("--config", live.config, "send", "--live", "--yes")
    assert r.code == 0, r.err
    assert "left out: 1 letter recorded earlier" in r.out
    assert waiting.email not in {d.to for d in grid.deliveries()} and len(grid.deliveries()) == 13
    row = next(x for x in campaign_letters(live) if x.id == waiting.id)
    assert row.status == "skipped" and "no longer in the audience" in row.reason
    assert outreach("--config", live.config, "status", "--json").code in (0, 1)
    live.config.write_text(config)
    assert outreach("--config", live.config, "send", "--live", "--yes").code == 0
    assert [d.to for d in grid.deliveries()].count(waiting.email) == 1 and len(grid.deliveries()) == 14
    assert max(grid.received.values()) == 1


def exclude(project, config: str, email: str) -> None:
    project.config.write_text(config + f'\n[campaigns.korea-exception.audience]\nexclude = ["{email}"]\n')


def test_an_excluded_recipient_stays_out_when_their_suppression_is_lifted(live, grid, outreach):
    """Suppressed, then excluded, then the suppression removed: still no letter (the audience decides)."""
    early = "james.moylan@house.example.org"  # suppressed before any send: a skipped row, no archived message
    assert outreach("--config", live.config, "suppressions", "add", early, "--reason", "asked").code == 0
    assert outreach("--config", live.config, "send", "--live", "--yes", "--limit", "5").code == 1
    config = live.config.read_text()
    recorded = next(r for r in campaign_letters(live) if r.status == "pending")  # archived, not yet sent
    assert outreach("--config", live.config, "suppressions", "add", recorded.email, "--reason", "asked").code == 0
    assert outreach("--config", live.config, "send", "--live", "--yes", "--limit", "1").code == 1
    assert {x.email: x.status for x in campaign_letters(live)}[recorded.email] == "skipped"
    live.config.write_text(config + '\n[campaigns.korea-exception.audience]\nexclude = ["%s", "%s"]\n'
                           % (recorded.email, early))
    for email in (recorded.email, early):
        assert outreach("--config", live.config, "suppressions", "remove", email).code == 0
    r = outreach("--config", live.config, "send", "--live", "--yes")
    assert r.code == 0, r.err
    assert_no_traceback(r)
    sent = [d.to for d in grid.deliveries()]
    assert recorded.email not in sent and early not in sent
    rows = {x.email: x for x in campaign_letters(live)}
    assert rows[recorded.email].status == rows[early].status == "skipped"
    assert "no longer in the audience" in rows[recorded.email].reason
    # Back in the audience and not suppressed: each gets exactly one letter.
    live.config.write_text(config)
    assert outreach("--config", live.config, "send", "--live", "--yes").code == 0
    sent = [d.to for d in grid.deliveries()]
    assert sent.count(recorded.email) == 1 and sent.count(early) == 1 and len(sent) == 14


def test_declining_the_confirmation_changes_no_letter(live, grid, outreach, monkeypatch):
    import click

    assert outreach("--config", live.config, "send", "--live", "--yes", "--limit", "5").code == 1
    waiting = next(r for r in campaign_letters(live) if r.status == "pending")
    exclude(live, live.config.read_text(), waiting.email)
    before = {r.id: (r.status, r.reason) for r in campaign_letters(live)}
    monkeypatch.setattr("sys.stdin.isatty", lambda: True)
    monkeypatch.setattr(click, "confirm", lambda *a, **k: False)
    r = outreach("--config", live.config, "send", "--live")
    assert r.code == 0 and "Nothing was sent." in r.out
    assert "left out: 1 letter recorded earlier" in r.out
    assert {r.id: (r.status, r.reason) for r in campaign_letters(live)} == before
    assert len(grid.deliveries()) == 5


def test_retry_failed_leaves_out_recipients_no_longer_in_the_audience(live, grid, outreach):
    from mockgrid import ACCEPT, status

    failing = {"eleanor.norton@house.example.org", "adam.smith@house.example.org"}
    grid.behave = lambda n, body: status(400, {"errors": [{"message": "Invalid to email"}]}) \
        if body["personalizations"][0]["to"][0]["email"] in failing else ACCEPT
    assert outreach("--config", live.config, "send", "--live", "--yes").code == 1
    grid.behave = lambda n, body: ACCEPT
    exclude(live, live.config.read_text(), "adam.smith@house.example.org")
    before = len(grid.deliveries())
    r = outreach("--config", live.config, "send", "--live", "--yes", "--retry-failed")
    assert [d.to for d in grid.deliveries()[before:]] == ["eleanor.norton@house.example.org"]
    assert "adam.smith@house.example.org" in next(line for line in r.out.splitlines() if "left out" in line)
    rows = {x.email: x.status for x in campaign_letters(live)}
    assert rows["adam.smith@house.example.org"] == "failed" and rows["eleanor.norton@house.example.org"] == "accepted"


def test_a_rejected_key_stops_at_the_sandbox_check(live, grid, outreach, monkeypatch):
    monkeypatch.setenv("SENDGRID_API_KEY", "SG.wrong-key")
    r = outreach("--config", live.config, "send", "--live", "--yes")
    assert r.code == 2
    assert "refused the API key" in r.err and "nothing was sent" in r.err
    assert len(r.err.strip().splitlines()) == 1
    assert [req.sandbox for req in grid.requests] == [True]
    assert campaign_letters(live) == []
    assert_no_traceback(r)


def test_a_forbidden_sender_stops_at_the_sandbox_check(live, grid, outreach):
    grid.behave = lambda n, body: status(403)
    # The sandbox answer itself is what matters: make the server refuse it.
    grid.api_key = KEY
    original = grid._handle

    def refuse_sandbox(h):
        length = int(h.headers.get("Content-Length") or 0)
        h.rfile.read(length)
        grid._record(h, {"mail_settings": {"sandbox_mode": {"enable": True}}}, "status")
        grid._answer(h, 403, json.dumps({"errors": [{"message": "The from address does not match a verified "
                                                                "Sender Identity."}]}).encode())
    grid._handle = refuse_sandbox
    try:
        r = outreach("--config", live.config, "send", "--live", "--yes")
    finally:
        grid._handle = original
    assert r.code == 2 and "verified Sender Identity" in r.err and "nothing was sent" in r.err
    assert campaign_letters(live) == []


def test_the_api_key_never_appears_in_output_logs_or_the_database(live, grid, outreach, caplog):
    caplog.set_level(logging.DEBUG)
    def some_errors(n, body):
        if n == 3:
            return status(400, {"errors": [{"message": "bad thing", "field": "x"}]})
        return status(500) if n == 5 else ACCEPT

    grid.behave = some_errors
    r = outreach("--config", live.config, "send", "--live", "--yes")
    outreach("--config", live.config, "status", "--json")
    outreach("--config", live.config, "letters", "list")
    text = r.out + r.err + caplog.text
    assert KEY not in text
    for path in live.root.glob("outreach.db*"):
        assert KEY.encode() not in path.read_bytes(), path
    # ...although it was really used.
    assert grid.requests[0].headers["Authorization"] == f"Bearer {KEY}"


def test_live_without_a_terminal_needs_yes(live, grid, outreach):
    r = outreach("--config", live.config, "send", "--live")
    assert r.code == 2 and "--yes" in r.err and grid.requests == []


def test_the_sample_sender_and_the_outbox_transport_cannot_go_live(project, grid, outreach, monkeypatch):
    monkeypatch.setenv("SENDGRID_API_KEY", KEY)
    project.config.write_text(project.config.read_text().replace("jordan@advocacy.example.org",
                                                                 "jordan@mine-ban-advocates.org"))
    r = outreach("--config", project.config, "send", "--live", "--yes")
    assert r.code == 2 and "outbox" in r.err
    write_live_config(project, grid)
    project.config.write_text(project.config.read_text().replace("jordan@mine-ban-advocates.org",
                                                                 "you@example.org"))
    r = outreach("--config", project.config, "send", "--live", "--yes")
    assert r.code == 2 and "sample address" in r.err and grid.requests == []
    assert len(r.err.strip().splitlines()) == 1


def test_a_missing_key_says_which_variable(live, grid, outreach, monkeypatch):
    monkeypatch.delenv("SENDGRID_API_KEY")
    r = outreach("--config", live.config, "send", "--live", "--yes")
    assert r.code == 2 and "$SENDGRID_API_KEY is not set" in r.err and grid.requests == []


def test_a_second_send_on_the_same_campaign_refuses(live, grid, outreach):
    ledger = ledger_of(live)
    with ledger.lock("send:korea-exception", "a send of campaign korea-exception"):
        r = outreach("--config", live.config, "send", "--live", "--yes")
    assert r.code == 2 and "already running" in r.err
    assert grid.requests == []


def test_letters_left_sending_by_a_dead_run_become_unknown(live, grid, outreach):
    outreach("--config", live.config, "send", "--live", "--yes", "--limit", "2")
    ledger = ledger_of(live)
    victim = next(r.id for r in campaign_letters(live) if r.status == "pending")
    assert ledger.letters.sender("a-run-that-was-killed").claim(victim)
    before = len(grid.deliveries())
    r = outreach("--config", live.config, "send", "--live", "--yes")
    assert "now `unknown`" in r.err
    assert r.code == 1
    assert {row.id: row.status for row in campaign_letters(live)}[victim] == "unknown"
    assert victim not in {d.letter_id for d in grid.deliveries()[before:]}


def test_test_to_sends_only_to_our_own_addresses(live, grid, outreach):
    for office in ("timothy.kaine@senate.example.org", "someone@elsewhere.org"):
        r = outreach("--config", live.config, "send", "--test-to", office, "--to", "K000384")
        assert r.code == 2 and "not one of your own addresses" in r.err
    assert grid.requests == []
    r = outreach("--config", live.config, "send", "--test-to", "jordan@mine-ban-advocates.org")
    assert r.code == 0 and [d.to for d in grid.deliveries()] == ["jordan@mine-ban-advocates.org"]


def test_test_to_sends_marked_copies_and_records_nothing(live, grid, outreach):
    live.config.write_text(live.config.read_text().replace(
        'organization = "Advocacy Network"', 'organization = "Advocacy Network"\ntest_to = ["me@mine-ban-advocates.org"]'))
    r = outreach("--config", live.config, "send", "--test-to", "me@mine-ban-advocates.org", "--to", "K000384",
                 "--to", "M001219")
    assert r.code == 0, r.err
    sent = grid.deliveries()
    assert [d.to for d in sent] == ["me@mine-ban-advocates.org"] * 2
    assert all(d.body["subject"].startswith("[TEST] ") for d in sent)
    assert all("letter_id" not in d.body["custom_args"] for d in sent)
    assert "Dear Senator Kaine:" in sent[0].body["content"][0]["value"]
    assert campaign_letters(live) == []


def test_status_json_has_every_state(live, grid, outreach):
    r = outreach("--config", live.config, "status", "--json")
    data = json.loads(r.out)
    assert data["campaign"] == "korea-exception" and set(data["counts"]) == set(STATES)
    assert sum(data["counts"].values()) == 0
    outreach("--config", live.config, "send", "--live", "--yes")
    data = json.loads(outreach("--config", live.config, "status", "--json").out)
    assert data["counts"]["accepted"] == 14 and sum(data["counts"].values()) == 14


def test_letters_list_and_show_the_archived_message(live, grid, outreach):
    outreach("--config", live.config, "send", "--live", "--yes")
    r = outreach("--config", live.config, "letters", "list", "--state", "accepted")
    assert r.code == 0 and "14 letters accepted" in r.out
    first_id = r.out.split()[0]
    r = outreach("--config", live.config, "letters", "show", first_id)
    assert r.code == 0
    assert "state: accepted" in r.out and "via sendgrid: accepted HTTP 202" in r.out
    sent = next(d for d in grid.deliveries() if d.letter_id.startswith(first_id))
    assert sent.body["content"][0]["value"].strip() in r.out


def test_the_live_send_with_a_limit_sends_whom_the_dry_run_and_the_preview_showed(live, grid, outreach):
    """`send --limit 3`, `preview --limit 3` and `send --live --limit 3` name the same offices."""
    import csv

    r = outreach("--config", live.config, "send", "--limit", "3")
    assert r.code == 0, r.err
    [run] = live.runs()
    with open(run / "manifest.csv", encoding="utf-8") as f:
        written = [row["email"] for row in csv.DictReader(f)]
    previewed = [line.split("<")[1].rstrip(">") for line in
                 outreach("--config", live.config, "preview", "--limit", "3").out.splitlines() if line.startswith("To:")]
    r = outreach("--config", live.config, "send", "--live", "--yes", "--limit", "3")
    assert sorted(d.to for d in grid.deliveries()) == sorted(written) == sorted(previewed)
    assert written == ["dan.sullivan@senate.example.org", "roger.wicker@senate.example.org",
                       "timothy.kaine@senate.example.org"]


@pytest.mark.parametrize("old,new,said", [
    ('name = "Jordan Organizer"', 'name = "Your Name"', 'name "Your Name"'),
    ('organization = "Advocacy Network"', 'organization = "Your Organization"', 'organization "Your Organization"'),
])
def test_no_letter_goes_out_signed_by_a_placeholder(project, grid, outreach, monkeypatch, old, new, said):
    monkeypatch.setenv("SENDGRID_API_KEY", KEY)
    write_live_config(project, grid)
    project.config.write_text(project.config.read_text().replace(old, new))
    r = outreach("--config", project.config, "send", "--live", "--yes")
    assert r.code == 2 and said in r.err and "before going live" in r.err and grid.requests == []
    assert len(r.err.strip().splitlines()) == 1
    assert ledger_of(project).letters.listing() == []
    # A dry run and a preview still work, and say so once.
    for command in (["send"], ["preview"]):
        r = outreach("--config", project.config, *command)
        assert r.code == 0
        warnings = [line for line in (r.out + r.err).splitlines() if said in line]
        assert len(warnings) == 1 and "placeholder" in warnings[0], r.out + r.err


def test_the_date_header_has_a_numeric_zone(project, outreach):
    import re

    assert outreach("--config", project.config, "send").code == 0
    raw = next((project.root / "outbox").rglob("*.eml")).read_bytes()
    # The bytes as written: a parser would rewrite "GMT" as "+0000" itself.
    assert re.search(rb"^Date: \w{3}, \d\d \w{3} \d{4} \d\d:\d\d:\d\d \+0000\r?$", raw, re.M), raw[:400]
    assert b"GMT" not in raw.split(b"\n\n", 1)[0]
