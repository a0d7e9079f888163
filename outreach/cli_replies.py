"""`outreach replies`: offices' replies, the outcome that counts, recorded against their letters."""

from __future__ import annotations

from pathlib import Path

import click

from outreach.cli_base import App, echo, echo_json, pass_app
from outreach.errors import EXIT_OK, UserError
from outreach.text import count, local_time, utc_iso, visible


@click.group()
def replies() -> None:
    """Replies from offices: record saved ones, list them, read one."""


@replies.command("ingest")
@click.argument("file", type=click.Path(dir_okay=False, path_type=Path))
@pass_app
def replies_ingest(app: App, file: Path) -> int:
    """Record the replies in FILE (one .eml message, or an mbox of many), matched to their letters."""
    from outreach.inbound import ReplyError, read_file

    try:
        found = read_file(file)
    except ReplyError as e:
        raise UserError(str(e)) from None
    result = app.ledger().replies.record(found, address=app.config.replies.address)
    echo(f"{file}: {count(result.received, 'reply', 'replies')}, {result.stored} new "
         f"({result.duplicates} already recorded); {result.matched} matched a letter"
         + (f" ({', '.join(f'{n} by {how}' for how, n in sorted(result.by.items()))})" if result.by else "")
         + f", {count(result.letters_replied, 'letter')} now replied")
    if result.automatic:
        echo(f"{count(result.automatic, 'automatic reply', 'automatic replies')} (out of office and the like): "
             "recorded, no letter changed")
    if result.unmatched:
        echo(f"{count(result.unmatched, 'reply', 'replies')} matched no letter: `outreach replies list` shows them")
    return EXIT_OK


@replies.command("list")
@click.option("-c", "--campaign", "campaign", metavar="NAME", help="Only this campaign's (default: all).")
@click.option("--limit", type=click.IntRange(1), default=200, show_default=True, help="At most N, newest first.")
@click.option("--json", "as_json", is_flag=True, help="As JSON, for scripts.")
@pass_app
def replies_list(app: App, campaign: str | None, limit: int, as_json: bool) -> int:
    """Replies, newest first: who wrote, about which letter, and whether a person did."""
    ledger = app.ledger()
    if campaign is None:
        rows = ledger.replies.list(None, limit)
    else:
        name, _ = app.config.campaign(campaign)
        campaign_id = ledger.campaigns.id(name, create=False)
        rows = ledger.replies.list(campaign_id, limit) if campaign_id is not None else []
    if as_json:
        echo_json([_row(r) for r in rows])
        return EXIT_OK
    for r in rows:
        kind = "unreadable" if r.problem else ("automatic" if r.auto_reply else "reply")
        office = f"{r.office} <{r.office_email}>" if r.letter_id else "(no letter matched)"
        echo(f"{r.id:>6}  {local_time(r.received_at, '%Y-%m-%d %H:%M')}  {kind:<10} {visible(office)}  "
             f"from {visible(r.sender or '?')}: {visible(r.subject or '(no subject)')}")
    echo(count(len(rows), "reply", "replies") + ("" if len(rows) < limit else f" (the newest {limit})"))
    return EXIT_OK


@replies.command("show")
@click.argument("reply_id", type=int)
@click.option("--json", "as_json", is_flag=True, help="As JSON, for scripts.")
@pass_app
def replies_show(app: App, reply_id: int, as_json: bool) -> int:
    """One reply, whole: its letter, sender, date, subject, attachments and text."""
    r = app.ledger().replies.get(reply_id)
    if r is None:
        raise UserError(f"no reply {reply_id}: `outreach replies list` shows their numbers")
    data = {**_row(r), "text": r.text, "letter_status": r.letter_status}
    if as_json:
        echo_json(data)
        return EXIT_OK
    echo(f"reply {r.id}: " + (f"to the letter {r.letter_id} ({visible(r.office)} <{visible(r.office_email)}>, "
                               f"now {r.letter_status}), matched by {r.matched_by}" if r.letter_id
                               else "matched no letter"))
    if r.problem:
        echo(f"could not be read: {visible(r.problem)} (kept whole in the ledger)")
    if r.auto_reply:
        echo(f"automatic reply: {visible(r.auto_reply)} (does not count as a response)")
    echo(f"from: {visible(r.sender_name)} <{visible(r.sender)}>" if r.sender_name else f"from: {visible(r.sender)}")
    if r.sent_at:
        echo(f"date: {local_time(r.sent_at, '%Y-%m-%d %H:%M')}")
    echo(f"subject: {visible(r.subject)}")
    import json

    for name, size in json.loads(r.attachments or "[]"):
        echo(f"attachment: {visible(name)} ({size:,} bytes; not kept)")
    if r.spam_score is not None:
        echo(f"spam score: {r.spam_score:g}")
    echo("")
    echo(visible(r.text, multiline=True))
    return EXIT_OK


def _row(r) -> dict:
    import json

    return {"id": r.id, "letter_id": r.letter_id, "matched_by": r.matched_by, "office": r.office,
            "office_email": r.office_email, "bioguide_id": r.bioguide_id, "sender": r.sender,
            "sender_name": r.sender_name, "sent_at": utc_iso(r.sent_at) if r.sent_at else None,
            "received_at": utc_iso(r.received_at), "subject": r.subject, "automatic": r.auto_reply,
            "unreadable": r.problem, "spam_score": r.spam_score,
            "attachments": json.loads(r.attachments or "[]")}
