"""Time chunks x space tiles in one codec (ChunkedCodec with ``tile``), for Wan 2.1 / 2.2 and sorajax's VAE.

What must hold whatever the weights: a tile that covers the frame is EXACTLY the untiled codec, and
chunking in time inside each tile changes nothing (tiled + chunked equals tiled whole clips to 5e-5).
How close smaller tiles come depends on how local the trained weights are; the tiny fixtures' random
weights are not local (their decoders attend over the whole frame), so for them the stated tolerance is
loose (mean |error| below 0.3 x the larger of 1 and the output's peak) and the figure must shrink as the tile grows.
"""

from __future__ import annotations

import functools
import json
from pathlib import Path

import flax.linen as nn
import jax
import numpy as np
import pytest

from sorajax.models.pretrained import fill_params
from sorajax.models.vae_chunked import ChunkedCodec
from sorajax.models.vae_tiling import code_tiled
from sorajax.models.wan_vae import WanVAE, abstract_wan_variables, wan_variables
from sorajax.models.wan_vae_config import WanVAEConfig
from sorajax.models.wan_vae_keys import wan_vae_key_map
from tests.tiny_pipeline import tiny_random_pipeline

FIXTURES = Path(__file__).parent / "fixtures"
LATENT_SIDE = 6  # latent pixels: tiles of 4 with overlap 2 start at 0 and 2


@functools.cache
def coder(name: str):
    """(vae, variables) of a tiny fixture, or of the tiny pipeline's sorajax VAE."""
    if name == "sorajax":
        pipeline = tiny_random_pipeline()
        return pipeline.vae, pipeline.vae_variables
    data = np.load(FIXTURES / f"{name}_tiny.npz")
    config = WanVAEConfig.from_diffusers(json.loads(str(data["config"])))
    abstract = nn.meta.unbox(abstract_wan_variables(config)["params"])
    tensors = (("fixture", k[2:], data[k].astype(np.float32)) for k in data.files if k.startswith("w:"))
    params = fill_params(tensors, wan_vae_key_map(config, abstract), abstract, "tiny Wan VAE")
    return WanVAE(config), wan_variables(config, params)


def smooth_latents(vae, frames: int = 3) -> np.ndarray:
    rng = np.random.default_rng(0)
    return rng.normal(size=(1, frames, LATENT_SIDE, LATENT_SIDE, vae.config.latent_channels)).astype(np.float32)


def smooth_video(vae) -> np.ndarray:
    side = LATENT_SIDE * vae.config.spatial_factor
    yy, xx = np.mgrid[0:side, 0:side] / side
    frames = [np.sin(3 * xx + 0.3 * t) * np.cos(2 * yy) for t in range(5)]
    return (0.8 * np.stack(frames)[None, ..., None].repeat(3, -1)).astype(np.float32)


@pytest.mark.parametrize("name", ["wan_vae21", "wan_vae22", "sorajax"])
def test_decode_tiles_x_chunks(name):
    vae, variables = coder(name)
    z = smooth_latents(vae)
    untiled = np.asarray(ChunkedCodec(vae, variables, chunk_latents=1).decode(z))
    covering = np.asarray(ChunkedCodec(vae, variables, chunk_latents=1, tile=LATENT_SIDE, tile_overlap=2).decode(z))
    np.testing.assert_array_equal(covering, untiled)

    tiled = np.asarray(ChunkedCodec(vae, variables, chunk_latents=1, tile=4, tile_overlap=2).decode(z))
    whole_clip = jax.jit(lambda latents: vae.apply(variables, latents, method="decode"))
    np.testing.assert_allclose(tiled, code_tiled(whole_clip, z, 4, 2, vae.config.spatial_factor), atol=5e-5)
    assert tiled.shape == untiled.shape
    error = np.abs(tiled - untiled).mean()
    print(name, "tile 4 / overlap 2 mean |error|", error)
    assert 0 < error < 0.3 * max(1.0, np.abs(untiled).max())


@pytest.mark.parametrize("name", ["wan_vae21", "sorajax"])
def test_encode_tiles_x_chunks(name):
    vae, variables = coder(name)
    video = smooth_video(vae)
    mean, logvar = ChunkedCodec(vae, variables).encode(video)
    covering = ChunkedCodec(vae, variables, tile=LATENT_SIDE + 2).encode(video)
    np.testing.assert_array_equal(np.asarray(covering[0]), np.asarray(mean))
    np.testing.assert_array_equal(np.asarray(covering[1]), np.asarray(logvar))
    errors = [np.abs(np.asarray(ChunkedCodec(vae, variables, tile=t, tile_overlap=2).encode(video)[0]) - mean).mean()
              for t in (4, 5)]
    print(name, "encode mean |error| tiles 4, 5:", errors)
    assert errors[1] < errors[0]  # a larger tile is closer to the untiled latents


def test_a_tile_that_cannot_cover_a_frame_is_refused():
    vae, variables = coder("sorajax")
    with pytest.raises(ValueError, match=r"^tile 4 with overlap 4 latent pixels cannot cover a frame: use a tile >= 1"):
        ChunkedCodec(vae, variables, tile=4, tile_overlap=4)
    assert ChunkedCodec(vae, variables, tile=8).tile_overlap == 2  # a quarter of the tile by default
