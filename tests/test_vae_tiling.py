"""Spatially tiled coding: blending is exact for pointwise coders and a frame-sized tile is the untiled result.

How close smaller tiles come depends on the autoencoder's weights (a trained one is local, random ones are
not): docs/results.md gives the figures for the main job's trained autoencoder.
"""

from __future__ import annotations

import json
from pathlib import Path

import flax.linen as nn
import jax
import numpy as np
import pytest
from einops import repeat

from sorajax.models.pretrained import fill_params
from sorajax.models.vae_tiling import code_tiled, tile_starts
from sorajax.models.wan_vae import WanVAE, abstract_wan_variables, wan_variables
from sorajax.models.wan_vae_config import WanVAEConfig
from sorajax.models.wan_vae_keys import wan_vae_key_map

FIXTURE = Path(__file__).parent / "fixtures" / "wan_vae21_tiny.npz"


def upsample(x: np.ndarray) -> np.ndarray:
    """A pointwise 'decoder' (nearest x8, channels doubled): tiling must not change it at all."""
    return repeat(np.concatenate([x, 2 * x], -1), "b t h w c -> b t (h p) (w q) c", p=8, q=8)


def test_tile_starts_cover_the_frame_and_end_on_its_edge():
    assert tile_starts(10, 4, 1) == [0, 3, 6]
    assert tile_starts(9, 4, 2) == [0, 2, 4, 5]
    assert tile_starts(4, 8, 2) == [0]
    with pytest.raises(ValueError, match="overlap 4 must be >= 0 and smaller than the tile 4"):
        tile_starts(10, 4, 4)


@pytest.mark.parametrize("tile,overlap", [(3, 1), (4, 2), (5, 0), (16, 2)])
def test_blending_is_exact_for_a_pointwise_coder(tile, overlap):
    x = np.random.default_rng(0).normal(size=(2, 3, 7, 11, 4)).astype(np.float32)
    np.testing.assert_allclose(code_tiled(upsample, x, tile, overlap, 8), upsample(x), rtol=1e-6, atol=1e-6)


@pytest.fixture(scope="module")
def wan21():
    data = np.load(FIXTURE)
    config = WanVAEConfig.from_diffusers(json.loads(str(data["config"])))
    abstract = nn.meta.unbox(abstract_wan_variables(config)["params"])
    tensors = (("fixture", k[2:], data[k].astype(np.float32)) for k in data.files if k.startswith("w:"))
    params = fill_params(tensors, wan_vae_key_map(config, abstract), abstract, "tiny Wan VAE")
    variables, vae = wan_variables(config, params), WanVAE(config)
    decode = jax.jit(lambda z: vae.apply(variables, z, method="decode"))
    encode = jax.jit(lambda x: vae.apply(variables, x, method="encode")[0])
    return data, decode, encode


def test_wan_decode_and_encode_through_one_frame_sized_tile_are_the_untiled_result(wan21):
    data, decode, encode = wan21
    video = np.asarray(data["video"], np.float32)
    z = np.asarray(encode(video))
    whole = np.asarray(decode(z))
    np.testing.assert_allclose(z, data["mean"], atol=1e-4)  # the coder really is the fixture's
    np.testing.assert_array_equal(code_tiled(decode, z, 64, 2, 8), whole)
    np.testing.assert_array_equal(code_tiled(encode, video, 64, 16, 1 / 8), z)
    tiled = code_tiled(decode, z, 2, 1, 8)  # 2x2 latent tiles: the right shape, different values
    assert tiled.shape == whole.shape and np.abs(tiled - whole).max() > 0


def test_tiles_that_do_not_map_to_whole_pixels_are_refused():
    with pytest.raises(ValueError, match="must map to whole pixels at scale 0.125: use multiples of 8"):
        code_tiled(lambda x: x, np.zeros((1, 1, 32, 32, 3), np.float32), 12, 4, 1 / 8)
