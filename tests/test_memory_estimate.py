"""The sampling memory estimate against XLA's compiled memory_analysis(), and the one-line refusals.

Stated bounds: each part's estimate is never below XLA's figure (arguments + temporaries) by more than 15%,
and at most 3x above it, at every size tried here (benchmarks/memory_estimate.py gives the real sizes).
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import flax.linen as nn
import jax
import jax.numpy as jnp
import pytest

from sorajax.memory_estimate import (
    GIB,
    MemoryEstimate,
    SizeCeiling,
    check_fits,
    dit_activation_bytes,
    estimate_dit_training,
    estimate_vae_training,
    tree_bytes,
    vae_decode_bytes,
)
from sorajax.models.dit import DiT, DiTConfig, abstract_params, example_inputs
from sorajax.models.vae import CausalVAE, VAEConfig, abstract_variables
from sorajax.models.wan_vae import WanVAE, abstract_wan_variables
from sorajax.models.wan_vae_config import WanVAEConfig

FIXTURES = Path(__file__).parent / "fixtures"
BELOW, ABOVE = 0.85, 3.0


def xla_bytes(fn, *args) -> int:
    """Arguments + temporaries of ``fn`` compiled for abstract ``args`` (nothing allocated)."""
    analysis = jax.jit(fn).lower(*args).compile().memory_analysis()
    return analysis.argument_size_in_bytes + analysis.temp_size_in_bytes


def abstract(tree):
    return jax.tree_util.tree_map(lambda a: jax.ShapeDtypeStruct(a.shape, a.dtype), tree)


@pytest.mark.parametrize("width,heads,tokens", [(64, 2, 256), (64, 2, 1024), (128, 4, 2048)])
def test_dit_forward_estimate_brackets_xla(width, heads, tokens):
    config = DiTConfig(patch_dim=16, text_dim=32, width=width, depth=2, num_heads=heads, attention_impl="xla")
    params, dit = nn.meta.unbox(abstract_params(config)), DiT(config)
    inputs = abstract(example_inputs(config, batch=2, length=tokens, text_length=16))
    measured = xla_bytes(lambda p, *x: dit.apply({"params": p}, *x), params, *inputs)
    estimate = tree_bytes(params) + dit_activation_bytes(config, rows=2, tokens=tokens, text_tokens=16, linear=False)
    print("DiT", width, tokens, "estimate / XLA", estimate / measured)
    assert BELOW * measured <= estimate <= ABOVE * measured


def _sorajax_vae():
    config = VAEConfig.from_dict(dict(base_channels=16, channel_multipliers=(1, 2), num_res_blocks=1,
                                      spatial_downsample=(True, True), temporal_downsample=(True, True),
                                      latent_channels=4, norm_groups=4, mid_attention=False))
    return config, CausalVAE(config), nn.meta.unbox(abstract_variables(config))


def _wan21_vae():
    raw = json.loads(str(jnp.load(FIXTURES / "wan_vae21_tiny.npz")["config"]))
    config = WanVAEConfig.from_diffusers(raw)
    return config, WanVAE(config), nn.meta.unbox(abstract_wan_variables(config))


@pytest.mark.parametrize("make", [_sorajax_vae, _wan21_vae])
@pytest.mark.parametrize("latent_shape", [(2, 8, 8), (3, 16, 24)])
def test_vae_decode_estimate_brackets_xla(make, latent_shape):
    config, vae, variables = make()
    z = jax.ShapeDtypeStruct((1, *latent_shape, config.latent_channels), jnp.float32)
    measured = xla_bytes(lambda v, z: vae.apply(v, z, method="decode"), variables, z)
    estimate = vae_decode_bytes(config, tree_bytes(variables), (*latent_shape, config.latent_channels), None, None)
    print(type(vae).__name__, latent_shape, "estimate / XLA", estimate / measured)
    assert BELOW * measured <= estimate <= ABOVE * measured


def test_tiled_decode_estimate_is_one_tile_of_one_chunk():
    config = WanVAEConfig.preset("wan2.1")
    shape = (21, 90, 160, 16)  # 720p x 81 frames
    whole = vae_decode_bytes(config, 0, shape, None, None)
    tiled = vae_decode_bytes(config, 0, shape, 2, 32)
    assert tiled * (81 + 2) * 90 * 160 == whole * (8 + 2) * 32 * 32


def test_a_request_over_the_limit_is_refused_in_one_line():
    estimate = MemoryEstimate(dit_weights=3 * GIB, activations=GIB, text_encoder=GIB, vae_decode=2 * GIB)
    with pytest.raises(ValueError) as refused:
        check_fits(estimate, limit=4 * GIB)
    assert str(refused.value) == (
        "this request needs ~7.0 GiB (DiT weights 3.0, activations 1.0, VAE decode 2.0) but the device has 4.0 GiB: "
        "use fewer frames, a smaller size, tiling (--tile), bf16 weights, --long, or more devices")
    check_fits(estimate, limit=8 * GIB)


def test_absurd_sizes_are_refused_before_any_estimate():
    with pytest.raises(ValueError, match=r"^width 100000 is past the ceiling of 8192: ask for at most 8192"):
        SizeCeiling().check(frames=9, height=480, width=100000)
    with pytest.raises(ValueError, match=r"^frames 10001 is past the ceiling of 2049"):
        SizeCeiling().check(frames=10001, height=480, width=832)
    SizeCeiling().check(frames=81, height=720, width=1280)


def test_the_ceiling_is_read_from_one_environment_variable(monkeypatch):
    monkeypatch.setenv("SORAJAX_CEILING", "max_side=16384, max_frames=4097")
    ceiling = SizeCeiling.current()
    assert (ceiling.max_side, ceiling.max_frames, ceiling.max_count) == (16384, 4097, SizeCeiling().max_count)
    ceiling.check(frames=4097, height=480, width=16384)
    with pytest.raises(ValueError, match=r"^data.rows 2000 is past the ceiling of 1024: pack fewer rows per step "
                                         r"\(or raise it: SORAJAX_CEILING=max_count=N\)$"):
        ceiling.limit("data.rows", 2000, "max_count", "pack fewer rows per step")
    monkeypatch.setenv("SORAJAX_CEILING", "max_sides=3")
    with pytest.raises(ValueError, match=r"^SORAJAX_CEILING='max_sides=3': 'max_sides=3' is not name=positive "
                                         r"integer with a name of \['max_side', "):
        SizeCeiling.current()


def test_the_training_estimates_count_state_and_kept_activations():
    config = DiTConfig(width=32, depth=2, num_heads=2, mlp_ratio=4.0, patch_dim=16, text_dim=32,
                       attention_impl="xla")
    params = nn.meta.unbox(abstract_params(config))
    estimate = estimate_dit_training(config, params, rows=2, seq_len=64, text_len=8)
    block = 2 * 64 * 4 * (6 * 32 + 2 * 128) + 2 * 2 * 2 * 64 * (8 + 64) * 4
    assert estimate.state == 5 * tree_bytes(params) and estimate.activations == 2 * block
    assert estimate_dit_training(config, params, 2, 64, 8, trained=False).state == tree_bytes(params)  # LoRA base
    remat = estimate_dit_training(dataclasses.replace(config, remat_policy="full"), params, 2, 64, 8)
    assert remat.activations == 2 * 2 * 64 * 32 * 4 + block
    with pytest.raises(ValueError, match=r"^training with data.rows=2 x data.seq_len=64 needs ~0.0 GiB per device "
                                         r"\(state 0.0, activations 0.0\) but the device has 0.0 GiB: use fewer "
                                         r"data.rows"):
        check_fits(estimate, limit=1000)
    vae = VAEConfig(base_channels=8, channel_multipliers=(1, 2), num_res_blocks=1, spatial_downsample=(True, False),
                    temporal_downsample=(True, False), latent_channels=4, norm_groups=4, mid_attention=False)
    vae_estimate = estimate_vae_training(vae, abstract_variables(vae)["params"], batch=2, frames=9, height=16,
                                         width=16)
    kept = 2 * 3 * 3 * (8 * 256 * 9 + 16 * 64 * 5)  # encoder + decoder, 3 convs a level, 3 tensors each
    assert vae_estimate.activations == 2 * kept * 4 and vae_estimate.state == 4 * tree_bytes(
        abstract_variables(vae)["params"])
