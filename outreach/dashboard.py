"""Read-only dashboard pages for `outreach serve`: campaigns, one campaign's report, offices, unmatched events.

Safe by default: bound to any other address than loopback, and whenever one
is set, a token from the environment is required, as an `Authorization:
Bearer` header (scripts) or through the login form, which sets a secure,
HTTP-only cookie (people); the cookie holds an HMAC of the token, never the
token. On loopback without a token, the pages answer only requests that
plainly come from this machine: no proxy headers, a loopback Host (so neither
a reverse proxy nor a DNS-rebinding page reaches them). No page changes data;
the webhook keeps its own signature check.
"""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
import time
from urllib.parse import quote, urlencode

PAGE_SIZE = 50
COOKIE = "outreach_session"
SESSION_S = 12 * 3600


def is_loopback(host: str) -> bool:
    if host in ("localhost", ""):
        return host == "localhost"
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


PROXY_HEADERS = ("forwarded", "x-forwarded-for", "x-forwarded-host", "x-real-ip")


class Access:
    """Who may see the pages: holders of the token, or without one a browser on this machine.

    Without a token, a request that came through a proxy (it says so in its headers) or
    names another host (a DNS-rebinding page) is refused: loopback must mean this machine.
    """

    def __init__(self, token: str | None):
        self.token = token

    @staticmethod
    def plainly_local(request) -> bool:
        if any(h in request.headers for h in PROXY_HEADERS):
            return False
        host = request.headers.get("host", "")
        if host.startswith("["):                      # [::1]:8025
            name = host[1:].split("]")[0]
        else:                                         # 127.0.0.1:8025, localhost
            name = host.rsplit(":", 1)[0] if host.count(":") == 1 else host
        return is_loopback(name)

    def session_value(self, issued: int) -> str:
        mac = hmac.new(self.token.encode(), f"dashboard-session:{issued}".encode(), hashlib.sha256).hexdigest()
        return f"{issued}.{mac}"

    def allows(self, request) -> bool:
        if self.token is None:
            return self.plainly_local(request)
        auth = request.headers.get("authorization", "")
        if auth.lower().startswith("bearer ") and hmac.compare_digest(auth[7:].strip().encode(), self.token.encode()):
            return True
        cookie = request.cookies.get(COOKIE, "")
        issued, _, _ = cookie.partition(".")
        if not (issued.isascii() and issued.isdigit()) or time.time() - int(issued) > SESSION_S:
            return False
        return hmac.compare_digest(cookie.encode(), self.session_value(int(issued)).encode())


def dashboard_routes(cfg, ledger, token: str | None) -> list:
    """The dashboard's routes, to add to the webhook app; `token` None means no login (loopback only)."""
    from starlette.responses import HTMLResponse, RedirectResponse, Response
    from starlette.routing import Route

    from outreach.report_render import template_env

    env = template_env()
    access = Access(token)

    def page(template: str, request, status: int = 200, **context) -> HTMLResponse:
        html = env.get_template(template).render(nav=_nav(request), login=token is not None, **context)
        return HTMLResponse(html, status_code=status, headers=_SECURITY_HEADERS)

    def guarded(handler):
        async def wrapper(request):
            if not access.allows(request):
                if token is None:
                    return Response("403: without a dashboard token these pages answer only browsers on this "
                                    "machine; set one (see [dashboard] token_env) to serve them through a proxy\n",
                                    status_code=403, headers=_SECURITY_HEADERS)
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
                    archived=archived, html_b64=html_b64)

    async def unmatched(request):
        page_no = _page(request)
        rows = ledger.events.unmatched(limit=PAGE_SIZE, offset=(page_no - 1) * PAGE_SIZE)
        total = ledger.events.count_unmatched()
        return page("dashboard/unmatched.html.j2", request, rows=rows, total=total, when=_when,
                    prev=f"/unmatched?page={page_no - 1}" if page_no > 1 else None,
                    next=f"/unmatched?page={page_no + 1}" if page_no * PAGE_SIZE < total else None)

    async def login(request):
        if token is None:
            return RedirectResponse("/", status_code=303)
        if request.method == "GET":
            return page("dashboard/login.html.j2", request, error=None, next=request.query_params.get("next", "/"))
        form = await _small_form(request)
        target = _safe_next(form.get("next", "/"))
        if not hmac.compare_digest(form.get("token", "").encode(), token.encode()):
            return page("dashboard/login.html.j2", request, status=401, error="That token is not right.", next=target)
        response = RedirectResponse(target, status_code=303)
        response.set_cookie(COOKIE, access.session_value(int(time.time())), max_age=SESSION_S, httponly=True,
                            secure=True, samesite="strict", path="/")
        return response

    async def logout(request):
        response = RedirectResponse("/login" if token else "/", status_code=303)
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
    return time.strftime("%Y-%m-%d %H:%M", time.localtime(t)) if t else ""


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
