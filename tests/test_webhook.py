"""SendGrid's signed Event Webhook over real HTTP on 127.0.0.1, with real P-256 signatures."""

from __future__ import annotations

import base64
import http.client
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from types import SimpleNamespace

import pytest
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec

from conftest import ROOT, Project, assert_no_traceback
from mockgrid import MockGrid
from test_crash import many_contacts, run_with_kills
from test_events import T0, ev, ledger_with_letters, statuses, stored_events
from test_live import KEY, campaign_letters, ledger_of, write_live_config

from outreach.config import load_config
from outreach.signature import SIGNATURE_HEADER, TIMESTAMP_HEADER, load_public_key
from outreach.webhook import create_app, serve_app

PATH = "/webhooks/sendgrid"


# -- keys, signatures, a real server ---------------------------------------------------------------

@pytest.fixture(scope="module")
def signing_key():
    return ec.generate_private_key(ec.SECP256R1())


def public_b64(private_key) -> str:
    """The public key as SendGrid shows it: base64 of the DER SubjectPublicKeyInfo."""
    der = private_key.public_key().public_bytes(serialization.Encoding.DER,
                                                serialization.PublicFormat.SubjectPublicKeyInfo)
    return base64.b64encode(der).decode()


def signed(private_key, body: bytes, timestamp: int | None = None) -> dict:
    """The two headers SendGrid adds: a signature over timestamp + body, and the timestamp."""
    ts = str(int(time.time()) if timestamp is None else timestamp)
    signature = private_key.sign(ts.encode() + body, ec.ECDSA(hashes.SHA256()))
    return {SIGNATURE_HEADER: base64.b64encode(signature).decode(), TIMESTAMP_HEADER: ts}


class WebhookServer:
    """The app served as `outreach serve` serves it (Hypercorn, its settings), in a background
    thread on a free port of 127.0.0.1."""

    def __init__(self, app):
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.port = self.sock.getsockname()[1]
        self.url = f"http://127.0.0.1:{self.port}{PATH}"
        self.app = app
        self.started = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        import asyncio

        async def main():
            self.loop, self.stop = asyncio.get_running_loop(), asyncio.Event()

            async def until_stopped():
                self.started.set()
                await self.stop.wait()

            await serve_app(self.app, self.sock, shutdown_trigger=until_stopped)

        asyncio.run(main())

    def __enter__(self) -> "WebhookServer":
        self.thread.start()
        assert self.started.wait(10), "the webhook server did not start"
        return self

    def __exit__(self, *exc) -> None:
        self.loop.call_soon_threadsafe(self.stop.set)
        self.thread.join(10)


def post(url: str, body: bytes, headers: dict) -> tuple[int, dict]:
    request = urllib.request.Request(url, data=body, method="POST",
                                     headers={"Content-Type": "application/json", **headers})
    try:
        with urllib.request.urlopen(request, timeout=60) as r:
            return r.status, json.loads(r.read())
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read() or b"{}")


@pytest.fixture
def tracked(project, signing_key):
    """The sample project with four accepted letters (a-d) and one unknown (u), and the webhook serving it."""
    ledger = ledger_with_letters(project.root, {"a": "accepted", "b": "accepted", "c": "accepted",
                                                "d": "accepted", "u": "unknown"})
    app = create_app(load_config(project.config), ledger, public_key=signing_key.public_key())
    with WebhookServer(app) as server:
        server.ledger = ledger
        yield server


def send(server, signing_key, events: list[dict], **sign_args) -> tuple[int, dict]:
    body = json.dumps(events).encode()
    return post(server.url, body, signed(signing_key, body, **sign_args))


# -- what is recorded ---------------------------------------------------------------------------------

def test_a_signed_post_is_recorded_and_answered_after_commit(tracked, signing_key):
    code, answer = send(tracked, signing_key, [ev("processed", letter_id="a", sg_event_id="1"),
                                               ev("delivered", T0 + 2, letter_id="a", sg_event_id="2"),
                                               ev("delivered", T0 + 2, letter_id="u", sg_event_id="3")])
    assert code == 200
    assert answer == {"received": 3, "stored": 3, "duplicates": 0, "matched": 3, "unmatched": 0, "tests": 0,
                      "letters_changed": 2, "suppressed": 0, "set_aside": 0}
    assert statuses(tracked.ledger) == {"a": "delivered", "b": "accepted", "c": "accepted", "d": "accepted",
                                        "u": "delivered"}


def test_a_post_delivered_again_is_idempotent(tracked, signing_key):
    events = [ev("processed", letter_id="b", sg_event_id="p-b"), ev("open", T0 + 9, letter_id="b")]
    body = json.dumps(events).encode()
    headers = signed(signing_key, body)
    assert post(tracked.url, body, headers)[1]["stored"] == 2
    # The identical post, signature and all (SendGrid retrying, or someone replaying it in the window).
    code, answer = post(tracked.url, body, headers)
    assert code == 200 and (answer["stored"], answer["duplicates"]) == (0, 2)
    code, answer = send(tracked, signing_key, events)
    assert code == 200 and answer["stored"] == 0
    assert stored_events(tracked.ledger) == 2 and statuses(tracked.ledger)["b"] == "opened"


def test_posts_out_of_order_end_in_the_right_state(tracked, signing_key):
    send(tracked, signing_key, [ev("click", T0 + 400, letter_id="c", url="https://example.org")])
    send(tracked, signing_key, [ev("open", T0 + 300, letter_id="c"), ev("deferred", T0 + 1, letter_id="d")])
    send(tracked, signing_key, [ev("delivered", T0 + 5, letter_id="c"), ev("processed", T0, letter_id="c"),
                                ev("delivered", T0 + 60, letter_id="d"), ev("processed", T0, letter_id="d")])
    assert statuses(tracked.ledger)["c"] == "clicked" and statuses(tracked.ledger)["d"] == "delivered"
    send(tracked, signing_key, [ev("bounce", T0 + 2, letter_id="d", type="blocked", reason="550 policy")])
    row = next(r for r in tracked.ledger.letters.listing() if r.id == "d")
    assert (row.status, row.reason) == ("bounced", "blocked: 550 policy")


def test_a_10000_event_post_is_handled(tracked, signing_key):
    events = [ev(("processed", "delivered", "open", "click")[i % 4], T0 + i, letter_id="abcd"[i // 4 % 4],
                 sg_event_id=f"big-{i}", email=f"{'abcd'[i // 4 % 4]}@house.example.org") for i in range(10_000)]
    started = time.perf_counter()
    code, answer = send(tracked, signing_key, events)
    assert code == 200 and answer["stored"] == 10_000, answer
    assert stored_events(tracked.ledger) == 10_000
    assert time.perf_counter() - started < 10
    assert {statuses(tracked.ledger)[x] for x in "abcd"} == {"clicked"}


def test_concurrent_posters_lose_nothing(tracked, signing_key):
    posts = [[ev(("processed", "delivered", "open")[i % 3], T0 + i, letter_id="abcd"[(p + i) % 4],
                 sg_event_id=f"c-{p}-{i}") for i in range(300)] for p in range(24)]
    answers: list[tuple[int, dict]] = []

    def poster(mine):
        for events in mine:
            answers.append(send(tracked, signing_key, events))
            answers.append(send(tracked, signing_key, events))  # and each once more: SendGrid retrying

    threads = [threading.Thread(target=poster, args=(posts[k::8],)) for k in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert [code for code, _ in answers] == [200] * 48
    assert sum(a["stored"] for _, a in answers) == 24 * 300 == stored_events(tracked.ledger)
    assert {statuses(tracked.ledger)[x] for x in "abcd"} == {"opened"}


# -- what is refused ---------------------------------------------------------------------------------------

GOOD = [ev("delivered", letter_id="a", sg_event_id="good-1")]


def forged(signing_key, body: bytes) -> dict:
    return signed(ec.generate_private_key(ec.SECP256R1()), body)


def one_byte_altered(signing_key, body: bytes) -> tuple[bytes, dict]:
    headers = signed(signing_key, body)
    return body.replace(b'"a"', b'"b"'), headers


REFUSALS = {
    "signed by another key": lambda k, b: (b, forged(k, b)),
    "one byte altered after signing": one_byte_altered,
    "unsigned": lambda k, b: (b, {}),
    "signature without timestamp": lambda k, b: (b, {SIGNATURE_HEADER: signed(k, b)[SIGNATURE_HEADER]}),
    "signature not base64": lambda k, b: (b, {**signed(k, b), SIGNATURE_HEADER: "not base64!!"}),
    "signature truncated": lambda k, b: (b, {**signed(k, b), SIGNATURE_HEADER: signed(k, b)[SIGNATURE_HEADER][:20]}),
    "replayed, old": lambda k, b: (b, signed(k, b, timestamp=int(time.time()) - 601)),
    "dated in the future": lambda k, b: (b, signed(k, b, timestamp=int(time.time()) + 3600)),
    "timestamp not a number": lambda k, b: (b, {**signed(k, b), TIMESTAMP_HEADER: "yesterday"}),
    "timestamp swapped after signing": lambda k, b: (b, {**signed(k, b), TIMESTAMP_HEADER: str(int(time.time()) - 5)}),
}


@pytest.mark.parametrize("how", list(REFUSALS))
def test_a_forged_or_stale_post_is_refused_and_records_nothing(tracked, signing_key, how):
    body, headers = REFUSALS[how](signing_key, json.dumps(GOOD).encode())
    code, answer = post(tracked.url, body, headers)
    assert code == 403 and answer["error"]
    assert stored_events(tracked.ledger) == 0
    assert statuses(tracked.ledger)["a"] == "accepted"


@pytest.mark.parametrize("body,expected", [
    (b"not json at all", "not JSON"),
    (b'{"event": "delivered"}', "expected a JSON array"),
    (b"[" * 200_000 + b"]" * 200_000, "nested too deeply"),
])
def test_a_malformed_signed_body_is_a_clear_400_and_the_server_keeps_serving(tracked, signing_key, body, expected):
    code, answer = post(tracked.url, body, signed(signing_key, body))
    assert code == 400 and expected in answer["error"]
    assert stored_events(tracked.ledger) == 0
    assert send(tracked, signing_key, GOOD)[0] == 200


def test_a_malformed_event_is_set_aside_and_the_rest_of_its_post_stored(tracked, signing_key):
    """SendGrid drops every event of a post it cannot deliver after a day of retries: one malformed
    event must not cost the others."""
    body = json.dumps([ev("delivered", letter_id="a", sg_event_id="ok"), {"event": "open"}]).encode()
    code, answer = post(tracked.url, body, signed(signing_key, body))
    assert code == 200 and (answer["stored"], answer["set_aside"]) == (1, 1)
    [aside] = tracked.ledger.events.set_aside()
    assert "`timestamp` is missing" in aside.reason and aside.raw == '{"event": "open"}'


def raw_post(port: int, headers: dict, parts: list[bytes], declared: int | None = None) -> int:
    """Send headers and some body, then read the answer: chunked unless a length is declared."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    try:
        conn.putrequest("POST", PATH)
        for k, v in {"Content-Type": "application/json", **headers}.items():
            conn.putheader(k, v)
        if declared is None:
            conn.putheader("Transfer-Encoding", "chunked")
        else:
            conn.putheader("Content-Length", str(declared))
        conn.endheaders()
        for part in parts:
            conn.send(b"%x\r\n%s\r\n" % (len(part), part) if declared is None else part)
        return conn.getresponse().status
    finally:
        conn.close()


def test_a_body_over_the_limit_is_413_even_when_it_does_not_say_its_length(project, signing_key):
    project.config.write_text(project.config.read_text() + "\n[webhook]\nmax_body_bytes = 100000\n")
    ledger = ledger_with_letters(project.root, {"a": "accepted"})
    app = create_app(load_config(project.config), ledger, public_key=signing_key.public_key())
    body = json.dumps([ev("open", T0 + i, letter_id="a") for i in range(3000)]).encode()
    assert len(body) > 100_000
    with WebhookServer(app) as server:
        # A declared length over the limit: refused before the body is read.
        assert raw_post(server.port, signed(signing_key, body), [], declared=len(body)) == 413
        # Chunked, no length given: refused while reading, once past the limit (the rest is never sent).
        parts = [body[i:i + 8192] for i in range(0, 110_000, 8192)]
        assert raw_post(server.port, signed(signing_key, body), parts) == 413
        # A chunked post under the limit is fine.
        small = json.dumps(GOOD).encode()
        assert raw_post(server.port, signed(signing_key, small), [small, b""]) == 200
    assert stored_events(ledger) == 1


def test_an_answer_is_never_2xx_when_the_events_could_not_be_stored(tracked, signing_key, monkeypatch):
    import outreach.ledger.event_store

    def broken(*args, **kwargs):
        raise RuntimeError("disk full")

    monkeypatch.setattr(outreach.ledger.event_store, "ingest_posts", broken)
    code, answer = send(tracked, signing_key, GOOD)
    assert code == 503 and "retry" in answer["error"]


def test_other_routes_can_share_the_app(project, signing_key):
    from starlette.responses import PlainTextResponse
    from starlette.routing import Route

    ledger = ledger_with_letters(project.root, {"a": "accepted"})
    app = create_app(load_config(project.config), ledger, public_key=signing_key.public_key(),
                     routes=[Route("/dashboard", lambda request: PlainTextResponse("hello"))])
    with WebhookServer(app) as server:
        with urllib.request.urlopen(f"http://127.0.0.1:{server.port}/dashboard", timeout=10) as r:
            assert r.read() == b"hello"
        assert send(server, signing_key, GOOD)[0] == 200


# -- the public key ----------------------------------------------------------------------------------------

def test_the_public_key_is_read_as_sendgrid_shows_it_or_as_pem(signing_key):
    pem = signing_key.public_key().public_bytes(serialization.Encoding.PEM,
                                                serialization.PublicFormat.SubjectPublicKeyInfo).decode()
    numbers = signing_key.public_key().public_numbers()
    assert load_public_key(public_b64(signing_key)).public_numbers() == numbers
    assert load_public_key(pem).public_numbers() == numbers
    with pytest.raises(ValueError, match="not ECDSA P-256"):
        load_public_key(public_b64(ec.generate_private_key(ec.SECP384R1())))
    with pytest.raises(ValueError, match="not a public key"):
        load_public_key("MFkwEwYHKoZIzj0CAQYIKoZIzj0DAQcDQgAE")


@pytest.mark.parametrize("value,expected", [
    (None, "$SENDGRID_WEBHOOK_PUBLIC_KEY is not set"),
    ("c2VjcmV0", "$SENDGRID_WEBHOOK_PUBLIC_KEY does not hold the webhook verification key"),
])
def test_serve_without_a_usable_key_exits_2_naming_the_variable(project, outreach, monkeypatch, value, expected):
    monkeypatch.delenv("SENDGRID_WEBHOOK_PUBLIC_KEY", raising=False)
    if value:
        monkeypatch.setenv("SENDGRID_WEBHOOK_PUBLIC_KEY", value)
    r = outreach("--config", project.config, "serve", "--port", "0")
    assert r.code == 2 and r.err.startswith(f"outreach: {expected}") and len(r.err.strip().splitlines()) == 1
    assert_no_traceback(r)
    assert "c2VjcmV0" not in r.err


def first_answer(proc, port: int, signing_key) -> tuple[int, dict]:
    """The answer to GOOD, posted as soon as `outreach serve` (proc) listens on `port`."""
    deadline = time.time() + 15
    while True:
        try:
            return send(SimpleNamespace(url=f"http://127.0.0.1:{port}{PATH}"), signing_key, GOOD)
        except urllib.error.URLError:
            assert time.time() < deadline and proc.poll() is None, proc.stderr.read()
            time.sleep(0.05)


def test_outreach_serve_receives_signed_events_until_stopped(project, signing_key):
    ledger = ledger_with_letters(project.root, {"a": "accepted"})
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = {**os.environ, "SENDGRID_WEBHOOK_PUBLIC_KEY": public_b64(signing_key)}
    proc = subprocess.Popen([sys.executable, "-m", "outreach", "--config", str(project.config), "serve",
                             "--port", str(port)], cwd=ROOT, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    try:
        assert f"http://127.0.0.1:{port}{PATH}" in proc.stderr.readline()
        code, answer = first_answer(proc, port, signing_key)
        assert code == 200 and answer["stored"] == 1
        assert statuses(ledger)["a"] == "delivered"
    finally:
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=15)
    assert proc.returncode == 0, err
    assert "Traceback" not in err


def test_the_missing_key_error_names_the_way_to_the_dashboard(project, outreach, monkeypatch):
    monkeypatch.delenv("SENDGRID_WEBHOOK_PUBLIC_KEY", raising=False)
    r = outreach("--config", project.config, "serve", "--port", "0")
    assert r.code == 2 and "outreach serve --dashboard-only" in r.err


def test_serve_dashboard_only_needs_no_key_and_answers_webhook_posts_503_saying_why(project, signing_key):
    env = {k: v for k, v in os.environ.items() if k != "SENDGRID_WEBHOOK_PUBLIC_KEY"}
    env["OUTREACH_DASHBOARD_TOKEN"] = "t" * 32
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    proc = subprocess.Popen([sys.executable, "-m", "outreach", "--config", str(project.config), "serve",
                             "--dashboard-only", "--port", str(port)], cwd=ROOT, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        first = proc.stderr.readline()
        assert "The webhook is off (--dashboard-only)" in first and f":{port}{PATH}" in first
        code, answer = first_answer(proc, port, signing_key)
        assert code == 503 and "--dashboard-only" in answer["error"]
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/login") as page:
            assert page.status == 200
    finally:
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=15)
    assert proc.returncode == 0, err
    assert "Traceback" not in err and "t" * 32 not in err
    # One line says the webhook is off; no line per refused post.
    assert (first + err).count("webhook is off") == 1


def test_serve_on_a_busy_port_is_one_line(project, outreach, monkeypatch, signing_key):
    monkeypatch.setenv("SENDGRID_WEBHOOK_PUBLIC_KEY", public_b64(signing_key))
    with socket.create_server(("127.0.0.1", 0)) as busy:
        port = busy.getsockname()[1]
        r = outreach("--config", project.config, "serve", "--port", str(port))
    assert r.code == 2 and f"cannot listen on 127.0.0.1:{port}" in r.err
    assert_no_traceback(r)


# -- after a crash: events leave no accepted letter unknown ---------------------------------------------

def test_after_sigkills_the_webhook_leaves_no_letter_the_server_accepted_unknown(tmp_path, signing_key):
    deadline = time.time() + 240
    for attempt in range(1, 100):
        project = Project(tmp_path / f"run{attempt}")
        project.root.mkdir()
        many_contacts(project, 60)
        with MockGrid(api_key=KEY, latency=0.03) as grid:
            write_live_config(project, grid, concurrency=8, rate_per_minute=3000)
            run_with_kills(project, grid, kills_wanted=4, seed=attempt, concurrency=8, time_budget=90)
            accepted = {r.letter_id: r.to for r in grid.deliveries() if r.action == "accept"}
        before = {r.id: r.status for r in campaign_letters(project)}
        unknown = {i for i, s in before.items() if s == "unknown"}
        if unknown & set(accepted):
            break
        assert time.time() < deadline, f"{attempt} runs of 4 kills left no accepted letter unknown"
    assert max(grid.received.values()) == 1

    ledger = ledger_of(project)
    app = create_app(load_config(project.config), ledger, public_key=signing_key.public_key())
    events = [ev(name, time.time() + n, letter_id=lid, email=email, campaign_id="korea-exception",
                 sg_event_id=f"{lid}-{name}")
              for lid, email in accepted.items() for n, name in enumerate(("processed", "delivered"))]
    with WebhookServer(app) as server:
        for i in range(0, len(events), 50):
            code, answer = send(server, signing_key, events[i:i + 50])
            assert code == 200, answer

    after = {r.id: r.status for r in campaign_letters(project)}
    assert {lid: after[lid] for lid in accepted} == dict.fromkeys(accepted, "delivered")
    # A letter killed before its request left stays unknown: no event speaks for it.
    assert {i for i, s in after.items() if s == "unknown"} == unknown - set(accepted)


def test_serve_workers_on_sqlite_says_so_and_runs_one(project, signing_key):
    env = {**os.environ, "SENDGRID_WEBHOOK_PUBLIC_KEY": public_b64(signing_key), "OUTREACH_DASHBOARD_TOKEN": "t" * 32}
    proc = subprocess.Popen([sys.executable, "-m", "outreach", "--config", str(project.config), "serve",
                             "--workers", "3", "--port", "0"], cwd=ROOT, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    try:
        first = proc.stderr.readline()
        assert "--workers 3: the ledger is SQLite" in first and "one process serves" in first
        assert "Receiving SendGrid events" in proc.stderr.readline()
    finally:
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=15)
    assert proc.returncode == 0 and "worker processes" not in err
