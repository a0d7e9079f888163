"""`python -m outreach` runs the command line."""

import sys

if __name__ == "__main__":
    try:
        from outreach.cli import main
    except ModuleNotFoundError as e:   # a Python without the project's packages (not .venv's)
        from outreach.errors import missing_module

        print(f"outreach: {missing_module(e)}", file=sys.stderr)
        sys.exit(2)
    main()
