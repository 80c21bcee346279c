"""One writer per run directory: an OS lock on ``<run>/.writer.lock`` for as long as a trainer runs.

Two trainers pointed at one workdir would interleave checkpoints, metrics and latent caches, each
resuming from the other's half-written state. ``fcntl.flock`` is tied to the open file, so the
kernel drops it when the holding process ends in any way (exit, crash, SIGKILL, preemption): a
dead trainer never leaves the run stuck. The lock file also says who holds it (pid, host, command),
for the refusal message; that text is advisory, the lock itself is the flock.

Only process 0 of a multi-host run takes the lock (the other processes do not write run files).
Object stores (``gs://``) have no locks: there the lock is not taken (logged once).
A process may hold the lock of one run several times over (the DiT trainer holds it from before its
clip encoding, the runner again around the loop); it is released when the outermost holder exits.
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime
import fcntl
import json
import logging
import os
import socket
import sys
from typing import Iterator

import jax

from sorajax.runs.paths import PathLike, is_local, run_path
from sorajax.runs.save_failure import refused, write_errno

LOCK_FILE = ".writer.lock"
_held: dict[str, "_Hold"] = {}  # this process's locks, by run directory


class RunLockedError(RuntimeError):
    """A live process already writes the run directory."""


@dataclasses.dataclass
class _Hold:
    fd: int
    depth: int


def _holder(fd: int) -> str:
    """Who holds the lock, as its file says (or 'another process' while it is being written)."""
    try:
        info = json.loads(os.pread(fd, 4096, 0).decode() or "{}")
    except (OSError, ValueError):
        info = {}
    if "pid" not in info:
        return "another process"
    return f"pid {info['pid']} on host {info.get('host', '?')} ({info.get('command', '?')}, since {info.get('since', '?')})"


def _command() -> str:
    """This process's command line as typed (``python -m sorajax.train_vae --workdir=...``), for the refusal."""
    spec = getattr(sys.modules.get("__main__"), "__spec__", None)
    head = f"python -m {spec.name}" if spec is not None and spec.name else f"python {sys.argv[0] if sys.argv else ''}"
    return " ".join([head.strip(), *sys.argv[1:]])[:200]


def try_lock(run: PathLike) -> int | None:
    """The lock file's descriptor with the lock taken, or None when a live process holds it."""
    path = os.fspath(run_path(run) / LOCK_FILE)
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        return None
    return fd


def may_rearrange(run: PathLike) -> bool:
    """True when this process may move files in `run` (a damaged checkpoint aside): it holds the run's writer
    lock, or could take it now (no live trainer writes there). False where the lock cannot even be opened
    (a read-only run) or does not exist (object stores)."""
    run = run_path(run)
    if os.fspath(run) in _held:
        return True
    if not is_local(run):
        return False
    try:
        fd = try_lock(run)
    except OSError:
        return False
    if fd is None:
        return False
    os.close(fd)  # closing the descriptor releases the lock at once
    return True


@contextlib.contextmanager
def hold_run(run: PathLike, flag: str = "--workdir") -> Iterator[None]:
    """Holds `run`'s writer lock for the block; refuses (RunLockedError) when another live process has it.

    `flag` is the command's flag that names `run`, for the refusal's advice.
    """
    run = run_path(run)
    key = os.fspath(run)
    if jax.process_index() != 0 or not is_local(run):
        if jax.process_index() == 0:
            logging.info("no writer lock for %s: object stores have no locks, keep one trainer per run", run)
        yield
        return
    if key in _held:
        _held[key].depth += 1
    else:
        path = os.fspath(run / LOCK_FILE)
        try:
            run.mkdir(parents=True, exist_ok=True)
            fd = try_lock(run)
        except OSError as error:  # a read-only or full disk: said before any work
            if write_errno(error) is None:
                raise
            raise refused(f"in {run}", write_errno(error), "make it writable (or free space there), or pass a "
                          f"{flag} on a writable disk") from None
        if fd is None:
            fd = os.open(path, os.O_RDONLY)
            try:
                holder = _holder(fd)
            finally:
                os.close(fd)
            raise RunLockedError(
                f"{run} is being written by {holder}: wait for it to finish or stop it, or pass another {flag} "
                f"(the lock is {path}; it ends with its process, so never delete it by hand)")
        since = datetime.datetime.now().isoformat(timespec="seconds")
        info = {"pid": os.getpid(), "host": socket.gethostname(), "command": _command(), "since": since}
        os.ftruncate(fd, 0)
        os.pwrite(fd, json.dumps(info).encode(), 0)
        _held[key] = _Hold(fd, 1)
    try:
        yield
    finally:
        hold = _held[key]
        hold.depth -= 1
        if hold.depth == 0:
            del _held[key]
            os.close(hold.fd)
