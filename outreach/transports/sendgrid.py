"""SendGrid's v3 Mail Send, through the official `sendgrid` library; its [sendgrid] config table."""

from __future__ import annotations

import errno
import json
import os
import socket
import threading
from dataclasses import dataclass

from outreach.errors import UserError
from outreach.message import Message, clean_header, display_name, message_id
from outreach.transports import Scrubber, SendResult, usable_secret

DELIVERS = True


@dataclass(frozen=True)
class SendGrid:
    api_host: str = "https://api.sendgrid.com"
    api_key_env: str = "SENDGRID_API_KEY"
    webhook_public_key_env: str = "SENDGRID_WEBHOOK_PUBLIC_KEY"   # the Event Webhook's key (outreach serve)


def read_settings(table_of) -> SendGrid:
    """The [sendgrid] table (its defaults when there is none)."""
    from outreach.config_table import env_problem, url_problem

    g = table_of("sendgrid")
    settings = SendGrid(
        api_host=(g.text("api_host", SendGrid.api_host, check=url_problem) or "").rstrip("/"),
        api_key_env=g.text("api_key_env", SendGrid.api_key_env, check=env_problem),
        webhook_public_key_env=g.text("webhook_public_key_env", SendGrid.webhook_public_key_env,
                                      check=env_problem),
    )
    g.done()
    return settings


def secret_variables(cfg) -> list[str]:
    return [cfg.sendgrid.api_key_env]


def from_config(cfg) -> "SendGridTransport":
    """SendGrid, with the API key from the variable named by [sendgrid] api_key_env."""
    settings = cfg.sendgrid
    env = settings.api_key_env
    key = usable_secret(env, os.environ.get(env, ""), "an API key")
    if not key:
        raise UserError(f"${env} is not set: export your SendGrid API key in it ({cfg.path}: "
                        "[sendgrid] api_key_env names the variable); nothing was sent")
    return SendGridTransport(key, settings.api_host, cfg.delivery.timeout_s, key_env=env,
                             sender=cfg.sender.email)


# -- SendGrid -----------------------------------------------------------------------------

class SendGridTransport:
    """SendGrid's v3 Mail Send through the official `sendgrid` library, one client per thread."""

    name = "sendgrid"
    paced = True

    def __init__(self, api_key: str, host: str, timeout_s: float, *, key_env: str = "SENDGRID_API_KEY",
                 sender: str = ""):
        import logging

        # python_http_client logs request headers, the API key among them, at DEBUG:
        # that logger never goes below WARNING here.
        logging.getLogger("python_http_client").setLevel(logging.WARNING)
        self._api_key = api_key
        self.host = host
        self.where = host
        self.timeout_s = timeout_s
        self.key_env = key_env
        self.sender = sender
        self._local = threading.local()
        self.scrub = Scrubber(api_key)

    def _client(self):
        client = getattr(self._local, "client", None)
        if client is None:
            from sendgrid import SendGridAPIClient

            client = SendGridAPIClient(api_key=self._api_key, host=self.host)
            # The library has no default timeout: every request gets ours.
            client.client.timeout = self.timeout_s
            self._local.client = client
        return client

    def payload(self, message: Message, *, sandbox: bool = False) -> dict:
        """The Mail Send request body (v3 JSON), as the library's Mail helper builds it.

        Built as a plain dict because the helper objects cost more CPU than the
        rest of a send; tests check it equals the helper's output, field for field.
        """
        body: dict = {
            "from": _address(message.from_email, message.from_name),
            "subject": clean_header(message.subject),
            "personalizations": [{"to": [_address(message.to_email, message.to_name)]}],
            "content": [{"type": "text/plain", "value": message.text},
                        {"type": "text/html", "value": message.html}],
            "categories": [message.campaign],
            # Identifiers only, never personal data: events come back carrying them.
            "custom_args": {"campaign_id": message.campaign,
                            ("test_of" if message.is_test else "letter_id"): message.letter_id},
        }
        if message.reply_to:
            body["reply_to"] = {"email": message.reply_to}
        # Our own Message-ID, so an office's reply names its letter in In-Reply-To.
        body["headers"] = {"Message-ID": message_id(message)}
        if sandbox:
            body["mail_settings"] = {"sandbox_mode": {"enable": True}}
        return body

    def payload_from_helpers(self, message: Message, *, sandbox: bool = False) -> dict:
        """The same body built with the library's Mail helper objects (the reference for payload())."""
        from sendgrid.helpers.mail import (
            Category, CustomArg, From, Header, HtmlContent, Mail, MailSettings, PlainTextContent, ReplyTo,
            SandBoxMode, To,
        )

        mail = Mail(from_email=From(message.from_email, display_name(message.from_name) or None),
                    to_emails=To(message.to_email, display_name(message.to_name) or None),
                    subject=clean_header(message.subject),
                    plain_text_content=PlainTextContent(message.text),
                    html_content=HtmlContent(message.html))
        if message.reply_to:
            mail.reply_to = ReplyTo(message.reply_to)
        mail.header = Header("Message-ID", message_id(message))
        key = "test_of" if message.is_test else "letter_id"
        mail.custom_arg = [CustomArg(key, message.letter_id), CustomArg("campaign_id", message.campaign)]
        mail.category = Category(message.campaign)
        if sandbox:
            settings = MailSettings()
            settings.sandbox_mode = SandBoxMode(True)
            mail.mail_settings = settings
        return mail.get()

    def send(self, message: Message, *, sandbox: bool = False) -> SendResult:
        body = self.payload(message, sandbox=sandbox)
        client = self._client()
        try:
            response = client.client.mail.send.post(request_body=body, timeout=self.timeout_s)
        except Exception as e:  # noqa: BLE001 - classified below, never raised to the caller
            return self._classify_error(e)
        return SendResult("accepted", response.status_code, _header(response.headers, "X-Message-Id"))

    def _classify_error(self, e: Exception) -> SendResult:
        import http.client
        import urllib.error

        from python_http_client.exceptions import HTTPError

        if isinstance(e, HTTPError):
            status = e.status_code
            reason = self.scrub(_service_reason(e))
            if status == 429:
                return SendResult("throttled", status, error=reason,
                                  reset_at=_float(_header(e.headers, "X-RateLimit-Reset")))
            if status == 401:
                return SendResult("unauthorized", status, error=reason)
            if status >= 500:
                return SendResult("retry", status, error=reason)
            return SendResult("failed", status, error=reason)
        # urllib wraps errors raised while connecting and writing the request in URLError:
        # the request did not (completely) leave, so trying again cannot duplicate it.
        if isinstance(e, urllib.error.URLError):
            return SendResult("retry", error=self.scrub(f"could not reach SendGrid at {self.host} "
                                                        f"({_unreachable(e.reason)})"))
        # Anything raised while waiting for the answer: the request left.
        if isinstance(e, (TimeoutError, socket.timeout)):
            return SendResult("unknown", error=f"no answer within {self.timeout_s:g} s; it may have been accepted")
        if isinstance(e, (http.client.HTTPException, ConnectionError, OSError)):
            return SendResult("unknown", error=self.scrub(f"connection lost after the request was sent "
                                                          f"({type(e).__name__}); it may have been accepted"))
        return SendResult("unknown", error=self.scrub(f"{type(e).__name__}: {e}"))

    def preflight(self, message: Message) -> None:
        """SendGrid's sandbox mode checks key, sender and payload without delivering; any refusal stops here."""
        result = self.send(message, sandbox=True)
        if result.outcome == "accepted":
            return
        if result.outcome == "unauthorized":
            raise UserError(f"SendGrid refused the API key in ${self.key_env} ({result.error}); check the key; "
                            "nothing was sent")
        if result.status == 403:
            raise UserError(f"SendGrid refused the sandbox check ({result.error}): the key needs the Mail Send "
                            f"permission and [sender] email {self.sender} must be a verified sender; nothing was sent")
        if result.outcome == "failed":
            raise UserError(f"SendGrid rejected the first letter in the sandbox check ({result.error}); "
                            "nothing was sent")
        raise UserError(f"the sandbox check could not complete ({result.error or result.outcome}); "
                        f"check [sendgrid] api_host {self.host} and the network; nothing was sent")

    def close(self, complete: bool = True) -> None:
        self._local = threading.local()


def _address(email: str, name: str) -> dict:
    """As the .eml has it: the same cleaned, bounded display name."""
    name = display_name(name)
    return {"name": name, "email": email} if name else {"email": email}


def _header(headers, name: str) -> str | None:
    if headers is None:
        return None
    try:
        return headers.get(name)
    except AttributeError:
        return dict(headers).get(name)


def _float(value: str | None) -> float | None:
    try:
        return float(value) if value is not None else None
    except ValueError:
        return None


def _unreachable(reason) -> str:
    """Why a connection was never made, in a user's words first."""
    if isinstance(reason, socket.gaierror):
        return "no network? its name does not resolve"
    if isinstance(reason, ConnectionRefusedError):
        return "the connection was refused"
    if isinstance(reason, OSError) and reason.errno in (errno.ENETUNREACH, errno.EHOSTUNREACH):
        return "no network? no route to it"
    return f"no network? {_reason(reason)}"


def _reason(reason) -> str:
    if isinstance(reason, BaseException):
        return f"{type(reason).__name__}: {reason}" if str(reason) else type(reason).__name__
    return str(reason)


def _service_reason(e) -> str:
    """SendGrid's own words for a refusal: the messages in the JSON body (str(e) says only 'Bad Request')."""
    raw = e.body.decode("utf-8", "replace") if isinstance(e.body, bytes) else str(e.body or "")
    parts = []
    try:
        data = json.loads(raw)
        for err in data.get("errors", []):
            field = f" ({err['field']})" if err.get("field") else ""
            parts.append(f"{err.get('message', '').strip()}{field}")
    except (ValueError, AttributeError, TypeError):
        pass
    violations = _header(e.headers, "sl-violations")
    if violations:
        parts.append(violations)
    text = "; ".join(p for p in parts if p) or " ".join(raw.split())[:500] or "no reason given"
    return f"HTTP {e.status_code}: {text}"
