"""`outreach contacts refresh` on the whole Congress, whole process (start to exit).

    .venv/bin/python bench/refresh.py

The 537-member list of ../shared/congress/contacts-congress.csv held against
the official files of ../shared/congress/upstream (YAML, then the CSV forms),
with --out. Reading the 1 MB legislators YAML is most of it.
"""

from __future__ import annotations

import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
CONGRESS = ROOT.parent / "shared" / "congress"
RUNS = 5


def timed(command: list[str]) -> float:
    t0 = time.perf_counter()
    done = subprocess.run(command, capture_output=True, text=True)
    elapsed = time.perf_counter() - t0
    if done.returncode not in (0, 1):
        raise SystemExit(f"failed ({done.returncode}): {done.stderr[-500:]}")
    return elapsed


def main() -> None:
    if not CONGRESS.exists():
        raise SystemExit(f"needs {CONGRESS}")
    outreach = str(Path(sys.executable).with_name("outreach"))
    listing = CONGRESS / "contacts-congress.csv"
    up = CONGRESS / "upstream"
    print(f"contacts refresh of {listing.name} (537 members), whole process; median of {RUNS} after one "
          "uncounted run")
    with tempfile.TemporaryDirectory() as tmp:
        for label, files in (("YAML", ("legislators-current.yaml", "committee-membership-current.yaml")),
                             ("CSV", ("legislators-current.csv", "committee-membership-current.csv"))):
            command = [outreach, "contacts", "refresh", str(listing), "--legislators", str(up / files[0]),
                       "--committees", str(up / files[1]), "--out", str(Path(tmp) / "out.csv")]
            timed(command)
            runs = [timed(command) for _ in range(RUNS)]
            print(f"  {label:5} {statistics.median(runs):.2f} s ({min(runs):.2f}-{max(runs):.2f})")


if __name__ == "__main__":
    main()
