"""The ledger on its own: migrations keep data, state changes are guarded, locks are exclusive."""

from __future__ import annotations

import os
import subprocess
import sys
import time

import pytest
from sqlalchemy import create_engine, insert, select

from outreach.ledger import schema as S
from outreach.errors import UserError
from outreach.ledger import Ledger


def test_an_older_ledger_is_migrated_without_losing_letters(tmp_path):
    url = f"sqlite:///{tmp_path / 'old.db'}"
    engine = create_engine(url)
    version_1 = S.MIGRATIONS[0]
    with engine.begin() as db:
        S.schema_version.create(db)
        S.metadata.create_all(db, tables=version_1[2])
        db.execute(insert(S.schema_version).values(version=1, applied_at=time.time()))
        db.execute(insert(S.campaigns).values(id=1, name="korea-exception", created_at=time.time()))
        db.execute(insert(S.letters).values(id="abc", campaign_id=1, email="a@b.org", email_key="a@b.org",
                                            status="accepted", attempts=1, created_at=1.0, updated_at=1.0))
    engine.dispose()
    ledger = Ledger(url)
    assert ledger.version() == S.CURRENT_VERSION > 1
    assert [r.id for r in ledger.letters.listing(1)] == ["abc"]
    with ledger.engine.connect() as db:
        assert db.execute(select(S.schema_version.c.version).order_by(S.schema_version.c.version)).scalars().all() \
            == [m[0] for m in S.MIGRATIONS]


def test_a_newer_ledger_is_refused(tmp_path):
    url = f"sqlite:///{tmp_path / 'new.db'}"
    ledger = Ledger(url)
    with ledger.engine.begin() as db:
        db.execute(insert(S.schema_version).values(version=S.CURRENT_VERSION + 1, applied_at=time.time()))
    with pytest.raises(UserError, match="newer than this outreach"):
        Ledger(url)


def test_a_missing_folder_is_one_line(tmp_path):
    with pytest.raises(UserError, match="does not exist"):
        Ledger(f"sqlite:///{tmp_path / 'nope' / 'l.db'}")


def test_claim_only_takes_letters_that_are_due(tmp_path):
    ledger = Ledger(f"sqlite:///{tmp_path / 'l.db'}")
    cid = ledger.campaigns.id("c")
    with ledger.write() as db:
        for i, status in enumerate(["pending", "accepted", "unknown", "failed"]):
            db.execute(insert(S.letters).values(id=f"l{i}", campaign_id=cid, email=f"{i}@b.org",
                                                email_key=f"{i}@b.org", status=status, attempts=0,
                                                created_at=i, updated_at=i))
    sending = ledger.letters.sender("me")
    assert [sending.claim(f"l{i}") for i in range(4)] == [True, False, False, False]
    assert sending.claim("l0") is False  # already sending
    assert ledger.letters.orphans_to_unknown(cid) == 1
    assert ledger.letters.release(cid, all_unknown=True) == ["l0", "l2"]
    with pytest.raises(UserError, match="not unknown"):
        ledger.letters.release(cid, ["l1"])


def test_a_lock_held_by_a_live_process_refuses_and_a_dead_holder_is_taken_over(tmp_path):
    url = f"sqlite:///{tmp_path / 'l.db'}"
    ledger = Ledger(url)
    with ledger.lock("scheduler", "the scheduler"):
        with pytest.raises(UserError, match="already running"):
            Ledger(url).lock("scheduler", "the scheduler").acquire()
    # A holder killed without releasing: its pid is gone, so the lock is stale.
    code = ("import os, sys; from outreach.ledger import Ledger; "
            f"Ledger({url!r}).lock('scheduler', 'x').acquire(); os._exit(9)")
    subprocess.run([sys.executable, "-c", code], check=False)
    lock = Ledger(url).lock("scheduler", "the scheduler")
    lock.acquire()
    assert lock.took_over is not None and lock.took_over["pid"] != os.getpid()
    lock.release()


def test_settlement_decides_each_waiting_letter_once_and_keeps_a_retry_time(tmp_path):
    """The plan decides (outreach.plan.settle, pure); the ledger carries it out."""
    from outreach.plan import settle
    from outreach.states import FILTERED

    ledger = Ledger(f"sqlite:///{tmp_path / 'l.db'}")
    cid = ledger.campaigns.id("c")
    rows = [("p", "pending", None, None), ("w", "retry_wait", "HTTP 503", 5000.0),
            ("s", "skipped", "suppressed: bounce", None), ("f", "skipped", FILTERED, None),
            ("a", "accepted", None, None)]
    with ledger.write() as db:
        for name, status, reason, retry_at in rows:
            db.execute(insert(S.letters).values(id=name, campaign_id=cid, email=f"{name}@b.org",
                                                email_key=f"{name}@b.org", status=status, reason=reason,
                                                next_attempt_at=retry_at, attempts=1, created_at=1, updated_at=1))

    def state():
        return {r.id: (r.status, r.reason) for r in ledger.letters.listing(cid)}

    # Nobody in the audience, the bounce lifted: every waiting letter is held as filtered.
    changes = settle(ledger.letters.known(cid), audience=set(), held={})
    assert {c.letter_id: c.new for c in changes} == {"p": "skipped", "w": "skipped", "s": "skipped"}
    assert state()["p"] == ("pending", None)  # read only until applied
    assert ledger.letters.settle(changes) == 3
    assert {k: v for k, v in state().items() if k != "a"} == {k: ("skipped", FILTERED) for k in "pwsf"}
    # All back and one suppressed: the rest wait again; the retry keeps its time.
    everyone = {f"{k}@b.org" for k in "pwsfa"}
    ledger.letters.settle(settle(ledger.letters.known(cid), everyone, {"s@b.org": "suppressed: spamreport"}))
    got = state()
    assert got["p"][0] == "pending" and got["f"][0] == "pending" and got["w"][0] == "retry_wait"
    assert got["s"] == ("skipped", "suppressed: spamreport") and got["a"] == ("accepted", None)
    assert next(r for r in ledger.letters.listing(cid) if r.id == "w").next_attempt_at == 5000.0
    assert settle(ledger.letters.known(cid), everyone, {"s@b.org": "suppressed: spamreport"}) == []  # nothing more to do
