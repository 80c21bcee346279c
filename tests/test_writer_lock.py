"""One writer per run directory: a second trainer is refused in one line; a killed trainer leaves no stale lock."""

import json
import os
import re
import signal
import socket
import subprocess
import sys

import pytest

from sorajax import cli
from sorajax.config_loading import load_config
from sorajax.runs.writer_lock import LOCK_FILE, RunLockedError, hold_run, may_rearrange, try_lock
from sorajax.train.vae_trainer import train_vae

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
_HOLDER = """
import sys, time
from sorajax.runs.writer_lock import hold_run
with hold_run(sys.argv[1]):
    print("held", flush=True)
    time.sleep(600)
"""


@pytest.fixture
def holder(tmp_path):
    """A live 'trainer' in another process holding the run's lock (sorajax's own hold_run)."""
    run = tmp_path / "run"
    process = subprocess.Popen([sys.executable, "-c", _HOLDER, str(run)], stdout=subprocess.PIPE, text=True,
                               env={**os.environ, "PYTHONPATH": REPO})
    assert process.stdout.readline().strip() == "held"
    yield run, process
    if process.poll() is None:
        process.kill()
    process.wait()


def test_a_second_trainer_is_refused_in_one_line_and_a_killed_holder_frees_the_run(holder):
    run, process = holder
    config = load_config("configs/vae_tiny.py:drill", {"train.steps": 2})
    with pytest.raises(RunLockedError) as refused:
        train_vae(config, str(run))
    line = cli.describe(refused.value)
    assert re.fullmatch(rf"error: {run} is being written by pid {process.pid} on host {re.escape(socket.gethostname())} "
                        r"\(.*python -c.*, since \d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\): wait for it to finish or stop it, "
                        rf"or pass another --workdir \(the lock is {run}/{LOCK_FILE}; it ends with its process, so "
                        r"never delete it by hand\)", line), line
    assert not (run / "checkpoints").exists() and not (run / "metrics.jsonl").exists()  # refused before any work
    assert not may_rearrange(run)  # readers leave a live run's files alone

    process.send_signal(signal.SIGKILL)  # a trainer killed without any cleanup ...
    process.wait()
    with hold_run(run):  # ... leaves nothing stuck: the kernel dropped its lock
        assert json.loads((run / LOCK_FILE).read_text())["pid"] == os.getpid()


def test_the_lock_is_per_process_reentrant_and_released_with_the_outermost_hold(tmp_path):
    run = tmp_path / "run"
    with hold_run(run):
        with hold_run(run):  # the DiT trainer holds it around clip encoding, the runner again around the loop
            assert try_lock(run) is None  # another open file (any other holder) is refused
            assert may_rearrange(run)  # this process holds it: it may move damaged steps aside
        assert try_lock(run) is None
    fd = try_lock(run)
    assert fd is not None
    os.close(fd)


def test_merge_lora_takes_the_lock_of_the_run_it_writes(holder):
    """A LoRA merge writing into a run that a live process writes is refused first, naming its own flag."""
    from sorajax.merge_lora import merge_lora_run

    out, process = holder
    with pytest.raises(RunLockedError) as refused:
        merge_lora_run(out.parent / "no_such_lora_run", out)
    assert f"by pid {process.pid}" in str(refused.value) and "or pass another --out " in str(refused.value)
    assert not (out / "checkpoints").exists()


def test_convert_never_overwrites_a_run_a_live_process_writes(holder):
    """`convert --overwrite` onto a run that a trainer is writing is refused, and that run keeps its files."""
    from sorajax.convert import convert

    out, process = holder
    (out / "metrics.jsonl").write_text("{}\n")  # the live run's own file
    with pytest.raises(RunLockedError) as refused:
        convert(os.path.join(REPO, "tests", "fixtures", "wan21_t2v_tiny"), out, overwrite=True)
    assert f"by pid {process.pid}" in str(refused.value) and "or pass another --out " in str(refused.value)
    assert sorted(p.name for p in out.iterdir()) == [LOCK_FILE, "metrics.jsonl"]
    assert not (out.parent / f".{out.name}.partial").exists()
