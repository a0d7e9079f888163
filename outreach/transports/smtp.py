"""SMTP transport: smtplib with STARTTLS or SSL, credentials from the environment, one connection
reused per worker; its [smtp] config table."""

from __future__ import annotations

import os
import threading
from dataclasses import dataclass

from outreach.errors import UserError
from outreach.message import Message, to_eml
from outreach.transports import Scrubber, SendResult, usable_secret

# smtplib (with ssl and the email package) is imported where a connection is made: reading
# the [smtp] table, which every command's config does, must not cost its ~40 ms.

DELIVERS = True
PORTS = {"starttls": 587, "ssl": 465, "none": 25}


@dataclass(frozen=True)
class SMTP:
    host: str = ""
    port: int = 587
    security: str = "starttls"      # starttls, ssl or none
    username_env: str | None = None
    password_env: str | None = None


def read_settings(table_of) -> SMTP | None:
    """The [smtp] table, if the config has one."""
    from outreach.config_table import env_problem

    m = table_of("smtp")
    if not m.present:
        return None
    security = m.text("security", "starttls", check=lambda v: None if v in PORTS
                      else "should be \"starttls\", \"ssl\" or \"none\"") or "starttls"
    settings = SMTP(
        host=m.text("host"),
        port=m.number("port", PORTS[security], 0, 65535, integer=True),
        security=security,
        username_env=m.text("username_env", None, check=env_problem),
        password_env=m.text("password_env", None, check=env_problem),
    )
    m.done()
    return settings


def secret_variables(cfg) -> list[str]:
    s = cfg.transport_settings("smtp")
    return [env for env in (s.username_env, s.password_env) if env] if s is not None else []


def from_config(cfg) -> "SMTPTransport":
    """The [smtp] settings, with the credentials read from the environment variables they name."""
    s = cfg.transport_settings("smtp")
    if s is None or not s.host:
        raise UserError(f"{cfg.path}: [delivery] transport is \"smtp\" but [smtp] host is not set")
    username = usable_secret(s.username_env, os.environ.get(s.username_env, ""), "a user name", token=False) \
        if s.username_env else ""
    password = usable_secret(s.password_env, os.environ.get(s.password_env, ""), "a password", token=False) \
        if s.password_env else ""
    if s.username_env and not username:
        raise UserError(f"${s.username_env} is not set: export the SMTP user name in it ([smtp] username_env)")
    if s.password_env and not password:
        raise UserError(f"${s.password_env} is not set: export the SMTP password in it ([smtp] password_env)")
    return SMTPTransport(s.host, s.port, s.security, cfg.delivery.timeout_s, username or None, password or None)


class SMTPTransport:
    """Sends each message over a connection kept open per worker thread and reused across the batch."""

    name = "smtp"
    paced = True

    def __init__(self, host: str, port: int, security: str, timeout_s: float,
                 username: str | None = None, password: str | None = None):
        self.host, self.port, self.security, self.timeout_s = host, port, security, timeout_s
        self.where = f"{host}:{port}, {security}"
        self._username, self._password = username, password
        self._local = threading.local()
        self._all: list[smtplib.SMTP] = []
        self._lock = threading.Lock()
        self.scrub = Scrubber(password)

    def _connect(self) -> smtplib.SMTP:
        import smtplib
        import ssl

        context = ssl.create_default_context()
        if self.security == "ssl":
            conn = smtplib.SMTP_SSL(self.host, self.port, timeout=self.timeout_s, context=context)
        else:
            conn = smtplib.SMTP(self.host, self.port, timeout=self.timeout_s)
            if self.security == "starttls":
                conn.starttls(context=context)
        if self._username:
            conn.ehlo_or_helo_if_needed()
            if "plain" in conn.esmtp_features.get("auth", "").lower().split():
                # One mechanism, so a refusal is a clear 535 rather than a fall-through to the next.
                conn.user, conn.password = self._username, self._password or ""
                code, reply = conn.auth("PLAIN", conn.auth_plain)
            else:
                conn.login(self._username, self._password or "")
        with self._lock:
            self._all.append(conn)
        return conn

    def _connection(self, fresh: bool = False) -> smtplib.SMTP:
        conn = getattr(self._local, "conn", None)
        if conn is None or fresh:
            if conn is not None:
                _quietly_close(conn)
            conn = self._local.conn = self._connect()
        return conn

    def send(self, message: Message) -> SendResult:
        import smtplib

        # SMTP lines end in CRLF; smtplib converts str messages but sends bytes as they are.
        data = to_eml(message).replace(b"\n", b"\r\n")
        for attempt in (1, 2):
            try:
                conn = self._connection(fresh=attempt == 2)
            except smtplib.SMTPAuthenticationError as e:
                return SendResult("unauthorized", e.smtp_code, error=self._reply(e))
            except (OSError, smtplib.SMTPException) as e:
                return SendResult("retry", error=self.scrub(f"could not connect to {self.host}:{self.port}: "
                                                            f"{type(e).__name__}: {e}"))
            try:
                self._envelope(conn, message)
            except smtplib.SMTPServerDisconnected:
                if attempt == 1:
                    continue  # the reused connection had gone stale: nothing was sent, reconnect once
                return SendResult("retry", error="the server closed the connection before the message")
            except smtplib.SMTPResponseException as e:
                _reset(conn)
                return self._refused(e)
            except smtplib.SMTPRecipientsRefused as e:
                _reset(conn)
                code, text = next(iter(e.recipients.values()))
                kind = "retry" if 400 <= code < 500 else "failed"
                return SendResult(kind, code, error=f"SMTP {code}: {text.decode(errors='replace')}")
            except (OSError, smtplib.SMTPException) as e:
                return SendResult("retry", error=f"{type(e).__name__}: {e}")
            # From here the message itself is on the wire: a lost answer is `unknown`.
            try:
                code, reply = conn.data(data)
            except smtplib.SMTPResponseException as e:
                _reset(conn)
                return self._refused(e)
            except (OSError, smtplib.SMTPException) as e:
                self._local.conn = None
                return SendResult("unknown", error=f"connection lost while the message was being sent "
                                                   f"({type(e).__name__}); it may have been accepted")
            if code != 250:
                # The server answered, refusing the message: it was not accepted.
                kind = "retry" if 400 <= code < 500 else "failed"
                return SendResult(kind, code, error=f"SMTP {code}: {reply.decode(errors='replace')}")
            return SendResult("accepted", code, message_id=f"<{message.letter_id}>")
        return SendResult("retry", error="could not send")

    @staticmethod
    def _envelope(conn: smtplib.SMTP, message: Message) -> None:
        import smtplib

        conn.ehlo_or_helo_if_needed()
        sender, recipient = ascii_address(message.from_email), ascii_address(message.to_email)
        code, reply = conn.mail(sender)
        if code != 250:
            raise smtplib.SMTPSenderRefused(code, reply, sender)
        code, reply = conn.rcpt(recipient)
        if code not in (250, 251):
            raise smtplib.SMTPRecipientsRefused({recipient: (code, reply)})

    def _reply(self, e: smtplib.SMTPResponseException) -> str:
        import smtplib

        text = e.smtp_error.decode(errors="replace") if isinstance(e.smtp_error, bytes) else str(e.smtp_error)
        return self.scrub(f"SMTP {e.smtp_code}: {' '.join(text.split())}")

    def _refused(self, e: smtplib.SMTPResponseException) -> SendResult:
        import smtplib

        if e.smtp_code in (530, 535):
            return SendResult("unauthorized", e.smtp_code, error=self._reply(e))
        kind = "retry" if 400 <= e.smtp_code < 500 else "failed"
        return SendResult(kind, e.smtp_code, error=self._reply(e))

    def close(self, complete: bool = True) -> None:
        with self._lock:
            conns, self._all = self._all, []
        for conn in conns:
            _quietly_close(conn)
        self._local = threading.local()


def ascii_address(address: str) -> str:
    """The envelope form of an address: an internationalised domain in its ASCII (IDNA) form."""
    local, _, domain = address.rpartition("@")
    return address if domain.isascii() else f"{local}@{domain.encode('idna').decode('ascii')}"


def _reset(conn: smtplib.SMTP) -> None:
    import smtplib

    try:
        conn.rset()
    except (OSError, smtplib.SMTPException):
        pass


def _quietly_close(conn: smtplib.SMTP) -> None:
    import smtplib

    try:
        conn.quit()
    except (OSError, smtplib.SMTPException, OSError):
        try:
            conn.close()
        except OSError:
            pass
