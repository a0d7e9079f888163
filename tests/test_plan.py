"""What a run would do, worked out without writing: the audience, follow-ups, who already has a
letter, who is left out; and the ledger's group writer that carries out what runs decide."""

from __future__ import annotations

import time

import pytest

from conftest import ROOT, record_all
from outreach.audience import select
from outreach.config import Audience, load_config
from outreach.contacts import read_contacts
from outreach.errors import UserError
from outreach.ledger import Ledger
from outreach.plan import plan_campaign
from outreach.states import FILTERED

# -- the audience (pure) ----------------------------------------------------------------------------


@pytest.fixture
def contacts(project):
    return read_contacts(project.root / "contacts.csv").contacts


def test_filters_all_hold_and_each_list_is_any_of(contacts):
    chosen = select(contacts, Audience(chamber="house", committees=("HSFA",))).recipients
    assert chosen and all(c.chamber == "house" and "HSFA" in c.full_committees for c in chosen)
    everyone = select(contacts, Audience())
    assert everyone.recipients == contacts and everyone.not_in_audience == 0


def test_include_adds_exclude_removes_and_unknown_entries_are_named(contacts):
    s = select(contacts, Audience(chamber="senate", include=("M001219",), exclude=("K000384", "nobody@x.org")))
    ids = [c.bioguide_id for c in s.recipients]
    assert "M001219" in ids and "K000384" not in ids and [c.bioguide_id for c in s.excluded] == ["K000384"]
    assert s.unmatched == ["nobody@x.org"]
    only = select(contacts, Audience(include=("S001198", "adam.smith@house.example.org")))
    assert [c.bioguide_id for c in only.recipients] == ["S001198", "S000510"]


def test_parties_compare_by_their_initial(contacts):
    assert select(contacts, Audience(parties=("Democratic",))).recipients == \
        select(contacts, Audience(parties=("D",))).recipients != []


# -- the plan ---------------------------------------------------------------------------------------

def test_without_a_ledger_everyone_in_the_audience_is_still_to_send_in_list_order(project):
    plan = plan_campaign(load_config(project.config), None)
    assert [c.bioguide_id for c in plan.to_send][:3] == ["S001198", "W000437", "K000384"]
    assert plan.new == 14 and plan.known == {} and plan.changes == [] and not plan.already
    assert [c.bioguide_id for c in plan.choose(2)] == ["S001198", "W000437"]
    assert [c.bioguide_id for c in plan.choose(to=("M001219", "s001198"))] == ["M001219", "S001198"]
    with pytest.raises(UserError, match="no recipient with that bioguide id or email"):
        plan.choose(to=("Z999999",))


def set_state(ledger, email: str, status: str, **values) -> None:
    from sqlalchemy import update

    from outreach.ledger import schema as S

    with ledger.write() as db:
        db.execute(update(S.letters).where(S.letters.c.email_key == email).values(status=status, **values))


def test_with_a_ledger_it_counts_who_has_a_letter_and_plans_each_move(project):
    cfg = load_config(project.config)
    ledger = Ledger(cfg.database_url)
    record_all(cfg, ledger)
    set_state(ledger, "dan.sullivan@senate.example.org", "accepted")
    set_state(ledger, "roger.wicker@senate.example.org", "sending")                       # a run died
    set_state(ledger, "timothy.kaine@senate.example.org", "retry_wait", next_attempt_at=time.time() + 600)
    set_state(ledger, "jeanne.shaheen@senate.example.org", "retry_wait", next_attempt_at=time.time() - 5)
    ledger.suppressions.add("james.risch@senate.example.org", "bounce")
    project.write_config(extra='[campaigns.korea-exception.audience]\nexclude = ["ben.lujan@senate.example.org"]\n')
    plan = plan_campaign(load_config(project.config), None, ledger=ledger)
    assert plan.already == {"accepted": 1, "unknown": 1} and plan.orphans == 1
    assert [c.email for c in plan.waiting] == ["timothy.kaine@senate.example.org"]
    assert plan.to_send[0].email == "jeanne.shaheen@senate.example.org"            # due: first in order
    assert [(c.email, r) for c, r in plan.left_out] == [("james.risch@senate.example.org", "suppressed: bounce")]
    moves = {c.email_key: (c.old, c.new, c.reason) for c in plan.changes}
    assert moves == {"james.risch@senate.example.org": ("pending", "skipped", "suppressed: bounce"),
                     "ben.lujan@senate.example.org": ("pending", "skipped", FILTERED)}
    assert len(plan.to_send) == 14 - 1 - 1 - 1 - 1 - 1 and plan.new == 0
    # Planning wrote nothing.
    statuses = {r.email: r.status for r in ledger.letters.listing()}
    assert statuses["james.risch@senate.example.org"] == statuses["ben.lujan@senate.example.org"] == "pending"
    assert statuses["roger.wicker@senate.example.org"] == "sending"


def test_a_follow_up_writes_to_the_first_campaigns_recipients_in_the_state_asked_for(project):
    project.write_config(extra=f'''
[campaigns.later]
contacts = "contacts.csv"
templates = "{ROOT / "templates" / "korea-exception"}"
follow_up_of = "korea-exception"
after_days = 3
[campaigns.later.audience]
status = "not_opened"
''')
    cfg = load_config(project.config)
    ledger = Ledger(cfg.database_url)
    record_all(cfg, ledger, "korea-exception")
    long_ago, lately = time.time() - 5 * 86400, time.time() - 86400
    set_state(ledger, "dan.sullivan@senate.example.org", "delivered", accepted_at=long_ago)
    set_state(ledger, "roger.wicker@senate.example.org", "delivered", accepted_at=lately)   # not 3 days yet
    set_state(ledger, "timothy.kaine@senate.example.org", "opened", accepted_at=long_ago)   # opened: not asked
    plan = plan_campaign(cfg, "later", ledger=ledger)
    assert [c.email for c in plan.to_send] == ["dan.sullivan@senate.example.org"] and plan.not_due == 13
    later = plan_campaign(cfg, "later", ledger=ledger, now=time.time() + 3 * 86400)
    assert [c.email for c in later.to_send] == ["dan.sullivan@senate.example.org", "roger.wicker@senate.example.org"]


# -- the ledger's writer ------------------------------------------------------------------------------

def test_the_writer_commits_what_queued_together_and_a_bad_operation_fails_alone(tmp_path):
    ledger = Ledger(f"sqlite:///{tmp_path / 'l.db'}")
    calls = []

    def handler(db, payloads):
        calls.append(list(payloads))
        if "bad" in payloads:
            raise ValueError("a bad one")
        return [p.upper() for p in payloads]

    writer = ledger.writer
    errors = []
    gate = writer.submit(lambda db, p: [time.sleep(0.2)] * len(p), None)   # holds the thread while we queue
    futures = [writer.submit(handler, p) for p in ("a", "b", "bad", "c")]
    writer.post(handler, "bad", errors.append)
    gate.result()
    assert [f.result() if f.exception() is None else "failed" for f in futures] == ["A", "B", "failed", "C"]
    assert calls[0] == ["a", "b", "bad", "c", "bad"]       # one group first, then each alone
    assert [str(e) for e in errors] == ["a bad one"]
    ledger.close()
