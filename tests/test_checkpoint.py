"""Orbax checkpointing of state + grain iterator position, keep-N, clear errors."""

import os

import grain
import jax.numpy as jnp
import numpy as np
import pytest

from sorajax.train.checkpoint import Checkpointer, CheckpointNotFoundError, restore_run
from sorajax.train.loop import fingerprint, fingerprint_differences


def _iterator():
    return iter(grain.MapDataset.range(1000).map(lambda i: i * 3).to_iter_dataset())


def test_save_restore_state_meta_and_data_position(tmp_path):
    data = _iterator()
    consumed = [next(data) for _ in range(5)]
    assert consumed == [0, 3, 6, 9, 12]
    state = {"w": jnp.arange(6.0).reshape(2, 3), "step": jnp.int32(5)}
    ckpt = Checkpointer(str(tmp_path / "ckpt"))
    ckpt.save(5, state, data_iterator=data, meta={"step": 5, "note": "x"})
    ckpt.close()
    uninterrupted = [next(data) for _ in range(3)]

    fresh = _iterator()
    target = {"w": jnp.zeros((2, 3)), "step": jnp.int32(0)}
    restored, meta = Checkpointer(str(tmp_path / "ckpt")).restore(target, data_iterator=fresh)
    np.testing.assert_array_equal(restored["w"], state["w"])
    assert int(restored["step"]) == 5 and meta == {"step": 5, "note": "x"}
    assert [next(fresh) for _ in range(3)] == uninterrupted == [15, 18, 21]


def test_keeps_newest_n_and_reads_meta_without_arrays(tmp_path):
    ckpt = Checkpointer(str(tmp_path), max_to_keep=2, async_save=False)
    for step in (1, 2, 3):
        ckpt.save(step, {"x": jnp.full((2,), step)}, meta={"step": step})
    ckpt.wait()
    assert ckpt.all_steps() == [2, 3]
    assert ckpt.read_meta() == {"step": 3}
    raw, _ = ckpt.restore(step=2)
    np.testing.assert_array_equal(raw["x"], [2, 2])
    ckpt.close()


def test_missing_checkpoint_error_says_what_to_do(tmp_path):
    ckpt = Checkpointer(str(tmp_path / "empty"))
    with pytest.raises(CheckpointNotFoundError, match="no checkpoint in .*train first"):
        ckpt.restore({"x": jnp.zeros(2)})
    ckpt.close()
    assert os.path.isdir(tmp_path / "empty")


def test_restoring_a_step_that_is_gone_names_the_saved_steps(tmp_path):
    ckpt = Checkpointer(str(tmp_path / "checkpoints"), max_to_keep=2, async_save=False)
    for step in (1, 2, 3):
        ckpt.save(step, {"x": jnp.full((2,), step)}, meta={"step": step})
    ckpt.close()
    with pytest.raises(CheckpointNotFoundError, match=r"no checkpoint of step 1 .*saved steps: \[2, 3\]"):
        restore_run(str(tmp_path), 1, "python -m sorajax.train_dit")
    raw, meta = restore_run(str(tmp_path), 2, "python -m sorajax.train_dit")
    np.testing.assert_array_equal(raw["x"], [2, 2])
    assert meta == {"step": 2}


def test_fingerprint_differences_name_the_setting_and_allow_options_added_off():
    old = fingerprint({"model": {"width": 128, "depth": 4}, "patch": [1, 2, 2]})
    assert fingerprint_differences(old, old) == []
    # An option added later and left off means the same model as before it existed.
    assert fingerprint_differences(old, fingerprint({"model": {"width": 128, "depth": 4, "new_option": False},
                                                     "patch": [1, 2, 2]})) == []
    assert fingerprint_differences(fingerprint({"model": {"width": 128, "depth": 4, "new_option": False},
                                                "patch": [1, 2, 2]}), old) == []
    assert fingerprint_differences(old, fingerprint({"model": {"width": 128, "depth": 4, "new_option": True},
                                                     "patch": [1, 2, 2]})) == ["model.new_option: <unset> -> True"]
    assert fingerprint_differences(old, fingerprint({"model": {"width": 96, "depth": 4}, "patch": [1, 4, 4]})) == [
        "model.width: 128 -> 96", "patch: [1, 2, 2] -> [1, 4, 4]"]
    assert fingerprint_differences("opaque-a", "opaque-b") == ["opaque-a -> opaque-b"]
