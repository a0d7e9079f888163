"""Report speed over a large campaign: 100,000 letters with 500,000 events.

    .venv/bin/python bench/report.py [LETTERS] [EVENTS]

Builds an SQLite ledger with a realistic mix of states (most delivered, some
opened and clicked, a few bounced, failed, unknown, deferred, skipped) and
events, then times `outreach report --format json` and `--format html`, whole
process, as a user runs them. Targets: JSON under 1 s, HTML under 2 s.
"""

from __future__ import annotations

import random
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from sqlalchemy import insert  # noqa: E402

from outreach.ledger import schema as S  # noqa: E402
from outreach.geography import ALL_CODES  # noqa: E402
from outreach.ledger import Ledger  # noqa: E402

MIX = [("delivered", 0.52), ("opened", 0.22), ("clicked", 0.08), ("accepted", 0.05), ("deferred", 0.03),
       ("bounced", 0.03), ("dropped", 0.01), ("failed", 0.02), ("unknown", 0.01), ("skipped", 0.02),
       ("spamreport", 0.005), ("unsubscribed", 0.005)]
EVENTS_FOR = {"delivered": ["processed", "delivered"], "opened": ["processed", "delivered", "open"],
              "clicked": ["processed", "delivered", "open", "click"], "accepted": ["processed"],
              "deferred": ["processed", "deferred"], "bounced": ["processed", "bounce"],
              "dropped": ["processed", "dropped"], "spamreport": ["processed", "delivered", "spamreport"],
              "unsubscribed": ["processed", "delivered", "unsubscribe"]}


def build(path: Path, letters: int, events: int, seed: int = 7) -> None:
    rng = random.Random(seed)
    ledger = Ledger(f"sqlite:///{path}")
    cid = ledger.campaigns.id("bench")
    states, weights = zip(*MIX)
    codes = list(ALL_CODES)
    parties = ["Democrat", "Republican", "Independent"]
    committees = ["SSAS", "SSFR", "HSAS", "HSFA", "HSAG", "SSBU", ""]
    t0 = time.time() - 5 * 86400
    letter_rows, event_rows = [], []
    for i in range(letters):
        status = rng.choices(states, weights)[0]
        accepted = t0 + rng.random() * 4 * 86400 if status not in ("failed", "skipped") else None
        chamber = "senate" if i % 5 == 0 else "house"
        letter_rows.append(dict(
            id=f"{i:020x}", campaign_id=cid, email=f"office{i}@house.example.org", email_key=f"office{i}@house.example.org",
            bioguide_id=f"B{i % 1000000:06d}", name=f"Member {i}", chamber=chamber, state_code=codes[i % len(codes)],
            district=None if chamber == "senate" else i % 20, party=parties[i % 3],
            committees=";".join({rng.choice(committees), rng.choice(committees)} - {""}), status=status,
            reason={"failed": "HTTP 400: Invalid email", "bounced": "bounce: 550 5.1.1 no such user",
                    "unknown": "no answer within 30 s", "skipped": "suppressed: bounce"}.get(status),
            attempts=1, created_at=t0, updated_at=accepted or t0, accepted_at=accepted,
            last_event=(EVENTS_FOR.get(status) or [None])[-1],
            last_event_at=accepted + 3600 if accepted and status in EVENTS_FOR else None))
        for k, kind in enumerate(EVENTS_FOR.get(status, [])):
            event_rows.append((i, kind, accepted + 60 * (k + 1) + rng.random() * 3600))
    # Pad with repeats (opens, deferrals) to reach the wanted number of events.
    while len(event_rows) < events:
        i, kind, at = event_rows[rng.randrange(len(event_rows))]
        event_rows.append((i, "open" if kind in ("open", "click", "delivered") else kind, at + rng.random() * 86400))
    with ledger.write() as db:
        db.execute(insert(S.letters), letter_rows)
        for start in range(0, len(event_rows), 50_000):
            db.execute(insert(S.events), [
                dict(letter_id=f"{i:020x}", campaign_id=cid, matched_by="letter_id", event=kind, type=None,
                     sg_event_id=f"e{n}", dedupe_key=f"e{n}", sg_message_id=f"m{i}.f", email=f"office{i}@house.example.org",
                     occurred_at=at, received_at=at + 5, detail=None, raw="{}")
                for n, (i, kind, at) in enumerate(event_rows[start:start + 50_000], start)])
    ledger.engine.dispose()


def timed(cmd: list[str], cwd: Path) -> float:
    t0 = time.perf_counter()
    subprocess.run(cmd, cwd=cwd, check=True, stdout=subprocess.DEVNULL)
    return time.perf_counter() - t0


def main() -> None:
    letters = int(sys.argv[1]) if len(sys.argv) > 1 else 100_000
    events = int(sys.argv[2]) if len(sys.argv) > 2 else 500_000
    outreach = shutil.which("outreach") or str(Path(sys.executable).with_name("outreach"))
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        t0 = time.perf_counter()
        build(work / "ledger.db", letters, events)
        print(f"built a ledger of {letters:,} letters and {events:,} events in {time.perf_counter() - t0:.1f} s")
        (work / "config.toml").write_text(
            '[sender]\nname = "Bench"\nemail = "bench@advocacy-bench.org"\n'
            '[database]\nurl = "sqlite:///ledger.db"\n'
            f'[campaigns.bench]\ncontacts = "c.csv"\ntemplates = "{ROOT / "templates" / "korea-exception"}"\n')
        print("whole process, as a user runs it (Python start-up and imports included):")
        for fmt, target in (("json", 1.0), ("html", 2.0), ("csv", None)):
            runs = [timed([outreach, "report", "--format", fmt, "--out", f"report.{fmt}"], work) for _ in range(3)]
            size = (work / f"report.{fmt}").stat().st_size
            goal = f"(target under {target:.0f} s)" if target else ""
            print(f"  outreach report --format {fmt:<5} median {statistics.median(runs):5.2f} s, "
                  f"best {min(runs):5.2f} s, {size / 1e6:6.1f} MB {goal}")
        print("in one process, after start-up (reading the ledger and writing the format):")
        from outreach.config import load_config
        from outreach.ledger import open_ledger
        from outreach.report_render import HTML_ROW_LIMIT, to_html
        from outreach.reports import build_report, report_json

        ledger = open_ledger(load_config(work / "config.toml"))
        jobs = {"json": lambda: report_json(ledger, "bench"),
                "html": lambda: to_html(build_report(ledger, "bench", letters_limit=HTML_ROW_LIMIT))}
        for fmt, job in jobs.items():
            job()
            runs = []
            for _ in range(3):
                t0 = time.perf_counter()
                job()
                runs.append(time.perf_counter() - t0)
            print(f"  {fmt:<5} median {statistics.median(runs):5.2f} s, best {min(runs):5.2f} s")


if __name__ == "__main__":
    main()
