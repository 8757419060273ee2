"""`python -m tada` is the same as the `tada` command."""

from tada.cli import main

if __name__ == "__main__":
    raise SystemExit(main())
