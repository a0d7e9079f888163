"""`outreach schedule`: run the scheduler, see what it will do, pause and resume campaigns."""

from __future__ import annotations

import click

from outreach.cli_base import App, echo, pass_app
from outreach.errors import EXIT_OK, UserError
from outreach.text import count

DAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")


@click.group()
def schedule() -> None:
    """Scheduled batch mailings (configured in [campaigns.NAME.schedule])."""


@schedule.command("run")
@pass_app
def schedule_run(app: App) -> int:
    """Run the scheduler until stopped (the same as `python scheduler.py`)."""
    from outreach.schedule import run_scheduler

    return run_scheduler(str(app.config_path))


def _scheduled(cfg, name: str):
    if name not in cfg.campaigns:
        raise UserError(f"{cfg.path}: no campaign {name!r} (campaigns: {', '.join(sorted(cfg.campaigns)) or 'none'})")
    if cfg.campaigns[name].schedule is None:
        raise UserError(f"{cfg.path}: campaign {name!r} has no [campaigns.{name}.schedule] table")
    return cfg.campaigns[name].schedule


def _days(days: frozenset[int]) -> str:
    ordered = sorted(days)
    if ordered == list(range(ordered[0], ordered[-1] + 1)) and len(ordered) > 2:
        return f"{DAYS[ordered[0]]}-{DAYS[ordered[-1]]}"
    return ",".join(DAYS[d] for d in ordered)


@schedule.command("show")
@pass_app
def schedule_show(app: App) -> int:
    """Each scheduled campaign: state, window, next run, letters remaining, expected finish."""
    import datetime as dt

    from outreach.office_hours import UTC, every, local_midnight, next_tick, when
    from outreach.plan import plan_campaign

    cfg = app.config
    scheduled = {n: c.schedule for n, c in sorted(cfg.campaigns.items()) if c.schedule is not None}
    if not scheduled:
        echo(f"{cfg.path}: no campaign has a [campaigns.NAME.schedule] table")
        return EXIT_OK
    ledger = app.ledger()
    now = dt.datetime.now(UTC)
    for name, s in scheduled.items():
        plan = plan_campaign(cfg, name, ledger=ledger)
        cid = plan.campaign_id
        state = ledger.campaigns.state(cid)
        counts = ledger.letters.counts(cid)
        unrecorded = plan.new
        remaining = len(plan.to_send) + len(plan.waiting)
        status = ("paused" if state.paused else "finished" if state.ended_at and not remaining
                  else "live" if s.live else "not live (logs only)")
        batch = s.batch_size or cfg.delivery.batch_size
        nxt = next_tick(now, s) if remaining and not state.paused else None
        sent_today = ledger.letters.sent_since(cid, local_midnight(now, s).timestamp()) if cid is not None else 0
        finish = _finish(now, s, remaining, batch, sent_today, state.paused, name)
        echo(f"{name}: {status}")
        echo(f"  window: {_days(s.days)} {s.window[0]:%H:%M}-{s.window[1]:%H:%M} {s.timezone}, "
                   f"every {every(s)}, {count(batch, 'letter')} a tick"
                   + (f", at most {s.daily_cap} a day" if s.daily_cap else "")
                   + ("" if s.skip_federal_holidays else ", federal holidays included"))
        echo(f"  next run: {when(nxt, s)}")
        echo(f"  letters remaining: {remaining} ({unrecorded} not yet recorded)"
                   + (f"; {counts['unknown']} unknown need review" if counts["unknown"] else ""))
        echo(f"  expected finish: {finish}")
    return EXIT_OK


def _finish(now, s, remaining: int, batch: int, sent_today: int, paused: bool, name: str) -> str:
    """When the last letter should go, at `batch` a tick within the window and daily cap; or why
    no date can be given."""
    from outreach.office_hours import LOOKAHEAD_DAYS, expected_finish, when

    if not remaining:
        return "nothing is left to send"
    if paused:
        return f"none while paused (`outreach schedule resume {name}`)"
    finish = expected_finish(now, s, remaining, batch, sent_today)
    if finish is None:
        return (f"not within {LOOKAHEAD_DAYS} days at {count(batch, 'letter')} a tick"
                + (f" and {s.daily_cap} a day" if s.daily_cap else "") + ": raise batch_size or daily_cap")
    if not s.live:
        return f"{when(finish, s)}, once live = true (now its ticks only log what they would send)"
    return when(finish, s)


def _set_paused(app: App, name: str, paused: bool) -> int:
    cfg = app.config
    _scheduled(cfg, name)
    ledger = app.ledger()
    ledger.campaigns.set_paused(ledger.campaigns.id(name), paused)
    echo(f"{name}: {'paused' if paused else 'resumed'}; a running scheduler honours it at its next tick")
    return EXIT_OK


@schedule.command("pause")
@click.argument("name")
@pass_app
def schedule_pause(app: App, name: str) -> int:
    """Pause a campaign: the scheduler sends nothing for it until `resume`."""
    return _set_paused(app, name, True)


@schedule.command("resume")
@click.argument("name")
@pass_app
def schedule_resume(app: App, name: str) -> int:
    """Resume a paused campaign."""
    return _set_paused(app, name, False)
