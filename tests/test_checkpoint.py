"""Orbax checkpointing of state + grain iterator position, keep-N, clear errors."""

import os

import grain
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from sorajax.runs.checkpoints import Checkpointer, CheckpointNotFoundError, read_run_meta, restore_run_part
from sorajax.runs.records import fingerprint, fingerprint_differences


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
    with pytest.raises(CheckpointNotFoundError, match="no checkpoint in .*nothing has been saved"):
        ckpt.restore({"x": jnp.zeros(2)})
    ckpt.close()
    assert os.path.isdir(tmp_path / "empty")


def test_restoring_a_step_that_is_gone_names_the_saved_steps(tmp_path):
    ckpt = Checkpointer(str(tmp_path / "checkpoints"), max_to_keep=2, async_save=False)
    for step in (1, 2, 3):
        ckpt.save(step, {"x": jnp.full((2,), step)}, meta={"step": step})
    ckpt.close()
    with pytest.raises(CheckpointNotFoundError, match=r"no checkpoint of step 1 .*saved steps: \[2, 3\]"):
        read_run_meta(str(tmp_path), 1, "python -m sorajax.train_dit")
    part, meta = restore_run_part(str(tmp_path), 2, "python -m sorajax.train_dit",
                                  {"x": jax.ShapeDtypeStruct((2,), jnp.int32)})
    np.testing.assert_array_equal(part["x"], [2, 2])
    assert meta == {"step": 2}
    with pytest.raises(CheckpointNotFoundError, match="no checkpoints under .*train one with `python -m sorajax.x"):
        read_run_meta(str(tmp_path / "elsewhere"), None, "python -m sorajax.x")


def test_a_part_of_the_state_is_restored_alone_even_when_the_rest_is_gone(tmp_path):
    """Inference asks for one entry (e.g. the EMA weights): the rest is neither needed nor read."""
    state = {"ema": {"w": jnp.arange(4.0)}, "params": {"w": jnp.ones(4)}, "opt": {"mu": jnp.full((1000,), 7.0)}}
    ckpt = Checkpointer(str(tmp_path / "full" / "checkpoints"), async_save=False)
    ckpt.save(3, state, meta={"step": 3})
    ckpt.close()
    target = {"ema": {"w": jax.ShapeDtypeStruct((4,), jnp.float32)}}
    part, meta = restore_run_part(str(tmp_path / "full"), None, "train", target)
    assert list(part) == ["ema"] and meta == {"step": 3}
    np.testing.assert_array_equal(part["ema"]["w"], np.arange(4.0))
    # A checkpoint written without the optimizer entry (stripped for inference) restores the same way.
    slim = Checkpointer(str(tmp_path / "slim" / "checkpoints"), async_save=False)
    slim.save(3, {"ema": state["ema"]}, meta={"step": 3})
    slim.close()
    np.testing.assert_array_equal(restore_run_part(str(tmp_path / "slim"), 3, "train", target)[0]["ema"]["w"],
                                  np.arange(4.0))


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
