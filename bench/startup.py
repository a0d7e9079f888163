"""How fast `outreach --help` starts (target: under 0.3 s). Prints figures; asserts nothing.

    .venv/bin/python bench/startup.py [RUNS]
"""

from __future__ import annotations

import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path


def time_command(cmd: list[str], runs: int) -> list[float]:
    times = []
    for _ in range(runs):
        t0 = time.perf_counter()
        subprocess.run(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=True)
        times.append(time.perf_counter() - t0)
    return times


def main() -> None:
    runs = int(sys.argv[1]) if len(sys.argv) > 1 else 20
    script = shutil.which("outreach") or str(Path(sys.executable).with_name("outreach"))
    rows = [
        ("python -c pass (interpreter floor)", [sys.executable, "-c", "pass"]),
        ("outreach --help", [script, "--help"]),
        ("python -m outreach --help", [sys.executable, "-m", "outreach", "--help"]),
    ]
    print(f"{'command':40} {'median':>8} {'min':>8} {'max':>8}   ({runs} runs, seconds)")
    for label, cmd in rows:
        t = time_command(cmd, runs)
        print(f"{label:40} {statistics.median(t):8.3f} {min(t):8.3f} {max(t):8.3f}")
    print("target: outreach --help median under 0.300 s")


if __name__ == "__main__":
    main()
