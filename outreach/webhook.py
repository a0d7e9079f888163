"""SendGrid's signed Event Webhook: the signature check and the ASGI app that records events.

A post is answered 2xx only once its events are committed, so SendGrid retries
whatever we failed to store; refusals record nothing.
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
from concurrent.futures import Future
from typing import Callable, Sequence

from outreach.errors import UserError, one_line
from outreach.signature import SIGNATURE_HEADER, TIMESTAMP_HEADER, key_from_env, timestamp_problem, verify_signature
from outreach.text import count

WEBHOOK_PATH = "/webhooks/sendgrid"
INBOUND_PATH = "/webhooks/inbound"
# A body is read in time or not at all: a sender silent this long mid-body is cut off (408),
# as is one still sending after BODY_TIME_S; either way what it held is freed for others.
BODY_IDLE_S = 5.0
BODY_TIME_S = 30.0
# A post that finds the memory budget full waits this long for room before it is refused (503).
BUDGET_WAIT_S = 8.0
# A connection with no request under way (new, half a header, kept alive) is closed after this long.
IDLE_CONNECTION_S = 5.0

log = logging.getLogger("outreach.webhook")


# -- the key ----------------------------------------------------------------------------------------

def public_key_from_env(cfg):
    """The webhook's verification key from the variable named by [sendgrid] webhook_public_key_env."""
    env = cfg.sendgrid.webhook_public_key_env
    text = os.environ.get(env, "").strip()
    if not text:
        raise UserError(f"${env} is not set: put the Signed Event Webhook's verification key in it (SendGrid: "
                        f"Settings > Mail Settings > Event Webhook), or start `outreach serve --dashboard-only` "
                        "to look at the dashboard before SendGrid is set up")
    return key_from_env(env, "the webhook verification key")


# -- the app ----------------------------------------------------------------------------------------

def create_app(cfg, ledger, *, public_key=None, routes: Sequence = (), clock: Callable[[], float] = time.time,
               webhook: bool = True, inbound_key=None):
    """The Starlette app: POST /webhooks/sendgrid, with [replies] address POST /webhooks/inbound,
    plus any `routes` a caller adds (a dashboard, say).

    The keys default to the ones in the environment, read once here. With `webhook` false
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
    posts = [Route(WEBHOOK_PATH, endpoint, methods=["POST"])]
    if cfg.replies.address:
        if webhook:
            key = inbound_key if inbound_key is not None else inbound_key_from_env(cfg)
            inbound = InboundReceiver(ledger.replies, cfg.replies.address, key, cfg.webhook.max_age_s,
                                      cfg.replies.max_body_bytes, clock)
            posts.append(Route(INBOUND_PATH, inbound.handle, methods=["POST"]))
        else:
            posts.append(Route(INBOUND_PATH, _webhook_off, methods=["POST"]))

    @contextlib.asynccontextmanager
    async def lifespan(_app):
        yield
        ledger.close()  # what was accepted is stored before the server exits

    app = Starlette(routes=[*posts, *routes], lifespan=lifespan)
    app.state.cfg = cfg
    app.state.ledger = ledger
    return app


async def _webhook_off(request):
    """A post to the webhooks under `serve --dashboard-only`: refused for now, so SendGrid retries it later."""
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

    LIMIT_KEY = "[webhook] max_body_bytes"
    SLOW_STATUS = 408

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
        """A signed post: the headers checked, the body read in time and verified, then stored."""
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
            body, refused = await self._body(request, refuse, held)
            if refused is not None:
                return refused
            if not verify_signature(self.public_key, signature, timestamp, body):
                return refuse(403, "the signature does not verify")
            return await self._store(request, body, refuse)
        finally:
            if held[0]:
                self.buffered -= held[0]
                async with self._room:
                    self._room.notify_all()

    async def _store(self, request, body: bytes, refuse):
        """A signed, verified body: parse it, store its events, answer."""
        from starlette.concurrency import run_in_threadpool
        from starlette.responses import JSONResponse

        from outreach.events import EventError, parse_post

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

    async def _body(self, request, refuse, held: list[int]):
        """(body, None), or (None, the answer refusing it)."""
        from starlette.requests import ClientDisconnect

        try:
            return await self._read(request, held), None
        except BodyTooLarge:
            return None, refuse(413, f"the body is larger than {self.max_body} bytes ({self.LIMIT_KEY})")
        except ServerBusy:
            return None, refuse(503, "too many large posts at once; retry later")
        except BodyTooSlow as e:
            # Closing the connection: the rest of its body is never read.
            response = refuse(self.SLOW_STATUS, str(e))
            response.headers["Connection"] = "close"
            return None, response
        except ClientDisconnect:
            return None, refuse(400, "the sender hung up before the body was complete")

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


class InboundReceiver(EventReceiver):
    """POST /webhooks/inbound: SendGrid Inbound Parse, an office's reply, signed like the Event Webhook.

    Inbound Parse retries only 5xx answers and drops a message after 3 days, so a genuine
    reply is never refused: the size limit sits above SendGrid's own, and a signed post that
    cannot be read is kept whole for review (200). Unsigned and forged posts get 403 and
    nothing is stored. The same reply posted again is stored once.
    """

    LIMIT_KEY = "[replies] max_body_bytes"
    # Inbound Parse retries only 5xx: a reply cut off for being slow is asked for again, not lost.
    SLOW_STATUS = 503

    def __init__(self, replies, address: str, public_key, max_age_s: float, max_body: int,
                 clock: Callable[[], float]):
        super().__init__(None, public_key, max_age_s, max_body, clock)
        self.replies = replies
        self.address = address

    async def _store(self, request, body: bytes, refuse):
        import hashlib

        from starlette.concurrency import run_in_threadpool
        from starlette.responses import JSONResponse

        from outreach.inbound import ReplyError, parse_inbound_post

        try:
            try:
                reply = await run_in_threadpool(parse_inbound_post, request.headers.get("content-type", ""), body)
            except Exception as e:  # noqa: BLE001 - a signed post we cannot read is kept, never refused
                problem = one_line(str(e)) if isinstance(e, ReplyError) else f"{type(e).__name__}: {one_line(str(e))}"
                key = "sha256:" + hashlib.sha256(body).hexdigest()
                kept = await run_in_threadpool(self.replies.record_unreadable, body, problem[:500], key)
                log.warning("kept a signed reply that could not be read, for review (`outreach replies list`): %s",
                            problem[:300])
                return JSONResponse({"stored": int(kept), "unreadable": problem[:500]})
            result = await run_in_threadpool(self.replies.record, [reply], None, self.address)
        except Exception as e:  # noqa: BLE001 - an unstored reply must be retried by SendGrid, not lost
            log.error("could not store a reply (%s: %s); answered 503 so SendGrid retries it",
                      type(e).__name__, one_line(str(e))[:300])
            log.debug("the failure in full", exc_info=True)
            return JSONResponse({"error": "could not store the reply; retry later"}, status_code=503)
        log.info("reply from %s: %s", reply.sender or "?", "already recorded" if result.duplicates else
                 "matched no letter" if result.unmatched else "automatic, recorded" if result.automatic
                 else "matched its letter")
        return JSONResponse({"stored": result.stored, "duplicates": result.duplicates, "matched": result.matched,
                             "automatic": result.automatic, "letters_replied": result.letters_replied})


def inbound_key_from_env(cfg):
    """Inbound Parse's verification key, from the variable named by [replies] public_key_env."""
    env = cfg.replies.public_key_env
    if not os.environ.get(env, "").strip():
        raise UserError(f"${env} is not set: [replies] address is, so replies come by SendGrid Inbound Parse, "
                        "whose posts must be signed: put its security policy's public key in it, or start "
                        "`outreach serve --dashboard-only`")
    return key_from_env(env, "the Inbound Parse verification key")


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


def run_server(app, sock, parent_fd: int | None = None) -> None:
    """Serve `app` on a listening socket until Ctrl-C or SIGTERM, as `outreach serve` does; a worker
    of `serve --workers` also stops when `parent_fd` (a pipe its parent holds open) closes: a
    parent killed outright leaves no worker behind."""
    _allow_many_sockets()
    trigger = None if parent_fd is None else (lambda: _until_stopped(parent_fd))
    asyncio.run(serve_app(app, sock, trigger))


async def _until_stopped(parent_fd: int) -> None:
    import signal

    loop = asyncio.get_running_loop()
    stopped = asyncio.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stopped.set)
    loop.add_reader(parent_fd, stopped.set)    # readable at end of file: the parent is gone
    await stopped.wait()


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
