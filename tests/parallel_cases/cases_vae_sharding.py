"""The autoencoder trained over a mesh computes what one device computes (8 fake devices)."""

import os

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest
from jax.sharding import PartitionSpec

from sorajax.config_loading import load_config
from sorajax.models.vae import CausalVAE
from sorajax.parallel.context import MeshContext
from sorajax.parallel.mesh import make_mesh
from sorajax.parallel.rules import VAE_RULES
from sorajax.parallel.sharding import abstract_sharded, bytes_per_device
from sorajax.parallel.steps import state_step
from sorajax.runs.checkpoints import Checkpointer
from sorajax.runs.loaders import load_autoencoder
from sorajax.runs.metrics import read_metrics
from sorajax.train.optim import make_optimizer
from sorajax.train.vae_step import init_state, make_train_step
from sorajax.train.vae_trainer import VAERunConfig, state_axes, train_vae, video_axes
from tests.parallel_cases.common import max_abs_diff

MESHES = {"fsdp4_data2": dict(data=2, fsdp=4), "data8": dict(data=8)}
# No warmup and a visible learning rate: the first step really moves every weight.
STEP_CONFIG = {"train.warmup_steps": 0, "train.learning_rate": 1e-3}


def _config(**overrides):
    return load_config("configs/vae_tiny.py:smoke", {**STEP_CONFIG, **overrides})


def _parts(config):
    cfg = VAERunConfig.from_config(config)
    vae, opt = CausalVAE(cfg.vae), make_optimizer(cfg.train)
    step_fn = make_train_step(vae, opt, cfg.train.kl_weight, cfg.train.l2_weight, cfg.train.noise_ramp_steps)
    return vae, opt, step_fn


def _context(axes=None):
    """A mesh of the given axis sizes; None: one device (a 1x1x1x1 mesh, the one code path)."""
    return MeshContext(make_mesh(axes or {}, None if axes else jax.devices()[:1]), VAE_RULES)


def _step(ctx, vae, opt, step_fn, config):
    state, shardings = ctx.init(lambda: init_state(vae, opt, config.seed), state_axes)
    return state, state_step(step_fn, ctx.mesh, ctx.rules, shardings, donate=False)


def _video_batch():
    rng = np.random.default_rng(0)
    return {"video": rng.integers(0, 256, size=(8, 5, 16, 16, 3), dtype=np.uint8)}


def _assert_same_update(new, ref_new, ref_state):
    """Same gradients (Adam's first moment) and the same weight update as the single-device step.

    Adam's first step moves a weight by about lr * g / (|g| + 1e-8): where a gradient is
    float noise (|g| ~ 1e-9, e.g. a conv feeding a norm) a 1e-10 difference in summation
    order flips a sizeable part of the step, and below |g| ~ 1e-5 the step still amplifies
    float32 noise (measured: |g| ~ 1e-6 moved weights by up to 6e-8 more or less). Those
    weights are held to a tenth of a step; every weight with a real gradient to 1e-5 of
    the step (plus float32 rounding of the weight).
    """
    lr = STEP_CONFIG["train.learning_rate"]
    for got, want, g_got, g_want in zip(
        jax.tree.leaves(new.params), jax.tree.leaves(ref_new.params),
        jax.tree.leaves(new.opt_state[1][0].mu), jax.tree.leaves(ref_new.opt_state[1][0].mu), strict=True,
    ):
        got, want, g_got, g_want = map(np.asarray, (got, want, g_got, g_want))
        scale = np.abs(g_want).max()
        assert np.abs(g_got - g_want).max() <= 1e-5 * scale + 1e-12  # gradients agree to float precision
        real = np.abs(g_want) > 1e-6  # first moment = 0.1 * g: |g| > 1e-5, a thousand times Adam's epsilon
        assert np.all((np.abs(got - want) <= 1e-5 * lr + 1e-6 * np.abs(want))[real])  # + float32 rounding
        assert np.abs(got - want).max() < 0.1 * lr
    assert max_abs_diff(new.opt_state[1][0].nu, ref_new.opt_state[1][0].nu) < 1e-9  # 0.01 * g^2
    assert max_abs_diff(new.params, ref_state.params) > 0.5 * lr  # the step really moved the weights


@pytest.fixture(scope="module")
def reference():
    config = _config()
    ctx = _context()
    state, step = _step(ctx, *_parts(config), config)
    new_state, metrics = step(state, ctx.put(_video_batch(), video_axes))
    return state, new_state, metrics


@pytest.mark.parametrize("name", list(MESHES))
def test_one_sharded_vae_step_equals_the_single_device_step(name, reference):
    ref_state, ref_new, ref_metrics = reference
    config = _config()
    ctx = _context(MESHES[name])
    state, step = _step(ctx, *_parts(config), config)
    assert max_abs_diff(state.params, ref_state.params) < 1e-7  # born sharded, same values

    batch = ctx.put(_video_batch(), video_axes)
    per_device_clips = {s.data.shape[0] for s in batch["video"].addressable_shards}
    assert per_device_clips == {8 // (MESHES[name].get("fsdp", 1) * MESHES[name]["data"])} == {1}
    new, metrics = step(state, batch)

    assert float(metrics["loss"]) > 0.01
    np.testing.assert_allclose(float(metrics["loss"]), float(ref_metrics["loss"]), rtol=1e-5)
    np.testing.assert_allclose(float(metrics["grad_norm"]), float(ref_metrics["grad_norm"]), rtol=1e-5)
    _assert_same_update(new, ref_new, ref_state)
    assert int(new.step) == 1

    # The state keeps its layout through the step; conv kernels [kt, kh, kw, c_in, c_out] split c_out over fsdp.
    kernel = new.params["decoder"]["mid_res0"]["conv1"]["kernel"]
    moment = new.opt_state[1][0].mu["decoder"]["mid_res0"]["conv1"]["kernel"]  # Adam's first moment
    rgb_out = new.params["decoder"]["conv_out"]["kernel"]  # 3 output channels: no axis divides them
    assert rgb_out.shape[-1] == 3 and rgb_out.sharding.is_fully_replicated
    fsdp = MESHES[name].get("fsdp", 1)
    if fsdp > 1:
        for leaf in (kernel, moment):
            assert leaf.sharding.spec == PartitionSpec(None, None, None, None, "fsdp")
            assert {s.data.shape for s in leaf.addressable_shards} == {(3, 3, 3, 32, 32 // fsdp)}
        total = sum(x.nbytes for x in jax.tree.leaves((new.params, new.opt_state)))
        assert max(bytes_per_device((new.params, new.opt_state)).values()) < 0.5 * total
    else:
        assert all(x.sharding.is_fully_replicated for x in jax.tree.leaves((new.params, new.opt_state)))

def test_a_clip_batch_is_split_by_its_own_shape():
    ctx = _context(dict(data=2, fsdp=2, sequence=2))
    even = ctx.put({"video": np.zeros((2, 1, 16, 24, 3), np.uint8)}, video_axes)["video"]
    # 2 clips: data=2 splits them, data x fsdp = 4 cannot; 16 rows split over sequence.
    assert even.sharding.spec == PartitionSpec("data", None, "sequence", None, None)
    assert {s.data.shape for s in even.addressable_shards} == {(1, 1, 8, 24, 3)}
    odd = ctx.put({"video": np.arange(2 * 15 * 4 * 3, dtype=np.uint8).reshape(2, 1, 15, 4, 3)}, video_axes)["video"]
    assert {s.data.shape for s in odd.addressable_shards} == {(1, 1, 15, 4, 3)}  # 15 rows stay whole
    np.testing.assert_array_equal(np.asarray(odd), np.arange(360, dtype=np.uint8).reshape(2, 1, 15, 4, 3))
    with pytest.raises(ValueError, match=r"\[B, T, H, W, C\]"):
        ctx.put({"video": np.zeros((2, 16, 24, 3), np.uint8)}, video_axes)


def test_train_vae_with_a_mesh_runs_and_its_checkpoint_restores(tmp_path):
    # The step cases' settings and clip shape: the trainer reuses their compiled init and step (compile cache).
    config = _config(**{"train.steps": 2, "train.save_every": 2, "eval.every": 2, "data.sizes": ((5, 16, 16),),
                        "data.batch_size": 8})
    config.mesh = ml_collections.ConfigDict(dict(data=2, fsdp=4))
    workdir = str(tmp_path / "run")
    metrics = train_vae(config, workdir)
    assert np.isfinite(metrics["psnr"]) and 0 < metrics["psnr"] < 60
    log = read_metrics(os.path.join(workdir, "metrics.jsonl"))
    assert [r["step"] for r in log if "loss" in r] == [1, 2]

    trained = load_autoencoder(workdir)  # plain restore, as inference does it
    assert trained.step == 2
    vae, opt, _ = _parts(config)
    initial = init_state(vae, opt, config.seed)
    assert max_abs_diff(trained.variables["params"], initial.params) > 1e-5  # two real steps were saved

    # The same checkpoint restored straight into a sharded layout on a different mesh.
    target = abstract_sharded(lambda: init_state(vae, opt, config.seed), make_mesh(dict(data=1, fsdp=8)), VAE_RULES,
                              state_axes)
    ckpt = Checkpointer(os.path.join(workdir, "checkpoints"), async_save=False)
    restored, meta = ckpt.restore(target)
    ckpt.close()
    assert meta["step"] == 2 and int(restored.step) == 2
    assert max_abs_diff(restored.params, trained.variables["params"]) == 0.0
    assert max_abs_diff(restored.latent_stats, trained.variables["latent_stats"]) == 0.0
    assert not np.allclose(np.asarray(restored.latent_stats["std"]), 1.0)  # evaluation's statistics were kept
    kernel = restored.params["decoder"]["mid_res0"]["conv1"]["kernel"]
    assert {s.data.shape for s in kernel.addressable_shards} == {(3, 3, 3, 32, 32 // 8)}
    assert bool(jnp.all(jnp.isfinite(kernel)))
