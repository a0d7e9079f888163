"""Transports: one method, `send(message) -> SendResult`, and no knowledge of campaigns or ledgers.

A transport reports what happened in terms the dispatcher can act on:

- accepted:     the service took the message (SendGrid's 202 is not delivery);
- throttled:    refused for rate (429); `reset_at` says when to try again;
- retry:        never left or refused for a passing reason (5xx, refused connection, connect timeout);
- failed:       refused for good (400, 403, 413, ...), with the service's own reason;
- unauthorized: the credentials were refused (401): stop everything;
- unknown:      the request left and no answer came (read timeout, cut connection): it may
                have been accepted, so it must never be resent blindly.
"""

from __future__ import annotations

import json
import socket
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from outreach.message import Message

OUTCOMES = ("accepted", "throttled", "retry", "failed", "unauthorized", "unknown")


@dataclass(frozen=True)
class SendResult:
    outcome: str
    status: int | None = None
    message_id: str | None = None
    error: str | None = None
    reset_at: float | None = None   # throttled: epoch seconds when the limit resets


class Transport(Protocol):
    name: str

    def send(self, message: Message, *, sandbox: bool = False) -> SendResult: ...

    def close(self) -> None: ...


class Scrubber:
    """Removes a secret from any text before it is shown, logged or stored."""

    def __init__(self, *secrets: str | None):
        self.secrets = [s for s in secrets if s and len(s) >= 4]

    def __call__(self, text: str | None) -> str | None:
        if text is None:
            return None
        for s in self.secrets:
            text = text.replace(s, "***")
        return text


# -- SendGrid -----------------------------------------------------------------------------

class SendGridTransport:
    """SendGrid's v3 Mail Send through the official `sendgrid` library, one client per thread."""

    name = "sendgrid"

    def __init__(self, api_key: str, host: str, timeout_s: float):
        import logging

        # python_http_client logs request headers, the API key among them, at DEBUG:
        # that logger never goes below WARNING here.
        logging.getLogger("python_http_client").setLevel(logging.WARNING)
        _share_urllib_opener()
        self._api_key = api_key
        self.host = host
        self.timeout_s = timeout_s
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
            "subject": message.subject,
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
        if sandbox:
            body["mail_settings"] = {"sandbox_mode": {"enable": True}}
        return body

    def payload_from_helpers(self, message: Message, *, sandbox: bool = False) -> dict:
        """The same body built with the library's Mail helper objects (the reference for payload())."""
        from sendgrid.helpers.mail import (
            Category, CustomArg, From, HtmlContent, Mail, MailSettings, PlainTextContent, ReplyTo,
            SandBoxMode, To,
        )

        mail = Mail(from_email=From(message.from_email, message.from_name or None),
                    to_emails=To(message.to_email, message.to_name or None),
                    subject=message.subject,
                    plain_text_content=PlainTextContent(message.text),
                    html_content=HtmlContent(message.html))
        if message.reply_to:
            mail.reply_to = ReplyTo(message.reply_to)
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
            return SendResult("retry", error=self.scrub(f"could not reach {self.host}: {_reason(e.reason)}"))
        # Anything raised while waiting for the answer: the request left.
        if isinstance(e, (TimeoutError, socket.timeout)):
            return SendResult("unknown", error=f"no answer within {self.timeout_s:g} s; it may have been accepted")
        if isinstance(e, (http.client.HTTPException, ConnectionError, OSError)):
            return SendResult("unknown", error=self.scrub(f"connection lost after the request was sent "
                                                          f"({type(e).__name__}); it may have been accepted"))
        return SendResult("unknown", error=self.scrub(f"{type(e).__name__}: {e}"))

    def close(self) -> None:
        self._local = threading.local()


def _address(email: str, name: str) -> dict:
    return {"name": name, "email": email} if name else {"email": email}


def _share_urllib_opener() -> None:
    """Give python_http_client one shared urllib opener instead of a new one per request.

    The library calls urllib.request.build_opener() for every request, which
    builds a dozen handlers and re-reads the proxy environment: about half a
    millisecond of CPU under the GIL each time, the largest cost of a send at
    high concurrency. urllib's own urlopen() shares one opener the same way.
    Every other name resolves to urllib.request unchanged.
    """
    import urllib.request

    import python_http_client.client as phc

    if isinstance(getattr(phc, "urllib", None), _SharedOpenerUrllib):
        return
    if getattr(phc, "urllib", None) is not urllib.request:
        return  # a library version that does not work this way: leave it alone
    phc.urllib = _SharedOpenerUrllib(urllib.request.build_opener())


class _SharedOpenerUrllib:
    def __init__(self, opener):
        self._opener = opener

    def build_opener(self, *handlers):
        import urllib.request

        return self._opener if not handlers else urllib.request.build_opener(*handlers)

    def __getattr__(self, name):
        import urllib.request

        return getattr(urllib.request, name)


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


# -- Outbox ---------------------------------------------------------------------------------

class OutboxTransport:
    """Writes each message as an .eml file into a folder; nothing leaves the machine."""

    name = "outbox"

    def __init__(self, folder: Path):
        self.folder = folder

    def send(self, message: Message, *, sandbox: bool = False) -> SendResult:
        from outreach.message import to_eml

        if sandbox:
            return SendResult("accepted", 200)
        self.folder.mkdir(parents=True, exist_ok=True)
        stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
        suffix = "-test" if message.is_test else ""
        path = self.folder / f"{message.letter_id}{suffix}-{stamp}.eml"
        path.write_bytes(to_eml(message))
        return SendResult("accepted", None, message_id=path.name)

    def close(self) -> None:
        pass
