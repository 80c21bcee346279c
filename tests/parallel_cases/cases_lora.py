"""A LoRA train step over a mesh computes what one device computes; adapters shard like their kernels."""

import flax.linen as nn
import jax
import numpy as np
import pytest
from jax.sharding import PartitionSpec

from sorajax.diffusion.sampling import packed_denoiser
from sorajax.diffusion.timesteps import TrainingTimeConfig
from sorajax.models.dit import DiT, abstract_params
from sorajax.models.lora import LoraConfig
from sorajax.parallel.steps import state_step
from sorajax.patches import packed_batch_axes as batch_axes
from sorajax.train.dit_step import init_state, make_train_step
from sorajax.train.lora_run import merged_weights
from tests.parallel_cases.common import max_abs_diff, mesh_context, optimizer, packed_batch, tiny_config

LORA = LoraConfig(rank=4, alpha=8.0)
MESHES = {"fsdp_tensor": dict(data=2, fsdp=2, tensor=2), "fsdp": dict(data=1, fsdp=8)}


def _lora_step(axes):
    """(adapters before, after, loss, shardings) of two LoRA steps under mesh `axes` (None: one device)."""
    dit, opt, batch = DiT(tiny_config(scan_layers=True, depth=2)), optimizer(), packed_batch()
    ctx = mesh_context(axes)
    boxed = abstract_params(dit.config)
    # A base that is not the init: every weight nudged, so the merge has something to add to.
    shardings = ctx.shardings(boxed)
    base = jax.jit(lambda: jax.tree.map(lambda s: 0.02 * jax.random.normal(jax.random.PRNGKey(s.size), s.shape),
                                        nn.meta.unbox(boxed)), out_shardings=shardings)()
    state, state_shardings = ctx.init(lambda: init_state(dit, opt, batch, 0, LORA))
    step = make_train_step(packed_denoiser(dit), opt, TrainingTimeConfig(), 0.25, 0.9, weights=merged_weights(LORA))
    run = state_step(step, ctx.mesh, ctx.rules, state_shardings, donate=False)
    placed = ctx.put(batch, batch_axes)
    new, metrics = run(state, placed, base)
    new, metrics = run(new, placed, base)
    return state, new, float(metrics["loss"]), state_shardings


@pytest.fixture(scope="module")
def reference():
    return _lora_step(None)


@pytest.mark.parametrize("name", list(MESHES))
def test_sharded_lora_steps_equal_one_device(name, reference):
    ref_state, ref_new, ref_loss, _ = reference
    state, new, loss, shardings = _lora_step(MESHES[name])
    assert max_abs_diff(state.params, ref_state.params) < 1e-7  # the same adapters, born sharded
    np.testing.assert_allclose(loss, ref_loss, rtol=1e-5)
    # Reduction order differs by mesh; Adam steps of 1e-2 make that ~1e-5 (a missing all-reduce: ~1e-2).
    assert max_abs_diff(new.params, ref_new.params) < 5e-5
    assert max_abs_diff(new.params, state.params) > 1e-4  # the steps moved the adapters
    query = shardings.params["blocks"]["block"]["self_attn"]["query"]["kernel"]
    # A: [layers, embed, rank] -> embed over fsdp; B: [layers, rank, heads, kv] -> heads over tensor; rank whole.
    assert query["lora_a"].spec == PartitionSpec(None, "fsdp", None)
    out = shardings.params["blocks"]["block"]["self_attn"]["out"]["kernel"]
    # A: [layers, embed, rank] and [layers, heads, kv, rank]; B: [layers, rank, heads, kv] and [layers, rank, embed].
    assert query["lora_a"].spec == PartitionSpec(None, "fsdp", None)
    assert query["lora_b"].spec == PartitionSpec(None, None, "tensor", None)
    assert out["lora_a"].spec == PartitionSpec(None, "tensor", None, None)
    assert out["lora_b"].spec == PartitionSpec(None, None, "fsdp")
