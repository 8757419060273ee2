"""`python -m tada.bench NAME [OPTIONS]` is the same as `tada benchmark NAME [OPTIONS]`."""

import sys

from tada.cli import entry_point

if __name__ == "__main__":
    entry_point(["benchmark", *sys.argv[1:]])
