"""Read-only dashboard pages for `outreach serve`: campaigns, one campaign's report, offices, unmatched events.

No page is served without the token: as an `Authorization: Bearer` header
(scripts), or through a session signed in with it (people: the sign-in form,
or the link `serve` prints on a terminal), whatever interface the request
came in on: loopback is no proof of who is asking (behind a reverse proxy
every request looks local). With no token configured, `serve` makes one for
its run. Sessions live on the server: signing out ends one. Each wrong token
costs a growing delay (never a lockout: behind a proxy every client looks the
same). No page changes data; the webhook keeps its own signature check.
"""

from __future__ import annotations

import asyncio
import hmac
import os
import secrets
import time
from pathlib import Path
from urllib.parse import quote, urlencode

PAGE_SIZE = 50
COOKIE = "outreach_session"
SESSION_S = 12 * 3600
MIN_TOKEN = 24          # characters: a shorter token is refused at start
MAX_DELAY_S = 8.0       # the longest a wrong token waits for its answer
FORGET_S = 15 * 60      # wrong tokens this long ago no longer raise the price


class MemorySessions:
    """Sessions in this process only (the ledger's `sessions` is the one `serve` uses)."""

    def __init__(self):
        self.ends: dict[str, float] = {}

    def start(self, key: str, ends_at: float, now: float) -> None:
        self.ends = {k: end for k, end in self.ends.items() if end > now}
        self.ends[key] = ends_at

    def valid(self, key: str, now: float) -> bool:
        end = self.ends.get(key)
        return end is not None and end > now

    def end(self, key: str) -> None:
        self.ends.pop(key, None)


class Access:
    """The token, the signed-in sessions, and the price of a wrong guess.

    A session is kept by an HMAC of its cookie under the token: whoever reads the store
    cannot sign in with it, and a new token ends every session. The price of wrong
    guesses is counted in each process."""

    def __init__(self, token: str, sessions=None, clock=time.time):
        self.token = token
        self.sessions = sessions if sessions is not None else MemorySessions()
        self.clock = clock
        self.failures = 0                       # wrong tokens lately
        self.last_wrong = 0.0

    def token_is(self, given: str) -> bool:
        return hmac.compare_digest(given.strip().encode(), self.token.encode())

    def _key(self, sid: str) -> str:
        return hmac.new(self.token.encode(), sid.encode(), "sha256").hexdigest()

    def start_session(self) -> str:
        now = self.clock()
        sid = secrets.token_urlsafe(32)
        self.sessions.start(self._key(sid), now + SESSION_S, now)
        return sid

    def end_session(self, sid: str) -> None:
        if sid:
            self.sessions.end(self._key(sid))

    def allows(self, request) -> bool:
        auth = request.headers.get("authorization", "")
        if auth.lower().startswith("bearer ") and self.token_is(auth[7:]):
            return True
        sid = request.cookies.get(COOKIE, "")
        return bool(sid) and len(sid) < 200 and self.sessions.valid(self._key(sid), self.clock())

    def price_of_a_wrong_token(self) -> float:
        """Seconds the next wrong token waits: 0.25, 0.5, 1, ... up to MAX_DELAY_S.

        A right token never waits and never lowers the price (an attacker must not gain from
        the owner's requests); the count is forgotten after FORGET_S without a wrong one."""
        now = self.clock()
        if now - self.last_wrong > FORGET_S:
            self.failures = 0
        self.failures += 1
        self.last_wrong = now
        return min(0.25 * 2 ** min(self.failures - 1, 8), MAX_DELAY_S)

    async def wrong(self) -> None:
        await asyncio.sleep(self.price_of_a_wrong_token())


def new_token() -> str:
    """A token for one run of `serve`, when none is configured."""
    return secrets.token_urlsafe(32)


def write_token(token: str, port: int) -> Path:
    """Keep a made token in a file only its owner can read, one per port (so two `serve`s never
    overwrite each other's); returns the path (to log: never the token)."""
    base = os.environ.get("XDG_RUNTIME_DIR") or os.environ.get("XDG_CACHE_HOME") or \
        os.path.join(os.path.expanduser("~"), ".cache")
    folder = Path(base) / "outreach"
    folder.mkdir(parents=True, exist_ok=True)
    os.chmod(folder, 0o700)
    path = folder / f"dashboard-token-{port}"
    # Never through a link someone left in its place.
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | getattr(os, "O_NOFOLLOW", 0), 0o600)
    try:
        os.fchmod(fd, 0o600)
        os.write(fd, (token + "\n").encode())
    finally:
        os.close(fd)
    return path


def dashboard_routes(cfg, ledger, token: str) -> list:
    """The dashboard's routes, to add to the webhook app; every page needs `token` (or a session)."""
    from starlette.responses import HTMLResponse, RedirectResponse, Response
    from starlette.routing import Route

    from outreach.report_render import template_env

    env = template_env()
    access = Access(token, ledger.sessions)

    def page(template: str, request, status: int = 200, **context) -> HTMLResponse:
        html = env.get_template(template).render(nav=_nav(request), **context)
        return HTMLResponse(html, status_code=status, headers=_SECURITY_HEADERS)

    def guarded(handler):
        async def wrapper(request):
            if not access.allows(request):
                if request.headers.get("authorization", "").lower().startswith("bearer "):
                    await access.wrong()
                if "text/html" in request.headers.get("accept", ""):
                    return page("dashboard/login.html.j2", request, status=401, error=None,
                                next=str(request.url.path))
                return Response("401: a dashboard token is required (Authorization: Bearer ...)\n", status_code=401,
                                headers={"WWW-Authenticate": "Bearer", **_SECURITY_HEADERS})
            return await handler(request)
        return wrapper

    async def campaigns(request):
        return page("dashboard/campaigns.html.j2", request, rows=_campaign_rows(cfg, ledger))

    async def campaign(request):
        from starlette.exceptions import HTTPException

        from outreach.report_render import report_context
        from outreach.reports import build_report

        name = request.path_params["name"]
        if ledger.campaigns.id(name, create=False) is None and name not in cfg.campaigns:
            raise HTTPException(404, f"no campaign {name!r}")
        page_no = _page(request)
        report = build_report(ledger, name, letters_limit=PAGE_SIZE, letters_offset=(page_no - 1) * PAGE_SIZE)
        total = report["summary"]["letters"]
        base = f"/campaigns/{quote(name)}"
        pager = {"first": min(total, (page_no - 1) * PAGE_SIZE + 1), "last": min(total, page_no * PAGE_SIZE),
                 "prev": f"{base}?page={page_no - 1}#offices" if page_no > 1 else None,
                 "next": f"{base}?page={page_no + 1}#offices" if page_no * PAGE_SIZE < total else None,
                 "letter_url": "/letters/"}
        return page("dashboard/campaign.html.j2", request, **report_context(report, pager))

    async def offices(request):
        q = request.query_params.get("q", "").strip()
        page_no = _page(request)
        rows, more = search_offices(ledger, q, page_no) if q else ([], False)
        nxt = f"/offices?{urlencode({'q': q, 'page': page_no + 1})}" if more else None
        prev = f"/offices?{urlencode({'q': q, 'page': page_no - 1})}" if page_no > 1 else None
        return page("dashboard/offices.html.j2", request, q=q, rows=rows, next=nxt, prev=prev, when=_when)

    async def letter(request):
        from starlette.exceptions import HTTPException

        from outreach.errors import UserError

        try:
            row = ledger.letters.find(request.path_params["letter_id"])
        except UserError as e:
            raise HTTPException(404, e.problems[0]) from None
        import base64

        archived = ledger.letters.archived(row.id)
        # The letter's HTML in a sandboxed frame of its own: no script, no access to this page.
        html_b64 = base64.b64encode(archived["html"].encode()).decode() if archived else ""
        return page("dashboard/letter.html.j2", request, l=row, when=_when,
                    attempts=ledger.letters.attempts_of(row.id), events=ledger.events.of_letter(row.id),
                    replies=ledger.replies.of_letter(row.id), archived=archived, html_b64=html_b64)

    async def unmatched(request):
        page_no = _page(request)
        rows = ledger.events.unmatched(limit=PAGE_SIZE, offset=(page_no - 1) * PAGE_SIZE)
        total = ledger.events.count_unmatched()
        return page("dashboard/unmatched.html.j2", request, rows=rows, total=total, when=_when,
                    prev=f"/unmatched?page={page_no - 1}" if page_no > 1 else None,
                    next=f"/unmatched?page={page_no + 1}" if page_no * PAGE_SIZE < total else None)

    async def login(request):
        """The sign-in form (GET), its answer (POST), or the link `serve` printed (GET ?token=...)."""
        if request.method == "GET" and "token" not in request.query_params:
            return page("dashboard/login.html.j2", request, error=None, next=request.query_params.get("next", "/"))
        given = dict(request.query_params) if request.method == "GET" else await _small_form(request)
        target = _safe_next(given.get("next", "/"))
        if not access.token_is(given.get("token", "")):
            await access.wrong()
            return page("dashboard/login.html.j2", request, status=401, error="That token is not right.", next=target)
        response = RedirectResponse(target, status_code=303)
        response.set_cookie(COOKIE, access.start_session(), max_age=SESSION_S, httponly=True, secure=True,
                            samesite="strict", path="/")
        return response

    async def logout(request):
        access.end_session(request.cookies.get(COOKIE, ""))   # the cookie no longer opens anything
        response = RedirectResponse("/login", status_code=303)
        response.delete_cookie(COOKIE, path="/")
        return response

    return [
        Route("/", guarded(campaigns), methods=["GET"]),
        Route("/campaigns/{name}", guarded(campaign), methods=["GET"]),
        Route("/offices", guarded(offices), methods=["GET"]),
        Route("/letters/{letter_id}", guarded(letter), methods=["GET"]),
        Route("/unmatched", guarded(unmatched), methods=["GET"]),
        Route("/login", login, methods=["GET", "POST"]),
        Route("/logout", logout, methods=["POST"]),
    ]


# Pages are never framed elsewhere, never sniffed, and load nothing from other origins.
_SECURITY_HEADERS = {"X-Frame-Options": "DENY", "X-Content-Type-Options": "nosniff",
                     "Referrer-Policy": "no-referrer",
                     "Content-Security-Policy": "default-src 'none'; style-src 'unsafe-inline'; img-src data:; "
                                                "frame-src data:; form-action 'self'; base-uri 'none'"}


async def _small_form(request, limit: int = 4096) -> dict[str, str]:
    """A urlencoded form of a few fields (the sign-in form): nothing large is read."""
    from urllib.parse import parse_qs

    body = b""
    async for chunk in request.stream():
        body += chunk
        if len(body) > limit:
            return {}
    return {k: v[0] for k, v in parse_qs(body.decode("utf-8", "replace")).items()}


def _nav(request) -> str:
    return request.url.path


def _page(request) -> int:
    value = request.query_params.get("page", "1")
    # Bounded: a page number past any campaign must not overflow the database's integers.
    return min(max(1, int(value)), 1_000_000) if value.isascii() and value.isdigit() and len(value) < 10 else 1


def _safe_next(target: str) -> str:
    """Only a path on this site: a login never redirects elsewhere."""
    return target if target.startswith("/") and not target.startswith("//") else "/"


def _when(t: float | None) -> str:
    from outreach.text import local_time

    return local_time(t, "%Y-%m-%d %H:%M")


def _campaign_rows(cfg, ledger) -> list[dict]:
    """One row per campaign in config or in the ledger: state, progress, last activity."""
    from outreach import states

    in_ledger = ledger.campaigns.names()
    last = ledger.reports.last_activity()
    rows = []
    for name in sorted(set(cfg.campaigns) | set(in_ledger)):
        cid = in_ledger.get(name)
        counts = ledger.letters.counts(cid)
        total = sum(counts.values())
        sent = total - sum(counts[s] for s in states.TO_SEND) - counts["skipped"]
        delivered = sum(counts[s] for s in states.REACHED["delivered"])
        schedule = cfg.campaigns[name].schedule if name in cfg.campaigns else None
        st = ledger.campaigns.state(cid)
        state = ("paused" if st.paused else "finished" if st.ended_at else
                 ("scheduled" + ("" if schedule.live else " (not live)")) if schedule else
                 "not in config.toml" if name not in cfg.campaigns else "sent by hand" if total else "not started")
        rows.append({"name": name, "state": state, "letters": total, "sent": sent, "delivered": delivered,
                     "attention": sum(counts[s] for s in states.NEEDS_ATTENTION) + counts["bounced"],
                     "progress": round(100 * sent / total) if total else 0, "last": _when(last.get(cid))})
    return rows


def search_offices(ledger, q: str, page_no: int = 1) -> tuple[list, bool]:
    """Letters whose office matches `q` (name, state, bioguide id or email), a page at a time."""
    rows = ledger.reports.search_offices(q, PAGE_SIZE + 1, (page_no - 1) * PAGE_SIZE)
    return rows[:PAGE_SIZE], len(rows) > PAGE_SIZE
