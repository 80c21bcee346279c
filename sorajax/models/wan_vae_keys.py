"""diffusers ``AutoencoderKLWan`` checkpoint keys -> :class:`~sorajax.models.wan_vae.WanVAE` parameters.

The key map is derived from the parameter tree itself (every sorajax parameter names its diffusers
key), so the model and its map cannot drift apart; ``check_coverage`` against the full-size key
lists then proves the map one-to-one with the real checkpoints. Layouts:

* 2.1, flat: ``encoder.down_blocks.N`` counts residual blocks and resamples in order (a level of
  ``r`` blocks and its resample take ``r + 1`` indices); ``decoder.up_blocks.i.upsamplers.0``.
* 2.2, nested: ``encoder.down_blocks.i.resnets.j`` / ``.downsampler``; ``decoder.up_blocks.i.upsampler``.

Re-layouts (array methods only, so they also run traced on shapes): conv weights ``[out, in, t, h, w]``
-> ``[t, h, w, in, out]``, 2D ones ``[out, in, h, w]`` -> ``[1, h, w, in, out]``, 1x1(x1) convs ->
dense ``[in, out]``, norm ``gamma`` ``[C, 1, 1(, 1)]`` -> ``[C]``.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import flax.linen as nn
import numpy as np
from flax import traverse_util

from sorajax.models.pretrained import (
    CheckpointError,
    Target,
    checkpoint_files,
    fill_params,
    folder_config,
    read_tensors,
)
from sorajax.models.wan_vae import abstract_wan_variables
from sorajax.models.wan_vae_config import WanVAEConfig

FAMILIES = ("AutoencoderKLWan",)
_LEAF = {"kernel": "weight", "bias": "bias", "scale": "gamma"}
_CHILD = {"skip": "conv_shortcut", "qkv": "to_qkv", "out": "proj", "space_conv": "resample.1"}


def _conv3d(w: np.ndarray) -> np.ndarray:
    return w.transpose(2, 3, 4, 1, 0)


def _conv2d(w: np.ndarray) -> np.ndarray:
    return w.transpose(2, 3, 1, 0)[None]


def _dense(w: np.ndarray) -> np.ndarray:
    return w.reshape(w.shape[0], w.shape[1]).T


def _vector(w: np.ndarray) -> np.ndarray:
    return w.reshape(-1)


def _block_key(name: str, config: WanVAEConfig) -> str:
    """A sorajax block name inside the encoder/decoder -> its diffusers prefix."""
    if m := re.fullmatch(r"mid_res(\d)", name):
        return f"mid_block.resnets.{m[1]}"
    if name == "mid_attn":
        return "mid_block.attentions.0"
    stride = config.num_res_blocks + 1  # 2.1's flat index: a level's blocks, then its resample
    if m := re.fullmatch(r"down(\d+)_res(\d+)", name):
        i, j = int(m[1]), int(m[2])
        return f"down_blocks.{i}.resnets.{j}" if config.residual else f"down_blocks.{i * stride + j}"
    if m := re.fullmatch(r"down(\d+)_resample", name):
        i = int(m[1])
        return f"down_blocks.{i}.downsampler" if config.residual else f"down_blocks.{i * stride + stride - 1}"
    if m := re.fullmatch(r"up(\d+)_res(\d+)", name):
        return f"up_blocks.{m[1]}.resnets.{m[2]}"
    if m := re.fullmatch(r"up(\d+)_resample", name):
        return f"up_blocks.{m[1]}.upsampler" if config.residual else f"up_blocks.{m[1]}.upsamplers.0"
    return name  # conv_in, conv_out, norm_out


def diffusers_key(path: tuple[str, ...], config: WanVAEConfig) -> str:
    """The checkpoint key of a sorajax parameter path, e.g. ``('encoder', 'down1_res0', 'skip', 'kernel')``."""
    *modules, leaf = path
    parts = []
    for depth, name in enumerate(modules):
        if depth == 1 and modules[0] in ("encoder", "decoder"):
            parts.append(_block_key(name, config))
        else:
            parts.append(_CHILD.get(name, name))
    return ".".join([*parts, _LEAF[leaf]])


def _transform(path: tuple[str, ...], rank: int):
    if path[-1] in ("scale", "bias"):
        return _vector
    if rank == 2:
        return _dense
    return _conv2d if path[-2] == "space_conv" else _conv3d


def wan_vae_key_map(config: WanVAEConfig, abstract_params: Any | None = None) -> dict[str, Target]:
    """Every diffusers key of ``config``'s checkpoint -> the parameter it fills and its re-layout."""
    if abstract_params is None:
        abstract_params = abstract_wan_variables(config)["params"]
    return {
        diffusers_key(path, config): Target(path, _transform(path, len(leaf.shape)))
        for path, leaf in traverse_util.flatten_dict(nn.meta.unbox(abstract_params)).items()
    }


def load_wan_vae(folder: str | Path, version: str | None = None) -> tuple[WanVAEConfig, dict[str, Any]]:
    """``(config, params)`` from a diffusers ``AutoencoderKLWan`` folder (``config.json`` + safetensors).

    ``version`` (``wan2.1`` / ``wan2.2``), when given, must match the folder's config. Every problem
    is a one-line :class:`CheckpointError` naming the file (and the key): another model family, a
    shard the index lists but the folder lacks, an unknown key, a shape mismatch, a missing key.
    """
    config_path = Path(folder) / "config.json"
    raw = folder_config(folder, FAMILIES, "the Wan VAE")
    try:
        config = WanVAEConfig.from_diffusers(raw)
    except ValueError as err:
        raise CheckpointError(f"{config_path}: {err}") from None
    if version is not None and version != config.version:
        raise CheckpointError(f"{config_path}: holds a {config.version} VAE (is_residual={config.residual}), "
                              f"not {version}: load it as {config.version} or point at a {version} folder")
    abstract = abstract_wan_variables(config)["params"]
    key_map = wan_vae_key_map(config, abstract)
    params = fill_params(read_tensors(checkpoint_files(folder)), key_map, nn.meta.unbox(abstract),
                         f"the Wan VAE ({config.version})")
    return config, params
