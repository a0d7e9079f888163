"""Signed Event Webhook ingestion: events per second through `outreach serve`. Prints figures; asserts nothing.

    .venv/bin/python bench/webhook.py [LETTERS]

`outreach serve` runs in its own process on 127.0.0.1 with a real ledger
(SQLite, WAL, synchronous=FULL) holding LETTERS accepted letters (default
20,000). Each letter gets processed, delivered, open and click events with
SendGrid-like random ids, posted in time order in posts of 1,000, so a post
touches hundreds of different letters, as a backlog replayed by SendGrid
would. Each post is signed with a fresh P-256 signature, verified, parsed,
matched, deduplicated and committed, with its letters' states, before the answer.

1. one poster, posts one after another (the first third of the events);
2. 8 concurrent posters (the rest);
3. every post of (1) and (2) again: all duplicates, nothing stored twice.

Then the ledger is counted: every event stored exactly once, nothing lost.
Target: >= 10,000 events/s.

    .venv/bin/python bench/webhook.py [LETTERS] --postgres ADMIN_URL [--workers 1,2,4]

runs the same on PostgreSQL (a throwaway database for each run, made through
ADMIN_URL, e.g. $OUTREACH_TEST_POSTGRES_URL), once for each `serve --workers` count.
"""

from __future__ import annotations

import base64
import json
import os
import random
import secrets
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from cryptography.hazmat.primitives import hashes, serialization  # noqa: E402
from cryptography.hazmat.primitives.asymmetric import ec  # noqa: E402
from sqlalchemy import func, insert, select  # noqa: E402

from outreach.ledger import schema as S  # noqa: E402
from outreach.ledger import Ledger  # noqa: E402
from outreach.letters import letter_id  # noqa: E402

PER_POST = 1_000
LOG = None   # --log FILE: serve's own log goes there
CONCURRENCY = 8
CONFIG = """
[sender]
name = "Bench Organizer"
email = "organizer@advocacy-bench.org"

[database]
url = "{url}"

[campaigns.bench]
contacts = "contacts.csv"
templates = "templates"
"""


def letters(ledger: Ledger, n: int) -> list[tuple[str, str, str]]:
    """n accepted letters: (id, email, X-Message-Id), ids as outreach makes them."""
    cid = ledger.campaigns.id("bench")
    t = time.time() - 2 * 86400   # recorded and sent before any of their events (a day ago, see event_stream)
    rows = []
    for i in range(n):
        email = f"office{i}@house.example.org"
        rows.append(dict(id=letter_id("bench", email), campaign_id=cid, email=email, email_key=email,
                         status="accepted", attempts=1, created_at=t, updated_at=t, accepted_at=t,
                         provider_message_id=sendgrid_id()))
    with ledger.write() as db:
        db.execute(insert(S.letters), rows)
    return [(r["id"], r["email"], r["provider_message_id"]) for r in rows]


def sendgrid_id() -> str:
    """An id shaped like SendGrid's (X-Message-Id, sg_event_id): 22 random URL-safe base64 characters."""
    return base64.urlsafe_b64encode(secrets.token_bytes(16)).decode()[:22]


def event_stream(recipients: list[tuple[str, str, str]]) -> list[dict]:
    """Events as SendGrid posts them, in time order: each letter processed as it is sent (ten a
    second), delivered seconds later, opened and clicked within the hours after."""
    rng = random.Random(7)
    start = int(time.time()) - 86400
    events = []
    for n, (letter, email, message_id) in enumerate(recipients):
        sent = start + n // 10
        base = {"email": email, "letter_id": letter, "campaign_id": "bench", "category": ["bench"],
                "sg_message_id": f"{message_id}.filterdrecv-5645d9c87f-abcde-1-64A7C5B1-2.0",
                "smtp-id": f"<{message_id}@geopod-ismtpd-3>"}
        opened = sent + rng.randint(60, 6 * 3600)
        events += [
            {**base, "event": "processed", "timestamp": sent, "sg_event_id": sendgrid_id()},
            {**base, "event": "delivered", "timestamp": sent + rng.randint(1, 20), "sg_event_id": sendgrid_id(),
             "response": "250 2.0.0 OK", "tls": 1, "ip": "149.72.1.1"},
            {**base, "event": "open", "timestamp": opened, "sg_event_id": sendgrid_id(),
             "useragent": "Mozilla/5.0 (Windows NT 10.0; Win64; x64)", "ip": "203.0.113.9",
             "sg_machine_open": False},
            {**base, "event": "click", "timestamp": opened + rng.randint(5, 600), "sg_event_id": sendgrid_id(),
             "url": "https://mine-ban-advocates.org/treaty", "useragent": "Mozilla/5.0", "ip": "203.0.113.9"}]
    return sorted(events, key=lambda e: e["timestamp"])


def bodies(events: list[dict]) -> list[bytes]:
    return [json.dumps(events[i:i + PER_POST]).encode() for i in range(0, len(events), PER_POST)]


class Poster:
    def __init__(self, url: str, key):
        self.url = url
        self.key = key
        self.latencies: list[float] = []
        self.answers: list[dict] = []
        self.errors: list[str] = []
        self.lock = threading.Lock()

    def post(self, body: bytes) -> None:
        ts = str(int(time.time()))
        signature = base64.b64encode(self.key.sign(ts.encode() + body, ec.ECDSA(hashes.SHA256()))).decode()
        request = urllib.request.Request(self.url, data=body, method="POST", headers={
            "Content-Type": "application/json", "X-Twilio-Email-Event-Webhook-Signature": signature,
            "X-Twilio-Email-Event-Webhook-Timestamp": ts})
        t0 = time.perf_counter()
        try:
            with urllib.request.urlopen(request, timeout=120) as r:
                answer = json.loads(r.read())
        except Exception as e:  # noqa: BLE001 - counted and shown
            with self.lock:
                self.errors.append(f"{type(e).__name__}: {e}")
            return
        with self.lock:
            self.latencies.append(time.perf_counter() - t0)
            self.answers.append(answer)

    def run(self, posts: list[bytes], concurrency: int) -> float:
        """Post everything with `concurrency` posters; returns the seconds it took."""
        queue = list(reversed(posts))

        def work():
            while True:
                with self.lock:
                    if not queue:
                        return
                    body = queue.pop()
                self.post(body)

        threads = [threading.Thread(target=work) for _ in range(concurrency)]
        t0 = time.perf_counter()
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        return time.perf_counter() - t0


def serve(folder: Path, key, workers: int = 1) -> tuple[subprocess.Popen, str]:
    der = key.public_key().public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = {**os.environ, "SENDGRID_WEBHOOK_PUBLIC_KEY": base64.b64encode(der).decode()}
    proc = subprocess.Popen([sys.executable, "-m", "outreach", "--config", str(folder / "config.toml"), "serve",
                             "--port", str(port), "--workers", str(workers)], cwd=ROOT, env=env,
                            stdout=subprocess.DEVNULL, stderr=LOG or subprocess.DEVNULL)
    deadline = time.time() + 20
    while True:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            break
        except OSError:
            if time.time() > deadline or proc.poll() is not None:
                raise SystemExit("outreach serve did not start")
            time.sleep(0.05)
    return proc, f"http://127.0.0.1:{port}/webhooks/sendgrid"


def report(label: str, poster: Poster, posts: int, seconds: float, first: int) -> None:
    answers = poster.answers[first:]
    received = sum(a["received"] for a in answers)
    stored = sum(a["stored"] for a in answers)
    lat = sorted(poster.latencies[first:])
    p50 = statistics.median(lat) * 1000 if lat else 0
    p95 = lat[int(len(lat) * 0.95) - 1] * 1000 if lat else 0
    print(f"{label:<34} {posts:>5} {received:>8} {stored:>8} {seconds:>7.2f} {received / seconds:>10,.0f} "
          f"{p50:>7.0f} {p95:>7.0f}")


def run(url: str, n_letters: int, workers: int, label: str) -> None:
    key = ec.generate_private_key(ec.SECP256R1())
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        (folder / "config.toml").write_text(CONFIG.format(url=url.replace("{folder}", str(folder))))
        ledger = Ledger(url.replace("{folder}", str(folder)))
        recipients = letters(ledger, n_letters)
        events = event_stream(recipients)
        # A third for the lone poster, the rest for the concurrent ones.
        split = (len(events) // 3) // PER_POST * PER_POST
        alone, together = bodies(events[:split]), bodies(events[split:])
        proc, post_url = serve(folder, key, workers)
        try:
            poster = Poster(post_url, key)
            print(f"{n_letters} letters, {len(events)} events, posts of {PER_POST}; {label}, "
                  f"serve --workers {workers}")
            print(f"{'':<34} {'posts':>5} {'events':>8} {'stored':>8} {'seconds':>7} {'events/s':>10} "
                  f"{'p50 ms':>7} {'p95 ms':>7}")
            seconds = poster.run(alone, 1)
            report("1 poster", poster, len(alone), seconds, 0)
            first = len(poster.answers)
            seconds = poster.run(together, CONCURRENCY)
            report(f"{CONCURRENCY} concurrent posters", poster, len(together), seconds, first)
            first = len(poster.answers)
            seconds = poster.run(alone + together, CONCURRENCY)
            report(f"every post again ({CONCURRENCY} posters)", poster, len(alone) + len(together), seconds, first)
        finally:
            proc.terminate()
            proc.wait()
        with ledger.engine.connect() as db:
            stored = db.execute(select(func.count()).select_from(S.events)).scalar()
            states = dict(db.execute(select(S.letters.c.status, func.count()).group_by(S.letters.c.status)).all())
        ledger.close()
        print(f"errors: {len(poster.errors)}" + (f" (first: {poster.errors[0]})" if poster.errors else ""))
        print(f"events in the ledger: {stored} of {len(events)} sent ({len(events) - stored} lost, "
              f"{max(0, stored - len(events))} extra); letters: {states}")


def throwaway_database(admin_url: str):
    """A context manager giving the URL of a new PostgreSQL database, dropped afterwards."""
    import contextlib

    from sqlalchemy import create_engine, text
    from sqlalchemy.engine import make_url
    from sqlalchemy.pool import NullPool

    @contextlib.contextmanager
    def made():
        name = f"outreach_bench_{secrets.token_hex(4)}"
        admin = create_engine(admin_url, isolation_level="AUTOCOMMIT", poolclass=NullPool)
        with admin.connect() as db:
            db.execute(text(f'CREATE DATABASE "{name}"'))
        try:
            yield make_url(admin_url).set(database=name).render_as_string(hide_password=False)
        finally:
            with admin.connect() as db:
                db.execute(text("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = :n"),
                           {"n": name})
                db.execute(text(f'DROP DATABASE IF EXISTS "{name}"'))

    return made()


def main() -> None:
    import argparse

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("letters", nargs="?", type=int, default=20_000)
    parser.add_argument("--postgres", metavar="ADMIN_URL", help="run on PostgreSQL (a throwaway database)")
    parser.add_argument("--workers", default="1", help="serve --workers counts, comma-separated (PostgreSQL)")
    parser.add_argument("--log", metavar="FILE", help="keep serve's log in FILE")
    args = parser.parse_args()
    global LOG
    LOG = open(args.log, "w") if args.log else None
    if args.postgres is None:
        run("sqlite:///{folder}/bench.db", args.letters, 1, "SQLite WAL, synchronous=FULL")
    else:
        for workers in (int(w) for w in args.workers.split(",")):
            with throwaway_database(args.postgres) as url:
                run(url, args.letters, workers, "PostgreSQL")
            print()
    print("target: >= 10,000 events/s, nothing lost")


if __name__ == "__main__":
    main()
