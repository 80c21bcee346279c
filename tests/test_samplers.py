"""Samplers against a toy Gaussian whose exact flow map is known, plus conditioning, SDEdit and guidance.

The toy: x0 ~ N(mu, diag(s^2)), eps ~ N(0, I). Then x_t ~ N((1 - t) mu, V_t) with V_t = (1 - t)^2 s^2 + t^2,
and by Gaussian conditioning the exact velocity E[eps - x0 | x_t] is
    v(x, t) = (t - (1 - t) s^2) / V_t * (x - (1 - t) mu) - mu.
With z = x - (1 - t) mu this ODE reads dz/dt = (d/dt log sqrt(V_t)) z, so z(t) = z(1) sqrt(V_t) (V_1 = 1):
starting from x(1) = eps the flow ends at x(0) = mu + s * eps. Every sampler must converge to that map.
"""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from sorajax.diffusion import guidance, samplers, timesteps

MU = jnp.array([1.5, -0.5, 0.0, 2.0])
STD = jnp.array([0.3, 1.0, 2.0, 0.05])
METHODS = ("euler", "heun", "dpmpp_2m", "unipc")


def gaussian_velocity(x: jax.Array, t_tokens: jax.Array) -> jax.Array:
    t = t_tokens[..., None]
    variance = (1 - t) ** 2 * STD**2 + t**2
    return (t - (1 - t) * STD**2) / variance * (x - (1 - t) * MU) - MU


@functools.partial(jax.jit, static_argnames="method")
def _sample_gaussian(x_init, grid, method):
    return samplers.sample(gaussian_velocity, x_init, grid, method=method)


def _endpoint_error(method: str, num_steps: int, shift: float = 1.0) -> float:
    noise = jax.random.normal(jax.random.key(0), (4, 8, 4))
    out = _sample_gaussian(noise, timesteps.sampling_timesteps(num_steps, shift), method)
    return float(jnp.max(jnp.abs(out - (MU + STD * noise))))


def test_velocity_field_is_the_exact_gaussian_one():
    # Monte Carlo check of E[eps - x0 | x_t] at one t: regress eps - x0 on x_t per dim.
    key_x, key_e = jax.random.split(jax.random.key(1))
    x0 = MU + STD * jax.random.normal(key_x, (200000, 4))
    eps = jax.random.normal(key_e, (200000, 4))
    t = 0.4
    x_t = (1 - t) * x0 + t * eps
    v = gaussian_velocity(x_t[None], jnp.full((1, 200000), t))[0]
    residual = (eps - x0) - v
    np.testing.assert_allclose(jnp.mean(residual, axis=0), 0.0, atol=0.02)
    # The conditional mean leaves a residual uncorrelated with x_t.
    np.testing.assert_allclose(jnp.mean(residual * (x_t - jnp.mean(x_t, 0)), axis=0), 0.0, atol=0.03)


@pytest.mark.parametrize("method", METHODS)
def test_endpoint_error_decreases_with_steps(method):
    errors = [_endpoint_error(method, n) for n in (5, 10, 20, 50)]
    assert all(later < earlier for earlier, later in zip(errors, errors[1:])), errors
    # Also under a shifted schedule.
    assert _endpoint_error(method, 50, shift=3.0) < _endpoint_error(method, 10, shift=3.0)


def test_second_order_solvers_beat_euler_and_euler_converges():
    euler_10 = _endpoint_error("euler", 10)
    assert _endpoint_error("heun", 10) < 0.2 * euler_10
    assert _endpoint_error("dpmpp_2m", 10) < 0.5 * euler_10
    assert _endpoint_error("unipc", 10) < 0.2 * euler_10  # measured 0.061 against Euler's 0.603
    assert _endpoint_error("euler", 200) < 0.05  # first order: ~1.6% of the widest (s = 2) dimension
    assert _endpoint_error("heun", 200) < 1e-3
    assert _endpoint_error("dpmpp_2m", 200) < 2e-3
    assert _endpoint_error("unipc", 200) < 1e-3


def test_samples_have_the_data_mean_and_std():
    noise = jax.random.normal(jax.random.key(2), (1, 20000, 4))
    # 100 steps: with few uniform steps the narrow (s = 0.05) dimension comes out too narrow, because the
    # last step jumps to the posterior mean from t = 1 / num_steps, which is not small next to s.
    for method in ("heun", "dpmpp_2m"):
        out = _sample_gaussian(noise, timesteps.sampling_timesteps(100), method)
        np.testing.assert_allclose(jnp.mean(out[0], axis=0), MU, atol=0.04)
        np.testing.assert_allclose(jnp.std(out[0], axis=0), STD, rtol=0.03)


class _Recorder:
    """Collects, from inside the compiled loop, what each network call saw."""

    def __init__(self, cond_mask, x_cond):
        self.cond_mask, self.x_cond = np.asarray(cond_mask), np.asarray(x_cond)
        self.calls = []

    def record(self, x, t):
        x, t = np.asarray(x), np.asarray(t)
        on_cond = self.cond_mask
        self.calls.append(
            {
                "cond_x_error": float(np.max(np.abs(x[on_cond] - self.x_cond[on_cond]), initial=0.0)),
                "cond_t_max": float(np.max(np.abs(t[on_cond]), initial=0.0)),
                "generated_t": sorted(set(np.round(t[~on_cond], 6).tolist())),
            }
        )

    def velocity_fn(self, x, t):
        jax.debug.callback(self.record, x, t)
        # Couple tokens: generated tokens see the conditioning tokens through a mean over the row.
        return gaussian_velocity(x, t) + 0.1 * jnp.mean(x, axis=1, keepdims=True)


@pytest.mark.parametrize("method", METHODS)
def test_conditioning_tokens_held_exactly_and_seen_clean(method):
    key_n, key_c = jax.random.split(jax.random.key(3))
    noise = jax.random.normal(key_n, (2, 6, 4))
    x_cond = jax.random.normal(key_c, (2, 6, 4)) * 3.0
    cond_mask = jnp.array([[1, 1, 0, 0, 0, 0], [0, 0, 0, 1, 0, 1]], bool)
    recorder = _Recorder(cond_mask, x_cond)
    num_steps = 6
    grid = timesteps.sampling_timesteps(num_steps, 2.0)
    run = jax.jit(
        lambda x, g: samplers.sample(recorder.velocity_fn, x, g, method=method, cond_mask=cond_mask, x_cond=x_cond)
    )
    out = jax.block_until_ready(run(noise, grid))
    jax.effects_barrier()

    assert out.shape == noise.shape
    np.testing.assert_array_equal(np.asarray(out)[np.asarray(cond_mask)], np.asarray(x_cond)[np.asarray(cond_mask)])
    assert bool(jnp.all(out[~cond_mask] != noise[~cond_mask]))
    assert len(recorder.calls) == samplers.num_function_evals(method, num_steps)
    assert max(call["cond_x_error"] for call in recorder.calls) == 0.0
    assert max(call["cond_t_max"] for call in recorder.calls) == 0.0
    # Generated tokens all see the same step time, one of the grid's nonzero times.
    grid_times = set(np.round(np.asarray(grid[:-1]), 6).tolist())
    assert all(len(call["generated_t"]) == 1 and call["generated_t"][0] in grid_times for call in recorder.calls)


def test_nfe_table_matches_documentation():
    assert [samplers.num_function_evals(m, 10) for m in METHODS] == [10, 19, 10, 10]
    with pytest.raises(ValueError, match="unknown sampler method"):
        samplers.num_function_evals("ddim", 10)


@pytest.mark.parametrize("method", METHODS)
def test_sdedit_strength_zero_keeps_input_and_one_equals_generation(method):
    key_x, key_n = jax.random.split(jax.random.key(4))
    x_input = jax.random.normal(key_x, (2, 5, 4))
    noise = jax.random.normal(key_n, (2, 5, 4))
    untouched_start = samplers.sdedit_start(x_input, noise, 0.0)
    untouched = _sample_gaussian(untouched_start, timesteps.sampling_timesteps(4, start=0.0), method)
    np.testing.assert_array_equal(untouched, x_input)
    full_start = samplers.sdedit_start(x_input, noise, 1.0)
    full = _sample_gaussian(full_start, timesteps.sampling_timesteps(4, start=1.0), method)
    np.testing.assert_array_equal(full, _sample_gaussian(noise, timesteps.sampling_timesteps(4), method))
    # In between: the edit keeps more of the input the lower the strength.
    def distance(strength):
        start = samplers.sdedit_start(x_input, noise, strength)
        edited = _sample_gaussian(start, timesteps.sampling_timesteps(8, start=strength), method)
        return float(jnp.mean(jnp.abs(edited - x_input)))

    assert distance(0.2) < distance(0.6) < distance(1.0)


def test_sampler_input_validation():
    x = jnp.zeros((1, 3, 2))
    with pytest.raises(ValueError, match="unknown sampler method"):
        samplers.sample(gaussian_velocity, x, timesteps.sampling_timesteps(2), method="rk4")
    with pytest.raises(ValueError, match="together"):
        samplers.sample(gaussian_velocity, x, timesteps.sampling_timesteps(2), cond_mask=jnp.ones((1, 3), bool))
    with pytest.raises(ValueError, match="cond_mask"):
        samplers.sample(
            gaussian_velocity, x, timesteps.sampling_timesteps(2), cond_mask=jnp.ones((1, 2), bool), x_cond=x
        )
    with pytest.raises(ValueError, match="timesteps"):
        samplers.sample(gaussian_velocity, x, jnp.array([1.0]))


# ---------------------------------------------------------------- guidance


def _text_denoiser(x, t, inputs):
    """A fake network whose output depends on x, t and the caption (mean over its valid tokens)."""
    text, text_mask = inputs
    caption = jnp.sum(text * text_mask[..., None], axis=1) / jnp.maximum(jnp.sum(text_mask, axis=1, keepdims=True), 1)
    return x * (1 + t[..., None]) + caption[:, None, : x.shape[-1]]


def _guidance_inputs():
    keys = jax.random.split(jax.random.key(5), 4)
    x = jax.random.normal(keys[0], (2, 3, 4))
    t = jnp.full((2, 3), 0.7)
    mask = jnp.array([[1, 1, 0], [1, 1, 1]], bool)
    caption = (jax.random.normal(keys[1], (2, 3, 4)), mask)
    negative = (jax.random.normal(keys[2], (2, 3, 4)), mask)
    return x, t, caption, negative


def test_guidance_scales_one_and_zero():
    x, t, caption, _ = _guidance_inputs()
    null = guidance.null_caption_like(*caption)
    v_cond, v_uncond = _text_denoiser(x, t, caption), _text_denoiser(x, t, null)
    assert float(jnp.max(jnp.abs(v_cond - v_uncond))) > 0.1
    for scale, expected in ((1.0, v_cond), (0.0, v_uncond), (3.0, v_uncond + 3.0 * (v_cond - v_uncond))):
        fn = guidance.guided_velocity_fn(_text_denoiser, caption, null, scale)
        np.testing.assert_allclose(fn(x, t), expected, rtol=1e-5, atol=1e-6)


def test_negative_prompt_replaces_the_uncond_branch_and_per_row_scale():
    x, t, caption, negative = _guidance_inputs()
    fn = guidance.guided_velocity_fn(_text_denoiser, caption, negative, jnp.array([0.0, 2.0]))
    out = fn(x, t)
    v_cond, v_negative = _text_denoiser(x, t, caption), _text_denoiser(x, t, negative)
    np.testing.assert_allclose(out[0], v_negative[0], rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(out[1], v_negative[1] + 2.0 * (v_cond[1] - v_negative[1]), rtol=1e-5, atol=1e-6)
    v_null = _text_denoiser(x, t, guidance.null_caption_like(*caption))
    assert float(jnp.max(jnp.abs(out[0] - v_null[0]))) > 0.1


def test_guided_sampler_runs_jitted_and_mismatched_branches_are_named():
    x, _, caption, negative = _guidance_inputs()
    fn = guidance.guided_velocity_fn(_text_denoiser, caption, negative, 4.0)
    out = jax.jit(lambda x0, g: samplers.sample(fn, x0, g, method="dpmpp_2m"))(x, timesteps.sampling_timesteps(3))
    assert out.shape == x.shape and bool(jnp.all(jnp.isfinite(out)))
    short = (negative[0][:, :2], negative[1][:, :2])
    bad = guidance.guided_velocity_fn(_text_denoiser, caption, short, 4.0)
    with pytest.raises(ValueError, match="pad the negative"):
        bad(x, jnp.zeros((2, 3)))


def test_initial_noise_is_the_keys_normal_draw_for_every_shape():
    """Drawn flat at a power-of-two length and cut: the same numbers as `jax.random.normal(key, shape)`."""
    from sorajax.diffusion.sampling import initial_noise

    key = jax.random.PRNGKey(7)
    for shape in [(3, 16, 16, 8), (3, 12, 20, 8), (1, 16, 16, 8), (2, 4, 4, 4), (1, 1, 1, 1)]:
        noise = initial_noise(key, shape)
        assert noise.shape == shape and noise.dtype == np.float32
        np.testing.assert_array_equal(noise, np.asarray(jax.random.normal(key, shape, jnp.float32)))
