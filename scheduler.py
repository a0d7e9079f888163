"""Long-running scheduler for batch mailings: `python scheduler.py [--config PATH]`.

Runs every campaign that has a [campaigns.NAME.schedule] table in config.toml:
one batch per tick, inside the sending window, until nothing is left to send.
`outreach schedule run` does the same.
"""

import signal
import sys


def _stop(signum, frame):
    # SIGTERM or Ctrl-C while the scheduler is not listening for them itself (starting
    # up, or already stopped): nothing is in flight, so stopping is simply done.
    print("scheduler.py: stopped", file=sys.stderr)
    raise SystemExit(0)


if __name__ == "__main__":
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, _stop)

    try:
        from outreach.cli import run
    except ModuleNotFoundError as e:   # a Python without the project's packages (not .venv's)
        from outreach.errors import missing_module

        print(f"scheduler.py: {missing_module(e)}", file=sys.stderr)
        sys.exit(2)

    args = sys.argv[1:]
    config = []
    if args[:1] == ["--config"] and len(args) >= 2:
        config, args = args[:2], args[2:]
    elif args and args[0].startswith("--config="):
        config, args = [args[0]], args[1:]
    if args and args not in (["-h"], ["--help"]):
        print(f"scheduler.py: unexpected arguments {' '.join(args)}; usage: python scheduler.py [--config PATH]",
              file=sys.stderr)
        sys.exit(2)
    sys.exit(run([*config, "schedule", "run", *args]))
