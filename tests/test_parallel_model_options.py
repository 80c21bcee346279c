"""DiT scale options: nn.scan over layers and remat policies compute exactly what the plain model does."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from sorajax.models.dit import DiT, DiTConfig, REMAT_POLICIES
from tests.parallel_cases.common import (
    dit_state,
    max_abs_diff,
    mesh_context,
    optimizer,
    packed_batch,
    tiny_config,
    train_step_fn,
)

BASE = dict(patch_dim=8, text_dim=12, width=32, depth=2, num_heads=2, attention_impl="xla")


def _inputs():
    rng = np.random.default_rng(0)
    seg = np.array([[1] * 7 + [2] * 6 + [0] * 3], np.int32)
    return (
        jnp.asarray(rng.normal(size=(1, 16, 8)), jnp.float32),
        jnp.asarray(rng.integers(0, 4, size=(1, 16, 3)), jnp.int32),
        jnp.asarray(seg),
        jnp.asarray(rng.uniform(size=(1, 16)), jnp.float32),
        jnp.asarray(rng.normal(size=(1, 5, 12)), jnp.float32),
        jnp.asarray([[1, 1, 2, 2, 0]], jnp.int32),
    )


def _plain_params(seed: int = 0):
    """Plain-model params with every zero-initialised output perturbed, so blocks really do something."""
    return _perturbed(DiT(DiTConfig(**BASE)).init(jax.random.key(seed), *_inputs())["params"], seed)


def _perturbed(boxed, seed: int):
    params = jax.tree.map(lambda x: x.unbox() if hasattr(x, "unbox") else x, boxed,
                          is_leaf=lambda x: hasattr(x, "unbox"))
    leaves, tree = jax.tree.flatten(params)
    keys = jax.random.split(jax.random.key(seed + 1), len(leaves))
    return jax.tree.unflatten(tree, [x + 0.05 * jax.random.normal(k, x.shape) for x, k in zip(leaves, keys)])


def test_scanned_layers_equal_the_unrolled_blocks_with_stacked_params():
    params = _plain_params()
    want = DiT(DiTConfig(**BASE)).apply({"params": params}, *_inputs())
    stacked = {k: v for k, v in params.items() if not k.startswith("block_")}
    stacked["blocks"] = {"block": jax.tree.map(lambda *xs: jnp.stack(xs), *[params[f"block_{i}"] for i in range(2)])}
    scanned = DiT(DiTConfig(**BASE, scan_layers=True))
    got = scanned.apply({"params": stacked}, *_inputs())
    assert got.shape == want.shape == (1, 16, 8)
    assert float(jnp.abs(want).max()) > 1e-3
    np.testing.assert_allclose(np.asarray(got), np.asarray(want), atol=1e-5)
    # Its own init stacks the blocks on a leading 'layers' axis.
    boxed = scanned.init(jax.random.key(0), *_inputs())["params"]["blocks"]["block"]["mlp"]["fc1"]["kernel"]
    assert boxed.value.shape == (2, 32, 128) and boxed.names == ("layers", "embed", "mlp")


def test_scanned_layers_with_place_every_block_equal_the_unrolled_blocks():
    cfg = dict(BASE, frame_position_every_block=True)
    params = _perturbed(DiT(DiTConfig(**cfg)).init(jax.random.key(3), *_inputs())["params"], seed=3)
    want = DiT(DiTConfig(**cfg)).apply({"params": params}, *_inputs())
    stacked = {k: v for k, v in params.items() if not k.startswith(("block_", "place_"))}
    stacked["blocks"] = {
        "block": jax.tree.map(lambda *xs: jnp.stack(xs), *[params[f"block_{i}"] for i in range(2)]),
        "place": jax.tree.map(lambda *xs: jnp.stack(xs), *[params[f"place_{i}"] for i in range(2)]),
    }
    got = DiT(DiTConfig(**cfg, scan_layers=True)).apply({"params": stacked}, *_inputs())
    assert float(jnp.abs(want).max()) > 1e-3
    np.testing.assert_allclose(np.asarray(got), np.asarray(want), atol=1e-5)


@pytest.mark.parametrize("policy", ["full", "save_dots_without_batch", "offload"])
def test_remat_policies_give_the_same_gradients(policy):
    params = _plain_params()
    inputs = _inputs()

    def loss(config, params):
        return jnp.sum(DiT(config).apply({"params": params}, *inputs) ** 2)

    want = jax.grad(lambda p: loss(DiTConfig(**BASE), p))(params)
    got = jax.jit(jax.grad(lambda p: loss(DiTConfig(**BASE, remat_policy=policy), p)))(params)
    diffs = jax.tree.leaves(jax.tree.map(lambda a, b: float(jnp.max(jnp.abs(a - b))), got, want))
    assert max(diffs) < 1e-5
    assert max(jax.tree.leaves(jax.tree.map(lambda a: float(jnp.abs(a).max()), want))) > 1e-3


def test_host_offload_train_step_equals_no_remat_and_really_offloads():
    """'offload' compiles on CPU too: there pinned_host is the same RAM and XLA drops the copies, numbers unchanged."""
    batch, opt = packed_batch(), optimizer()
    before, _ = dit_state(mesh_context(), DiT(tiny_config()), opt, batch)  # remat keeps param names
    results, programs = {}, {}
    for policy in ("none", "offload"):
        step = train_step_fn(DiT(tiny_config(remat_policy=policy)), opt)
        programs[policy] = str(jax.make_jaxpr(step)(before, batch))
        results[policy] = jax.jit(step)(before, batch)
    (want, want_metrics), (got, got_metrics) = results["none"], results["offload"]
    assert float(want_metrics["loss"]) > 0.1
    np.testing.assert_allclose(float(got_metrics["loss"]), float(want_metrics["loss"]), rtol=1e-6)
    np.testing.assert_allclose(float(got_metrics["grad_norm"]), float(want_metrics["grad_norm"]), rtol=1e-6)
    assert max_abs_diff(got.opt_state, want.opt_state) < 1e-6  # Adam moments: the gradients themselves
    assert max_abs_diff(got.params, want.params) < 1e-6
    assert max_abs_diff(want.params, before.params) > 1e-3  # the step moved the weights
    # The traced step moves the saved matmul outputs to host memory and back; without remat it never does.
    assert programs["offload"].count("MemorySpace.Host") >= 2 and "MemorySpace.Host" not in programs["none"]


def test_remat_with_scan_lowers_and_the_config_rejects_unknown_options():
    cfg = DiTConfig(**BASE, scan_layers=True, remat_policy="full")
    params = DiT(cfg).init(jax.random.key(0), *_inputs())["params"]
    out = jax.jit(lambda p: DiT(cfg).apply({"params": p}, *_inputs()))(params)
    assert out.shape == (1, 16, 8)
    assert set(REMAT_POLICIES) == {"none", "full", "save_dots_without_batch", "offload"}
    with pytest.raises(ValueError, match="remat_policy"):
        DiTConfig(**BASE, remat_policy="sometimes")
    with pytest.raises(ValueError, match="context_parallel='ring'"):
        DiTConfig(**{**BASE, "attention_impl": "ring"})
    with pytest.raises(ValueError, match="context_parallel"):
        DiTConfig(**BASE, context_parallel="zigzag")


def test_ring_config_without_a_mesh_equals_the_default_model():
    params = _plain_params()
    want = DiT(DiTConfig(**BASE)).apply({"params": params}, *_inputs())
    got = DiT(DiTConfig(**BASE, context_parallel="ring")).apply({"params": params}, *_inputs())
    np.testing.assert_allclose(np.asarray(got), np.asarray(want), atol=1e-5)
