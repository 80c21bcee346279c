"""Loading a Wan transformer checkpoint into sorajax's DiT: its config and which parameter each key fills.

Wan's transformer (diffusers' ``WanTransformer3DModel`` layout) becomes a sorajax DiT built with a
Wan preset (``dit_presets``); nothing else about the model changes. Layout differences:
- torch ``Linear`` weights are ``[out, in]``; sorajax kernels are ``[in, out]``, with heads split out
  (``[embed, heads, kv]`` for q/k/v, ``[heads, kv, embed]`` for the output projection);
- the patch embedding is a Conv3d with kernel = stride = patch, weight ``[D, C, pt, ph, pw]``: a linear
  map of the patch, whose features sorajax orders ``(pt ph pw c)`` (``sorajax.patches``);
- QK norms over the whole width hold ``[heads * kv]``, sorajax ``[heads, kv]``;
- modulation tables ``[1, 6, D]`` / ``[1, 2, D]`` lose their leading 1.
Image-conditioned Wan2.1 I2V models (CLIP image tokens, ``attn2.add_k_proj``) are not covered:
their keys are refused as unknown.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import jax
import numpy as np
from einops import rearrange

from sorajax.models.dit import DiTConfig, abstract_params
from sorajax.models.pretrained import (
    CheckpointError,
    KeyMap,
    Target,
    checkpoint_files,
    fill_params,
    folder_config,
    read_tensors,
)

WAN_DIT_FAMILIES = ("WanTransformer3DModel",)


def _linear(path: tuple[str, ...]) -> dict[str, Target]:
    return {"weight": Target((*path, "kernel"), lambda w: w.T), "bias": Target((*path, "bias"))}


def _heads_in(path: tuple[str, ...], heads: int) -> dict[str, Target]:
    """q/k/v: torch [heads*kv, D] -> [D, heads, kv]; bias [heads*kv] -> [heads, kv]."""
    return {
        "weight": Target((*path, "kernel"), lambda w: rearrange(w, "(n k) d -> d n k", n=heads)),
        "bias": Target((*path, "bias"), lambda b: rearrange(b, "(n k) -> n k", n=heads)),
    }


def _attention(prefix: str, path: tuple[str, ...], heads: int) -> dict[str, Target]:
    keys: dict[str, Target] = {}
    for torch_name, name in (("to_q", "query"), ("to_k", "key"), ("to_v", "value")):
        keys.update({f"{prefix}.{torch_name}.{k}": t for k, t in _heads_in((*path, name), heads).items()})
    keys[f"{prefix}.to_out.0.weight"] = Target((*path, "out", "kernel"),
                                               lambda w: rearrange(w, "d (n k) -> n k d", n=heads))
    keys[f"{prefix}.to_out.0.bias"] = Target((*path, "out", "bias"))
    for torch_name, name in (("norm_q", "query_norm"), ("norm_k", "key_norm")):
        keys[f"{prefix}.{torch_name}.weight"] = Target((*path, name, "scale"),
                                                       lambda w: rearrange(w, "(n k) -> n k", n=heads))
    return keys


def _with_prefix(prefix: str, targets: dict[str, Target]) -> dict[str, Target]:
    return {f"{prefix}.{k}": t for k, t in targets.items()}


def wan_dit_key_map(config: DiTConfig) -> KeyMap:
    """Every diffusers key of a Wan transformer of ``config``'s size, mapped to its sorajax parameter.

    ``config`` must be a Wan-form DiT (shared modulation, width QK norm, table head, no text norm,
    caption pooling or frame-position embedding) with unscanned layers.
    """
    wan_form = dict(modulation="shared", qk_norm_axis="width", final_layer="table", text_norm=False,
                    caption_pool="none", frame_position=False, scan_layers=False, qk_norm=True)
    wrong = {k: getattr(config, k) for k, v in wan_form.items() if getattr(config, k) != v}
    if wrong:
        raise ValueError(f"a Wan checkpoint needs a Wan-form DiT (a 'wan...' preset); this config has {wrong}")
    heads = config.num_heads
    keys: dict[str, Target] = {
        "patch_embedding.weight": Target(("patch_embed", "kernel"),
                                         lambda w: rearrange(w, "d c pt ph pw -> (pt ph pw c) d")),
        "patch_embedding.bias": Target(("patch_embed", "bias")),
        "scale_shift_table": Target(("final", "modulation_table"), lambda w: w[0]),
        "condition_embedder.time_proj.weight": Target(
            ("modulation", "proj", "kernel"), lambda w: rearrange(w, "(m o) d -> d m o", m=6)),
        "condition_embedder.time_proj.bias": Target(("modulation", "proj", "bias"),
                                                    lambda b: rearrange(b, "(m o) -> m o", m=6)),
    }
    keys.update(_with_prefix("proj_out", _linear(("final", "linear"))))
    keys.update(_with_prefix("condition_embedder.time_embedder.linear_1", _linear(("t_embed", "fc1"))))
    keys.update(_with_prefix("condition_embedder.time_embedder.linear_2", _linear(("t_embed", "fc2"))))
    keys.update(_with_prefix("condition_embedder.text_embedder.linear_1", _linear(("text_proj", "fc1"))))
    keys.update(_with_prefix("condition_embedder.text_embedder.linear_2", _linear(("text_proj", "fc2"))))
    for i in range(config.depth):
        block, prefix = f"block_{i}", f"blocks.{i}"
        keys[f"{prefix}.scale_shift_table"] = Target((block, "modulation_table"), lambda w: w[0])
        keys.update(_attention(f"{prefix}.attn1", (block, "self_attn"), heads))
        keys.update(_attention(f"{prefix}.attn2", (block, "cross_attn"), heads))
        keys[f"{prefix}.norm2.weight"] = Target((block, "norm_cross", "scale"))
        keys[f"{prefix}.norm2.bias"] = Target((block, "norm_cross", "bias"))
        keys.update(_with_prefix(f"{prefix}.ffn.net.0.proj", _linear((block, "mlp", "fc1"))))
        keys.update(_with_prefix(f"{prefix}.ffn.net.2", _linear((block, "mlp", "fc2"))))
    return keys


def wan_rope_weights(head_dim: int) -> tuple[int, int, int]:
    """Wan's split of a head into (t, h, w) rotation pairs, as ``rope_axis_weights``: d - 4(d//6), 2(d//6), 2(d//6)."""
    spatial = 2 * (head_dim // 6)
    return ((head_dim - 2 * spatial) // 2, spatial // 2, spatial // 2)


def wan_dit_config(folder_config: dict, **overrides) -> DiTConfig:
    """The sorajax DiTConfig of a diffusers ``WanTransformer3DModel`` config.json (any size)."""
    heads, head_dim = int(folder_config["num_attention_heads"]), int(folder_config["attention_head_dim"])
    patch = tuple(folder_config.get("patch_size", (1, 2, 2)))
    in_channels, out_channels = int(folder_config["in_channels"]), int(folder_config["out_channels"])
    if in_channels != out_channels:
        raise ValueError(f"in_channels {in_channels} != out_channels {out_channels}: image-conditioned Wan "
                         "variants with extra input channels are not supported; use a T2V or TI2V model")
    if folder_config.get("qk_norm", "rms_norm_across_heads") != "rms_norm_across_heads" or not folder_config.get(
            "cross_attn_norm", True):
        raise ValueError(f"qk_norm {folder_config.get('qk_norm')!r} / cross_attn_norm "
                         f"{folder_config.get('cross_attn_norm')!r} are not Wan's released settings, which sorajax expects")
    if int(folder_config.get("freq_dim", 256)) != 256:
        raise ValueError(f"freq_dim {folder_config['freq_dim']} is not 256, the only time-feature size sorajax has")
    if folder_config.get("image_dim") or folder_config.get("added_kv_proj_dim"):
        raise ValueError("this Wan transformer takes CLIP image tokens (I2V); sorajax supports T2V and TI2V models")
    fields = dict(
        modulation="shared", qk_norm_axis="width", text_norm=False, caption_pool="none", frame_position=False,
        final_layer="table", width=heads * head_dim, num_heads=heads, depth=int(folder_config["num_layers"]),
        mlp_hidden_dim=int(folder_config["ffn_dim"]), text_dim=int(folder_config["text_dim"]),
        patch_dim=in_channels * patch[0] * patch[1] * patch[2], rope_axis_weights=wan_rope_weights(head_dim),
    )
    fields.update(overrides)
    return DiTConfig(**fields)


def stack_blocks(params: dict[str, Any], depth: int) -> dict[str, Any]:
    """Per-block trees ``block_0 .. block_{depth-1}`` -> the ``scan_layers`` layout ``blocks/block`` [layers, ...]."""
    flat = dict(params)
    blocks = [flat.pop(f"block_{i}") for i in range(depth)]
    flat["blocks"] = {"block": jax.tree.map(lambda *layers: np.stack(layers), *blocks)}
    return flat


def load_wan_dit(folder: str | Path, dtype: Any = np.float32, scan_layers: bool = False) -> tuple[DiTConfig, dict[str, Any]]:
    """(config, parameter tree) of a diffusers-format Wan transformer folder (``transformer/``).

    Every key must map to a parameter of the right shape and every parameter be filled
    (``sorajax.models.pretrained``); errors are one line naming the file and the key. ``scan_layers``
    returns the config and tree of the scanned model (one compiled block: fast compiles at 30-40 layers).
    """
    raw = folder_config(folder, WAN_DIT_FAMILIES, "a Wan transformer")
    try:
        config = wan_dit_config(raw)
    except ValueError as error:
        raise CheckpointError(f"{Path(folder) / 'config.json'}: {error}") from None
    params = fill_params(read_tensors(checkpoint_files(folder)), wan_dit_key_map(config), abstract_params(config),
                         f"the Wan transformer in {folder}", dtype)
    if scan_layers:
        return dataclasses.replace(config, scan_layers=True), stack_blocks(params, config.depth)
    return config, params
