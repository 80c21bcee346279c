"""A checkpoint save the disk refuses (full, read-only, over quota): one line, and the run is kept.

Orbax writes a step into a temporary folder and renames it only once complete, so a save that
fails leaves the previous steps as they were (and the temporary folder, which the next writer
removes). What it does not do is say so: TensorStore's status (`RESOURCE_EXHAUSTED: ... No space
left on device [os_error_code='28']`) comes back as a `ValueError`, after Orbax's background threads
have logged it with their tracebacks, and the writes it abandoned finish later into its closed event
loop ("Event loop is closed", "coroutine ... was never awaited", dozens of tracebacks). Here such
failures are recognised by their OS error code, re-raised as one `CheckpointSaveError` that names
the directory, the cause, the intact step and the fix, and that echo of it is dropped.
"""

from __future__ import annotations

import errno
import logging
import os
import re
import sys
import threading
import traceback
import warnings
from typing import Any

# The OS refusing a write: disk full, quota, read-only, permission, file size limit, device error.
WRITE_ERRNOS = {errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EACCES, errno.EPERM, errno.EFBIG, errno.EIO}
_TENSORSTORE_CODE = re.compile(r"os_error_code='(\d+)'")


class RunWriteError(OSError):
    """The OS refused a write into a run directory (disk full, read-only, ...): one line with the fix."""


class CheckpointSaveError(RunWriteError):
    """A checkpoint could not be written; the steps saved before it are intact."""


def write_errno(error: BaseException) -> int | None:
    """The OS error code of a refused write in `error` or its causes (an OSError, or TensorStore's status text)."""
    seen = set()
    while error is not None and id(error) not in seen:
        seen.add(id(error))
        if isinstance(error, OSError) and error.errno in WRITE_ERRNOS:
            return error.errno
        match = _TENSORSTORE_CODE.search(str(error))
        if match and int(match.group(1)) in WRITE_ERRNOS:
            return int(match.group(1))
        error = error.__cause__ or error.__context__
    return None


def refused(what: str, code: int, fix: str) -> RunWriteError:
    """`RunWriteError` for writing `what` refused with OS error `code`, and what to do."""
    return RunWriteError(f"could not write {what}: {os.strerror(code)} (errno {code}); {fix}")


def save_failure_message(directory: object, step: int | None, code: int, intact: list[int]) -> str:
    what = f"checkpoint step {step}" if step is not None else "a checkpoint"
    kept = f"it resumes from step {max(intact)}, which is intact" if intact else "no step was saved before it"
    return (f"could not save {what} in {directory}: {os.strerror(code)} (errno {code}); free space there or make it "
            f"writable (or move the run to a disk with room), then rerun the same command: {kept}")


def join_abandoned_saves(timeout_s: float = 120.0) -> None:
    """Waits for the save threads Orbax left running when one part of a save failed: it reports the first failed
    part and does not wait for the others. Left running, they would still be writing while the process exits,
    and fail there ("cannot schedule new futures after interpreter shutdown") with a traceback of their own."""
    for thread in threading.enumerate():
        if thread is not threading.current_thread() and type(thread).__module__.startswith("orbax."):
            threading.Thread.join(thread, timeout_s)  # Orbax's own join re-raises the thread's failure


def _abandoned_at_exit(error: BaseException | None, frames: list[traceback.FrameSummary]) -> bool:
    """An Orbax save thread still starting work while the process exits after a refused save."""
    return (isinstance(error, RuntimeError) and "cannot schedule new futures after" in str(error)
            and any(f"{os.sep}orbax{os.sep}" in frame.filename for frame in frames))


class RefusedWriteEchoes(logging.Filter):
    """Drops the ERROR logs that echo a refused write: Orbax's save threads' tracebacks, asyncio's "exception
    was never retrieved" for the writes Orbax abandoned, and a save thread that outlived the wait of
    `join_abandoned_saves`. The caller gets the same failure as one `CheckpointSaveError`."""

    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno < logging.ERROR:
            return True
        error = record.exc_info[1] if record.exc_info else None
        if error is not None and _abandoned_at_exit(error, traceback.extract_tb(error.__traceback__)):
            return False
        codes = {int(code) for code in _TENSORSTORE_CODE.findall(record.getMessage())}
        return write_errno(error) is None and not codes & WRITE_ERRNOS


def _drop_closed_loop_echo(previous: Any) -> Any:
    """An unraisable hook that drops the echoes of I/O Orbax abandoned: "Event loop is closed" from TensorStore
    completions arriving after it gave up a save (and closed its loop), and the errors of its array-reading
    coroutines left unawaited when one read of a damaged step failed (reported as the damage). Everything else
    goes to `previous`."""

    def hook(unraisable: Any) -> None:
        if unraisable.exc_type is RuntimeError and str(unraisable.exc_value) == "Event loop is closed":
            return
        code = getattr(unraisable.object, "cr_code", None)
        if code is not None and f"{os.sep}orbax{os.sep}" in code.co_filename:
            return
        previous(unraisable)

    hook.drops_closed_loop_echo = True
    return hook


def _drop_abandoned_save_thread(previous: Any) -> Any:
    """A threading excepthook that drops the echo of an Orbax save thread still starting work while the process
    exits after a refused save ("cannot schedule new futures after interpreter shutdown", seen under load); the
    failure itself was already said in one line. Everything else goes to `previous`."""

    def hook(args: Any) -> None:
        frames = traceback.extract_tb(args.exc_traceback) if args.exc_traceback else []
        if _abandoned_at_exit(args.exc_value, frames):
            return
        previous(args)

    hook.drops_abandoned_save_thread = True
    return hook


_FILTER = RefusedWriteEchoes()


def quiet_orbax_write_errors() -> None:
    """Installs the filters (once): on absl's logger (the one Orbax logs through) and asyncio's, the unraisable
    hook, and the warning for the writes Orbax abandoned unawaited (JAX's compile-cache warnings: `sorajax.cli`)."""
    for name in ("absl", "asyncio"):
        logger = logging.getLogger(name)
        if _FILTER not in logger.filters:
            logger.addFilter(_FILTER)
    if not getattr(sys.unraisablehook, "drops_closed_loop_echo", False):
        sys.unraisablehook = _drop_closed_loop_echo(sys.unraisablehook)
    if not getattr(threading.excepthook, "drops_abandoned_save_thread", False):
        threading.excepthook = _drop_abandoned_save_thread(threading.excepthook)
    warnings.filterwarnings("ignore", message=r"coroutine '.*write_fragment' was never awaited", category=RuntimeWarning)
