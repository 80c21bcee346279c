"""The sampling memory estimate against XLA's compiled memory_analysis() at real sizes, with nothing allocated.

For Wan 2.1's and 2.2's VAEs (full size) the decode of 81 frames at 480p and 720p, whole clip against one chunk of 2
latent frames of one 32 x 32 latent tile (the tiled codec's step, its causal cache included); for the
Wan2.1-T2V-1.3B DiT one guided forward (2 rows) at 480p x 81 frames with XLA's attention. Everything is
compiled for abstract shapes on this host's backend (CPU here), so the figures are XLA's plan, not a run.

    python benchmarks/memory_estimate.py [--skip_dit]
"""

from __future__ import annotations

import sys
import time

import flax.linen as nn
import jax
import jax.numpy as jnp

from sorajax.memory_estimate import GIB, dit_activation_bytes, tree_bytes, vae_decode_bytes
from sorajax.models.dit import DiT, DiTConfig, abstract_params, example_inputs
from sorajax.models.wan_vae import WanVAE, abstract_wan_variables
from sorajax.models.wan_vae_config import WanVAEConfig

SIZES = {"480p": (480, 832), "720p": (720, 1280)}
LATENT_FRAMES = 21  # 81 frames
TILE, CHUNK = 32, 2


def xla_gib(fn, *args) -> float:
    analysis = jax.jit(fn).lower(*args).compile().memory_analysis()
    return (analysis.argument_size_in_bytes + analysis.temp_size_in_bytes + analysis.output_size_in_bytes) / GIB


def vae_rows(version: str) -> None:
    config = WanVAEConfig.preset(version)
    vae, variables = WanVAE(config), nn.meta.unbox(abstract_wan_variables(config))
    weights = tree_bytes(variables)
    decode = lambda v, z: vae.apply(v, z, method="decode")
    step = lambda v, z, cache: vae.apply(v, z, cache, method="decode_chunk")
    side = config.spatial_factor
    for name, (height, width) in SIZES.items():
        start, h, w = time.time(), height // side, width // side
        shape = (LATENT_FRAMES, h, w, config.latent_channels)
        whole = xla_gib(decode, variables, jax.ShapeDtypeStruct((1, *shape), jnp.float32))
        tile_h, tile_w = min(TILE, h), min(TILE, w)
        first = jax.ShapeDtypeStruct((1, 1, tile_h, tile_w, config.latent_channels), jnp.float32)
        cache = jax.eval_shape(step, variables, first, None)[1]
        chunk = jax.ShapeDtypeStruct((1, CHUNK, tile_h, tile_w, config.latent_channels), jnp.float32)
        tiled = xla_gib(step, variables, chunk, cache)
        estimates = (vae_decode_bytes(config, weights, shape, None, None) / GIB,
                     vae_decode_bytes(config, weights, shape, CHUNK, TILE) / GIB)
        print(f"{version} VAE decode {name} x 81 frames: untiled XLA {whole:.1f} GiB, estimate {estimates[0]:.1f}; "
              f"tiled ({TILE} latent px, {CHUNK}-latent chunks) XLA {tiled:.2f} GiB, estimate {estimates[1]:.2f} "
              f"[{time.time() - start:.0f} s]", flush=True)


def dit_row() -> None:
    config = DiTConfig.preset("wan2.1-t2v-1.3b", text_dim=4096, attention_impl="xla", scan_layers=True)
    params, dit = nn.meta.unbox(abstract_params(config)), DiT(config)
    tokens, text = LATENT_FRAMES * 30 * 52, 512
    inputs = [jax.ShapeDtypeStruct(a.shape, a.dtype) for a in example_inputs(config, 2, tokens, text)]
    start = time.time()
    measured = xla_gib(lambda p, *x: dit.apply({"params": p}, *x), params, *inputs)
    estimate = (tree_bytes(params) + dit_activation_bytes(config, 2, tokens, text, linear=False)) / GIB
    linear = (tree_bytes(params) + dit_activation_bytes(config, 2, tokens, text, linear=True)) / GIB
    print(f"Wan2.1-T2V-1.3B guided forward 480p x 81 ({tokens} tokens): XLA {measured:.1f} GiB, estimate "
          f"{estimate:.1f} (with a fused attention kernel: {linear:.1f}) [{time.time() - start:.0f} s]", flush=True)


if __name__ == "__main__":
    vae_rows("wan2.1")
    vae_rows("wan2.2")
    if "--skip_dit" not in sys.argv:
        dit_row()
