"""The seed's entry point: `python runs/run.py --cfg FILE [KEY VALUE ...]`, the same as `tada train`."""

import sys

from tada.cli import entry_point

if __name__ == "__main__":
    entry_point(["train", *sys.argv[1:]])
