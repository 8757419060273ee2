"""The seed's entry point: `python runs/run.py --cfg FILE [KEY VALUE ...]`, the same as `tada train`."""

import sys

from tada.cli import main

if __name__ == "__main__":
    raise SystemExit(main(["train", *sys.argv[1:]]))
