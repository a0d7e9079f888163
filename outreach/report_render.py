"""Report formats: a terminal table (Rich), CSV for spreadsheets, JSON for scripts, one HTML file."""

from __future__ import annotations

import csv
import io

HTML_ROW_LIMIT = 2000
CSV_COLUMNS = ("id", "name", "bioguide_id", "chamber", "state", "district", "party", "email", "status",
               "last_event", "last_event_at", "accepted_at", "reason", "term_end", "term_ended", "replies")

# Tile-grid positions (column, row) of each state and territory for the map.
TILES = {
    "AK": (0, 0), "ME": (11, 0), "VT": (10, 1), "NH": (11, 1),
    "WA": (1, 2), "ID": (2, 2), "MT": (3, 2), "ND": (4, 2), "MN": (5, 2), "IL": (6, 2), "WI": (7, 2),
    "MI": (8, 2), "NY": (9, 2), "RI": (10, 2), "MA": (11, 2),
    "OR": (1, 3), "NV": (2, 3), "WY": (3, 3), "SD": (4, 3), "IA": (5, 3), "IN": (6, 3), "OH": (7, 3),
    "PA": (8, 3), "NJ": (9, 3), "CT": (10, 3),
    "CA": (1, 4), "UT": (2, 4), "CO": (3, 4), "NE": (4, 4), "MO": (5, 4), "KY": (6, 4), "WV": (7, 4),
    "VA": (8, 4), "MD": (9, 4), "DE": (10, 4),
    "AZ": (2, 5), "NM": (3, 5), "KS": (4, 5), "AR": (5, 5), "TN": (6, 5), "NC": (7, 5), "SC": (8, 5),
    "DC": (9, 5),
    "OK": (4, 6), "LA": (5, 6), "MS": (6, 6), "AL": (7, 6), "GA": (8, 6),
    "HI": (0, 7), "TX": (4, 7), "FL": (9, 7),
    "GU": (0, 8), "MP": (1, 8), "AS": (2, 8), "PR": (9, 8), "VI": (10, 8),
}


def to_csv(report: dict) -> str:
    """One row per letter, for spreadsheets: no cell starts a formula (see outreach.text)."""
    from outreach.text import spreadsheet_cell

    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(CSV_COLUMNS)
    for letter in report["letters"]:
        writer.writerow(["" if letter[c] is None else ("yes" if letter[c] is True else "" if letter[c] is False
                                                       else spreadsheet_cell(letter[c])) for c in CSV_COLUMNS])
    return out.getvalue()


def to_table(report: dict, console) -> None:
    """The report on a terminal: funnel, skipped reasons, breakdowns, what needs attention, every office.

    Whatever came from data is printed as plain text (never Rich markup), its control characters
    shown as escapes: a party cell of '[/x]' or a name with ESC in it prints as it is."""
    from rich import box
    from rich.table import Table
    from rich.text import Text

    from outreach.text import count, visible

    def data(value) -> Text:
        return Text(visible(value))

    s = report["summary"]
    if not s["letters"]:
        console.print(Text(f"{visible(s['campaign'])}: no letters in the ledger yet, so nothing to report "
                           "(a dry run records nothing; `outreach send --live` sends and records them)"))
        return
    funnel = Table(title=Text(f"{visible(s['campaign'])}: {count(s['letters'], 'letter')}"), title_justify="left",
                   box=box.SIMPLE_HEAD)
    for col in ("step", "letters", "of targeted"):
        funnel.add_column(col, justify="right" if col != "step" else "left")
    from outreach.states import FUNNEL

    for step in FUNNEL:
        rate = s["rates"].get(step)
        funnel.add_row(step, str(s["funnel"][step]), "" if rate is None else f"{rate:.0%}")
    for state, n in s["beside"].items():
        if n:
            funnel.add_row(f"[dim]{state}[/dim]", str(n), "")
    console.print(funnel)
    console.print("[dim]accepted: SendGrid took the letter; delivered: the office's mail server did[/dim]")
    for reason, n in s.get("skipped_reasons", {}).items():
        console.print(Text(f"skipped {n}: {visible(reason)}", style="dim"))
    if s.get("terms_ended"):
        console.print(f"[bold]{s['terms_ended']} offices' terms have ended[/bold] (by {s['terms_ended_by']}): "
                      "marked [term ended] below; a new Congress may have replaced them "
                      "(`outreach contacts refresh`)", highlight=False)
    for name, rows in report["breakdowns"].items():
        if name == "state" and len(rows) > 12:
            rows = sorted(rows, key=lambda r: (r["delivery_rate"] is None, r["delivery_rate"] or 0))[:12]
            title = "states with the lowest delivery rate"
        else:
            title = f"by {name}"
        table = Table(title=title, title_justify="left", box=box.SIMPLE_HEAD)
        # Short headers and committee codes: the table fits an 80-column terminal.
        for col in ("", "target", "accept", "deliv.", "opened", "failed", "unkn.", "rate"):
            table.add_column(col, justify="left" if not col else "right", no_wrap=True)
        for r in rows:
            rate = _rate_text(r)
            label = r["key"] if name == "committee" else r["label"]
            table.add_row(data(label), *(str(r[k]) for k in ("targeted", "accepted", "delivered", "opened",
                                                                   "failed", "unknown")), rate)
        console.print(table)
    if report["attention"]:
        table = Table(title=f"needs attention ({len(report['attention'])})", title_justify="left",
                      box=box.SIMPLE_HEAD)
        table.add_column("letter", no_wrap=True)
        table.add_column("state", no_wrap=True)
        table.add_column("recipient", no_wrap=True)
        table.add_column("reason", overflow="fold")
        for a in report["attention"][:50]:
            table.add_row(a["id"][:12], a["status"], data(a["email"]), data(a["reason"] or ""))
        console.print(table)
        if len(report["attention"]) > 50:
            console.print(f"... and {len(report['attention']) - 50} more (--format csv for all)")
    if report.get("letters"):
        # Plain lines, one per office (and its reason beneath): a table of seven columns does
        # not fit a terminal; --format csv has every field whole.
        console.print(f"\n[bold]offices ({len(report['letters'])})[/bold]  seat, party, member, state, "
                      "last event (UTC), recipient")
        for r in report["letters"]:
            when = (r["last_event_at"] or "")[5:16].replace("T", " ")
            event = f"{r['last_event']} {when}" if r["last_event"] else ""
            name = visible(r["name"] or "")
            name = name if len(name) <= 22 else name[:21] + "…"
            console.print(f"  {visible(seat(r['state'], r['district'])):<6} {visible(r['party'] or '')[:1]:<1}  "
                          f"{name:<22} {r['status']:<12} {event:<21} {visible(r['email'])}", markup=False,
                          highlight=False, soft_wrap=True)
            if r["reason"]:
                console.print(f"         └ {visible(r['reason'])}", markup=False, highlight=False, soft_wrap=True)
            if r.get("replies"):
                console.print(f"         └ {count(r['replies'], 'reply', 'replies')} from the office "
                              f"(`outreach replies list`)", markup=False, highlight=False, soft_wrap=True)
            if r.get("term_ended"):
                console.print(f"         └ [term ended] {r['term_end']}", markup=False, highlight=False,
                              soft_wrap=True)


# Delivery rate colours: red where most letters did not arrive, amber in between,
# teal where they did; rates of a campaign sit mostly between 70% and 100%.
SCALE = [(0.0, (185, 28, 28)), (0.5, (245, 158, 11)), (0.8, (153, 246, 228)), (1.0, (15, 118, 110))]


def _rate_text(row: dict) -> str:
    """'85%'; 'not sent' while every letter of the row is still to send; '' with none."""
    if row["delivery_rate"] is not None:
        return f"{row['delivery_rate']:.0%}"
    return "not sent" if row["targeted"] else ""


def _ink(background: str) -> str:
    """White on dark tiles (red, deep teal), dark on light ones (amber, pale teal, grey)."""
    r, g, b = (int(background[i:i + 2], 16) / 255 for i in (1, 3, 5))
    return "#fff" if 0.2126 * r + 0.7152 * g + 0.0722 * b < 0.4 else "#1f2937"


NO_LETTERS = "#e5e7eb"
NOT_SENT = "#c7d2fe"    # recorded, none sent yet: neither good nor bad, so off the red-to-teal scale


def _tile_color(row: dict | None) -> str:
    if row and row["targeted"] and row["to_send"] == row["targeted"]:
        return NOT_SENT
    return _color(row["delivery_rate"] if row else None)


def _color(rate: float | None) -> str:
    """The tile colour for a delivery rate; grey for no letters."""
    if rate is None:
        return NO_LETTERS
    for (p0, c0), (p1, c1) in zip(SCALE, SCALE[1:]):
        if rate <= p1:
            f = (rate - p0) / (p1 - p0)
            return "#" + "".join(f"{round(a + (b - a) * f):02x}" for a, b in zip(c0, c1))
    return "#0f766e"


def _chart(tl: dict, width: int = 640, height: int = 200) -> dict:
    """Polyline points for the cumulative accepted and delivered lines."""
    n = len(tl["starts"])
    top = max(tl["accepted"][-1] if tl["accepted"] else 0, tl["delivered"][-1] if tl["delivered"] else 0, 1)

    def points(values):
        if n == 1:
            return f"40,{height - 20 - values[0] / top * (height - 40):.1f} {width - 10},{height - 20 - values[0] / top * (height - 40):.1f}"
        return " ".join(f"{40 + i * (width - 50) / (n - 1):.1f},{height - 20 - v / top * (height - 40):.1f}"
                        for i, v in enumerate(values))

    return {"width": width, "height": height, "top": top, "accepted": points(tl["accepted"]) if n else "",
            "delivered": points(tl["delivered"]) if n else "", "first": _label(tl["starts"][0], tl["unit"]) if n else "",
            "last": _label(tl["starts"][-1], tl["unit"]) if n else "", "unit": tl["unit"]}


def _label(iso: str, unit: str | None) -> str:
    """'2026-11-25T15:00:00Z' -> '25 Nov 15:00 UTC' (hours) or '25 Nov' (days)."""
    import datetime as dt

    try:
        t = dt.datetime.strptime(iso or "", "%Y-%m-%dT%H:%M:%SZ")
    except ValueError:   # a year past 9999, or none: shown as it is
        return iso or "?"
    return t.strftime("%d %b %H:%M UTC") if unit == "hour" else t.strftime("%d %b %Y")


def template_env():
    """The Jinja2 environment of the report and dashboard pages (autoescaped, strict)."""
    import jinja2

    env = jinja2.Environment(loader=jinja2.PackageLoader("outreach", "report_templates"), autoescape=True,
                             undefined=jinja2.StrictUndefined, trim_blocks=True, lstrip_blocks=True)
    env.filters["seat"] = seat
    env.filters["rate"] = _rate_text
    return env


def seat(state: str | None, district: int | None) -> str:
    """'VA' for a senator, 'WA-9' or 'GU-AL' (at large) for a House member."""
    if district is None:
        return state or ""
    return f"{state or ''}-{'AL' if district == 0 else district}"


def report_context(report: dict, pager: dict | None = None) -> dict:
    """What the report body template needs, from a report model."""
    states = {r["key"]: r for r in report["breakdowns"]["state"]}
    tiles = [{"code": code, "x": x, "y": y, "row": states.get(code), "color": _tile_color(states.get(code))}
             for code, (x, y) in TILES.items()]
    for t in tiles:
        t["ink"] = _ink(t["color"])
    letters = report["letters"]
    return dict(r=report, s=report["summary"], tiles=tiles, chart=_chart(report["timeline"]),
                letters=letters[:HTML_ROW_LIMIT], truncated=report["summary"]["letters"] > HTML_ROW_LIMIT,
                row_limit=HTML_ROW_LIMIT, pager=pager,
                legend=[*((f"{p:.0%}", _color(p)) for p in (0.0, 0.5, 0.8, 0.9, 1.0)),
                        ("not sent yet", NOT_SENT), ("no letters", NO_LETTERS)])


def to_html(report: dict) -> str:
    """One self-contained HTML file: inline CSS and SVG, nothing loaded from the network."""
    return template_env().get_template("report.html.j2").render(report_context(report))
