"""A checkpoint save the disk refuses: one error line naming the directory and the fix; the run stays resumable.

The refusal is real, not mocked: the trainer runs under a file-size limit (RLIMIT_FSIZE, what `ulimit -f` sets),
so TensorStore's own write fails in the kernel (EFBIG) the way a full disk fails it (ENOSPC) or a read-only one
(EROFS). experiments/disk_full_drill.py does the same on a real, full tmpfs.
"""

import os
import re
import subprocess
import sys

from sorajax.config_loading import load_config
from sorajax.runs.loaders import load_autoencoder
from sorajax.runs.metrics import read_metrics
from sorajax.runs.save_failure import write_errno
from sorajax.train.vae_trainer import train_vae

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
LIMIT = 12_000  # bytes per file: the run's logs fit, a checkpoint's metadata file (~40 kB) does not


# Sets the limit, then becomes the command (exec keeps both the limit and the ignored signal). SIGXFSZ ignored:
# the write fails (EFBIG) instead of the process being killed.
UNDER_LIMIT = ("import os, resource, signal, sys; signal.signal(signal.SIGXFSZ, signal.SIG_IGN); "
               "resource.setrlimit(resource.RLIMIT_FSIZE, (int(sys.argv[1]), resource.RLIM_INFINITY)); "
               "os.execv(sys.executable, [sys.executable, *sys.argv[2:]])")


def test_a_refused_save_is_one_line_and_the_previous_checkpoint_resumes(tmp_path):
    run = tmp_path / "run"
    train_vae(load_config("configs/vae_tiny.py:drill", {"train.steps": 3}), str(run))  # checkpoint of step 3
    done = subprocess.run([sys.executable, "-c", UNDER_LIMIT, str(LIMIT), "-m", "sorajax.train_vae",
                           "--config=configs/vae_tiny.py:drill", "--config.train.steps=6", f"--workdir={run}"],
                          cwd=REPO, capture_output=True, text=True, timeout=300,
                          # A cache of its own: under the file-size limit its writes fail half-way, and a truncated
                          # entry in the suite's shared cache would be read (with a warning) by every later test.
                          env={**os.environ, "PYTHONPATH": REPO, "JAX_COMPILATION_CACHE_DIR": str(tmp_path / "cache")})
    lines = [line for line in done.stderr.replace("\r", "\n").splitlines()
             if line.strip() and not line.startswith("autoencoder:")]  # the progress bar's redraws
    assert done.returncode == 1 and len(lines) == 1, done.stderr[-3000:]
    assert re.fullmatch(rf"error: could not save checkpoint step 6 in {run}/checkpoints: File too large \(errno 27\); "
                        r"free space there or make it writable \(or move the run to a disk with room\), then rerun the "
                        r"same command: it resumes from step 3, which is intact", lines[0]), lines[0]
    assert sorted(os.listdir(run / "checkpoints")) == ["3", "6.orbax-checkpoint-tmp"]
    assert load_autoencoder(str(run)).step == 3  # the previous checkpoint restores

    train_vae(load_config("configs/vae_tiny.py:drill", {"train.steps": 6}), str(run))  # space again: same command
    assert sorted(os.listdir(run / "checkpoints")) == ["3", "6"]  # the unfinished save was cleared and redone
    assert [r["step"] for r in read_metrics(run) if "loss" in r] == [1, 2, 3, 4, 5, 6]


def test_write_failures_are_told_by_their_os_error_code():
    tensorstore = ValueError('RESOURCE_EXHAUSTED: Error writing "w/0": Failed to write 1032504 bytes to file 14: '
                             "No space left on device [os_error_code='28']")
    assert write_errno(Exception("Encountered error while writing")) is None
    wrapped = RuntimeError("save failed")
    wrapped.__cause__ = tensorstore
    assert write_errno(wrapped) == 28
    assert write_errno(OSError(30, "Read-only file system")) == 30
    assert write_errno(ValueError("NOT_FOUND: [os_error_code='2']")) is None  # a missing file is not a refused write


def test_an_abandoned_save_thread_at_exit_is_not_a_second_line():
    """The threading hook drops only Orbax's "cannot schedule new futures" at shutdown (a race seen under load)."""
    import threading

    from sorajax.runs.save_failure import _drop_abandoned_save_thread

    passed = []
    hook = _drop_abandoned_save_thread(lambda args: passed.append(str(args.exc_value)))

    def args_for(error: BaseException, filename: str) -> threading.ExceptHookArgs:
        try:
            exec(compile("raise error", filename, "exec"), {"error": error})
        except BaseException as raised:  # noqa: BLE001
            return threading.ExceptHookArgs((type(raised), raised, raised.__traceback__, None))

    shutdown = "cannot schedule new futures after interpreter shutdown"
    hook(args_for(RuntimeError(shutdown), os.path.join(os.sep, "site-packages", "orbax", "future.py")))
    hook(args_for(RuntimeError(shutdown), os.path.join(os.sep, "mine", "loop.py")))
    hook(args_for(ValueError("a real bug"), os.path.join(os.sep, "site-packages", "orbax", "future.py")))
    assert passed == [shutdown, "a real bug"]


def test_a_refused_save_waits_for_the_save_threads_orbax_left_running():
    """Orbax reports the first failed part of a save and leaves the others running; they are joined before the
    error is told, so none is still writing while the process exits (where it would fail with a traceback)."""
    import threading
    import time

    from sorajax.runs.save_failure import join_abandoned_saves

    finished = []

    def write_slowly():
        time.sleep(0.5)
        finished.append(True)

    def join_reraising(thread: threading.Thread, timeout: float | None = None) -> None:
        raise OSError(27, "File too large")  # Orbax's join re-raises the failure of the part that thread wrote

    # Orbax's commit threads are its own Thread subclass; one is stood in for by a subclass in an orbax module.
    orbax_thread = type("SignalingThread", (threading.Thread,),
                        {"__module__": "orbax.checkpoint.futures", "join": join_reraising})
    other = threading.Thread(target=time.sleep, args=(30,), daemon=True)  # not Orbax's: not waited for
    other.start()
    save = orbax_thread(target=write_slowly)
    save.start()
    join_abandoned_saves()
    assert finished == [True] and other.is_alive()


def test_a_save_thread_failing_at_exit_is_not_logged():
    """The same race when it still happens (a thread that outlived the wait): Orbax logs the thread's failure
    through absl; that record is dropped, and a real error in Orbax is not."""
    import logging

    from sorajax.runs.save_failure import RefusedWriteEchoes

    def record_of(error: BaseException, filename: str) -> logging.LogRecord:
        try:
            exec(compile("raise error", filename, "exec"), {"error": error})
        except BaseException as raised:  # noqa: BLE001
            return logging.LogRecord("absl", logging.ERROR, filename, 1, "thread raised: %s", (raised,),
                                     (type(raised), raised, raised.__traceback__))

    orbax_file = os.path.join(os.sep, "site-packages", "orbax", "future.py")
    def shutdown() -> RuntimeError:
        return RuntimeError("cannot schedule new futures after interpreter shutdown")

    assert not RefusedWriteEchoes().filter(record_of(shutdown(), orbax_file))
    assert RefusedWriteEchoes().filter(record_of(ValueError("a real bug"), orbax_file))
    assert RefusedWriteEchoes().filter(record_of(shutdown(), os.path.join(os.sep, "mine", "loop.py")))
