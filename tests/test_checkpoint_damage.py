"""Damaged checkpoints: reported by step and reason, moved aside (never deleted), the newest intact step used.

A toy state goes through the runner's own `resume` (the trainers' path) and the loaders' `restore_run_part`
(the sampler's path); one trainer run checks the whole loop end to end. A save killed mid-write (SIGKILL of a
subprocess during an async save) leaves only Orbax's temporary folder, which resume ignores.
"""

import logging
import os
import re
import subprocess
import sys
import types

import flax
import grain
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from sorajax import cli
from sorajax.runs.checkpoints import Checkpointer, restore_run_part
from sorajax.runs.damage import CheckpointMismatchError, NoIntactCheckpointError
from sorajax.runs.writer_lock import try_lock
from sorajax.train.runner import resume

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TOY = types.SimpleNamespace(name="toy", fingerprint='{"width": 8}')


@flax.struct.dataclass
class ToyState:
    step: jax.Array
    w: jax.Array


def _batches():
    return iter(grain.MapDataset.range(1000).map(lambda i: i * 3).to_iter_dataset())


def _fresh():
    return ToyState(step=jnp.int32(0), w=jnp.zeros((512,)))


def _weights(step):
    """Step `step`'s weights: random (so the array, not metadata, is the largest file), offset by the step."""
    return np.random.default_rng(step).normal(size=512).astype(np.float32) + step


def _saved_run(tmp_path, steps=(1, 2)):
    """A run whose checkpoint of step s holds `_weights(s)` and the data position after s batches."""
    run = tmp_path / "run"
    ckpt = Checkpointer(run / "checkpoints", async_save=False, writer=True)
    data = _batches()
    for step in steps:
        next(data)
        state = ToyState(step=jnp.int32(step), w=jnp.asarray(_weights(step)))
        ckpt.save(step, state, data_iterator=data, meta={"step": step, "model_fingerprint": TOY.fingerprint})
    ckpt.close()
    return run


def _largest_state_file(step_dir):
    files = [os.path.join(d, f) for d, _, names in os.walk(step_dir / "state" / "ocdbt.process_0" / "d") for f in names]
    return max(files, key=os.path.getsize)


def _truncate(step_dir):
    path = _largest_state_file(step_dir)
    os.truncate(path, os.path.getsize(path) // 2)


def _garble(step_dir):
    path = _largest_state_file(step_dir)
    with open(path, "wb") as f:
        f.write(np.random.default_rng(0).bytes(os.path.getsize(path)))


def _remove_a_file(step_dir):
    os.remove(_largest_state_file(step_dir))


def _empty(step_dir):
    for item in step_dir.iterdir():
        subprocess.run(["rm", "-rf", str(item)], check=True)


READ = r'ValueError: [A-Z_]+: Error reading "w/0": '  # TensorStore's status, without its database path
DAMAGE = {"truncated": (_truncate, READ + r"Requested byte range \[0, \d+\) is not valid for value of size \d+"),
          "garbled": (_garble, READ),
          "missing file": (_remove_a_file, READ),
          "empty step": (_empty, r'KeyError: Item "meta" was not found in the checkpoint')}


@pytest.mark.parametrize("kind", DAMAGE)
def test_resume_moves_a_damaged_newest_step_aside_and_uses_the_intact_one(tmp_path, caplog, kind):
    damage, reason = DAMAGE[kind]
    run = _saved_run(tmp_path)
    damage(run / "checkpoints" / "2")
    ckpt = Checkpointer(run / "checkpoints", async_save=False, writer=True)
    data = _batches()
    with caplog.at_level(logging.WARNING):
        state = resume(ckpt, _fresh(), data, TOY, run)
    assert int(state.step) == 1
    np.testing.assert_array_equal(state.w, _weights(1))
    assert next(data) == 3  # the data position of step 1: one batch (0) consumed
    moved = list((run / "checkpoints" / "damaged").iterdir())
    assert [p.name.split("-")[0] for p in moved] == ["2"] and ckpt.all_steps() == [1]
    assert re.match(f"step 2 failed to restore: {reason}", (moved[0] / "DAMAGE.txt").read_text())
    warnings = [r.getMessage() for r in caplog.records if r.getMessage().startswith("checkpoint step")]
    assert len(warnings) == 1 and "\n" not in warnings[0], warnings
    assert re.fullmatch(rf"checkpoint step 2 in {run}/checkpoints is damaged \({reason}.*\): moved to "
                        rf"{run}/checkpoints/damaged/2-\d+T\d+Z; trying the next older step", warnings[0]), warnings[0]
    # Orbax's step list no longer has step 2: the run saves step 2 again and reads it back.
    ckpt.save(2, state.replace(step=jnp.int32(2), w=state.w * 5), data_iterator=data, meta={"step": 2})
    assert ckpt.all_steps() == [1, 2]
    np.testing.assert_array_equal(resume(ckpt, _fresh(), _batches(), TOY, run).w, _weights(1) * 5)
    ckpt.close()


def test_a_damaged_metadata_file_is_damage_too(tmp_path):
    run = _saved_run(tmp_path)
    (run / "checkpoints" / "2" / "meta" / "metadata").write_text('{"step": 2, "mod')
    ckpt = Checkpointer(run / "checkpoints", async_save=False, writer=True)
    assert int(resume(ckpt, _fresh(), _batches(), TOY, run).step) == 1
    ckpt.close()


def test_no_intact_step_is_one_line_saying_how_to_start_fresh_and_is_not_restarted_silently(tmp_path):
    run = _saved_run(tmp_path)
    for step in ("1", "2"):
        _garble(run / "checkpoints" / step)
    ckpt = Checkpointer(run / "checkpoints", async_save=False, writer=True)
    with pytest.raises(NoIntactCheckpointError) as refused:
        resume(ckpt, _fresh(), _batches(), TOY, run)
    line = cli.describe(refused.value)
    assert re.match(rf"error: no intact checkpoint in {run}/checkpoints \(step 2: {READ}.*; step 1: {READ}"
                    rf".*\): start fresh with a new --workdir, or move {run} away and rerun", line), line
    assert "\n" not in line and sorted(p.name[0] for p in (run / "checkpoints" / "damaged").iterdir()) == ["1", "2"]
    with pytest.raises(NoIntactCheckpointError, match="no intact checkpoint .*start fresh with a new --workdir"):
        resume(Checkpointer(run / "checkpoints", async_save=False, writer=True), _fresh(), _batches(), TOY, run)


def test_loading_for_sampling_falls_back_and_a_live_trainer_keeps_its_files(tmp_path, caplog):
    run = _saved_run(tmp_path, steps=(1, 2, 3))
    _garble(run / "checkpoints" / "3")
    target = {"w": jax.ShapeDtypeStruct((512,), jnp.float32)}
    held = try_lock(run)  # a live trainer (another open file description) holds the run: nothing is moved
    with caplog.at_level(logging.WARNING):
        part, meta = restore_run_part(run, None, "train", target)
    assert meta["step"] == 2
    np.testing.assert_array_equal(part["w"], _weights(2))
    assert "left in place (a live trainer holds this run" in caplog.text and (run / "checkpoints" / "3").is_dir()
    os.close(held)
    part, meta = restore_run_part(run, None, "train", target)  # no writer now: the reader moves it aside
    assert meta["step"] == 2 and not (run / "checkpoints" / "3").exists()
    assert [p.name[:2] for p in (run / "checkpoints" / "damaged").iterdir()] == ["3-"]
    with pytest.raises(NoIntactCheckpointError, match=r"checkpoint step 3 of .* was found damaged and moved to "
                                                      r".*damaged/3-.*; saved steps: \[1, 2\]"):
        restore_run_part(run, 3, "train", target)
    _garble(run / "checkpoints" / "2")
    with pytest.raises(NoIntactCheckpointError, match=r"checkpoint step 2 in .* is damaged \(ValueError: .*\); saved "
                                                      r"steps now: \[1\]: pass one of them, or no step"):
        restore_run_part(run, 2, "train", target)


def test_a_request_of_other_shapes_is_refused_and_the_checkpoint_left_alone(tmp_path):
    run = _saved_run(tmp_path)
    with pytest.raises(CheckpointMismatchError, match=r"checkpoint step 2 in .* does not fit the model it is restored "
                                                      r"into \('w' differs: .*asked \(256,\), saved \(512,\)\)"):
        restore_run_part(run, None, "train", {"w": jax.ShapeDtypeStruct((256,), jnp.float32)})
    with pytest.raises(CheckpointMismatchError, match=r"no entry 'ema' is saved \(saved: \['step', 'w'\]\)"):
        restore_run_part(run, None, "train", {"ema": jax.ShapeDtypeStruct((512,), jnp.float32)})
    assert sorted(os.listdir(run / "checkpoints")) == ["1", "2"]


_KILLED_DURING_SAVE = """
import os, signal, sys, time
import jax.numpy as jnp, numpy as np
from sorajax.runs.checkpoints import Checkpointer
ckpt = Checkpointer(sys.argv[1], async_save=True)
ckpt.save(1, {"w": jnp.ones(4)}, meta={"step": 1})
ckpt.wait()
big = jnp.asarray(np.random.default_rng(0).normal(size=(24_000_000,)).astype(np.float32))
ckpt.save(2, {"w": big}, meta={"step": 2})  # returns while the arrays are written in the background
tmp, deadline = os.path.join(sys.argv[1], "2.orbax-checkpoint-tmp"), time.monotonic() + 60
while not os.path.exists(tmp) and time.monotonic() < deadline:  # the background thread makes it (late under load)
    time.sleep(0.001)
os.kill(os.getpid(), signal.SIGKILL)
"""


def test_a_save_killed_midway_leaves_a_temporary_folder_that_resume_ignores(tmp_path):
    directory = tmp_path / "checkpoints"
    done = subprocess.run([sys.executable, "-c", _KILLED_DURING_SAVE, str(directory)], capture_output=True, text=True,
                          env={**os.environ, "PYTHONPATH": REPO}, timeout=120)
    assert done.returncode == -9, done.stderr[-2000:]
    assert sorted(os.listdir(directory)) == ["1", "2.orbax-checkpoint-tmp"]
    assert Checkpointer(directory, async_save=False).all_steps() == [1]  # a reader lists, and leaves, only step 1
    assert "2.orbax-checkpoint-tmp" in os.listdir(directory)
    writer = Checkpointer(directory, async_save=False, writer=True)  # the resuming trainer removes the leftover
    restored, meta = writer.restore({"w": jnp.zeros(4)})
    assert meta == {"step": 1} and os.listdir(directory) == ["1"]
    np.testing.assert_array_equal(restored["w"], np.ones(4))
    writer.close()
