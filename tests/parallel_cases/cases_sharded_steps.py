"""Sharded train and sampling steps compute what one device computes (8 fake devices)."""

import functools

import jax
import numpy as np
import pytest

from sorajax.diffusion.sampling import packed_denoiser, sample_packed
from sorajax.diffusion.timesteps import sampling_timesteps
from sorajax.models.dit import DiT
from sorajax.parallel.sharding import bytes_per_device
from sorajax.parallel.steps import MeshStep, state_step
from sorajax.patches import packed_batch_axes as batch_axes
from tests.parallel_cases.common import (
    dit_state,
    max_abs_diff,
    mesh_context,
    optimizer,
    packed_batch,
    tiny_config,
    train_step_fn,
)

MESHES = {
    "data": dict(data=8),
    "fsdp": dict(data=1, fsdp=8),
    "tensor": dict(data=4, tensor=2),
    "sequence_ring": dict(data=2, sequence=4),
    "mixed_ulysses": dict(data=1, fsdp=2, sequence=2, tensor=2),
}
CONTEXT = {"sequence_ring": "ring", "mixed_ulysses": "ulysses"}


@pytest.fixture(scope="module")
def reference():
    """The same step on one device (a 1x1x1x1 mesh: the one code path every run takes)."""
    dit, opt, batch = DiT(tiny_config()), optimizer(), packed_batch()
    ctx = mesh_context()
    state, shardings = dit_state(ctx, dit, opt, batch)
    new_state, metrics = state_step(train_step_fn(dit, opt), ctx.mesh, ctx.rules, shardings, donate=False)(
        state, ctx.put(batch, batch_axes))
    return state, new_state, metrics


@pytest.mark.parametrize("name", list(MESHES))
def test_one_sharded_train_step_equals_the_single_device_step(name, reference):
    ref_state, ref_new, ref_metrics = reference
    dit, opt, batch = DiT(tiny_config(context_parallel=CONTEXT.get(name, "none"))), optimizer(), packed_batch()
    ctx = mesh_context(MESHES[name])
    state, shardings = dit_state(ctx, dit, opt, batch)
    assert max_abs_diff(state.params, ref_state.params) < 1e-7  # born sharded, same values
    new, metrics = state_step(train_step_fn(dit, opt), ctx.mesh, ctx.rules, shardings)(state, ctx.put(batch, batch_axes))
    assert float(metrics["loss"]) > 0.1
    np.testing.assert_allclose(float(metrics["loss"]), float(ref_metrics["loss"]), rtol=1e-5)
    np.testing.assert_allclose(float(metrics["grad_norm"]), float(ref_metrics["grad_norm"]), rtol=1e-4)
    assert max_abs_diff(new.params, ref_new.params) < 1e-5
    assert max_abs_diff(new.opt_state, ref_new.opt_state) < 1e-5
    assert max_abs_diff(new.params, ref_state.params) > 1e-3  # the step really moved the weights
    kernel = new.params["block_0"]["mlp"]["fc1"]["kernel"]  # [embed, mlp] -> (fsdp, tensor)
    assert kernel.sharding.spec == jax.sharding.PartitionSpec("fsdp", "tensor")


def test_parameters_and_optimizer_state_shrink_per_device_with_fsdp():
    dit, opt, batch = DiT(tiny_config()), optimizer(), packed_batch()
    per_device = {}
    for fsdp in (1, 2, 8):
        state, _ = dit_state(mesh_context(dict(data=-1, fsdp=fsdp)), dit, opt, batch)
        per_device[fsdp] = max(bytes_per_device((state.params, state.opt_state)).values())
    total = sum(x.nbytes for x in jax.tree.leaves((state.params, state.opt_state)))
    assert per_device[1] == total
    # Everything with an 'embed' dimension splits; small vectors (biases, norms) stay whole.
    assert per_device[8] < per_device[2] < 0.75 * per_device[1]
    assert per_device[8] < 0.5 * per_device[1]


@pytest.mark.parametrize("name", ["fsdp", "mixed_ulysses"])
def test_sharded_sampling_gives_the_same_video_tokens(name, reference):
    """The one sampling loop (diffusion.sampling) jitted over a mesh equals it on one device."""
    params = reference[1].params  # after one step the zero-init outputs are non-zero
    dit, batch = DiT(tiny_config(context_parallel=CONTEXT.get(name, "none"))), packed_batch()
    noise = jax.random.normal(jax.random.key(3), batch.tokens.shape)
    timesteps = sampling_timesteps(3)
    single = packed_denoiser(DiT(tiny_config()))
    want = jax.jit(functools.partial(sample_packed, single, method="heun", guidance=3.0))(
        jax.device_get(params), batch, noise, timesteps)
    ctx = mesh_context(MESHES[name])
    _, shardings = dit_state(ctx, dit, optimizer(), batch)
    placed = ctx.put(batch, batch_axes)
    sampler = MeshStep(functools.partial(sample_packed, packed_denoiser(dit), method="heun", guidance=3.0),
                       ctx.mesh, ctx.rules, out_shardings=placed.tokens.sharding)
    got = sampler(jax.device_put(params, shardings.params), placed, jax.device_put(noise, placed.tokens.sharding),
                  timesteps)
    assert got.shape == batch.tokens.shape and got.sharding == placed.tokens.sharding
    np.testing.assert_allclose(np.asarray(got), np.asarray(want), atol=1e-4)
    generated = np.asarray(batch.loss_mask)
    assert np.abs(np.asarray(got)[generated] - np.asarray(noise)[generated]).max() > 0.1
    np.testing.assert_array_equal(np.asarray(got)[~generated], np.asarray(batch.tokens)[~generated])
