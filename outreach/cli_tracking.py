"""`outreach serve` (SendGrid's signed Event Webhook) and `outreach events`: what happened to each letter."""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import NamedTuple

import click

from outreach.cli_base import App, echo, echo_json, pass_app
from outreach.text import count
from outreach.errors import EXIT_OK, UserError, one_line


@click.command()
@click.option("--host", default="127.0.0.1", show_default=True, help="The address to listen on.")
@click.option("--port", default=8025, show_default=True, type=click.IntRange(0, 65535), help="The port.")
@click.option("--dashboard-only", is_flag=True,
              help="Serve the dashboard alone, before SendGrid is set up: webhook posts are answered 503.")
@click.option("--workers", type=click.IntRange(1, 64), default=1, show_default=True,
              help="Processes serving the one port (PostgreSQL; on SQLite one runs).")
@pass_app
def serve(app: App, host: str, port: int, dashboard_only: bool, workers: int) -> int:
    """Receive SendGrid's signed Event Webhook on POST /webhooks/sendgrid, and serve the read-only dashboard.

    The verification key comes from the variable named by [sendgrid]
    webhook_public_key_env (default SENDGRID_WEBHOOK_PUBLIC_KEY); without it
    `serve` refuses to start, unless --dashboard-only. Stop with Ctrl-C.
    """
    import logging

    from outreach.dashboard import dashboard_routes
    from outreach.webhook import INBOUND_PATH, WEBHOOK_PATH, create_app, inbound_key_from_env, public_key_from_env, \
        run_server

    cfg = app.config
    key = None if dashboard_only else public_key_from_env(cfg)
    inbound_key = None if dashboard_only or not cfg.replies.address else inbound_key_from_env(cfg)
    token = _dashboard_token(cfg)
    ledger = app.ledger()
    if workers > 1 and ledger.engine.dialect.name == "sqlite":
        echo(f"--workers {workers}: the ledger is SQLite, which takes one writer at a time, so one process "
             "serves (several need PostgreSQL: [database] url)", err=True)
        workers = 1
    sock = _listen(host, port)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    base = f"http://{_host_in_url(host)}:{sock.getsockname()[1]}"
    if dashboard_only:
        echo(f"The webhook is off (--dashboard-only): posts to {base}{WEBHOOK_PATH} are answered 503, and "
             "SendGrid retries them for up to 24 hours; Ctrl-C stops", err=True)
    else:
        echo(f"Receiving SendGrid events on {base}{WEBHOOK_PATH} "
             f"(key from ${cfg.sendgrid.webhook_public_key_env}); Ctrl-C stops", err=True)
        if inbound_key is not None:
            echo(f"Receiving offices' replies (Inbound Parse) on {base}{INBOUND_PATH} "
                 f"(key from ${cfg.replies.public_key_env})", err=True)
    echo(f"Dashboard on {base}/ " + _how_to_sign_in(cfg, token, base, sock.getsockname()[1]), err=True)

    def web(ledger):
        return create_app(cfg, ledger, public_key=key, webhook=not dashboard_only, inbound_key=inbound_key,
                          routes=dashboard_routes(cfg, ledger, token.value))

    if workers > 1:
        from outreach.ledger import open_ledger

        ledger.close()   # each process opens its own connections
        code = _run_workers(workers, lambda: web(open_ledger(cfg)), sock)
    else:
        code = EXIT_OK
        try:
            run_server(web(ledger), sock)
        except KeyboardInterrupt:
            pass  # stopping is what was asked
    echo("Stopped receiving events", err=True)
    return code


def _run_workers(n: int, make_app, sock) -> int:
    """Fork n processes serving `sock` (the kernel shares its connections out), and wait.

    Ctrl-C or SIGTERM stops them all, each finishing what it was storing; so does this
    process's end, however it comes (a pipe only it holds closes). A worker that stops by
    itself stops the others too, with one line and exit 1, so a service manager restarts
    the whole service rather than run on short-handed."""
    import signal

    from outreach.webhook import run_server

    children: list[int] = []
    stopping = False

    def stop(signum=None, frame=None) -> None:
        nonlocal stopping
        stopping = True
        for pid in children:
            try:
                os.kill(pid, signal.SIGTERM)
            except ProcessLookupError:
                pass

    # Before forking: a stop asked for meanwhile reaches every worker already started.
    signal.signal(signal.SIGINT, stop)
    signal.signal(signal.SIGTERM, stop)
    alive_read, alive_write = os.pipe()   # held open by this process only: its end is the workers' signal
    for _ in range(n):
        if stopping:
            break
        pid = os.fork()
        if pid == 0:   # a worker: its own ledger and app; never returns into the parent's code
            os.close(alive_write)
            signal.signal(signal.SIGINT, signal.default_int_handler)
            signal.signal(signal.SIGTERM, signal.SIG_DFL)
            code = 1
            try:
                run_server(make_app(), sock, parent_fd=alive_read)
                code = 0
            except KeyboardInterrupt:
                code = 0
            except BaseException as e:  # noqa: BLE001 - said in one line, then the parent stops the rest
                echo(f"outreach serve: a worker failed: {type(e).__name__}: {one_line(str(e))}", err=True)
            finally:
                os._exit(code)
        children.append(pid)
    sock.close()
    os.close(alive_read)
    echo(f"{len(children)} worker processes ({', '.join(map(str, children))})", err=True)
    status = EXIT_OK
    while children:
        pid, how = os.wait()
        children.remove(pid)
        if not stopping:
            echo(f"outreach serve: worker {pid} stopped (exit {os.waitstatus_to_exitcode(how)}); "
                 "stopping the others", err=True)
            status = 1
            stop()
    return status


class _Token(NamedTuple):
    value: str
    made: bool     # by `serve`, for this run (not from the environment)


def _dashboard_token(cfg) -> _Token:
    """The dashboard's token: from the environment (24 characters at least), or made for this run."""
    from outreach.dashboard import MIN_TOKEN, new_token

    given = os.environ.get(cfg.dashboard.token_env, "").strip()
    if not given:
        return _Token(new_token(), made=True)
    if len(given) < MIN_TOKEN or not given.isprintable():
        raise UserError(f"${cfg.dashboard.token_env} holds a dashboard token of {len(given)} characters: "
                        f"use at least {MIN_TOKEN} printable ones (`openssl rand -base64 32` makes one), "
                        "or unset it and `serve` makes one for each run")
    return _Token(given, made=False)


def _how_to_sign_in(cfg, token: _Token, base: str, port: int) -> str:
    """How to reach the dashboard, without ever putting the token in a log.

    A token from the environment is the user's to know. A made one is shown as a sign-in
    link only on a terminal; otherwise (systemd, a pipe, a log file) it goes to a file only
    its owner can read, and only that file's path is said.
    """
    from outreach.dashboard import write_token

    if not token.made:
        return f"(sign in with the token in ${cfg.dashboard.token_env})"
    if sys.stdout.isatty():
        echo(f"Sign in to the dashboard: {base}/login?token={token.value}")
        return "(a token made for this run: the sign-in link is above)"
    try:
        path = write_token(token.value, port)
    except OSError as e:
        raise UserError(f"cannot keep the dashboard's token in a file: {e.strerror or e}; set one in "
                        f"${cfg.dashboard.token_env} instead") from None
    return f"(sign in with the token made for this run, in {path}: only its owner can read it)"


def _listen(host: str, port: int):
    """A listening socket, so a busy port is one line here rather than a log message from the server."""
    import socket

    try:
        family = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0][0]
        return socket.create_server((host, port), family=family, backlog=256)
    except OSError as e:
        raise UserError(f"cannot listen on {host}:{port}: {e.strerror or e}; choose another --host or --port") from None


def _host_in_url(host: str) -> str:
    return f"[{host}]" if ":" in host else host


@click.group()
def events() -> None:
    """SendGrid events: record an exported file, review the ones that matched no letter."""


@events.command("ingest")
@click.argument("file", type=click.Path(dir_okay=False, path_type=Path))
@pass_app
def events_ingest(app: App, file: Path) -> int:
    """Record events from FILE.json (a JSON array, as SendGrid posts them), without a signature check."""
    from outreach.events import EventError, parse_body
    from outreach.ledger.event_store import IngestResult

    try:
        raw = file.read_bytes()
    except FileNotFoundError:
        raise UserError(f"{file}: not found; give the path of a JSON file of SendGrid events") from None
    except OSError as e:
        raise UserError(f"{file}: cannot read it: {e.strerror}") from None
    try:
        parsed = parse_body(raw)
    except EventError as e:
        raise UserError(*(f"{file}: {p}; nothing was recorded" for p in e.problems)) from None
    ledger = app.ledger()
    result = IngestResult()
    # A transaction per 10,000 events: a big export never holds the ledger for long, and
    # running it again after an interruption stores only what is missing.
    for start in range(0, len(parsed), 10_000):
        result.add(ledger.events.ingest(parsed[start:start + 10_000]))
    echo(f"{file}: {count(result.received, 'event')}, {result.stored} new ({result.duplicates} already "
         f"recorded); {count(result.matched, 'matched letter')}, {count(result.letters_changed, 'letter')} "
         "changed state")
    if result.tests:
        echo(f"{count(result.tests, 'event')} about --test-to copies: recorded, no letter changed")
    if result.unmatched:
        echo(f"{count(result.unmatched, 'event')} matched no letter: `outreach events unmatched` lists them")
    if result.set_aside:
        echo(f"{count(result.set_aside, 'event')} set aside for review ({'; '.join(sorted(set(result.aside)))}): "
                   "`outreach events unmatched` lists them")
    return EXIT_OK


@events.command("unmatched")
@click.option("--limit", type=click.IntRange(1), default=50, show_default=True, help="At most N events.")
@click.option("--json", "as_json", is_flag=True, help="Print the events as JSON.")
@pass_app
def events_unmatched(app: App, limit: int, as_json: bool) -> int:
    """Events that matched no letter (kept for review), newest first."""
    from outreach.cli_ledger import iso, when

    ledger = app.ledger()
    rows = ledger.events.unmatched(limit)
    total = ledger.events.count_unmatched()
    aside, aside_total = ledger.events.set_aside(limit), ledger.events.count_set_aside()
    if as_json:
        echo_json({"total": total, "events": [
            {"id": e.id, "event": e.event, "occurred_at": iso(e.occurred_at), "received_at": iso(e.received_at),
             "email": e.email, "sg_message_id": e.sg_message_id, "detail": e.detail} for e in rows],
            "set_aside_total": aside_total, "set_aside": [
            {"id": a.id, "received_at": iso(a.received_at), "reason": a.reason, "raw": a.raw} for a in aside]})
        return EXIT_OK
    for e in rows:
        detail = f"  {one_line(e.detail)}" if e.detail else ""
        echo(f"{when(e.occurred_at)}  {e.event:<17} {e.email or '-':<40} {e.sg_message_id or '-'}{detail}")
    shown = f" (the newest {len(rows)} shown)" if total > len(rows) else ""
    echo(f"{count(total, 'unmatched event')}{shown}")
    for a in aside:
        echo(f"{when(a.received_at)}  set aside: {a.reason}: {one_line(a.raw)[:160]}")
    if aside_total:
        shown = f" (the newest {len(aside)} shown)" if aside_total > len(aside) else ""
        echo(f"{count(aside_total, 'event')} set aside for review: received, never applied to a letter{shown}")
    return EXIT_OK
