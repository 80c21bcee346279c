"""Sharded train and sampling steps compute what one device computes (8 fake devices)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from sorajax.diffusion.timesteps import sampling_timesteps
from sorajax.models.dit import DiT
from sorajax.parallel.mesh import make_mesh
from sorajax.parallel.rules import DIT_RULES
from sorajax.parallel.sharded_state import batch_shardings, bytes_per_device, init_sharded_state
from sorajax.parallel.steps import sample_packed, sharded_sampler, sharded_train_step
from sorajax.train.dit_loop import init_state
from tests.parallel_cases.common import max_abs_diff, optimizer, packed_batch, tiny_config, train_step_fn

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
    dit, opt, batch = DiT(tiny_config()), optimizer(), packed_batch()
    state = init_state(dit, opt, jax.tree.map(jnp.asarray, batch), 0)
    new_state, metrics = jax.jit(train_step_fn(dit, opt))(state, batch)
    return state, new_state, metrics


@pytest.mark.parametrize("name", list(MESHES))
def test_one_sharded_train_step_equals_the_single_device_step(name, reference):
    ref_state, ref_new, ref_metrics = reference
    dit, opt, batch = DiT(tiny_config(context_parallel=CONTEXT.get(name, "none"))), optimizer(), packed_batch()
    mesh = make_mesh(MESHES[name])
    state, shardings = init_sharded_state(dit, opt, batch, 0, mesh, DIT_RULES)
    assert max_abs_diff(state.params, ref_state.params) < 1e-7  # born sharded, same values
    step = sharded_train_step(train_step_fn(dit, opt), mesh, DIT_RULES, shardings, batch_shardings(batch, mesh, DIT_RULES))
    new, metrics = step(state, jax.device_put(batch, batch_shardings(batch, mesh, DIT_RULES)))
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
        state, _ = init_sharded_state(dit, opt, batch, 0, make_mesh(dict(data=-1, fsdp=fsdp)), DIT_RULES)
        per_device[fsdp] = max(bytes_per_device((state.params, state.opt_state)).values())
    total = sum(x.nbytes for x in jax.tree.leaves((state.params, state.opt_state)))
    assert per_device[1] == total
    # Everything with an 'embed' dimension splits; small vectors (biases, norms) stay whole.
    assert per_device[8] < per_device[2] < 0.75 * per_device[1]
    assert per_device[8] < 0.5 * per_device[1]


@pytest.mark.parametrize("name", ["fsdp", "mixed_ulysses"])
def test_sharded_sampling_gives_the_same_video_tokens(name, reference):
    params = reference[1].params  # after one step the zero-init outputs are non-zero
    dit, batch = DiT(tiny_config(context_parallel=CONTEXT.get(name, "none"))), packed_batch()
    noise = jax.random.normal(jax.random.key(3), batch.tokens.shape)
    timesteps = sampling_timesteps(3)
    want = jax.jit(lambda p, b, n, t: sample_packed(DiT(tiny_config()), p, b, n, t, 3.0, "heun"))(
        params, batch, noise, timesteps)
    mesh = make_mesh(MESHES[name])
    _, shardings = init_sharded_state(dit, optimizer(), batch, 0, mesh, DIT_RULES)
    sampler = sharded_sampler(dit, mesh, DIT_RULES, shardings.params, batch_shardings(batch, mesh, DIT_RULES),
                              guidance=3.0, method="heun")
    got = sampler(jax.device_put(params, shardings.params), batch, noise, timesteps)
    assert got.shape == batch.tokens.shape
    np.testing.assert_allclose(np.asarray(got), np.asarray(want), atol=1e-4)
    generated = np.asarray(batch.loss_mask)
    assert np.abs(np.asarray(got)[generated] - np.asarray(noise)[generated]).max() > 0.1
    np.testing.assert_array_equal(np.asarray(got)[~generated], np.asarray(batch.tokens)[~generated])
