"""Crash safety: `outreach send --live` killed with SIGKILL at random moments, then resumed.

The server must receive each letter at most once; at the end every letter is
accepted or unknown, and unknown ones are no more than the workers in flight
at the kills.
"""

from __future__ import annotations

import csv
import os
import random
import signal
import subprocess
import sys
import time

import pytest

from conftest import ROOT
from mockgrid import MockGrid
from test_live import KEY, campaign_letters, write_live_config

RECIPIENTS = 120


def many_contacts(project, n: int) -> None:
    """n offices: the sample's rows, each address numbered so every recipient is distinct."""
    with open(ROOT / "contacts" / "sample.csv", encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    with open(project.root / "contacts.csv", "w", encoding="utf-8", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(rows[0]))
        w.writeheader()
        for i in range(n):
            row = dict(rows[i % len(rows)])
            local, domain = row["email"].split("@")
            row["email"] = f"{local}.{i}@{domain}"
            w.writerow(row)


def run_with_kills(project, grid, kills_wanted: int, seed: int, concurrency: int, time_budget: float):
    """Start `send --live`, kill it with SIGKILL at a random moment once it has begun sending
    (whatever the machine's speed), `kills_wanted` times; then let a last run finish."""
    rng = random.Random(seed)
    env = {**os.environ, "SENDGRID_API_KEY": KEY}
    cmd = [sys.executable, "-m", "outreach", "--config", str(project.config), "send", "--live", "--yes"]
    kills = 0
    deadline = time.time() + time_budget
    while time.time() < deadline:
        proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        if kills < kills_wanted:
            before = len(grid.deliveries())
            while proc.poll() is None and len(grid.deliveries()) == before and time.time() < deadline:
                time.sleep(0.005)
            time.sleep(rng.uniform(0.0, 0.25))  # mid-send: requests in flight, finishes being committed
            if proc.poll() is None:
                proc.send_signal(signal.SIGKILL)
                proc.wait()
                kills += 1
                continue
            pytest.fail(f"the campaign ran out after {kills} kills: too few recipients for this machine's speed")
        proc.wait(timeout=120)
        if proc.returncode in (0, 1):
            return kills, proc.returncode
        pytest.fail(f"the last run exited with {proc.returncode}")
    pytest.fail(f"did not finish within {time_budget} s ({kills} kills)")


@pytest.mark.parametrize("seed,concurrency", [(1, 4), (2, 8)])
def test_sigkill_at_random_moments_never_sends_a_letter_twice(project, seed, concurrency):
    many_contacts(project, RECIPIENTS)
    with MockGrid(api_key=KEY, latency=0.03) as grid:
        write_live_config(project, grid, concurrency=concurrency, rate_per_minute=1500)
        kills, code = run_with_kills(project, grid, kills_wanted=11, seed=seed, concurrency=concurrency,
                                     time_budget=150)
        received = grid.received
    assert kills >= 11
    # The server received each letter at most once, across every kill and restart.
    assert max(received.values()) == 1, [k for k, v in received.items() if v > 1]
    rows = campaign_letters(project)
    assert len(rows) == RECIPIENTS
    statuses = {row.id: row.status for row in rows}
    assert set(statuses.values()) <= {"accepted", "unknown"}, statuses
    unknown = [i for i, s in statuses.items() if s == "unknown"]
    assert len(unknown) <= kills * concurrency
    # Every accepted letter reached the server; no unknown letter was sent twice.
    assert {i for i, s in statuses.items() if s == "accepted"} <= set(received)
    assert code == (1 if unknown else 0)
