"""A train state saved from one mesh restores onto a different mesh (8 fake devices)."""

import numpy as np
from jax.sharding import PartitionSpec

from sorajax.models.dit import DiT
from sorajax.parallel.sharding import abstract_sharded
from sorajax.runs.checkpoints import Checkpointer
from sorajax.train.dit_step import init_state
from tests.parallel_cases.common import dit_state, max_abs_diff, mesh_context, optimizer, packed_batch, tiny_config


def test_checkpoint_saved_on_fsdp_mesh_restores_on_a_tensor_sequence_mesh(tmp_path):
    dit, opt, batch = DiT(tiny_config()), optimizer(), packed_batch()
    saved_state, _ = dit_state(mesh_context(dict(data=1, fsdp=8)), dit, opt, batch, seed=5)
    ckpt = Checkpointer(str(tmp_path / "ckpt"), async_save=False)
    ckpt.save(1, saved_state, meta={"note": "fsdp=8"})
    ckpt.wait()

    ctx = mesh_context(dict(data=2, fsdp=1, sequence=2, tensor=2))
    other = ctx.mesh
    target = abstract_sharded(lambda: init_state(dit, opt, batch, 0), other, ctx.rules)
    restored, meta = ckpt.restore(target)
    ckpt.close()
    assert meta["note"] == "fsdp=8"
    assert max_abs_diff(restored.params, saved_state.params) == 0.0
    assert max_abs_diff(restored.opt_state, saved_state.opt_state) == 0.0
    np.testing.assert_array_equal(np.asarray(restored.rng), np.asarray(saved_state.rng))
    kernel = restored.params["block_0"]["mlp"]["fc1"]["kernel"]
    assert kernel.sharding.mesh.shape == other.shape
    assert kernel.sharding.spec == PartitionSpec("fsdp", "tensor")  # fsdp is 1 here: split 2-way on tensor only
    assert {s.data.shape for s in kernel.addressable_shards} == {(kernel.shape[0], kernel.shape[1] // 2)}
    assert saved_state.params["block_0"]["mlp"]["fc1"]["kernel"].addressable_shards[0].data.shape[0] == \
        kernel.shape[0] // 8
