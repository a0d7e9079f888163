"""The SMTP transport against a real SMTP server in-process (aiosmtpd)."""

from __future__ import annotations

import datetime
import email
import email.policy
import ipaddress
import threading

import pytest

from conftest import ROOT, free_port
from outreach.message import Message
from outreach.transports.smtp import SMTPTransport

aiosmtpd = pytest.importorskip("aiosmtpd", reason="aiosmtpd is a test dependency: pip install -e '.[test]'")
from aiosmtpd.controller import Controller  # noqa: E402
from aiosmtpd.smtp import AuthResult, LoginPassword  # noqa: E402


class Recorder:
    """Keeps every message with the connection it came on."""

    def __init__(self, refuse: set[str] = frozenset()):
        self.messages: list[tuple[int, object, bytes]] = []
        self.refuse = refuse
        self.lock = threading.Lock()

    async def handle_RCPT(self, server, session, envelope, address, rcpt_options):
        if address in self.refuse:
            return "550 5.1.1 mailbox unavailable"
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server, session, envelope):
        if "spam-trap@house.example.org" in envelope.rcpt_tos:
            return "554 5.6.0 Message rejected as spam"
        with self.lock:
            self.messages.append((id(session), envelope, envelope.original_content or envelope.content))
        return "250 Message accepted for delivery"


def authenticator(server, session, envelope, mechanism, auth_data):
    ok = isinstance(auth_data, LoginPassword) and auth_data.login == b"organizer" and auth_data.password == b"s3cret"
    return AuthResult(success=ok, handled=False)


@pytest.fixture
def smtp_server():
    recorder = Recorder(refuse={"nobody@house.example.org"})
    controller = Controller(recorder, hostname="127.0.0.1", port=free_port(), authenticator=authenticator,
                            auth_require_tls=False)
    controller.start()
    yield controller, recorder
    controller.stop()


def letter(i: int, **changes) -> Message:
    base = dict(letter_id=f"letter{i:04d}", campaign="korea-exception", from_name="Organización Ñandú",
                from_email="organizer@mine-ban-advocates.org", to_name="Pablo José Hernández",
                to_email=f"pablo.{i}@house.example.org", subject="Carta sobre las minas — Korea exception",
                text="Dear Resident Commissioner Hernández Rivera:\n\nTexto con acentos: áéíóú ñ.\n",
                html="<p>Dear Resident Commissioner Hernández Rivera:</p>")
    base.update(changes)
    return Message(**base)


def test_non_ascii_names_and_addresses_arrive_readable(smtp_server):
    controller, recorder = smtp_server
    t = SMTPTransport("127.0.0.1", controller.port, "none", 5, "organizer", "s3cret")
    results = [t.send(letter(i)) for i in range(3)]
    results.append(t.send(letter(9, to_name="José Ñúñez", to_email="jose@café.example.org")))
    t.close()
    assert [r.outcome for r in results] == ["accepted"] * 4
    _, envelope, raw = recorder.messages[0]
    msg = email.message_from_bytes(raw, policy=email.policy.default)
    assert msg["To"].addresses[0].display_name == "Pablo José Hernández"
    assert msg["From"].addresses[0].display_name == "Organización Ñandú"
    assert msg["Subject"] == "Carta sobre las minas — Korea exception"
    assert "Texto con acentos: áéíóú ñ." in msg.get_body(("plain",)).get_content()
    # An internationalised domain travels as its ASCII form and reads back the same.
    _, envelope, raw = recorder.messages[3]
    assert envelope.rcpt_tos == ["jose@xn--caf-dma.example.org"]
    to = email.message_from_bytes(raw, policy=email.policy.default)["To"].addresses[0]
    assert to.display_name == "José Ñúñez" and to.domain.encode("ascii").decode("idna") == "café.example.org"


def test_one_connection_is_reused_across_a_batch(smtp_server):
    controller, recorder = smtp_server
    t = SMTPTransport("127.0.0.1", controller.port, "none", 5, "organizer", "s3cret")
    for i in range(10):
        assert t.send(letter(i)).outcome == "accepted"
    t.close()
    assert len({session for session, _, _ in recorder.messages}) == 1


def test_a_refused_recipient_fails_with_the_server_reason_and_the_batch_goes_on(smtp_server):
    controller, recorder = smtp_server
    t = SMTPTransport("127.0.0.1", controller.port, "none", 5, "organizer", "s3cret")
    refused = t.send(letter(1, to_email="nobody@house.example.org"))
    after = t.send(letter(2))
    t.close()
    assert refused.outcome == "failed" and refused.status == 550 and "mailbox unavailable" in refused.error
    assert after.outcome == "accepted"


def test_a_message_refused_after_data_is_failed_not_accepted(smtp_server):
    controller, recorder = smtp_server
    t = SMTPTransport("127.0.0.1", controller.port, "none", 5, "organizer", "s3cret")
    result = t.send(letter(1, to_email="spam-trap@house.example.org"))
    t.close()
    assert result.outcome == "failed" and result.status == 554 and "rejected as spam" in result.error
    assert recorder.messages == []


def test_wrong_credentials_are_unauthorized_and_the_password_is_never_shown(smtp_server):
    controller, _ = smtp_server
    t = SMTPTransport("127.0.0.1", controller.port, "none", 5, "organizer", "wrong-password-xyz")
    result = t.send(letter(1))
    assert result.outcome == "unauthorized" and "wrong-password-xyz" not in (result.error or "")


def test_no_server_is_a_retry_not_a_loss():
    t = SMTPTransport("127.0.0.1", free_port(), "none", 2)
    assert t.send(letter(1)).outcome == "retry"


def self_signed(tmp_path):
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])
    now = datetime.datetime.now(datetime.timezone.utc)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(x509.random_serial_number()).not_valid_before(now - datetime.timedelta(days=1))
            .not_valid_after(now + datetime.timedelta(days=1))
            .add_extension(x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), False)
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), True)
            .sign(key, hashes.SHA256()))
    cert_path, key_path = tmp_path / "cert.pem", tmp_path / "key.pem"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    return cert_path, key_path


@pytest.mark.parametrize("security", ["starttls", "ssl"])
def test_tls_with_a_verified_certificate(tmp_path, monkeypatch, security):
    """STARTTLS on a plain port, or TLS from the first byte ("ssl"): the certificate is checked."""
    import ssl

    cert, key = self_signed(tmp_path)
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(cert, key)
    recorder = Recorder()
    tls = (dict(tls_context=context, require_starttls=True) if security == "starttls"
           else dict(ssl_context=context, auth_require_tls=False))
    controller = Controller(recorder, hostname="127.0.0.1", port=free_port(), authenticator=authenticator, **tls)
    controller.start()
    try:
        monkeypatch.setenv("SSL_CERT_FILE", str(cert))  # the client trusts our test certificate
        t = SMTPTransport("127.0.0.1", controller.port, security, 5, "organizer", "s3cret")
        assert [t.send(letter(n)).outcome for n in (1, 2)] == ["accepted", "accepted"]
        t.close()
        monkeypatch.delenv("SSL_CERT_FILE")
        untrusted = SMTPTransport("127.0.0.1", controller.port, security, 5, "organizer", "s3cret")
        assert untrusted.send(letter(3)).outcome == "retry"  # an unverified certificate is refused
    finally:
        controller.stop()
    assert len(recorder.messages) == 2


def test_a_live_campaign_over_smtp(project, monkeypatch, outreach, smtp_server):
    controller, recorder = smtp_server
    monkeypatch.setenv("SMTP_USER", "organizer")
    monkeypatch.setenv("SMTP_PASSWORD", "s3cret")
    project.config.write_text(f"""
[sender]
name = "Jordan Organizer"
email = "jordan@mine-ban-advocates.org"

[delivery]
transport = "smtp"
rate_per_minute = 60000
concurrency = 2

[smtp]
host = "127.0.0.1"
port = {controller.port}
security = "none"
username_env = "SMTP_USER"
password_env = "SMTP_PASSWORD"

[campaigns.korea-exception]
contacts = "contacts.csv"
templates = "{ROOT / 'templates' / 'korea-exception'}"
""")
    r = outreach("--config", project.config, "send", "--live", "--yes")
    assert r.code == 0, r.out + r.err
    assert len(recorder.messages) == 14
    assert len({s for s, _, _ in recorder.messages}) <= 2  # one connection per worker
    assert "s3cret" not in r.out + r.err
