"""Long-running scheduler for batch mailings: `python scheduler.py [--config PATH]`.

Scheduling is not available yet: this entry point exists so the layout is
fixed, and says so instead of pretending to run.
"""

import sys

if __name__ == "__main__":
    print("scheduler.py: scheduled batch mailings are not available yet; "
          "use `outreach send` for a dry run", file=sys.stderr)
    sys.exit(2)
