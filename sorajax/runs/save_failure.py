"""A checkpoint save the disk refuses (full, read-only, over quota): one line, and the run is kept.

Orbax writes a step into a temporary folder and renames it only once complete, so a save that
fails leaves the previous steps as they were (and the temporary folder, which the next writer
removes). What it does not do is say so: TensorStore's status (`RESOURCE_EXHAUSTED: ... No space
left on device [os_error_code='28']`) comes back as a `ValueError`, after Orbax's background threads
have logged it with their tracebacks. Here such failures are recognised by their OS error code,
re-raised as one `CheckpointSaveError` that names the directory, the cause, the intact step and
the fix, and the duplicate thread logs are dropped.
"""

from __future__ import annotations

import errno
import logging
import os
import re

# The OS refusing a write: disk full, quota, read-only, permission, file size limit, device error.
WRITE_ERRNOS = {errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EACCES, errno.EPERM, errno.EFBIG, errno.EIO}
_TENSORSTORE_CODE = re.compile(r"os_error_code='(\d+)'")


class CheckpointSaveError(OSError):
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


def save_failure_message(directory: object, step: int | None, code: int, intact: list[int]) -> str:
    what = f"checkpoint step {step}" if step is not None else "a checkpoint"
    kept = f"it resumes from step {max(intact)}, which is intact" if intact else "no step was saved before it"
    return (f"could not save {what} in {directory}: {os.strerror(code)} (errno {code}); free space there or make it "
            f"writable (or move the run to a disk with room), then rerun the same command: {kept}")


class OrbaxWriteErrorLogs(logging.Filter):
    """Drops Orbax's own ERROR logs (tracebacks from its save threads) of a refused write: the same failure
    reaches the caller as one `CheckpointSaveError`."""

    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno < logging.ERROR or f"{os.sep}orbax{os.sep}" not in record.pathname:
            return True
        error = record.exc_info[1] if record.exc_info else None
        codes = {int(code) for code in _TENSORSTORE_CODE.findall(record.getMessage())}
        return write_errno(error) is None and not codes & WRITE_ERRNOS


_FILTER = OrbaxWriteErrorLogs()


def quiet_orbax_write_errors() -> None:
    """Installs the filter on absl's logger (the one Orbax logs through), once."""
    logger = logging.getLogger("absl")
    if _FILTER not in logger.filters:
        logger.addFilter(_FILTER)
