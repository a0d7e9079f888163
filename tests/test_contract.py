"""Contract: every request the SendGrid transport builds is accepted by Prism serving SendGrid's own spec."""

from __future__ import annotations

import os
import shutil
import subprocess
import time

import pytest

from conftest import ROOT, SHARED, free_port, need, wait_for_port
from outreach.message import Message
from outreach.transports.sendgrid import SendGridTransport

SPEC = SHARED / "sendgrid" / "tsg_mail_v3.test-patched.yaml"


def prism_binary() -> str | None:
    for candidate in (os.environ.get("PRISM_BIN"), ROOT / ".ci" / "prism" / "node_modules" / ".bin" / "prism",
                      shutil.which("prism")):
        if candidate and os.path.exists(candidate):
            return str(candidate)
    return None


@pytest.fixture(scope="module")
def prism():
    need(SPEC.exists(), f"SendGrid's spec is not at {SPEC} (clone ../shared beside the project)")
    binary = prism_binary()
    need(binary is not None, "Prism is not installed (`npm install --prefix .ci/prism @stoplight/prism-cli`, "
                             "or set PRISM_BIN); .ci/run installs it")
    port = free_port()
    proc = subprocess.Popen([binary, "mock", "-h", "127.0.0.1", "-p", str(port), str(SPEC)],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        wait_for_port(port, 60, proc)
    except BaseException:
        proc.kill()
        raise
    yield f"http://127.0.0.1:{port}"
    proc.terminate()
    proc.wait(timeout=10)


def message(**changes) -> Message:
    base = dict(letter_id="0f3c2a9d8e7b6a5c4d3e", campaign="korea-exception",
                from_name="Jordan Organizer", from_email="jordan@mine-ban-advocates.org",
                to_name="Dan Sullivan", to_email="dan.sullivan@senate.example.org",
                subject="End the Korea landmine exception and join the Mine Ban Treaty",
                text="Dear Senator Sullivan:\n\nPlain text.\n", html="<p>Dear Senator Sullivan:</p>")
    base.update(changes)
    return Message(**base)


CASES = {
    "plain-and-html": message(),
    "non-ascii-names": message(to_name="Pablo José Hernández", to_email="pablo@house.example.org",
                               from_name="Organización Ñandú", subject="Carta para el Comisionado Residente"),
    "quotes-and-commas": message(to_name='Eric A. "Rick" Crawford, Jr.'),
    "reply-to": message(reply_to="policy@mine-ban-advocates.org"),
    "no-display-names": message(to_name="", from_name=""),
    "test-copy": message().as_test_to("me@mine-ban-advocates.org"),
}


@pytest.mark.parametrize("name", CASES)
@pytest.mark.parametrize("sandbox", [False, True], ids=["live", "sandbox"])
def test_every_request_the_transport_builds_is_accepted(prism, name, sandbox):
    transport = SendGridTransport("SG.contract-test", prism, timeout_s=10)
    payload = transport.payload(CASES[name], sandbox=sandbox)
    assert payload["categories"] == ["korea-exception"]
    assert set(payload["custom_args"]) in ({"letter_id", "campaign_id"}, {"test_of", "campaign_id"})
    assert ("mail_settings" in payload) == sandbox
    result = transport.send(CASES[name], sandbox=sandbox)
    assert result.outcome == "accepted", result.error
    assert result.status == 202 and result.message_id  # Prism answers its example X-Message-Id


def test_prism_does_reject_what_breaks_the_spec(prism):
    """The contract test can fail: a payload without `from` is refused, with the reason kept."""
    from sendgrid import SendGridAPIClient

    client = SendGridAPIClient("SG.contract-test", host=prism)
    with pytest.raises(Exception) as e:
        client.client.mail.send.post(request_body={"personalizations": [{"to": [{"email": "a@b.org"}]}],
                                                   "subject": "x"}, timeout=10)
    assert e.value.status_code == 400
    result = SendGridTransport("SG.contract-test", prism, 10)._classify_error(e.value)
    assert result.outcome == "failed" and "required property 'from'" in result.error


def test_prism_429_is_throttled_with_a_reset_already_past(prism):
    from outreach.dispatch import PAUSE_MIN_S, decide

    transport = SendGridTransport("SG.contract-test", prism, timeout_s=10)
    transport._client().client.request_headers["Prefer"] = "code=429"
    result = transport.send(message())
    assert result.outcome == "throttled" and result.status == 429
    assert result.reset_at is not None and result.reset_at < time.time()
    assert decide(result, 1, 5, time.time()).pause_s == PAUSE_MIN_S


@pytest.mark.parametrize("name", CASES)
@pytest.mark.parametrize("sandbox", [False, True], ids=["live", "sandbox"])
def test_the_plain_dict_body_equals_what_the_library_helpers_build(name, sandbox):
    transport = SendGridTransport("SG.contract-test", "http://127.0.0.1:9", timeout_s=1)
    assert transport.payload(CASES[name], sandbox=sandbox) == transport.payload_from_helpers(CASES[name],
                                                                                              sandbox=sandbox)
