"""Causal video autoencoder: shapes, causality, chunked == whole clip, latent stats, errors."""

import dataclasses

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest

from sorajax.models import vae_chunked
from sorajax.models.vae_layers import FrameGroupNorm, match_channels, pool_shortcut, unpool_shortcut
from sorajax.models.vae import (
    CausalVAE,
    VAEConfig,
    compute_latent_stats,
    kl_divergence,
    with_latent_stats,
)

# 3D kernels everywhere and mid attention on, so every cached path is exercised. Space and time
# /4 with two levels and no res blocks outside the middle block (and few distinct input shapes
# below) keep compile time, which dominates this file, down. The /8 presets are checked by
# tracing only (jax.eval_shape).
SMALL = VAEConfig(
    base_channels=8,
    channel_multipliers=(1, 2),
    num_res_blocks=0,
    spatial_downsample=(True, True),
    temporal_downsample=(True, True),
    latent_channels=4,
    norm_groups=4,
    mid_attention=True,
)


def _video(key: int, frames: int, height: int = 16, width: int = 16, batch: int = 1) -> jax.Array:
    return jax.random.uniform(jax.random.key(key), (batch, frames, height, width, 3), minval=-1.0, maxval=1.0)


@pytest.fixture(scope="module")
def model():
    """The small VAE, its variables, and jitted whole-clip encode/decode (every call is jitted:
    eager op-by-op calls compile hundreds of tiny programs and dominate the test time)."""
    vae = CausalVAE(SMALL)
    variables = jax.jit(vae.init)(jax.random.key(0), _video(0, 1))
    encode = jax.jit(lambda v, x: vae.apply(v, x, method=CausalVAE.encode))
    decode = jax.jit(lambda v, z: vae.apply(v, z, method=CausalVAE.decode))
    return vae, variables, encode, decode


def test_variables_have_params_and_identity_latent_stats(model):
    _, variables, _, _ = model
    assert set(variables) == {"params", "latent_stats"}
    np.testing.assert_array_equal(variables["latent_stats"]["mean"], np.zeros(4))
    np.testing.assert_array_equal(variables["latent_stats"]["std"], np.ones(4))


# Shapes chosen to be shared with the other tests, so each compiles once.
@pytest.mark.parametrize(
    "batch,frames,height,width", [(1, 1, 16, 16), (1, 5, 16, 16), (1, 9, 16, 16), (2, 9, 16, 32)]
)
def test_shapes(model, batch, frames, height, width):
    vae, variables, encode, decode = model
    x = _video(1, frames, height, width, batch)
    mean, logvar = encode(variables, x)
    expected = (batch, SMALL.latent_frames(frames), height // 4, width // 4, 4)
    assert mean.shape == logvar.shape == expected
    assert SMALL.latent_shape(frames, height, width) == expected[1:]
    recon = decode(variables, mean)
    assert recon.shape == x.shape and recon.dtype == jnp.float32
    assert np.all(np.isfinite(recon)) and float(jnp.std(recon)) > 1e-3
    assert float(jnp.std(mean)) > 1e-3


@pytest.mark.parametrize("frames,height,width", [(5, 32, 16), (17, 64, 96), (1, 96, 64)])
def test_shapes_traced_for_more_sizes_and_the_tiny_preset(frames, height, width):
    """Shape inference only (no compile): portrait sizes for the small model, /8 sizes for the tiny preset."""
    for cfg in (SMALL, VAEConfig.tiny()):
        if height % cfg.spatial_factor or width % cfg.spatial_factor:
            continue
        vae = CausalVAE(cfg)
        x = jax.ShapeDtypeStruct((1, frames, height, width, 3), jnp.float32)
        variables = jax.eval_shape(vae.init, jax.random.key(0), jax.ShapeDtypeStruct((1, 1, 16, 16, 3), jnp.float32))
        recon, mean, logvar = jax.eval_shape(lambda v, x: vae.apply(v, x, sample_posterior=False), variables, x)
        assert mean.shape == logvar.shape == (1, *cfg.latent_shape(frames, height, width))
        assert recon.shape == x.shape


def test_encoder_is_causal(model):
    _, variables, encode, _ = model
    x = _video(2, 21)
    changed = x.at[:, 6].set(-x[:, 6])  # frame 6 belongs to latent frame 2 (frames 5..8)
    a, _ = encode(variables, x)
    b, _ = encode(variables, changed)
    np.testing.assert_array_equal(a[:, :2], b[:, :2])
    assert float(jnp.max(jnp.abs(a[:, 2] - b[:, 2]))) > 1e-4


def test_decoder_is_causal(model):
    _, variables, _, decode = model
    z = jax.random.normal(jax.random.key(3), (1, 6, 4, 4, 4))
    x = decode(variables, z)
    y = decode(variables, z.at[:, 2].add(1.0))  # latent 2 decodes to frames 5..8
    np.testing.assert_array_equal(x[:, :5], y[:, :5])
    assert float(jnp.max(jnp.abs(x[:, 5] - y[:, 5]))) > 1e-4


def test_image_encodes_like_first_frame_of_video(model):
    _, variables, encode, decode = model
    x = _video(4, 9)
    image_latent, _ = encode(variables, x[:, :1])
    video_latent, _ = encode(variables, x)
    np.testing.assert_allclose(image_latent, video_latent[:, :1], atol=1e-5)
    z = jax.random.normal(jax.random.key(5), (1, 3, 4, 4, 4))
    np.testing.assert_allclose(decode(variables, z[:, :1]), decode(variables, z)[:, :1], atol=1e-5)


def test_chunked_matches_whole_clip(model):
    vae, variables, encode, decode = model
    x = _video(6, 9, 16, 32, batch=2)
    mean, logvar = encode(variables, x)
    chunk_mean, chunk_logvar = vae_chunked.encode_chunked(vae, variables, x, chunk_latents=1)
    np.testing.assert_allclose(chunk_mean, mean, atol=1e-5)
    np.testing.assert_allclose(chunk_logvar, logvar, atol=1e-5)
    whole = decode(variables, mean)
    chunked = vae_chunked.decode_chunked(vae, variables, mean, chunk_latents=1)
    assert chunked.shape == whole.shape
    np.testing.assert_allclose(chunked, whole, atol=5e-5)


def test_streaming_accepts_any_input_chunking_and_traces_once_per_shape(model):
    vae, variables, encode, decode = model
    x = _video(7, 21)
    codec = vae_chunked.ChunkedCodec(vae, variables, chunk_latents=2)
    vae_chunked._encode_step.clear_cache()
    pieces = (x[:, i : i + 3] for i in range(0, 21, 3))  # input chunks of 3 frames, unaligned
    outputs = list(codec.stream_encode(pieces))
    assert [m.shape[1] for m, _ in outputs] == [1, 2, 2, 1]  # the last chunk is shorter
    assert vae_chunked._encode_step._cache_size() == 3  # first, steady and last chunk: not one per chunk
    mean = jnp.concatenate([m for m, _ in outputs], axis=1)
    np.testing.assert_allclose(mean, encode(variables, x)[0], atol=1e-5)
    frames = list(codec.stream_decode(iter([mean[:, :4], mean[:, 4:]])))
    assert [f.shape[1] for f in frames] == [1, 8, 8, 4]
    np.testing.assert_allclose(jnp.concatenate(frames, axis=1), decode(variables, mean), atol=5e-5)


def test_streaming_rejects_wrong_total_frame_count(model):
    vae, variables, _, _ = model
    with pytest.raises(ValueError, match=r"got 7 frames.*1 \+ 4k.*5 or 9"):
        list(vae_chunked.stream_encode(vae, variables, [_video(8, 7)]))


def test_latent_stats_round_trip(model):
    vae, variables, encode, decode = model
    rng = np.random.default_rng(0)
    latents = [rng.normal(3.0, 2.0, (2, 3, 4, 4, 4)), rng.normal(3.0, 2.0, (1, 5, 2, 6, 4))]
    stats = compute_latent_stats(latents)
    pooled = np.concatenate([a.reshape(-1, 4) for a in latents])
    np.testing.assert_allclose(stats["mean"], pooled.mean(0), rtol=1e-5)
    np.testing.assert_allclose(stats["std"], pooled.std(0), rtol=1e-5)

    stats = {"mean": jnp.array([0.5, -1.0, 2.0, 0.0]), "std": jnp.array([2.0, 0.5, 1.0, 4.0])}
    stored = with_latent_stats(variables, stats)
    assert stored["params"] is variables["params"]
    x = _video(9, 5)
    mean, _ = encode(variables, x)
    z = jax.jit(lambda v, x: vae.apply(v, x, method=CausalVAE.encode_normalized))(stored, x)
    np.testing.assert_allclose(z, (mean - stats["mean"]) / stats["std"], atol=1e-5)
    back = jax.jit(lambda v, z: vae.apply(v, z, method=CausalVAE.decode_normalized))(stored, z)
    np.testing.assert_allclose(back, decode(variables, mean), atol=1e-4)
    codec = vae_chunked.ChunkedCodec(vae, stored)
    np.testing.assert_allclose(codec.encode_normalized(x), z, atol=1e-5)
    np.testing.assert_allclose(codec.decode_normalized(z), back, atol=1e-4)


def test_latent_stats_errors(model):
    vae, variables, _, _ = model
    with pytest.raises(ValueError, match="one value per latent channel"):
        with_latent_stats(variables, {"mean": jnp.zeros(3), "std": jnp.ones(3)})
    with pytest.raises(ValueError, match="latent_stats"):
        jax.eval_shape(lambda v, x: vae.apply(v, x, method=CausalVAE.encode_normalized), {"params": variables["params"]}, _video(0, 1))


def test_kl_and_posterior_sampling(model):
    vae, variables, encode, decode = model
    mean = jnp.zeros((2, 1, 2, 2, 4)).at[1].set(1.0)
    kl = kl_divergence(mean, jnp.zeros_like(mean))
    np.testing.assert_allclose(kl, [0.0, 0.5], atol=1e-6)
    np.testing.assert_allclose(kl_divergence(jnp.zeros((1, 3)), jnp.full((1, 3), np.log(2.0))), [0.5 * (1 - np.log(2))], rtol=1e-5)

    x = _video(10, 5)
    call = jax.jit(lambda v, x, k: vae.apply(v, x, rngs={"sample": k}))
    recon_a, mean_a, logvar_a = call(variables, x, jax.random.key(1))
    recon_b, mean_b, _ = call(variables, x, jax.random.key(2))
    assert recon_a.shape == x.shape and mean_a.shape == logvar_a.shape == (1, 2, 4, 4, 4)
    np.testing.assert_array_equal(mean_a, mean_b)
    assert float(jnp.max(jnp.abs(recon_a - recon_b))) > 1e-5  # the posterior sample differs per key
    assert float(jnp.min(logvar_a)) >= SMALL.logvar_min and float(jnp.max(logvar_a)) <= SMALL.logvar_max
    deterministic, _, _ = jax.jit(lambda v, x: vae.apply(v, x, sample_posterior=False))(variables, x)
    np.testing.assert_allclose(deterministic, decode(variables, mean_a), atol=1e-5)


@pytest.mark.parametrize(
    "shape,message",
    [
        ((1, 16, 16, 16, 3), r"got 16 frames; the autoencoder needs 1 \+ 4k frames \(e.g. 13 or 17\): trim or pad"),
        ((1, 5, 70, 16, 3), r"height 70 is not divisible by the spatial factor 8: resize to 64 or 72"),
        ((1, 5, 16, 4, 3), r"width 4 is not divisible by the spatial factor 8: resize to 8"),
        ((1, 5, 16, 16, 4), r"4 channels.*expected 3"),
        ((5, 16, 16, 3), r"5 dims.*x\[None\]"),
    ],
)
def test_bad_video_shapes_name_the_fix(shape, message):
    vae = CausalVAE(VAEConfig.tiny())
    variables = jax.eval_shape(vae.init, jax.random.key(0), jax.ShapeDtypeStruct((1, 1, 16, 16, 3), jnp.float32))
    with pytest.raises(ValueError, match=message):
        jax.eval_shape(lambda v, x: vae.apply(v, x, method=CausalVAE.encode), variables, jnp.zeros(shape))


def test_bad_chunks_and_latents_name_the_fix(model):
    vae, variables, _, _ = model
    chunk = jax.jit(lambda v, x, c: vae.apply(v, x, c, method=CausalVAE.encode_chunk))
    _, _, cache = jax.eval_shape(chunk, variables, _video(0, 1), None)
    with pytest.raises(ValueError, match="multiple of 4 frames"):
        jax.eval_shape(chunk, variables, _video(0, 3), cache)
    with pytest.raises(ValueError, match="3 channels.*expected 4"):
        jax.eval_shape(lambda v, z: vae.apply(v, z, method=CausalVAE.decode), variables, jnp.zeros((1, 2, 4, 4, 3)))
    with pytest.raises(ValueError, match="chunk_latents must be >= 1"):
        vae_chunked.ChunkedCodec(vae, variables, chunk_latents=0)


def test_config_from_dict():
    d = ml_collections.ConfigDict(SMALL.to_dict())
    d.channel_multipliers = [1, 2]  # lists (e.g. from the command line) become tuples
    assert VAEConfig.from_dict(d) == SMALL
    hash(VAEConfig.from_dict(d))
    with pytest.raises(ValueError, match=r"unknown key 'latent_dim' in config 'vae'; known keys: base_channels, "):
        VAEConfig.from_dict({"latent_dim": 4})
    with pytest.raises(ValueError, match="give one bool per level"):
        VAEConfig(channel_multipliers=(1, 2))
    with pytest.raises(ValueError, match="norm_groups"):
        VAEConfig.tiny(norm_groups=5)
    tiny = VAEConfig.tiny()
    assert (tiny.spatial_factor, tiny.temporal_factor) == (8, 4) and (SMALL.spatial_factor, SMALL.temporal_factor) == (4, 4)
    assert tiny.latent_frames(17) == 5 and tiny.video_frames(5) == 17
    assert tiny.latent_shape(17, 64, 96) == (5, 8, 12, 8)
    assert VAEConfig.tiny(temporal_downsample=(False, True, False)).latent_frames(17) == 9


def test_preset_parameter_counts_match_the_docs():
    def count(cfg: VAEConfig) -> int:
        shapes = jax.eval_shape(CausalVAE(cfg).init, jax.random.key(0), jax.ShapeDtypeStruct((1, 1, 16, 16, 3), jnp.float32))
        return sum(int(np.prod(a.shape)) for a in jax.tree.leaves(shapes["params"]))

    assert count(VAEConfig.tiny()) == 9_199_539
    assert count(VAEConfig()) == 258_847_395


def test_bfloat16_compute_keeps_float32_params_and_outputs(model):
    _, variables, encode, decode = model
    vae = CausalVAE(VAEConfig(**{**SMALL.to_dict(), "dtype": "bfloat16"}))
    params = jax.eval_shape(vae.init, jax.random.key(0), _video(0, 1))["params"]
    assert jax.tree.map(lambda a: (a.shape, a.dtype), params) == jax.tree.map(lambda a: (a.shape, a.dtype), variables["params"])
    x = _video(11, 5)
    recon, mean, logvar = jax.jit(lambda v, x: vae.apply(v, x, sample_posterior=False))(variables, x)
    assert recon.dtype == mean.dtype == logvar.dtype == jnp.float32
    reference = decode(variables, encode(variables, x)[0])
    assert float(jnp.mean(jnp.abs(recon - reference))) < 0.02 and float(jnp.max(jnp.abs(recon - reference))) < 0.5


def test_rms_norm_variant_is_causal_chunkable_and_keeps_flat_colours():
    """norm_groups=0 (per-pixel RMS norm, the tiny default): chunking stays exact, and unlike
    per-frame GroupNorm a flat frame's colour survives the normalisation."""
    cfg = dataclasses.replace(SMALL, norm_groups=0, mid_attention=False)
    vae = CausalVAE(cfg)
    variables = jax.jit(vae.init)(jax.random.key(1), _video(0, 1))
    x = _video(7, 9, 16, 32)
    mean, _ = jax.jit(lambda v, x: vae.apply(v, x, method=CausalVAE.encode))(variables, x)
    chunk_mean, _ = vae_chunked.encode_chunked(vae, variables, x, chunk_latents=1)
    np.testing.assert_allclose(chunk_mean, mean, atol=1e-5)
    decoded = vae_chunked.decode_chunked(vae, variables, mean, chunk_latents=1)
    whole = jax.jit(lambda v, z: vae.apply(v, z, method=CausalVAE.decode))(variables, mean)
    np.testing.assert_allclose(decoded, whole, atol=5e-5)

    flat = jnp.ones((1, 1, 4, 4, 2)) * jnp.array([0.3, -0.6])
    rms = FrameGroupNorm(0)
    out = rms.apply(rms.init(jax.random.key(0), flat), flat)
    np.testing.assert_allclose(out[0, 0, 0, 0], np.array([0.3, -0.6]) / np.sqrt((0.09 + 0.36) / 2), rtol=1e-5)
    group = FrameGroupNorm(2)
    assert float(jnp.abs(group.apply(group.init(jax.random.key(0), flat), flat)).max()) < 1e-3  # colour erased


def test_shortcut_variant_is_causal_chunkable_and_carries_colour_without_training():
    """shortcuts=True with no norm (the tiny default): chunked == whole clip and causal in time,
    and the parameter-free paths average/repeat exactly as `Downsample`/`Upsample` resample."""
    cfg = dataclasses.replace(SMALL, norm_groups=-1, mid_attention=False, shortcuts=True,
                              temporal_downsample=(False, True))
    vae = CausalVAE(cfg)
    variables = jax.jit(vae.init)(jax.random.key(1), _video(0, 1))
    encode = jax.jit(lambda v, x: vae.apply(v, x, method=CausalVAE.encode))
    decode = jax.jit(lambda v, z: vae.apply(v, z, method=CausalVAE.decode))
    x = _video(7, 5, 16, 32)
    mean, _ = encode(variables, x)
    assert mean.shape == (1, 3, 4, 8, 4)
    chunk_mean, _ = vae_chunked.encode_chunked(vae, variables, x, chunk_latents=1)
    np.testing.assert_allclose(chunk_mean, mean, atol=1e-5)
    np.testing.assert_allclose(vae_chunked.decode_chunked(vae, variables, mean, chunk_latents=1),
                               decode(variables, mean), atol=5e-5)
    changed, _ = encode(variables, x.at[:, 3].set(-x[:, 3]))  # frame 3 belongs to latent frame 2 (frames 3, 4)
    np.testing.assert_array_equal(changed[:, :2], mean[:, :2])

    # The paths themselves: causal frame pairs (the first frame alone), 2x2 means, channel maps.
    frames = jnp.arange(5.0).reshape(1, 5, 1, 1, 1) * jnp.ones((1, 5, 2, 2, 2))
    pooled = pool_shortcut(frames, spatial=True, temporal=True, starts_video=True)
    np.testing.assert_allclose(pooled[0, :, 0, 0, 0], [0.0, 1.5, 3.5])
    np.testing.assert_allclose(pool_shortcut(frames[:, 1:], True, True, starts_video=False)[0, :, 0, 0, 0], [1.5, 3.5])
    unpooled = unpool_shortcut(pooled, spatial=True, temporal=True, starts_video=True)
    assert unpooled.shape == frames.shape
    np.testing.assert_allclose(unpooled[0, :, 1, 1, 0], [0.0, 1.5, 1.5, 3.5, 3.5])
    np.testing.assert_allclose(match_channels(jnp.array([1.0, 3.0, 5.0, 7.0]), 2), [2.0, 6.0])
    np.testing.assert_allclose(match_channels(jnp.array([1.0, 3.0]), 4), [1.0, 3.0, 1.0, 3.0])
    with pytest.raises(ValueError, match="cannot map 3 channels to 2"):
        match_channels(jnp.ones(3), 2)
