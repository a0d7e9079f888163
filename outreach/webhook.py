"""SendGrid's signed Event Webhook: the signature check and the ASGI app that records events.

A post is answered 2xx only once its events are committed, so SendGrid retries
whatever we failed to store; refusals record nothing.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import logging
import os
import time
from concurrent.futures import Future
from typing import Callable, Sequence

from outreach.errors import UserError, one_line
from outreach.text import count

WEBHOOK_PATH = "/webhooks/sendgrid"
SIGNATURE_HEADER = "X-Twilio-Email-Event-Webhook-Signature"
TIMESTAMP_HEADER = "X-Twilio-Email-Event-Webhook-Timestamp"
# Our clock and SendGrid's may disagree by a little; a timestamp further ahead is refused.
FUTURE_SKEW_S = 30.0
# A body is read in time or not at all: a sender silent this long mid-body is cut off (408),
# as is one still sending after BODY_TIME_S; either way what it held is freed for others.
BODY_IDLE_S = 5.0
BODY_TIME_S = 30.0
# A post that finds the memory budget full waits this long for room before it is refused (503).
BUDGET_WAIT_S = 8.0
# A connection with no request under way (new, half a header, kept alive) is closed after this long.
IDLE_CONNECTION_S = 5.0

log = logging.getLogger("outreach.webhook")


# -- the signature ------------------------------------------------------------------------------

def load_public_key(text: str):
    """An ECDSA P-256 public key from base64 DER (as SendGrid shows it) or PEM; ValueError if it is not one."""
    from cryptography.exceptions import UnsupportedAlgorithm
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ec

    text = text.strip()
    try:
        if text.startswith("-----BEGIN"):
            key = serialization.load_pem_public_key(text.encode())
        else:
            key = serialization.load_der_public_key(base64.b64decode("".join(text.split()), validate=True))
    except (ValueError, binascii.Error, UnsupportedAlgorithm) as e:
        raise ValueError(f"not a public key ({type(e).__name__})") from None
    if not isinstance(key, ec.EllipticCurvePublicKey) or key.curve.name != "secp256r1":
        raise ValueError("a public key, but not ECDSA P-256")
    return key


def public_key_from_env(cfg):
    """The webhook's verification key from the variable named by [sendgrid] webhook_public_key_env."""
    env = cfg.sendgrid.webhook_public_key_env
    text = os.environ.get(env, "").strip()
    if not text:
        raise UserError(f"${env} is not set: put the Signed Event Webhook's verification key in it (SendGrid: "
                        f"Settings > Mail Settings > Event Webhook), or start `outreach serve --dashboard-only` "
                        "to look at the dashboard before SendGrid is set up")
    try:
        return load_public_key(text)
    except ValueError as e:
        raise UserError(f"${env} does not hold the webhook verification key: {e}; paste the key as SendGrid "
                        "shows it (base64) or as PEM") from None


def verify_signature(public_key, signature_b64: str, timestamp: str, body: bytes) -> bool:
    """True if the base64 DER ECDSA signature covers timestamp + body exactly."""
    from cryptography.exceptions import InvalidSignature
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.asymmetric import ec

    try:
        signature = base64.b64decode(signature_b64, validate=True)
        public_key.verify(signature, timestamp.encode("ascii") + body, ec.ECDSA(hashes.SHA256()))
    except (InvalidSignature, ValueError, binascii.Error, UnicodeEncodeError):
        return False
    return True


def timestamp_problem(timestamp: str, now: float, max_age_s: float) -> str | None:
    """Why a signed timestamp is refused (too old: a replay; ahead of us; not a number), or None."""
    if not timestamp.isascii() or not timestamp.isdigit() or len(timestamp) > 12:
        return "the timestamp header is not UNIX seconds"
    age = now - int(timestamp)
    if age > max_age_s:
        return f"the signed timestamp is {age:.0f} s old (more than {max_age_s:g} s)"
    if age < -FUTURE_SKEW_S:
        return f"the signed timestamp is {-age:.0f} s in the future"
    return None


# -- the app ----------------------------------------------------------------------------------------

def create_app(cfg, ledger, *, public_key=None, routes: Sequence = (), clock: Callable[[], float] = time.time,
               webhook: bool = True):
    """The Starlette app: POST /webhooks/sendgrid, plus any `routes` a caller adds (a dashboard, say).

    `public_key` defaults to the one in the environment, read once here. With `webhook` false
    (`serve --dashboard-only`) no key is read and every post is answered 503, saying why.
    """
    import contextlib

    from starlette.applications import Starlette
    from starlette.routing import Route

    if webhook:
        key = public_key if public_key is not None else public_key_from_env(cfg)
        receiver = EventReceiver(ledger.events.submit, key, cfg.webhook.max_age_s, cfg.webhook.max_body_bytes, clock)
        endpoint = receiver.handle
    else:
        endpoint = _webhook_off

    @contextlib.asynccontextmanager
    async def lifespan(_app):
        yield
        ledger.close()  # what was accepted is stored before the server exits

    app = Starlette(routes=[Route(WEBHOOK_PATH, endpoint, methods=["POST"]), *routes], lifespan=lifespan)
    app.state.cfg = cfg
    app.state.ledger = ledger
    return app


async def _webhook_off(request):
    """POST /webhooks/sendgrid under `serve --dashboard-only`: refused for now, so SendGrid retries it later."""
    from starlette.responses import JSONResponse

    return JSONResponse({"error": "the webhook is off: this server was started with --dashboard-only; "
                                  "SendGrid retries the post later"},
                        status_code=503, headers={"Connection": "close"})


class ServerBusy(Exception):
    """Posts being read held the whole memory budget for BUDGET_WAIT_S: this one is refused for now (503)."""


class BodyTooLarge(Exception):
    pass


class BodyTooSlow(Exception):
    pass


class EventReceiver:
    """The endpoint: check the signature, read at most max_body bytes, parse, store, answer."""

    def __init__(self, store: Callable[..., Future], public_key, max_age_s: float, max_body: int,
                 clock: Callable[[], float]):
        self.store = store    # (events, set aside) -> a future of the post's IngestResult, once committed
        self.public_key = public_key
        self.max_age_s = max_age_s
        self.max_body = max_body
        self.clock = clock
        # Bodies are held until verified and stored: all posts together may hold this much,
        # so unsigned-but-large posts on many connections cannot exhaust memory.
        self.budget = max(64 << 20, 4 * max_body)
        self.buffered = 0
        self._room: asyncio.Condition | None = None   # made in the server's event loop, on first use

    async def handle(self, request):
        """POST /webhooks/sendgrid."""
        from starlette.responses import JSONResponse

        def refuse(code: int, why: str) -> JSONResponse:
            log.warning("refused a post from %s: %s (HTTP %d)", _peer(request), why, code)
            return JSONResponse({"error": why}, status_code=code)

        signature = request.headers.get(SIGNATURE_HEADER)
        timestamp = request.headers.get(TIMESTAMP_HEADER)
        if not signature or not timestamp:
            return refuse(403, "unsigned: the signature and timestamp headers are required")
        problem = timestamp_problem(timestamp, self.clock(), self.max_age_s)
        if problem:
            return refuse(403, problem)
        held = [0]
        try:
            return await self._handle(request, refuse, held, signature, timestamp)
        finally:
            if held[0]:
                self.buffered -= held[0]
                async with self._room:
                    self._room.notify_all()

    async def _handle(self, request, refuse, held, signature: str, timestamp: str):
        from starlette.concurrency import run_in_threadpool
        from starlette.requests import ClientDisconnect
        from starlette.responses import JSONResponse

        from outreach.events import EventError, parse_post

        try:
            body = await self._read(request, held)
        except BodyTooLarge:
            return refuse(413, f"the body is larger than {self.max_body} bytes ([webhook] max_body_bytes)")
        except ServerBusy:
            return refuse(503, "too many large posts at once; retry later")
        except BodyTooSlow as e:
            # Closing the connection: the rest of its body is never read.
            response = refuse(408, str(e))
            response.headers["Connection"] = "close"
            return response
        except ClientDisconnect:
            return refuse(400, "the sender hung up before the body was complete")
        if not verify_signature(self.public_key, signature, timestamp, body):
            return refuse(403, "the signature does not verify")
        try:
            # Parsing runs in a worker thread, so the event loop keeps reading other posts;
            # storing in the ledger's writer thread, together with whatever else is waiting.
            events, aside = await run_in_threadpool(parse_post, body)
        except EventError as e:
            return refuse(400, "; ".join(e.problems))
        try:
            result = await asyncio.wrap_future(self.store(events, aside))
        except Exception as e:  # noqa: BLE001 - anything unstored must be retried by SendGrid, not lost
            log.error("could not store %d events (%s: %s); answered 503 so SendGrid retries them",
                      len(events), type(e).__name__, one_line(str(e))[:300])
            log.debug("the failure in full", exc_info=True)
            return JSONResponse({"error": "could not store the events; retry later"}, status_code=503)
        for reason in sorted(set(result.aside)):
            log.warning("set aside for review (`outreach events unmatched`): %s, %s",
                        count(result.aside.count(reason), "event"), reason)
        log.info("stored %d of %d events (%d duplicates, %d unmatched); %d letters changed state",
                 result.stored, result.received, result.duplicates, result.unmatched, result.letters_changed)
        return JSONResponse(result.as_dict())

    async def _read(self, request, held: list[int]) -> bytes:
        """The raw body, refused as soon as it passes max_body (whatever Content-Length claims),
        or when it comes too slowly; `held` counts what this post holds of the budget."""
        from starlette.requests import ClientDisconnect

        declared = request.headers.get("content-length", "")
        if declared.isascii() and declared.isdigit() and int(declared) > self.max_body:
            raise BodyTooLarge
        loop = asyncio.get_running_loop()
        deadline = loop.time() + BODY_TIME_S
        chunks, size = [], 0
        while True:
            wait = min(BODY_IDLE_S, deadline - loop.time())
            try:
                async with asyncio.timeout(wait):
                    message = await request.receive()
            except TimeoutError:
                raise BodyTooSlow(f"the body stalled: nothing came for {BODY_IDLE_S:g} s" if wait == BODY_IDLE_S
                                  else f"the body took longer than {BODY_TIME_S:g} s") from None
            if message["type"] == "http.disconnect":
                raise ClientDisconnect
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > self.max_body:
                raise BodyTooLarge
            if chunk:
                await self._hold(len(chunk))
                held[0] += len(chunk)
                chunks.append(chunk)
            if not message.get("more_body", False):
                return b"".join(chunks)

    async def _hold(self, n: int) -> None:
        """Count n more bytes against the budget, waiting up to BUDGET_WAIT_S for room.

        Room comes back as posts finish or are cut off for being slow, so a sender that
        stalls cannot keep it: a correctly signed post waits seconds, not for as long as
        an attacker likes."""
        if self._room is None:
            self._room = asyncio.Condition()
        if self.buffered + n > self.budget:
            try:
                async with self._room, asyncio.timeout(BUDGET_WAIT_S):
                    await self._room.wait_for(lambda: self.buffered + n <= self.budget)
            except TimeoutError:
                raise ServerBusy from None
        self.buffered += n


def server_config(sock):
    """Hypercorn's settings for `serve`, taking over the listening socket `sock` (closed here:
    Hypercorn owns a copy). A connection that sends no request within
    IDLE_CONNECTION_S (a bare socket, half a header, a kept-alive one gone quiet) is closed,
    so idle sockets cannot pile up; there is no connection limit for them to use up either.
    Bodies are timed by EventReceiver. No access log: a dashboard sign-in link carries its
    token in the query string, and a log is no place for it."""
    from hypercorn.config import Config

    config = Config()
    config.bind = [f"fd://{os.dup(sock.fileno())}"]
    sock.close()
    config.keep_alive_timeout = IDLE_CONNECTION_S
    config.read_timeout = IDLE_CONNECTION_S * 6   # no byte at all for this long, whatever the state
    config.accesslog = None
    config.errorlog = logging.getLogger("hypercorn.error")   # through our logging, once
    config.include_server_header = False
    return config


async def serve_app(app, sock, shutdown_trigger=None) -> None:
    """Serve `app` on `sock` until `shutdown_trigger()` returns (default: Ctrl-C or SIGTERM)."""
    from hypercorn.asyncio import serve

    # A connection cut off while its data was still coming ends its task cancelled; asyncio
    # would print that as a traceback, though nothing went wrong.
    asyncio.get_running_loop().set_exception_handler(_quiet_cancellations)
    await serve(app, server_config(sock), shutdown_trigger=shutdown_trigger, mode="asgi")


def _quiet_cancellations(loop, context: dict) -> None:
    if isinstance(context.get("exception"), asyncio.CancelledError):
        log.debug("a connection's task was cancelled as it closed: %s", context.get("message"))
        return
    loop.default_exception_handler(context)


def run_server(app, sock) -> None:
    """Serve `app` on a listening socket until Ctrl-C or SIGTERM, as `outreach serve` does."""
    _allow_many_sockets()
    asyncio.run(serve_app(app, sock))


def _allow_many_sockets() -> None:
    """Raise the soft limit on open files to the hard one: an idle connection costs a descriptor,
    and a default of 1,024 is soon spent by a crowd of them."""
    try:
        import resource
    except ImportError:   # not on this platform
        return
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    want = hard if hard != resource.RLIM_INFINITY else max(soft, 65536)
    if soft != resource.RLIM_INFINITY and soft < want:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (want, hard))
        except (ValueError, OSError):
            pass  # keep what we have


def _peer(request) -> str:
    client = request.client
    return f"{client.host}:{client.port}" if client else "?"
