"""Who may write to OUTPUT_DIR: one live run at a time, and only the run that wrote its checkpoints.

Two guards keep one run's files from being overwritten, interleaved or pruned by another:

- :func:`exclusive_output_dir`: rank 0 of a run holds ``OUTPUT_DIR/run.lock`` (an advisory
  ``flock`` on a file naming its pid, host, command and start time) while it trains or tests. A
  second run on the same folder stops at once with the owner's details. The kernel drops the lock
  of a process that dies, even by SIGKILL; a lock whose owner is gone but whose file is still held
  by processes it started (data-loader workers outlive a killed parent by a few seconds) is taken
  over with a message, as is the file a dead run left behind.
- :func:`check_resume_config`: auto-resume continues the checkpoint's weights, optimizer and
  schedule, so it is refused when the config differs from the checkpoint's in a key outside
  :data:`RESUME_MAY_CHANGE` (model, data, optimizer, augmentation, seed, ...): such a config
  describes another run. ``TRAIN.ALLOW_CONFIG_CHANGES true`` continues anyway.
"""

from __future__ import annotations

import contextlib
import datetime
import errno
import fcntl
import json
import logging
import os
import socket
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from tada.config import Config, walk_dotted
from tada.engine.distributed import DistContext, EngineError, all_gather_objects

__all__ = [
    "LOCK_NAME",
    "RESUME_MAY_CHANGE",
    "OutputDirInUseError",
    "check_resume_config",
    "exclusive_output_dir",
    "lock_path",
]

log = logging.getLogger(__name__)

LOCK_NAME = "run.lock"

# Keys a resume may change (a trailing "." covers a section): they say where and how the same
# training runs, how often it logs, saves and validates, how long it is, and how it is tested;
# none changes what an iteration computes from the weights and the data.
RESUME_MAY_CHANGE: tuple[str, ...] = (
    # processes and devices
    "NUM_GPUS", "NUM_SHARDS", "SHARD_ID", "DIST_BACKEND", "PAI",
    # the same folder, moved; logging, checkpoint and validation cadence
    "OUTPUT_DIR", "OUTPUT_CFG_FILE", "LOG_PERIOD", "LOG_MODEL_INFO", "LOG_CONFIG_INFO", "TRAIN.LOG_FILE",
    "TRAIN.EVAL_PERIOD", "TRAIN.CHECKPOINT_PERIOD", "TRAIN.CHECKPOINT_ITER_PERIOD", "TRAIN.KEEP_LAST",
    "TRAIN.ENABLE", "TRAIN.AUTO_RESUME", "TRAIN.ALLOW_CONFIG_CHANGES",
    # how the same computation is carried out
    "TRAIN.AMP", "TRAIN.COMPILE", "TRAIN.CUDA_GRAPHS", "TRAIN.CHANNELS_LAST", "TRAIN.DETERMINISTIC",
    "AUGMENTATION.USE_GPU", "DATA_LOADER.",
    # where the same videos live and how they are read
    "DATA.DATA_ROOT_DIR", "DATA.ANNO_DIR", "DATA.FRAMES_DIR", "DATA.FORMAT", "DATA.DECODER",
    "DATA.DECODER_THREADS", "DATA.MAX_FAILURE_RATIO", "DATA.CLASS_NAMES_FILE",
    # the length of the run (extending a finished run is a resume)
    "OPTIMIZER.MAX_EPOCH",
    # the tests after training
    "TEST.", "DATA.TEST_LIST", "DATA.ENSEMBLE_METHOD",
)


class OutputDirInUseError(EngineError):
    """Another live run holds OUTPUT_DIR; the message names it."""


def lock_path(output_dir: str | os.PathLike) -> Path:
    return Path(output_dir) / LOCK_NAME


# --------------------------------------------------------------------------------------------
# The lock
# --------------------------------------------------------------------------------------------
def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process
        return True
    return True


def _read_owner(fd: int) -> dict[str, Any] | None:
    """The owner record in the open lock file; None when empty or unreadable (being written)."""
    os.lseek(fd, 0, os.SEEK_SET)
    data = b""
    while chunk := os.read(fd, 65536):
        data += chunk
        if len(data) > 65536:
            return None
    try:
        owner = json.loads(data.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError):
        return None
    return owner if isinstance(owner, dict) and isinstance(owner.get("pid"), int) else None


def _describe(owner: dict[str, Any]) -> str:
    return (f"pid {owner['pid']} on {owner.get('host', '?')}, started {owner.get('started', '?')}: "
            f"{owner.get('command', '?')}")


def _is_dead_here(owner: dict[str, Any] | None) -> bool:
    """True when ``owner`` ran on this host and its process is gone."""
    return owner is not None and owner.get("host") == socket.gethostname() and not _pid_alive(owner["pid"])


def _same_file(fd: int, path: Path) -> bool:
    try:
        st = path.stat()
    except FileNotFoundError:
        return False
    own = os.fstat(fd)
    return (st.st_dev, st.st_ino) == (own.st_dev, own.st_ino)


def _write_owner(fd: int, command: str) -> None:
    owner = {"pid": os.getpid(), "host": socket.gethostname(), "command": command,
             "started": datetime.datetime.now().astimezone().isoformat(timespec="seconds")}
    os.ftruncate(fd, 0)
    os.lseek(fd, 0, os.SEEK_SET)
    os.write(fd, (json.dumps(owner) + "\n").encode("utf-8"))
    os.fsync(fd)


def _try_flock(fd: int, path: Path) -> bool:
    """Take the advisory lock without waiting; False when another open file holds it."""
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return False
    except OSError as err:
        if err.errno in (errno.ENOLCK, errno.EOPNOTSUPP, errno.ENOSYS):
            raise EngineError(
                f"{path}: this filesystem does not support file locks ({err.strerror}), so tada cannot make sure "
                f"no other run writes to OUTPUT_DIR: use an OUTPUT_DIR on a local disk or a filesystem with locks"
            ) from err
        raise
    return True


def _acquire(out: Path, command: str) -> int:
    """Lock ``out`` for this process; returns the locked file's descriptor."""
    out.mkdir(parents=True, exist_ok=True)
    path = lock_path(out)
    for _ in range(20):  # each retry follows a lock file that another process removed meanwhile
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            locked = _try_flock(fd, path)
            owner = _read_owner(fd)
            if not locked:
                if not (_is_dead_here(owner) and _same_file(fd, path)):
                    who = _describe(owner) if owner else "a run whose lock record is being written"
                    raise OutputDirInUseError(
                        f"OUTPUT_DIR {out} is in use by another run ({who}): wait for it to end or use another "
                        f"OUTPUT_DIR. If that run is no longer running (another machine that crashed), delete {path}"
                    )
                # Its process is gone; processes it started (data-loader workers) still hold the file.
                log.warning("%s: the run that held it (%s) is no longer running; taking over", path, _describe(owner))
                path.unlink()
                os.close(fd)
                continue
            if not _same_file(fd, path):  # removed by a takeover between our open and our lock
                os.close(fd)
                continue
            if owner is not None and owner["pid"] != os.getpid():
                log.warning("%s: taking over the lock left by a run that is no longer running (%s)", path,
                            _describe(owner))
            _write_owner(fd, command)
            return fd
        except BaseException:
            with contextlib.suppress(OSError):
                os.close(fd)
            raise
    raise OutputDirInUseError(f"OUTPUT_DIR {out}: could not take {path}; other runs keep replacing it")


def _release(fd: int, out: Path) -> None:
    path = lock_path(out)
    try:
        if _same_file(fd, path):
            path.unlink()
    finally:
        os.close(fd)


@contextlib.contextmanager
def exclusive_output_dir(output_dir: str | os.PathLike, ctx: DistContext, *, command: str) -> Iterator[None]:
    """Hold OUTPUT_DIR's lock for the body (rank 0 takes it; every rank stops if it is taken).

    ``command`` says what this run is (it appears in the refusal another run gets).
    """
    out = Path(output_dir)
    fd, refusal = None, None
    if ctx.is_master:
        try:
            fd = _acquire(out, command)
        except (EngineError, OSError) as err:
            refusal = str(err) if isinstance(err, EngineError) else f"cannot lock OUTPUT_DIR {out}: {err}"
            if not ctx.distributed:
                raise
    refusal = all_gather_objects(ctx, refusal)[0]
    if refusal is not None:
        raise OutputDirInUseError(refusal)
    try:
        yield
    finally:
        if fd is not None:
            _release(fd, out)


def describe_command() -> str:
    """This process's command line, for the lock record (shortened)."""
    text = " ".join([Path(sys.argv[0]).name, *sys.argv[1:]]) if sys.argv and sys.argv[0] else "python"
    return text if len(text) <= 300 else text[:297] + "..."


# --------------------------------------------------------------------------------------------
# The config of a resumed run
# --------------------------------------------------------------------------------------------
def _may_change(key: str) -> bool:
    return any(key.startswith(k) if k.endswith(".") else key == k for k in RESUME_MAY_CHANGE)


def check_resume_config(cfg: Config, saved_cfg: Any, *, path: Path, strict: bool) -> None:
    """Refuse to continue ``path`` (a checkpoint in OUTPUT_DIR) with a config of another run.

    Keys both configs know are compared (a checkpoint of an older tada, or an official file,
    lacks keys tada added since). Changes within :data:`RESUME_MAY_CHANGE` are logged; others
    raise, unless TRAIN.ALLOW_CONFIG_CHANGES or not ``strict`` (an official file dropped into
    OUTPUT_DIR, whose config follows other defaults), where they are logged as warnings.
    """
    if not isinstance(saved_cfg, str):
        log.warning("%s: holds no config; config changes are not checked", path)
        return
    try:
        before = dict(walk_dotted(json.loads(saved_cfg)))
    except (json.JSONDecodeError, AttributeError):
        log.warning("%s: its stored config is not readable JSON; config changes are not checked", path)
        return
    now = dict(walk_dotted(cfg.to_dict()))
    changed = [k for k in sorted(set(before) & set(now)) if before[k] != now[k]]
    refused = [k for k in changed if not _may_change(k)]

    def listing(keys: list[str]) -> str:
        shown = "; ".join(f"{k}: {_short(before[k])} -> {_short(now[k])}" for k in keys[:12])
        return shown + (f"; ... ({len(keys) - 12} more)" if len(keys) > 12 else "")

    if refused and strict and not cfg.TRAIN.ALLOW_CONFIG_CHANGES:
        raise EngineError(
            f"OUTPUT_DIR {cfg.OUTPUT_DIR} holds another run: {path.name} was trained with a config that differs in "
            f"{len(refused)} key(s) a resume may not change ({listing(refused)}). Use a new OUTPUT_DIR, or set "
            f"TRAIN.ALLOW_CONFIG_CHANGES true to continue that run's weights, optimizer and schedule with this config"
        )
    if changed:
        log.warning("resuming %s with %d config change(s): %s", path, len(changed), listing(changed))


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."
