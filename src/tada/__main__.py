"""`python -m tada` is the same as the `tada` command."""

from tada.cli import entry_point

if __name__ == "__main__":
    entry_point()
