"""Cheaper sampling: classifier-free guidance is one batched call, and the DiT's step cache skips blocks exactly
as asked (off: bitwise the plain loop; never skipping: the plain result; always skipping: one block per call)."""

from __future__ import annotations

import dataclasses
import functools

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from sorajax.diffusion.samplers import SAMPLER_METHODS, num_function_evals
from sorajax.diffusion.sampling import SampleConfig, sample_packed, sample_packed_carrying
from sorajax.models.build import build_dit
from sorajax.models.dit import DiT
from sorajax.models.dit_layers import DiTBlock
from sorajax.models.dit_step_cache import STEP_CACHE, init_step_cache, relative_change
from sorajax.models.wan_dit_weights import stack_blocks
from sorajax.patches import unpack
from sorajax.pipeline import Pipeline, SampleRequest
from tests.tiny_pipeline import tiny_random_pipeline

DEPTH = 2


def _pipeline(schedule: str = "sorajax", scan_layers: bool = False) -> Pipeline:
    """The tiny random pipeline with a 2-block DiT whose blocks are NOT identities (random gates)."""
    base = tiny_random_pipeline()
    dit = build_dit(dict(preset="tiny", width=32, depth=DEPTH, num_heads=2, dtype="float32"), (1, 2, 2), 4,
                    base.text_encoder.dim)
    inputs = (np.zeros((1, 12, 16)), np.zeros((1, 12, 3), np.int32), np.ones((1, 12), np.int32), np.zeros((1, 12)),
              np.zeros((1, 4, base.text_encoder.dim)), np.ones((1, 4), np.int32))
    params = dit.init(jax.random.PRNGKey(2), *inputs)["params"]
    leaves, tree = jax.tree.flatten(params)
    keys = jax.random.split(jax.random.key(3), len(leaves))
    params = jax.tree.unflatten(tree, [p + 0.05 * jax.random.normal(k, p.shape) for p, k in zip(leaves, keys)])
    if scan_layers:
        dit, params = DiT(dataclasses.replace(dit.config, scan_layers=True)), stack_blocks(params, DEPTH)
    defaults = dataclasses.replace(base.defaults, shift=3.0) if schedule == "wan" else base.defaults
    return Pipeline(base.vae, base.vae_variables, dit, params, base.text_encoder, (1, 2, 2), base.time_config,
                    defaults, schedule=schedule)


@pytest.fixture(scope="module")
def pipeline():
    return _pipeline()


def _request(method: str = "euler", steps: int = 3, **fields) -> SampleRequest:
    return SampleRequest(frames=9, height=16, width=16, steps=steps, method=method, guidance=2.0, seed=1, **fields)


def _latent(pipeline, request, prompts=("a red ball",)):
    return pipeline.sample_latents(list(prompts), pipeline.latent_shape(9, 16, 16), request)


class _BlockRuns:
    """Counts the DiT blocks that really run (a debug callback in a cond's untaken branch never fires)."""

    def __init__(self):
        self.count = 0

    def __call__(self, next_fun, args, kwargs, context):
        if isinstance(context.module, DiTBlock) and context.method_name == "__call__":
            jax.debug.callback(self._ran, args[0][0, 0, 0])
        return next_fun(*args, **kwargs)

    def _ran(self, _):
        self.count += 1


@pytest.mark.parametrize("method", SAMPLER_METHODS)
def test_guidance_is_one_batched_call_per_evaluation_and_the_carry_sees_each(pipeline, method):
    """The one sampling loop (what the pipeline, every prompting mode and Wan's schedule use) calls the
    denoiser once per evaluation with both branches' rows, threading its carry through every call."""
    rows = []

    def spying(params, x_t, t, batch, calls):
        jax.debug.callback(lambda r: rows.append(int(r)), x_t.shape[0])
        return params * x_t + t[..., None] * batch.text[:, :1, : x_t.shape[-1]], calls + 1

    request = _request(method, steps=2)
    inputs = pipeline.sampling_inputs(["a red ball", "a blue box"], pipeline.latent_shape(9, 16, 16), request)
    grid = np.linspace(1.0, 0.0, 3)  # Wan's path shows the network other times than the solver's levels
    run = jax.jit(functools.partial(sample_packed_carrying, spying, method=method, guidance=jnp.float32(2.0)))
    _, calls = run(jnp.float32(0.5), inputs.batch, inputs.x_init, inputs.timesteps, jnp.int32(0),
                   network_times=np.floor(grid * 10) / 10)
    nfe = num_function_evals(method, 2)
    assert rows == [4] * nfe and int(calls) == nfe  # 2 prompts x (cond + uncond), one call each


def test_off_is_bitwise_the_plain_sampling_loop(pipeline):
    request = _request()
    inputs = pipeline.sampling_inputs(["a red ball"], pipeline.latent_shape(9, 16, 16), request)
    plain = jax.jit(functools.partial(sample_packed, pipeline.denoise, method=request.method,
                                      guidance=jnp.float32(2.0)))(
        pipeline.dit_params, inputs.batch, inputs.x_init, inputs.timesteps)
    latent = _latent(pipeline, dataclasses.replace(request, step_cache=0.0))[0]
    assert pipeline.last_step_cache is None
    np.testing.assert_array_equal(latent, unpack(np.asarray(plain), inputs.layout)[0])


def test_thresholds_never_skip_or_skip_all_but_the_first_call():
    """Heun: two evaluations per step, the second under a cond; the cache is carried through both."""
    method = "heun"
    pipeline, blocks, nfe = _pipeline(), _BlockRuns(), num_function_evals(method, 3)
    plain = _latent(pipeline, _request(method))[0]
    with nn.intercept_methods(blocks):  # one compiled program for both thresholds (the threshold is an input)
        never = _latent(pipeline, _request(method, step_cache=1e-9))[0]
        assert (pipeline.last_step_cache.calls, pipeline.last_step_cache.skips, blocks.count) == (nfe, 0, DEPTH * nfe)
        always = _latent(pipeline, _request(method, step_cache=10.0))[0]
    np.testing.assert_allclose(never, plain, atol=2e-6)
    stats = pipeline.last_step_cache
    assert (stats.calls, stats.skips) == (nfe, nfe - 1)
    assert blocks.count - DEPTH * nfe == DEPTH + (nfe - 1)  # block 0 at every call, the rest at the first only
    assert stats.skipped_blocks == pytest.approx((nfe - 1) * (DEPTH - 1) / (nfe * DEPTH))
    assert 1e-4 < np.abs(always - plain).max() < 0.5  # cheaper, and a different (nearby) sample


def test_a_scanned_dit_samples_with_the_cache_as_the_per_block_one(pipeline):
    scanned = _pipeline(scan_layers=True)
    request = _request(step_cache=0.1)
    np.testing.assert_allclose(_latent(scanned, request)[0], _latent(pipeline, request)[0], atol=2e-6)
    assert scanned.last_step_cache == pipeline.last_step_cache


def test_relative_change_ignores_padding_and_is_per_row():
    reference = jnp.ones((2, 3, 4))
    residual = reference.at[0, 0].set(2.0).at[1, 2].set(100.0)
    segments = jnp.array([[1, 1, 1], [1, 1, 0]])  # row 1's last token is padding
    np.testing.assert_allclose(relative_change(residual, reference, segments), [1 / 3, 0.0], rtol=1e-6)


def test_bad_settings_are_refused_in_one_line():
    with pytest.raises(ValueError, match="step_cache must be in \\[0, 10\\].*0.1-0.3 is typical"):
        _request(step_cache=-0.1).check()
    with pytest.raises(ValueError, match="sample.step_cache must be in"):
        SampleConfig(step_cache=float("nan"))
    with pytest.raises(ValueError, match="0 turns the cache off"):
        init_step_cache(1, 4, 8, jnp.float32, 0.0)
    scanned = _pipeline(scan_layers=True)
    x = jnp.zeros((1, 4, 16))
    args = (x, jnp.zeros((1, 4, 3), jnp.int32), jnp.ones((1, 4), jnp.int32), jnp.zeros((1, 4)),
            jnp.zeros((1, 2, scanned.text_encoder.dim)), jnp.ones((1, 2), jnp.int32))
    with pytest.raises(ValueError, match="scan_layers=False"):
        scanned.dit.apply({"params": scanned.dit_params, STEP_CACHE: init_step_cache(1, 4, 32, jnp.float32, 0.1)},
                          *args, mutable=[STEP_CACHE])
    with pytest.raises(ValueError, match="build it with init_step_cache"):
        pipeline = _pipeline()
        pipeline.dit.apply({"params": pipeline.dit_params, STEP_CACHE: init_step_cache(2, 4, 32, jnp.float32, 0.1)},
                           *args, mutable=[STEP_CACHE])
