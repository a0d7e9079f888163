"""Live-send throughput, whole process, against the recording server; and the rate limiter's accuracy.

    .venv/bin/python bench/throughput.py [--python PATH] [--letters N]

1. Whole process: `outreach send --live --yes` of 4,000 letters (the offices
   of ../shared/congress/contacts-congress.csv, each repeated with a numbered
   address), timed from the command's start to its exit, against the
   recording server (tests/mockgrid.py, its own process) answering each
   request 50 ms after it arrives, at concurrency 16 and no rate limit. The
   limit is concurrency / latency = 320 letters/s. Target: >= 90% of it.
   `--python` runs another checkout's outreach (its venv's python), so two
   versions are measured side by side in one run.
2. Limiter accuracy: rate_per_minute 600 and 6,000 with a fast server, the
   same whole command. Target: within 2% of the set rate, never above it.
"""

from __future__ import annotations

import argparse
import csv
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared" / "congress" / "contacts-congress.csv"
KEY = "SG.bench-key"
RUNS = 3

CONFIG = """
[sender]
name = "Bench Organizer"
email = "organizer@advocacy-bench.org"
organization = "Bench Advocacy Network"

[delivery]
transport = "sendgrid"
rate_per_minute = {rate}
concurrency = {concurrency}
batch_size = 500
timeout_s = 10

[sendgrid]
api_host = "{url}"

[campaigns.bench]
contacts = "recipients.csv"
templates = "{templates}"
"""


def recipients(folder: Path, n: int) -> Path:
    """n contacts: the real offices, repeated with numbered addresses."""
    with open(SHARED, newline="", encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    path = folder / "recipients.csv"
    with open(path, "w", newline="", encoding="utf-8") as f:
        w = csv.DictWriter(f, fieldnames=list(rows[0]))
        w.writeheader()
        for i in range(n):
            row = dict(rows[i % len(rows)])
            row["email"] = f"office{i}@{'senate' if row['chamber'] == 'senate' else 'house'}.example.org"
            row["term_end"] = "2031-01-03"  # the bench is about speed, not the calendar
            w.writerow(row)
    return path


def server(latency: float):
    proc = subprocess.Popen([sys.executable, str(ROOT / "tests" / "mockgrid.py"), "--latency", str(latency),
                             "--api-key", KEY], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    return proc, proc.stdout.readline().strip()


def live_send(python: str, checkout: Path, n: int, concurrency: int, rate: float, latency: float) -> dict:
    """One whole `outreach send --live --yes`: seconds from start to exit, and what the server saw."""
    proc, url = server(latency)
    try:
        with tempfile.TemporaryDirectory() as tmp:
            folder = Path(tmp)
            recipients(folder, n)
            (folder / "config.toml").write_text(CONFIG.format(
                rate=rate, concurrency=concurrency, url=url,
                templates=checkout / "templates" / "korea-exception"), encoding="utf-8")
            env = {**os.environ, "SENDGRID_API_KEY": KEY, "PYTHONDONTWRITEBYTECODE": ""}
            env.pop("OUTREACH_DEBUG", None)
            t0 = time.perf_counter()
            done = subprocess.run([python, "-m", "outreach", "--config", str(folder / "config.toml"),
                                   "send", "--live", "--yes"], cwd=folder, env=env, capture_output=True,
                                  text=True)
            elapsed = time.perf_counter() - t0
            if done.returncode != 0:
                raise SystemExit(f"outreach exited {done.returncode}: {done.stderr[-2000:]}{done.stdout[-2000:]}")
    finally:
        proc.stdin.close()
        delivered = int(proc.stdout.readline().strip() or 0)
        proc.wait()
    if delivered != n:
        raise SystemExit(f"the server received {delivered} letters, not {n}")
    return {"seconds": elapsed, "per_s": n / elapsed}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--python", action="append", default=[],
                        help="another checkout's venv python to measure beside this one (repeatable)")
    parser.add_argument("--letters", type=int, default=4000)
    args = parser.parse_args()
    if not SHARED.exists():
        raise SystemExit(f"needs the shared Congress data at {SHARED}")
    pythons = [str(ROOT / ".venv" / "bin" / "python"), *args.python]
    latency, concurrency = 0.05, 16
    limit = concurrency / latency
    print(f"whole process: send --live of {args.letters} letters, latency {latency * 1000:.0f} ms, "
          f"concurrency {concurrency}, limit {limit:.0f}/s (median of {RUNS}, after one uncounted run)")
    for python in pythons:
        checkout = Path(python).absolute().parents[2]
        live_send(python, checkout, 200, concurrency, 60_000, latency)  # warm: bytecode, disk caches
        runs = [live_send(python, checkout, args.letters, concurrency, 60_000, latency) for _ in range(RUNS)]
        secs = statistics.median(r["seconds"] for r in runs)
        print(f"  {checkout}: {secs:.2f} s ({min(r['seconds'] for r in runs):.2f}-"
              f"{max(r['seconds'] for r in runs):.2f}), {args.letters / secs:.1f} letters/s, "
              f"{args.letters / secs / limit:.0%} of the limit")
    print("target: >= 90% of the limit")
    print()
    print("limiter accuracy, whole process, latency 5 ms, concurrency 16")
    print(f"{'set /min':>10} {'letters':>8} {'measured /min':>14} {'error':>7}")
    for rate, n in ((600, 120), (6000, 1200)):
        # The first letter leaves at once and the last one at (n - 1) intervals: the rate is
        # measured over the sending part of the run, from the server's own record.
        r = limiter_run(pythons[0], n, rate)
        print(f"{rate:>10} {n:>8} {r:>14.1f} {(r - rate) / rate:>+7.2%}")
    print("target: within 2% of the set rate and never above it")


def limiter_run(python: str, n: int, rate: float) -> float:
    """Letters a minute as the server saw them arrive (first to last), for a whole live send."""
    sys.path.insert(0, str(ROOT / "tests"))
    from mockgrid import MockGrid

    with MockGrid(api_key=KEY, latency=0.005) as grid, tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        recipients(folder, n)
        (folder / "config.toml").write_text(CONFIG.format(rate=rate, concurrency=16, url=grid.url,
                                                          templates=ROOT / "templates" / "korea-exception"))
        env = {**os.environ, "SENDGRID_API_KEY": KEY}
        done = subprocess.run([python, "-m", "outreach", "--config", str(folder / "config.toml"), "send", "--live",
                               "--yes"], cwd=folder, env=env, capture_output=True, text=True)
        if done.returncode != 0:
            raise SystemExit(f"outreach exited {done.returncode}: {done.stderr[-2000:]}")
        times = sorted(r.at for r in grid.deliveries())
    return (len(times) - 1) / (times[-1] - times[0]) * 60


if __name__ == "__main__":
    main()
