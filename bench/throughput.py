"""Live-send throughput against the recording server, and the rate limiter's accuracy.

    .venv/bin/python bench/throughput.py

The recording server (tests/mockgrid.py) runs in its own process and answers
each request 50 ms after it arrives. Letters go through the real dispatcher,
the real SendGrid library and a real SQLite ledger (WAL, synchronous=FULL).

1. Throughput at concurrency 1, 4, 16, 32 beside the limit concurrency/latency.
   Target: >= 90% of the limit at concurrency 16.
2. Limiter accuracy: rate_per_minute 600 and 6,000 with a fast server.
   Target: within 2% of the set rate, and never above it.
"""

from __future__ import annotations

import subprocess
import sys
import tempfile
import time
import zlib
from pathlib import Path
from types import SimpleNamespace

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from sqlalchemy import insert  # noqa: E402

from outreach import schema as S  # noqa: E402
from outreach.config import Delivery, Sender  # noqa: E402
from outreach.dispatch import Dispatcher  # noqa: E402
from outreach.ledger import Ledger  # noqa: E402
from outreach.live import message_factory  # noqa: E402
from outreach.transports import SendGridTransport  # noqa: E402

KEY = "SG.bench-key"
TEXT = ("Dear Senator Sullivan:\n\n" + "A paragraph of the letter, wrapped at seventy-two columns. " * 50)
HTML = "<p>" + TEXT.replace("\n", "<br>") + "</p>"


def ledger_with(folder: Path, n: int) -> tuple[Ledger, int]:
    ledger = Ledger(f"sqlite:///{folder / 'bench.db'}")
    cid = ledger.campaign_id("bench")
    t = time.time()
    text_z, html_z = zlib.compress(TEXT.encode()), zlib.compress(HTML.encode())
    with ledger.write() as db:
        db.execute(insert(S.letters), [
            dict(id=f"{i:020x}", campaign_id=cid, email=f"office{i}@house.example.org",
                 email_key=f"office{i}@house.example.org", name=f"Member {i}", status="pending", attempts=0,
                 created_at=t + i * 1e-6, updated_at=t) for i in range(n)])
        db.execute(insert(S.archive), [
            dict(letter_id=f"{i:020x}", subject="End the Korea landmine exception", text_z=text_z,
                 html_z=html_z, template_hash="bench", archived_at=t) for i in range(n)])
    return ledger, cid


def server(latency: float):
    proc = subprocess.Popen([sys.executable, str(ROOT / "tests" / "mockgrid.py"), "--latency", str(latency),
                             "--api-key", KEY], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    return proc, proc.stdout.readline().strip()


def run(n: int, concurrency: int, rate: float, latency: float) -> tuple[float, float]:
    """(letters per second over the run, requests the limiter let go per minute)."""
    proc, url = server(latency)
    try:
        with tempfile.TemporaryDirectory() as tmp:
            ledger, cid = ledger_with(Path(tmp), n)
            cfg = SimpleNamespace(sender=Sender(name="Bench Organizer", email="organizer@advocacy-bench.org"))
            dispatcher = Dispatcher(ledger, cid, SendGridTransport(KEY, url, 10), message_factory(cfg, "bench"),
                                    Delivery(rate_per_minute=rate, concurrency=concurrency, batch_size=500))
            # The moments the limiter lets a request go: its output, before any other work.
            released: list[float] = []
            wait = dispatcher.limiter.wait

            def recorded_wait(stop):
                ok = wait(stop)
                if ok:
                    released.append(time.monotonic())
                return ok

            dispatcher.limiter.wait = recorded_wait
            t0 = time.perf_counter()
            summary = dispatcher.run()
            elapsed = time.perf_counter() - t0
            assert summary.accepted == n, summary
            ledger.engine.dispose()
    finally:
        proc.stdin.close()
        proc.wait()
    released.sort()
    steady = (len(released) - 1) / (released[-1] - released[0]) * 60 if len(released) > 1 else 0.0
    return n / elapsed, steady


def main() -> None:
    latency = 0.05
    print(f"throughput, server latency {latency * 1000:.0f} ms, no rate limit")
    print(f"{'concurrency':>12} {'letters':>8} {'letters/s':>10} {'limit/s':>8} {'of limit':>9}")
    for concurrency, n in ((1, 100), (4, 400), (16, 1600), (32, 2400)):
        rate, _ = run(n, concurrency, 60_000, latency)
        limit = concurrency / latency
        print(f"{concurrency:>12} {n:>8} {rate:>10.1f} {limit:>8.0f} {rate / limit:>9.0%}")
    print("target: >= 90% of the limit at concurrency 16")
    print()
    print("limiter accuracy, server latency 5 ms, concurrency 16")
    print(f"{'set /min':>10} {'letters':>8} {'measured /min':>14} {'error':>7}")
    for rate, n in ((600, 120), (6000, 1200)):
        _, measured = run(n, 16, rate, 0.005)
        print(f"{rate:>10} {n:>8} {measured:>14.1f} {(measured - rate) / rate:>+7.2%}")
    print("target: within 2% of the set rate and never above it")


if __name__ == "__main__":
    main()
