"""The converter's and Checkpointer's bounded saves: memory-mapped trees are written a few tensors at a time.

No RSS or wall-clock thresholds: what is checked is that the save path gets memmaps and a bound, that
Orbax is handed arrays over the memmaps' own pages (no copy), and that no numpy copy of the tree is
made while saving (tracemalloc sees every numpy allocation; Orbax's numpy handler copies each leaf).
"""

import os
import tracemalloc

import jax
import ml_dtypes
import numpy as np
import pytest

from sorajax import convert as convert_module
from sorajax.runs.checkpoints import Checkpointer, memmap_as_host_array

T2V = os.path.join(os.path.dirname(os.path.abspath(__file__)), "fixtures", "wan21_t2v_tiny")


def _memmaps(folder, dtype, count=8, shape=(256, 1024)):
    folder.mkdir(parents=True, exist_ok=True)
    tree = {}
    for i in range(count):
        array = np.lib.format.open_memmap(folder / f"w{i}.npy", mode="w+", dtype=dtype, shape=shape)
        array[...] = np.arange(array.size, dtype=np.float32).reshape(shape) % 97 + i
        array.flush()
        tree[f"w{i}"] = array
    return tree


@pytest.mark.parametrize("dtype", [np.float32, ml_dtypes.bfloat16])
def test_a_memmap_reaches_orbax_as_a_cpu_array_over_the_same_pages(tmp_path, dtype):
    mapped = _memmaps(tmp_path, dtype, count=1)["w0"]
    array = memmap_as_host_array(mapped)
    assert isinstance(array, jax.Array) and array.dtype == mapped.dtype and array.devices() == {jax.devices("cpu")[0]}
    assert array.unsafe_buffer_pointer() == mapped.ctypes.data  # aliased, not copied
    plain, wide = np.ones(3, np.float32), _memmaps(tmp_path / "wide", np.float64, count=1)["w0"]
    assert memmap_as_host_array(plain) is plain and memmap_as_host_array(wide) is wide  # x64 off: kept as numpy


def test_a_bounded_save_copies_no_leaf_and_restores_the_same_tree(tmp_path):
    tree = _memmaps(tmp_path / "scratch", np.float32)  # 8 leaves of 1 MiB
    ckpt = Checkpointer(tmp_path / "ckpt", async_save=False, save_concurrent_bytes=2 * 2**20 + 1)
    tracemalloc.start()
    try:
        ckpt.save(0, {"params": tree, "stats": np.arange(4.0)}, meta={"step": 0})
        _, numpy_peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert numpy_peak < 2**20  # the unbounded save deep-copies all 8 MiB through numpy first
    restored, meta = ckpt.restore()
    part = ckpt.restore_part({"params": jax.tree.map(lambda a: jax.ShapeDtypeStruct(a.shape, a.dtype), tree)})
    ckpt.close()
    assert meta == {"step": 0} and restored["stats"].dtype == np.float64
    for name, want in tree.items():
        assert restored["params"][name].dtype == np.float32 and np.array_equal(restored["params"][name], want)
        assert np.array_equal(part["params"][name], want)


def test_a_bound_below_the_largest_leaf_is_refused_before_writing(tmp_path):
    tree = _memmaps(tmp_path / "scratch", np.float32, count=2)
    ckpt = Checkpointer(tmp_path / "ckpt", async_save=False, save_concurrent_bytes=2**20)
    with pytest.raises(ValueError, match=r"does not exceed the largest leaf, \['w0'\] of 1048576 bytes: pass more"):
        ckpt.save(0, tree)
    assert ckpt.all_steps() == []
    ckpt.close()


def test_the_converter_saves_memmaps_under_a_bound_of_a_few_tensors(tmp_path, monkeypatch):
    seen = []

    class Recording(Checkpointer):
        def save(self, step, state, **kwargs):
            leaves = jax.tree.leaves(state)
            seen.append((self.save_concurrent_bytes, max(leaf.nbytes for leaf in leaves),
                         sum(isinstance(leaf, np.memmap) for leaf in leaves), len(leaves)))
            super().save(step, state, **kwargs)

    monkeypatch.setattr(convert_module, "Checkpointer", Recording)
    convert_module.convert(T2V, tmp_path / "run")
    assert len(seen) == 2  # the DiT, then the VAE
    for bound, largest, mapped, total in seen:
        assert bound == convert_module.SAVE_LEAVES_IN_FLIGHT * largest + 1
    (_, _, dit_mapped, dit_total), (_, _, vae_mapped, vae_total) = seen
    assert dit_mapped == dit_total and vae_mapped == vae_total - 2  # the VAE's latent mean/std are in memory
