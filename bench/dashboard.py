"""Dashboard page times on a large campaign (10,000 letters, 50,000 events).

    .venv/bin/python bench/dashboard.py [LETTERS]

Serves the real app (Hypercorn, as `serve` does, 127.0.0.1) over a ledger built like
bench/report.py's and times each page over HTTP, five times. Target: no page
over 1 s.
"""

from __future__ import annotations

import statistics
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))
sys.path.insert(0, str(ROOT / "bench"))

from report import build  # noqa: E402


def base(server) -> str:
    return f"http://127.0.0.1:{server.port}"


def main() -> None:
    letters = int(sys.argv[1]) if len(sys.argv) > 1 else 10_000
    from test_webhook import WebhookServer

    from outreach.config import load_config
    from outreach.dashboard import dashboard_routes
    from outreach.ledger import Ledger
    from outreach.webhook import create_app

    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        build(work / "ledger.db", letters, letters * 5)
        (work / "config.toml").write_text(
            '[sender]\nname = "Bench"\nemail = "bench@advocacy-bench.org"\n'
            '[database]\nurl = "sqlite:///ledger.db"\n'
            f'[campaigns.bench]\ncontacts = "c.csv"\ntemplates = "{ROOT / "templates" / "korea-exception"}"\n')
        cfg = load_config(work / "config.toml")
        ledger = Ledger(cfg.database_url)
        some = ledger.letters.listing(limit=1)[0].id
        from cryptography.hazmat.primitives.asymmetric import ec

        key = ec.generate_private_key(ec.SECP256R1()).public_key()  # the webhook's; unused here
        app = create_app(cfg, ledger, public_key=key, routes=dashboard_routes(cfg, ledger, None))
        pages = ["/", "/campaigns/bench", f"/campaigns/bench?page={letters // 100}", "/offices?q=Member 12",
                 "/offices?q=TX", f"/letters/{some}", "/unmatched"]
        print(f"dashboard over {letters:,} letters and {letters * 5:,} events (seconds, 5 requests each)")
        with WebhookServer(app) as server:
            worst = 0.0
            for path in pages:
                times = []
                for _ in range(5):
                    t0 = time.perf_counter()
                    with urllib.request.urlopen(base(server) + path.replace(" ", "%20"), timeout=30) as r:
                        size = len(r.read())
                    times.append(time.perf_counter() - t0)
                worst = max(worst, max(times))
                print(f"  {path:<34} median {statistics.median(times):6.3f}  max {max(times):6.3f}  "
                      f"{size / 1024:7.0f} KB")
        print(f"slowest request: {worst:.3f} s (target: no page over 1 s)")


if __name__ == "__main__":
    main()
