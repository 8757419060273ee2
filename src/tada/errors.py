"""User-facing errors: the command line prints their message, without a traceback, and exits 2."""


class TadaError(Exception):
    """Bad input or environment the user can fix (a missing file, an unset key, a broken list)."""
