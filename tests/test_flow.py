"""Rectified-flow algebra, the masked loss, noise-level distributions and caption dropout (values, tiny sizes)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from sorajax.diffusion import flow, guidance, timesteps


def _tokens(seed: int, shape=(2, 6, 3)) -> jax.Array:
    return jax.random.normal(jax.random.key(seed), shape)


# ---------------------------------------------------------------- noising and conversions


def test_add_noise_endpoints_and_straight_path():
    x0, noise = _tokens(0), _tokens(1)
    np.testing.assert_array_equal(flow.add_noise(x0, noise, 0.0), x0)
    np.testing.assert_array_equal(flow.add_noise(x0, noise, 1.0), noise)
    t = jnp.array([[0.0, 0.25, 0.5, 0.75, 1.0, 0.1], [0.3, 0.3, 0.3, 0.9, 0.9, 0.0]])
    x_t = flow.add_noise(x0, noise, t)
    assert x_t.shape == x0.shape
    np.testing.assert_allclose(x_t[0, 1], 0.75 * x0[0, 1] + 0.25 * noise[0, 1], rtol=1e-6)
    # d x_t / dt is the velocity target, the same at every t.
    dx_dt = jax.jvp(lambda tt: flow.add_noise(x0, noise, tt), (t,), (jnp.ones_like(t),))[1]
    np.testing.assert_allclose(dx_dt, flow.velocity_target(x0, noise), rtol=1e-6, atol=1e-6)


def test_t_broadcasts_per_row_and_scalar_and_rejects_bad_shapes():
    x0, noise = _tokens(0), _tokens(1)
    per_row = flow.add_noise(x0, noise, jnp.array([0.2, 0.7]))
    per_token = flow.add_noise(x0, noise, jnp.array([[0.2] * 6, [0.7] * 6]))
    np.testing.assert_allclose(per_row, per_token, rtol=1e-6)
    with pytest.raises(ValueError, match="does not lead the data shape"):
        flow.add_noise(x0, noise, jnp.zeros((6, 2)))


def test_x0_and_noise_recovered_from_velocity_for_every_t():
    x0, noise = _tokens(2), _tokens(3)
    t = jax.random.uniform(jax.random.key(4), (2, 6)).at[0, 0].set(0.0).at[1, 5].set(1.0)
    x_t = flow.add_noise(x0, noise, t)
    v = flow.velocity_target(x0, noise)
    np.testing.assert_allclose(flow.x0_from_velocity(x_t, v, t), x0, atol=1e-5)
    np.testing.assert_allclose(flow.noise_from_velocity(x_t, v, t), noise, atol=1e-5)


@pytest.mark.parametrize("kind", ["velocity", "x0", "epsilon"])
def test_prediction_conversions_consistent(kind):
    x0, noise = _tokens(5), _tokens(6)
    t = jax.random.uniform(jax.random.key(7), (2, 6), minval=0.05, maxval=0.95)
    x_t = flow.add_noise(x0, noise, t)
    v = flow.velocity_target(x0, noise)
    target = flow.prediction_target(x0, noise, kind)
    # The exact prediction of each kind is what velocity_to_prediction gives, and converts back to v.
    np.testing.assert_allclose(flow.velocity_to_prediction(v, x_t, t, kind), target, atol=1e-5)
    np.testing.assert_allclose(flow.prediction_to_velocity(target, x_t, t, kind), v, atol=1e-4)


def test_conversions_finite_at_clean_and_pure_noise_ends():
    x0, noise = _tokens(8), _tokens(9)
    for t_value in (0.0, 1.0):
        t = jnp.full((2, 6), t_value)
        x_t = flow.add_noise(x0, noise, t)
        for kind, prediction in (("x0", x0), ("epsilon", noise)):
            v = flow.prediction_to_velocity(prediction, x_t, t, kind)
            assert bool(jnp.all(jnp.isfinite(v))), (kind, t_value)
    # At t = 0 an exact x0-prediction gives x_t - x0 = 0, i.e. a zero (finite) velocity, not 0/0.
    np.testing.assert_array_equal(flow.velocity_from_x0(x0, x0, 0.0), jnp.zeros_like(x0))


def test_unknown_prediction_kind_is_named():
    with pytest.raises(ValueError, match="unknown prediction kind 'v'"):
        flow.prediction_target(_tokens(0), _tokens(1), "v")


# ---------------------------------------------------------------- loss


def test_loss_zero_for_exact_target_and_ignores_masked_tokens():
    x0, noise = _tokens(10), _tokens(11)
    target = flow.velocity_target(x0, noise)
    loss_mask = jnp.array([[1, 1, 1, 0, 0, 0], [0, 1, 1, 1, 1, 0]], bool)
    loss, aux = flow.flow_matching_loss(target, target, loss_mask)
    assert float(loss) == 0.0
    assert float(aux["num_loss_tokens"]) == 7.0 and aux["per_token_loss"].shape == (2, 6)

    garbage = jnp.where(loss_mask[..., None], target, jnp.nan)
    shifted_on_mask = garbage + jnp.where(loss_mask[..., None], 0.5, 0.0)
    loss, _ = flow.flow_matching_loss(shifted_on_mask, target, loss_mask)
    np.testing.assert_allclose(loss, 0.25, rtol=1e-6)
    grad = jax.grad(lambda p: flow.flow_matching_loss(p, target, loss_mask)[0])(garbage)
    assert bool(jnp.all(jnp.isfinite(grad)))
    np.testing.assert_array_equal(grad[0, 3:], 0.0)


def test_loss_normalisation_per_token_vs_per_sample():
    # Row 0 packs two samples: segment 1 (1 loss token, error 1) and segment 2 (3 loss tokens, error 0).
    # Row 1 holds one sample (2 loss tokens, error 4) plus a conditioning token and padding.
    target = jnp.zeros((2, 6, 2))
    prediction = target.at[0, 0].set(1.0).at[1, 1:3].set(2.0)
    segment_ids = jnp.array([[1, 2, 2, 2, 0, 0], [1, 1, 1, 0, 0, 0]])
    loss_mask = jnp.array([[1, 1, 1, 1, 0, 0], [0, 1, 1, 0, 0, 0]], bool)
    per_token, aux = flow.flow_matching_loss(prediction, target, loss_mask, segment_ids)
    per_sample, _ = flow.flow_matching_loss(prediction, target, loss_mask, segment_ids, per_sample_weighting=True)
    np.testing.assert_allclose(per_token, (1.0 + 0 + 0 + 0 + 4 + 4) / 6, rtol=1e-6)
    np.testing.assert_allclose(per_sample, (1.0 + 0.0 + 4.0) / 3, rtol=1e-6)
    assert float(aux["num_samples"]) == 3.0
    # Without segment ids each row is one sample.
    per_row, _ = flow.flow_matching_loss(prediction, target, loss_mask, per_sample_weighting=True)
    np.testing.assert_allclose(per_row, (0.25 + 4.0) / 2, rtol=1e-6)


def test_loss_without_loss_tokens_is_zero_not_nan():
    x = _tokens(12)
    for weighting in (False, True):
        loss, aux = flow.flow_matching_loss(x, x + 1, jnp.zeros((2, 6), bool), per_sample_weighting=weighting)
        assert float(loss) == 0.0 and float(aux["num_samples"]) == 0.0


def test_loss_rejects_mismatched_shapes():
    with pytest.raises(ValueError, match="loss_mask"):
        flow.flow_matching_loss(_tokens(0), _tokens(1), jnp.ones((2, 5), bool))


# ---------------------------------------------------------------- noise levels


def test_logit_normal_in_open_interval_with_right_median():
    t = timesteps.sample_logit_normal(jax.random.key(0), (20000,), mean=0.8, std=1.5)
    assert t.shape == (20000,)
    assert bool(jnp.all((t > 0) & (t < 1)))
    np.testing.assert_allclose(jnp.median(t), jax.nn.sigmoid(0.8), atol=0.01)


def test_time_shift_identity_fixed_ends_monotone_and_invertible():
    t = jnp.linspace(0.0, 1.0, 101)
    np.testing.assert_allclose(timesteps.time_shift(t, 1.0), t, atol=1e-7)
    shifted = timesteps.time_shift(t, 3.0)
    np.testing.assert_allclose(shifted[jnp.array([0, -1])], [0.0, 1.0], atol=1e-7)
    assert bool(jnp.all(jnp.diff(shifted) > 0)) and bool(jnp.all(shifted >= t))
    np.testing.assert_allclose(timesteps.inverse_time_shift(shifted, 3.0), t, atol=1e-6)
    draws = timesteps.sample_logit_normal(jax.random.key(1), (5000,))
    assert float(jnp.mean(timesteps.time_shift(draws, 3.0))) > float(jnp.mean(draws)) + 0.15


def test_shift_grows_with_token_count_and_is_clamped():
    counts = jnp.array([1, 64, 256, 1024, 4096, 16384, 10**6])
    shift = timesteps.shift_for_num_tokens(counts, base_tokens=256, base_shift=1.0, max_tokens=16384, max_shift=4.0)
    np.testing.assert_allclose(shift, [1.0, 1.0, 1.0, 4 ** (1 / 3), 4 ** (2 / 3), 4.0, 4.0], rtol=1e-5)
    assert bool(jnp.all(jnp.diff(shift) >= 0))
    with pytest.raises(ValueError, match="base_tokens < max_tokens"):
        timesteps.shift_for_num_tokens(10, base_tokens=100, max_tokens=50)


def test_sampling_timesteps_from_start_to_zero():
    for shift in (1.0, 3.0):
        grid = timesteps.sampling_timesteps(8, shift)
        assert grid.shape == (9,)
        assert float(grid[0]) == 1.0 and float(grid[-1]) == 0.0
        assert bool(jnp.all(jnp.diff(grid) < 0))
    np.testing.assert_allclose(timesteps.sampling_timesteps(4), [1.0, 0.75, 0.5, 0.25, 0.0], atol=1e-7)
    # A larger shift keeps the middle of the grid noisier.
    assert float(timesteps.sampling_timesteps(8, 3.0)[4]) > float(timesteps.sampling_timesteps(8, 1.0)[4])
    sdedit = timesteps.sampling_timesteps(5, 2.0, start=0.6)
    assert float(sdedit[0]) == pytest.approx(0.6) and float(sdedit[-1]) == 0.0
    assert bool(jnp.all(jnp.diff(sdedit) < 0))
    with pytest.raises(ValueError, match="num_steps"):
        timesteps.sampling_timesteps(0)


def test_training_t_one_level_per_segment_zero_on_padding_and_conditioning():
    segment_ids = jnp.array([[1, 1, 1, 2, 2, 0, 0, 0], [1, 1, 1, 1, 1, 1, 1, 0]])
    cond_mask = jnp.zeros((2, 8), bool).at[1, 0].set(True)
    config = timesteps.TrainingTimeConfig()
    t = timesteps.training_t(jax.random.key(3), segment_ids, config, cond_mask)
    assert t.shape == (2, 8)
    assert len(set(np.asarray(t[0, :3]).tolist())) == 1 and len(set(np.asarray(t[0, 3:5]).tolist())) == 1
    assert float(t[0, 0]) != float(t[0, 3])
    np.testing.assert_array_equal(t[0, 5:], 0.0)
    assert float(t[1, 0]) == 0.0 and float(t[1, 7]) == 0.0
    assert len(set(np.asarray(t[1, 1:7]).tolist())) == 1 and 0 < float(t[1, 1]) < 1


def test_training_t_bigger_samples_get_more_noise():
    # Each row: a 4-token sample and a 60-token sample. With shift 1 at 4 tokens and 4 at 64 tokens, the
    # big sample's t is the small one's draw law shifted by 4^(log 15 / log 16) ~ 3.6.
    config = timesteps.TrainingTimeConfig(base_tokens=4, base_shift=1.0, max_tokens=64, max_shift=4.0)
    segment_ids = jnp.tile(jnp.array([[1] * 4 + [2] * 60]), (2000, 1))
    t = timesteps.training_t(jax.random.key(4), segment_ids, config)
    small, big = t[:, 0], t[:, 4]
    np.testing.assert_allclose(jnp.median(small), 0.5, atol=0.03)
    expected_shift = float(timesteps.shift_for_num_tokens(60, 4, 1.0, 64, 4.0))
    np.testing.assert_allclose(jnp.median(big), timesteps.time_shift(0.5, expected_shift), atol=0.03)


def test_training_time_config_from_mapping_and_validation():
    config = timesteps.TrainingTimeConfig.from_mapping({"logit_mean": -0.5, "max_shift": 3.0})
    assert config.logit_mean == -0.5 and config.max_shift == 3.0
    with pytest.raises(ValueError, match="unknown key .* in config .time.; known keys: "):
        timesteps.TrainingTimeConfig.from_mapping({"shift": 2.0})
    with pytest.raises(ValueError, match="base_shift <= max_shift"):
        timesteps.TrainingTimeConfig(base_shift=5.0, max_shift=2.0)


# ---------------------------------------------------------------- caption dropout


def test_drop_captions_rates_and_mask_kept():
    text = jax.random.normal(jax.random.key(5), (3, 5, 4)) + 2.0
    mask = jnp.array([[1, 1, 1, 0, 0], [1, 1, 1, 1, 1], [1, 0, 0, 0, 0]], bool)
    kept, dropped = guidance.drop_captions(jax.random.key(6), text, mask, 0.0)
    np.testing.assert_array_equal(kept, text)
    assert not bool(jnp.any(dropped))
    nulled, dropped = guidance.drop_captions(jax.random.key(6), text, mask, 1.0)
    np.testing.assert_array_equal(dropped, mask)
    np.testing.assert_array_equal(jnp.where(mask[..., None], nulled, 0.0), 0.0)
    null_text, null_mask = guidance.null_caption_like(text, mask)
    np.testing.assert_array_equal(null_mask, mask)
    np.testing.assert_array_equal(jnp.where(mask[..., None], null_text, 0.0), jnp.where(mask[..., None], nulled, 0.0))
    with pytest.raises(ValueError, match="dropout rate"):
        guidance.drop_captions(jax.random.key(6), text, mask, 1.5)


def test_drop_captions_drops_whole_packed_captions_independently():
    text = jnp.ones((400, 6, 2))
    segments = jnp.tile(jnp.array([[1, 1, 2, 2, 2, 0]]), (400, 1))
    out, dropped = guidance.drop_captions(jax.random.key(7), text, segments, 0.3)
    first, second = out[:, 0, 0] == 0, out[:, 2, 0] == 0
    # A caption is dropped as a whole; padding is never marked.
    np.testing.assert_array_equal(out[:, 1, 0] == 0, first)
    np.testing.assert_array_equal(out[:, 4, 0] == 0, second)
    assert not bool(jnp.any(dropped[:, 5]))
    np.testing.assert_allclose(jnp.mean(first), 0.3, atol=0.07)
    np.testing.assert_allclose(jnp.mean(second), 0.3, atol=0.07)
    # Independent draws for the two samples of a row: both dropped ~ 0.09 of rows, not ~0.3.
    np.testing.assert_allclose(jnp.mean(first & second), 0.09, atol=0.05)
