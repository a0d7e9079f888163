"""Several `serve` processes on one PostgreSQL ledger: no deadlock, no 503, every event stored once.

Needs $OUTREACH_TEST_POSTGRES_URL (see tests/test_postgres.py); `.ci/run` starts a server.
"""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import threading
import time

from sqlalchemy import func, insert, select

from conftest import ROOT, free_port, wait_for_port
from test_events import T0, ev
from test_postgres import database, pg_url  # noqa: F401 - a fixture
from test_webhook import post, public_b64, signed, signing_key  # noqa: F401 - a fixture
from outreach.ledger import Ledger
from outreach.ledger import schema as S

LETTERS = [f"l{i:03d}" for i in range(40)]
# The order of a letter's life, and the state its last event leaves it in.
LIFE = ["processed", "delivered", "open", "click"]


def pg_project(project, url: str) -> Ledger:
    """The sample project on the PostgreSQL ledger `url`, holding LETTERS accepted."""
    project.write_config(extra=database(url))
    ledger = Ledger(url)
    cid = ledger.campaigns.id("korea-exception")
    with ledger.write() as db:
        db.execute(insert(S.letters), [
            {"id": lid, "campaign_id": cid, "email": f"{lid}@house.example.org", "email_key": f"{lid}@house.example.org",
             "status": "accepted", "attempts": 1, "created_at": T0 - 1000, "updated_at": T0 - 1000,
             "accepted_at": T0 - 500, "provider_message_id": f"msg-{lid}"} for lid in LETTERS])
    return ledger


def start_serve(project, signing_key, *extra: str):
    port = free_port()
    env = {**os.environ, "SENDGRID_WEBHOOK_PUBLIC_KEY": public_b64(signing_key), "OUTREACH_DASHBOARD_TOKEN": "t" * 32}
    log = open(project.root / f"serve-{port}.log", "w+")     # a file: a full pipe would stall the server
    proc = subprocess.Popen([sys.executable, "-m", "outreach", "--config", str(project.config), "serve", "--port",
                             str(port), *extra], cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=log, text=True)
    proc.log = log
    wait_for_port(port, 30, proc)
    return proc, f"http://127.0.0.1:{port}/webhooks/sendgrid"


def stop(proc) -> str:
    proc.send_signal(signal.SIGINT)
    proc.wait(timeout=30)
    proc.log.seek(0)
    err = proc.log.read()
    proc.log.close()
    assert proc.returncode == 0, err
    assert "Traceback" not in err, err
    return err


def send_post(url: str, key, events: list[dict], answers: list) -> None:
    body = json.dumps(events).encode()
    answers.append(post(url, body, signed(key, body)))


def stored(ledger) -> tuple[int, dict[str, str]]:
    with ledger.read() as db:
        n = db.execute(select(func.count()).select_from(S.events)).scalar()
        states = dict(db.execute(select(S.letters.c.id, S.letters.c.status)).all())
    return n, states


def test_two_serve_processes_on_one_ledger_store_every_event_once_and_answer_200(project, pg_url, signing_key):
    ledger = pg_project(project, pg_url)
    (one, url_one), (two, url_two) = start_serve(project, signing_key), start_serve(project, signing_key)
    rng = random.Random(7)
    sent_ids: set[str] = set()
    try:
        for round_no in range(20):
            step = LIFE[min(round_no // 5, 3)]
            # Load-balanced: posts touching the same letters, each to one process, at once.
            posts = []
            for p in range(6):
                chosen = rng.sample(LETTERS, 15)
                posts.append([ev(step, T0 + round_no, letter_id=lid, sg_event_id=f"r{round_no}-p{p}-{lid}")
                              for lid in chosen])
            # A retry racing its first try: the same fresh post to both processes at once.
            twin = [ev(step, T0 + round_no, letter_id=lid, sg_event_id=f"r{round_no}-twin-{lid}")
                    for lid in rng.sample(LETTERS, 20)]
            answers: list = []
            threads = [threading.Thread(target=send_post, args=(url_one if i % 2 else url_two, signing_key, p, answers))
                       for i, p in enumerate(posts)]
            # (in the other process it may share a group commit with other posts, in another order:
            # here, the reverse)
            threads += [threading.Thread(target=send_post, args=(url, signing_key, events, answers))
                        for url, events in ((url_one, twin), (url_two, twin[::-1]))]
            for t in threads:
                t.start()
            for t in threads:
                t.join(60)
            assert len(answers) == 8 and all(code == 200 for code, _ in answers), answers
            sent_ids |= {e["sg_event_id"] for p in posts + [twin] for e in p}
        count, states = stored(ledger)
        assert count == len(sent_ids)                              # every event stored, and once
        touched = {e for e in sent_ids}
        assert touched
        # Every letter ends in the state of the furthest step it saw (rounds 15-19 are clicks).
        clicked = {e.split("-")[-1] for e in sent_ids if e.startswith(("r15", "r16", "r17", "r18", "r19"))}
        assert {lid for lid, s in states.items() if s == "clicked"} == clicked
    finally:
        logs = stop(one) + stop(two)
    # No deadlock by construction: not even one the writer would have tried again.
    assert "deadlock" not in logs.lower() and "trying again" not in logs


def test_serve_workers_runs_that_many_processes_on_postgresql(project, pg_url, signing_key):
    ledger = pg_project(project, pg_url)
    proc, url = start_serve(project, signing_key, "--workers", "3")
    try:
        children = subprocess.run(["pgrep", "-P", str(proc.pid)], capture_output=True, text=True).stdout.split()
        assert len(children) == 3
        answers: list = []
        threads = [threading.Thread(target=send_post, args=(url, signing_key, [
            ev("delivered", T0, letter_id=lid, sg_event_id=f"w-{lid}")], answers)) for lid in LETTERS]
        for t in threads:
            t.start()
        for t in threads:
            t.join(60)
        assert all(code == 200 for code, _ in answers) and len(answers) == len(LETTERS)
        count, states = stored(ledger)
        assert count == len(LETTERS) and set(states.values()) == {"delivered"}
    finally:
        err = stop(proc)
    assert "3 worker processes" in err


def test_a_worker_that_dies_stops_the_service_with_one_line(project, pg_url, signing_key):
    pg_project(project, pg_url)
    proc, _ = start_serve(project, signing_key, "--workers", "2")
    children = subprocess.run(["pgrep", "-P", str(proc.pid)], capture_output=True, text=True).stdout.split()
    os.kill(int(children[0]), signal.SIGKILL)
    proc.wait(timeout=30)
    proc.log.seek(0)
    err = proc.log.read()
    assert proc.returncode == 1
    assert f"worker {children[0]} stopped" in err and "stopping the others" in err and "Traceback" not in err
    assert not any(alive(int(pid)) for pid in children)


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # A zombie is gone but for its exit status.
    with open(f"/proc/{pid}/stat") as f:
        return f.read().split(") ", 1)[1][0] != "Z"


def test_a_parent_killed_outright_leaves_no_worker_behind(project, pg_url, signing_key):
    pg_project(project, pg_url)
    proc, url = start_serve(project, signing_key, "--workers", "2")
    children = [int(p) for p in subprocess.run(["pgrep", "-P", str(proc.pid)], capture_output=True,
                                               text=True).stdout.split()]
    assert len(children) == 2
    proc.kill()
    proc.wait(timeout=10)
    deadline = time.time() + 15
    while any(alive(pid) for pid in children):
        assert time.time() < deadline, "a worker outlived its parent"
        time.sleep(0.1)
