"""`python -m outreach` runs the command line."""

from outreach.cli import main

if __name__ == "__main__":
    main()
