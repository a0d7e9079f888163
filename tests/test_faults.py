"""Sending under failure: throttling, outages, cut connections and slow answers, asserted on what arrived."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
import urllib.error
from collections import defaultdict

import pytest

from conftest import ROOT
from mockgrid import ACCEPT, CUT, MockGrid, slow, status, throttle
from outreach.dispatch import BACKOFF_CAP_S, PAUSE_MAX_S, PAUSE_MIN_S, RateLimiter, backoff_delay, decide, pause_for
from outreach.transports import SendResult
from outreach.transports.sendgrid import SendGridTransport
from test_live import KEY, campaign_letters, ledger_of, write_live_config

# -- the decisions, without sockets or clocks ----------------------------------------------------


def test_backoff_grows_exponentially_with_jitter_and_a_cap():
    assert backoff_delay(1, rng=lambda: 0.0) == 0.5 and backoff_delay(1, rng=lambda: 1.0) == 1.0
    assert backoff_delay(3, rng=lambda: 0.0) == 2.0 and backoff_delay(3, rng=lambda: 1.0) == 4.0
    assert backoff_delay(30, rng=lambda: 1.0) == BACKOFF_CAP_S


def test_a_429_pause_follows_the_reset_within_bounds():
    assert pause_for(1000.0 + 7, now=1000.0) == 7
    assert pause_for(1000.0 - 30, now=1000.0) == PAUSE_MIN_S      # reset already past (Prism does this)
    assert pause_for(1000.0 + 86400, now=1000.0) == PAUSE_MAX_S
    assert pause_for(None, now=1000.0) == PAUSE_MIN_S


@pytest.mark.parametrize("result,attempts,expected", [
    (SendResult("accepted", 202, "m1"), 1, "accepted"),
    (SendResult("retry", 503, error="HTTP 503"), 1, "retry_wait"),
    (SendResult("retry", 503, error="HTTP 503"), 5, "failed"),
    (SendResult("failed", 400, error="HTTP 400: bad"), 1, "failed"),
    (SendResult("unknown", error="no answer"), 1, "unknown"),
    (SendResult("throttled", 429, reset_at=1005.0), 1, "retry_wait"),
    (SendResult("unauthorized", 401), 1, "pending"),
])
def test_decisions(result, attempts, expected):
    d = decide(result, attempts, 5, now=1000.0, rng=lambda: 0.5)
    assert d.status == expected
    if result.outcome == "retry" and attempts == 5:
        assert d.reason.startswith("gave up after 5 attempts: HTTP 503")
    if result.outcome == "throttled":
        assert (d.pause_s, d.refund) == (5.0, True)
    if result.outcome == "unauthorized":
        assert d.stop and d.refund


def test_the_limiter_spaces_slots_exactly_and_pauses_everyone():
    clock = [100.0]
    limiter = RateLimiter(600, clock=lambda: clock[0])   # one slot every 0.1 s
    slots = [limiter.reserve() for _ in range(5)]
    assert slots == pytest.approx([100.0, 100.1, 100.2, 100.3, 100.4])
    limiter.pause(3.0)
    assert limiter.reserve() == pytest.approx(103.0)
    clock[0] = 200.0  # idle time is not banked into a burst
    assert limiter.reserve() == 200.0 and limiter.reserve() == pytest.approx(200.1)


def test_errors_are_classified_by_whether_the_request_left():
    t = SendGridTransport("SG.k", "http://127.0.0.1:9", 1)
    assert t._classify_error(urllib.error.URLError(ConnectionRefusedError())).outcome == "retry"
    assert t._classify_error(urllib.error.URLError(TimeoutError("timed out"))).outcome == "retry"
    assert t._classify_error(TimeoutError("timed out")).outcome == "unknown"
    import http.client

    assert t._classify_error(http.client.RemoteDisconnected("closed")).outcome == "unknown"
    assert t._classify_error(ConnectionResetError()).outcome == "unknown"


# -- against the recording server -----------------------------------------------------------------

FAULTS = {
    # recipient -> the answers it gets, in order (then accepted)
    "dan.sullivan@senate.example.org": [status(500)],
    "roger.wicker@senate.example.org": [status(503)] * 10,
    "timothy.kaine@senate.example.org": [status(400, {"errors": [{"message": "Invalid reply_to", "field": "reply_to"}]})],
    "jeanne.shaheen@senate.example.org": [status(413, {"errors": [{"message": "Payload too large"}]})],
    "james.risch@senate.example.org": [CUT],
    "ben.lujan@senate.example.org": [slow(3.0)],
    "mike.rogers@house.example.org": [throttle(reset_in=1.2)],
}


def scripted(faults):
    calls = defaultdict(int)
    lock = threading.Lock()

    def behave(n, body):
        to = body["personalizations"][0]["to"][0]["email"]
        with lock:
            k = calls[to]
            calls[to] += 1
        answers = faults.get(to, [])
        return answers[k] if k < len(answers) else ACCEPT
    return behave


def test_a_run_through_every_kind_of_fault(project, monkeypatch, outreach):
    monkeypatch.setenv("SENDGRID_API_KEY", KEY)
    with MockGrid(api_key=KEY, latency=0.02, behave=scripted(FAULTS)) as grid:
        write_live_config(project, grid, max_attempts=3, timeout_s=1)
        monkeypatch.setattr("outreach.dispatch.BACKOFF_BASE_S", 0.05)
        r = outreach("--config", project.config, "send", "--live", "--yes")
        throttled_at = next(q.at for q in grid.deliveries() if q.action == "status" and q.to.startswith("mike.rogers"))
        # Requests already on their way when the 429 was answered (after the 20 ms latency) may land.
        after = [q.at for q in grid.deliveries() if q.at > throttled_at + 0.1]
    assert r.code == 1
    rows = {row.email: row for row in campaign_letters(project)}
    by_letter = {row.id: row.email for row in rows.values()}
    # No recipient was accepted twice.
    assert max(grid.accepted.values()) == 1
    assert rows["dan.sullivan@senate.example.org"].status == "accepted"          # 500, then accepted
    assert rows["dan.sullivan@senate.example.org"].attempts == 2
    assert rows["roger.wicker@senate.example.org"].status == "failed"            # 503 until max_attempts
    assert rows["roger.wicker@senate.example.org"].reason.startswith("gave up after 3 attempts: HTTP 503")
    assert rows["timothy.kaine@senate.example.org"].status == "failed"           # SendGrid's own text
    assert rows["timothy.kaine@senate.example.org"].reason == "HTTP 400: Invalid reply_to (reply_to)"
    assert rows["jeanne.shaheen@senate.example.org"].reason == "HTTP 413: Payload too large"
    assert rows["james.risch@senate.example.org"].status == "unknown"            # cut after it arrived
    assert rows["ben.lujan@senate.example.org"].status == "unknown"              # slower than the timeout
    assert "may have been accepted" in rows["ben.lujan@senate.example.org"].reason
    assert rows["mike.rogers@house.example.org"].status == "accepted"            # throttled, then accepted
    assert rows["mike.rogers@house.example.org"].attempts == 1                   # a 429 is not an attempt
    others = set(rows) - set(FAULTS)
    assert all(rows[e].status == "accepted" for e in others)
    # After the 429 everyone paused: nothing arrived for at least the minimum pause.
    assert after and min(after) - throttled_at >= PAUSE_MIN_S * 0.9
    assert set(by_letter.values()) == set(rows)
    # The unknown ones are never resent by a later run.
    with MockGrid(api_key=KEY, port=grid.port) as grid2:
        r = outreach("--config", project.config, "send", "--live", "--yes")
        assert r.code == 1 and grid2.deliveries() == []
    assert "2 unknown" in outreach("--config", project.config, "status").out


def test_released_unknown_letters_go_out_on_the_next_run(project, monkeypatch, outreach):
    monkeypatch.setenv("SENDGRID_API_KEY", KEY)
    with MockGrid(api_key=KEY, behave=scripted({"james.risch@senate.example.org": [CUT]})) as grid:
        write_live_config(project, grid)
        assert outreach("--config", project.config, "send", "--live", "--yes").code == 1
        r = outreach("--config", project.config, "letters", "release", "--all-unknown", "--yes")
        assert r.code == 0 and "1 letter released" in r.out
        assert outreach("--config", project.config, "send", "--live", "--yes").code == 0
        risch = [q for q in grid.deliveries() if q.to == "james.risch@senate.example.org"]
    assert len(risch) == 2  # once cut, once again by the operator's decision
    assert all(row.status == "accepted" for row in campaign_letters(project))


def test_a_401_mid_run_stops_at_once_with_exit_2(project, monkeypatch, outreach):
    monkeypatch.setenv("SENDGRID_API_KEY", KEY)
    with MockGrid(api_key=KEY, behave=lambda n, body: status(401, {"errors": [{"message": "key revoked"}]})
                  if n >= 3 else ACCEPT) as grid:
        write_live_config(project, grid, concurrency=1)
        r = outreach("--config", project.config, "send", "--live", "--yes")
        arrived = len(grid.deliveries())
    assert r.code == 2 and "credentials refused" in r.out
    assert arrived == 4
    counts = ledger_of(project).letters.counts(ledger_of(project).campaigns.id("korea-exception"))
    assert counts["accepted"] == 3 and counts["pending"] == 11 and counts["sending"] == 0


def test_refused_connections_are_retried_until_the_service_is_back(project, monkeypatch):
    """The request never left, so retrying cannot duplicate it."""
    from outreach.config import load_config
    from outreach.run import LIVE, CampaignRun, Request

    write_live_config(project, MockGrid(), rate_per_minute=60000, concurrency=4, max_attempts=8)
    cfg = load_config(project.config)
    grid = MockGrid(api_key=KEY).start()
    port = grid.port
    grid.stop()  # nothing listens: connections are refused
    back = MockGrid(api_key=KEY, port=port)
    threading.Timer(1.0, back.start).start()
    monkeypatch.setattr("outreach.dispatch.BACKOFF_BASE_S", 0.2)
    class NoSandboxCheck(SendGridTransport):
        def preflight(self, message):  # the server is down at first: only the sends are under test
            pass

    transport = NoSandboxCheck(KEY, f"http://127.0.0.1:{port}", 2)
    try:
        summary = CampaignRun(cfg, Request(LIVE), transport=transport).execute()
    finally:
        back.stop()
    assert summary.dispatched.accepted == 14 and summary.dispatched.retried > 0
    assert sorted(back.received.values()) == [1] * 14
    ledger = ledger_of(project)
    errors = [a.error for row in campaign_letters(project) for a in ledger.letters.attempts_of(row.id) if a.error]
    assert errors and all("could not reach" in e for e in errors)


def test_sigterm_finishes_the_letters_in_flight_and_exits_1(project, monkeypatch):
    with MockGrid(api_key=KEY, latency=0.4) as grid:
        write_live_config(project, grid, concurrency=2)
        proc = subprocess.Popen([sys.executable, "-m", "outreach", "--config", str(project.config), "send",
                                 "--live", "--yes"], cwd=ROOT, env={**os.environ, "SENDGRID_API_KEY": KEY},
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        deadline = time.time() + 20
        while len(grid.deliveries()) < 3 and time.time() < deadline:
            time.sleep(0.05)
        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=30)
        arrived = grid.received
    assert proc.returncode == 1, err
    assert "stopping" in err and "Sent korea-exception:" in out
    rows = campaign_letters(project)
    statuses = [row.status for row in rows]
    assert "sending" not in statuses
    # Every letter that reached the server was recorded as accepted; the rest wait, untouched.
    accepted = {row.id for row in rows if row.status == "accepted"}
    assert accepted == set(arrived)
    assert statuses.count("pending") == 14 - len(accepted) > 0
