"""Wan VAE 2.1 / 2.2: parity with diffusers' AutoencoderKLWan, chunking, key coverage, loading errors.

The fixtures come from `tools/make_wan_vae_fixtures.py` (diffusers 0.42.1, float32, its own chunking:
encoder 1 then 4 frames, decoder one latent frame at a time). Programs are compiled at XLA's lowest
backend optimisation level: the same maths, compiled ~3x faster, which keeps this file to seconds.
"""

from __future__ import annotations

import dataclasses
import functools
import json
from pathlib import Path

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import traverse_util
from safetensors.numpy import save_file

from sorajax.models.pretrained import (
    CheckpointError,
    check_coverage,
    fill_params,
    read_key_shapes,
)
from sorajax.models.vae import denormalize_latents, normalize_latents
from sorajax.models.vae_chunked import ChunkedCodec
from sorajax.models.vae_config import PARAM_AXES_BY_RANK
from sorajax.models.wan_vae import WanVAE, abstract_wan_variables, wan_variables
from sorajax.models.wan_vae_config import WanVAEConfig
from sorajax.models.wan_vae_keys import load_wan_vae, wan_vae_key_map

FIXTURES = Path(__file__).parent / "fixtures"
VERSIONS = {"wan2.1": "wan_vae21", "wan2.2": "wan_vae22"}
FAST_COMPILE = {"xla_backend_optimization_level": 0}


def _compiled(fn, *args):
    return jax.jit(fn).lower(*args).compile(compiler_options=FAST_COMPILE)


class Tiny:
    """A tiny fixture's config, weights loaded through the key map, and compiled chunk steps."""

    def __init__(self, version: str):
        self.data = np.load(FIXTURES / f"{VERSIONS[version]}_tiny.npz")
        self.raw_config = json.loads(str(self.data["config"]))
        self.config = WanVAEConfig.from_diffusers(self.raw_config)
        self.weights = {k[2:]: self.data[k].astype(np.float32) for k in self.data.files if k.startswith("w:")}
        abstract = nn.meta.unbox(abstract_wan_variables(self.config)["params"])
        tensors = (("fixture", k, v) for k, v in self.weights.items())
        params = fill_params(tensors, wan_vae_key_map(self.config, abstract), abstract, "tiny Wan VAE")
        self.vae = WanVAE(self.config)
        self.variables = wan_variables(self.config, params)
        self._steps: dict = {}

    def step(self, method: str, x: np.ndarray, cache):
        """``vae.<method>(x, cache)``, compiled once per (method, shape, first-or-not)."""
        key = (method, x.shape, cache is None)
        if key not in self._steps:
            def run(variables, x, cache):
                return self.vae.apply(variables, x, cache, method=method)
            self._steps[key] = _compiled(run, self.variables, x, cache)
        return self._steps[key](self.variables, x, cache)

    def encode_chunked(self, video: np.ndarray, sizes: list[int]):
        cache, means, logvars, start = None, [], [], 0
        for size in sizes:
            mean, logvar, cache = self.step("encode_chunk", jnp.asarray(video[:, start : start + size]), cache)
            means.append(mean), logvars.append(logvar)
            start += size
        assert start == video.shape[1]
        return np.concatenate(means, axis=1), np.concatenate(logvars, axis=1)

    def decode_chunked(self, latent: np.ndarray, sizes: list[int]) -> np.ndarray:
        cache, frames, start = None, [], 0
        for size in sizes:
            out, cache = self.step("decode_chunk", jnp.asarray(latent[:, start : start + size]), cache)
            frames.append(out)
            start += size
        return np.concatenate(frames, axis=1)


@functools.cache
def load_tiny(version: str) -> Tiny:
    return Tiny(version)


@pytest.fixture(params=sorted(VERSIONS))
def tiny(request) -> Tiny:
    return load_tiny(request.param)


def test_parity_with_diffusers_and_chunking(tiny: Tiny):
    """Whole clip and Wan's chunking (1, 4, 4 frames; 1 latent frame at a time) both match diffusers."""
    video, latent = tiny.data["video"], tiny.data["latent"]
    assert video.shape == (1, 9, 32, 32, 3) and latent.shape[1] == 3
    mean, logvar = tiny.encode_chunked(video, [9])
    decoded = tiny.decode_chunked(latent, [3])
    chunk_mean, chunk_logvar = tiny.encode_chunked(video, [1, 4, 4])
    chunk_decoded = tiny.decode_chunked(latent, [1, 1, 1])

    errors = {
        "mean": np.abs(mean - tiny.data["mean"]).max(),
        "logvar": np.abs(logvar - tiny.data["logvar"]).max(),
        "decoded": np.abs(decoded - tiny.data["decoded"]).max(),
    }
    print(tiny.config.version, {k: f"{v:.2e}" for k, v in errors.items()})
    assert errors["mean"] < 1e-5 and errors["logvar"] < 1e-5, errors
    assert errors["decoded"] < 1e-4, errors
    assert np.abs(decoded).max() <= 1.0 and np.isclose(np.abs(decoded).max(), 1.0)  # clamped, and the clamp bites
    np.testing.assert_allclose(chunk_mean, mean, atol=1e-5, rtol=0)
    np.testing.assert_allclose(chunk_logvar, logvar, atol=1e-5, rtol=0)
    np.testing.assert_allclose(chunk_decoded, decoded, atol=1e-5, rtol=0)


def test_bfloat16_compute_stays_close():
    """The compute dtype switch: bfloat16 activations, float32 parameters and outputs (2.2 tiny encode)."""
    tiny = load_tiny("wan2.2")
    config = dataclasses.replace(tiny.config, dtype="bfloat16")
    vae = WanVAE(config)
    encode = _compiled(lambda v, x: vae.apply(v, x, method="encode"), tiny.variables, tiny.data["video"])
    mean, _ = encode(tiny.variables, tiny.data["video"])
    assert mean.dtype == jnp.float32
    error = np.abs(mean - tiny.data["mean"]).max()
    assert 1e-4 < error < 5e-2, error  # really bfloat16, and still the same function


def test_pipeline_interface_chunked_codec():
    """WanVAE plugs into sorajax's ChunkedCodec (the pipeline's chunked coder): the pipeline's chunks of
    2 latent frames give the whole-clip normalised latents and pixels (a micro 2.2-layout model)."""
    config = WanVAEConfig(base_channels=4, channel_multipliers=(1, 1), num_res_blocks=1, temporal_downsample=(True,),
                          latent_channels=2, residual=True, patch_size=2,
                          latents_mean=(0.5, -1.0), latents_std=(2.0, 0.5))
    vae = WanVAE(config)
    rng = np.random.default_rng(0)
    video = rng.uniform(-1, 1, (1, 9, 8, 8, 3)).astype(np.float32)
    abstract = abstract_wan_variables(config)
    assert jax.tree.map(np.shape, abstract["latent_stats"]) == {"mean": (2,), "std": (2,)}
    params = jax.tree.map(lambda s: (0.3 * rng.standard_normal(s.shape)).astype(np.float32),
                          nn.meta.unbox(abstract["params"]))
    variables = wan_variables(config, params)
    np.testing.assert_array_equal(variables["latent_stats"]["std"], np.float32([2.0, 0.5]))
    codec = ChunkedCodec(vae, variables, chunk_latents=2)
    latents = codec.encode_normalized(video)
    whole = _compiled(lambda v, x: vae.apply(v, x, method="encode_normalized"), variables, video)(variables, video)
    assert latents.shape == (1, 5, 2, 2, 2)
    np.testing.assert_allclose(latents, whole, atol=1e-5, rtol=0)
    pixels = codec.decode_normalized(latents)
    decode = _compiled(lambda v, z: vae.apply(v, z, method="decode_normalized"), variables, latents)
    np.testing.assert_allclose(pixels, decode(variables, latents), atol=1e-5, rtol=0)
    assert pixels.shape == video.shape and np.abs(pixels).max() <= 1.0


def test_latent_normalisation_round_trip(tiny: Tiny):
    stats = tiny.variables["latent_stats"]
    np.testing.assert_array_equal(stats["mean"], np.float32(tiny.raw_config["latents_mean"]))
    z = tiny.data["mean"]
    normed = normalize_latents(z, stats)
    expected = (z - np.float32(tiny.raw_config["latents_mean"])) / np.float32(tiny.raw_config["latents_std"])
    np.testing.assert_allclose(normed, expected, rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(denormalize_latents(normed, stats), z, rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("version", sorted(VERSIONS))
def test_full_size_key_coverage(version: str):
    """Every key of the full-size checkpoint fills exactly one parameter of its shape, and all are filled."""
    config = WanVAEConfig.preset(version)
    abstract = nn.meta.unbox(abstract_wan_variables(config)["params"])
    key_shapes = read_key_shapes(FIXTURES / f"{VERSIONS[version]}_keys.txt")
    key_map = wan_vae_key_map(config, abstract)
    leaves = traverse_util.flatten_dict(abstract)
    assert len(key_shapes) == len(key_map) == len(leaves) == {"wan2.1": 194, "wan2.2": 196}[version]
    assert len({t.path for t in key_map.values()}) == len(leaves)
    check_coverage(key_shapes, key_map, abstract, f"Wan VAE {version}")
    count = sum(int(np.prod(leaf.shape)) for leaf in leaves.values())
    assert round(count / 1e6) == {"wan2.1": 127, "wan2.2": 705}[version]
    assert {len(leaf.shape) for leaf in leaves.values()} <= set(PARAM_AXES_BY_RANK)  # logical axes by rank


def test_presets_and_sizes():
    v21, v22 = WanVAEConfig.preset("wan2.1"), WanVAEConfig.preset("wan2.2")
    assert v21.latent_shape(81, 480, 832) == (21, 60, 104, 16)
    assert v22.latent_shape(121, 704, 1280) == (31, 44, 80, 48)
    assert (v21.latents_mean[0], v21.latents_std[-1]) == (-0.7571, 1.9160)
    assert (v22.latents_mean[0], v22.latents_std[-1]) == (-0.2289, 0.7744)
    assert v22.decoder_channels == (1024, 1024, 1024, 512, 256) and v22.encoder_channels[-1] == 640
    shapes = jax.eval_shape(
        lambda x: WanVAE(dataclasses.replace(v22, dtype="bfloat16")).init_with_output(
            {"params": jax.random.key(0)}, x, method="encode")[0],
        jax.ShapeDtypeStruct((1, 5, 32, 32, 3), jnp.float32),
    )
    assert shapes[0].shape == (1, 2, 2, 2, 48) and shapes[0].dtype == jnp.float32


@pytest.mark.parametrize("changes, message", [
    ({"temporal_downsample": (False, True)}, "give 3 (one per downsampling level"),
    ({"latents_mean": (0.0,) * 3}, "latents_mean has 3 values for 16 latent channels: give one per channel"),
    ({"dtype": "float16"}, "use one of ['bfloat16', 'float32']"),
    ({"base_channels": 5, "channel_multipliers": (1, 1)}, None),
])
def test_config_validation(changes, message):
    with pytest.raises(ValueError, match="scale_factor_spatial 8 disagrees with the layout's factor 16"):
        WanVAEConfig.from_diffusers({"is_residual": True, "patch_size": 2, "in_channels": 12, "out_channels": 12,
                                     "scale_factor_spatial": 8})
    if message is None:  # 2.1 halves the decoder's channels at each upsample
        with pytest.raises(ValueError, match="must be even"):
            WanVAEConfig(temporal_downsample=(False,), **changes)
        return
    with pytest.raises(ValueError) as err:
        WanVAEConfig(**changes)
    assert message in str(err.value) and "\n" not in str(err.value)
    with pytest.raises(ValueError, match="unknown Wan VAE preset 'wan3': use one of"):
        WanVAEConfig.preset("wan3")


# ---- loading a diffusers folder --------------------------------------------------------------
@pytest.fixture(scope="module")
def tiny21() -> tuple[dict, dict[str, np.ndarray]]:
    data = np.load(FIXTURES / "wan_vae21_tiny.npz")
    weights = {k[2:]: data[k].astype(np.float32) for k in data.files if k.startswith("w:")}
    return json.loads(str(data["config"])), weights


def _folder(tmp_path: Path, config: dict, shards: dict[str, dict[str, np.ndarray]], index: bool = False) -> Path:
    (tmp_path / "config.json").write_text(json.dumps(config))
    for name, tensors in shards.items():
        save_file(tensors, str(tmp_path / name))
    if index:
        weight_map = {k: name for name, tensors in shards.items() for k in tensors}
        (tmp_path / "diffusion_pytorch_model.safetensors.index.json").write_text(json.dumps({"weight_map": weight_map}))
    return tmp_path


def test_load_wan_vae_fills_the_tiny_model(tmp_path, tiny21):
    config, weights = tiny21
    keys = sorted(weights)
    shards = {"a.safetensors": {k: weights[k] for k in keys[:50]}, "b.safetensors": {k: weights[k] for k in keys[50:]}}
    loaded_config, params = load_wan_vae(_folder(tmp_path, config, shards, index=True), "wan2.1")
    assert loaded_config.version == "wan2.1" and loaded_config.base_channels == 4
    conv = params["encoder"]["down1_res0"]["conv1"]["kernel"]
    np.testing.assert_array_equal(conv, weights["encoder.down_blocks.3.conv1.weight"].transpose(2, 3, 4, 1, 0))
    np.testing.assert_array_equal(params["decoder"]["up0_resample"]["space_conv"]["kernel"][0],
                                  weights["decoder.up_blocks.0.upsamplers.0.resample.1.weight"].transpose(2, 3, 1, 0))


def test_load_refuses_another_family(tmp_path, tiny21):
    tensors = {"m.safetensors": {"x": np.zeros(1, np.float32)}}
    folder = _folder(tmp_path, {"_class_name": "WanTransformer3DModel"}, tensors)
    with pytest.raises(CheckpointError) as err:
        load_wan_vae(folder)
    assert str(err.value).startswith(
        f"{folder / 'config.json'}: this folder holds WanTransformer3DModel, not the Wan VAE")


def test_load_refuses_a_missing_shard(tmp_path, tiny21):
    config, weights = tiny21
    keys = sorted(weights)
    folder = _folder(tmp_path, config, {"a.safetensors": {k: weights[k] for k in keys[:10]},
                                        "b.safetensors": {k: weights[k] for k in keys[10:]}}, index=True)
    (folder / "b.safetensors").unlink()
    with pytest.raises(CheckpointError) as err:
        load_wan_vae(folder, "wan2.1")
    assert str(err.value) == (f"{folder / 'b.safetensors'}: shard listed in "
                              "diffusion_pytorch_model.safetensors.index.json "
                              f"(holding {keys[10]!r} and others) is missing: download the whole folder")


def test_load_refuses_a_wrong_shape(tmp_path, tiny21):
    config, weights = tiny21
    bad = dict(weights, **{"encoder.conv_in.bias": np.zeros(5, np.float32)})
    folder = _folder(tmp_path, config, {"diffusion_pytorch_model.safetensors": bad})
    with pytest.raises(CheckpointError) as err:
        load_wan_vae(folder, "wan2.1")
    message = str(err.value)
    shard = folder / "diffusion_pytorch_model.safetensors"
    assert message.startswith(f"{shard}: key 'encoder.conv_in.bias' has shape (5,)")
    assert "encoder/conv_in/bias is (4,)" in message and "\n" not in message


def test_load_refuses_an_unknown_key(tmp_path, tiny21):
    config, weights = tiny21
    bad = dict(weights, **{"encoder.head.0.weight": np.zeros(3, np.float32)})
    folder = _folder(tmp_path, config, {"diffusion_pytorch_model.safetensors": bad})
    with pytest.raises(CheckpointError) as err:
        load_wan_vae(folder, "wan2.1")
    assert str(err.value).startswith(
        f"{folder / 'diffusion_pytorch_model.safetensors'}: key 'encoder.head.0.weight' "
        "is not part of the Wan VAE (wan2.1)")


def test_load_refuses_the_other_version(tmp_path, tiny21):
    config, weights = tiny21
    folder = _folder(tmp_path, config, {"diffusion_pytorch_model.safetensors": weights})
    with pytest.raises(CheckpointError) as err:
        load_wan_vae(folder, "wan2.2")
    assert str(err.value).startswith(f"{folder / 'config.json'}: holds a wan2.1 VAE (is_residual=False), not wan2.2")
