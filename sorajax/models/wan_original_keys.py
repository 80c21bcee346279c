"""Wan's original release names -> the names sorajax's key maps read, and the configs the original files imply.

Wan's own release (e.g. Wan-AI/Wan2.1-T2V-1.3B) stores the same three networks as its diffusers
repositories under the module names of Wan's code (`wan/modules/model.py`, `vae.py` / `vae2_2.py`,
`t5.py`). Rather than a second set of key maps, every original key is renamed to the key the existing
maps already read (diffusers' names for the DiT and VAE, transformers' UMT5EncoderModel names for the
text encoder), by the rule tables below. A rule matches a whole key (`re.fullmatch`) and renames
one-to-one, so the converter's coverage check (unknown key, missing key, shape) still sees every
problem of a wrong or partial original folder; a key no rule matches is refused by name.

The original files carry less configuration than diffusers' folders: the VAE and the text encoder
none at all (Wan's code hard-codes it), the DiT's `config.json` leaves out the fields WanModel does not
register (`patch_size`, `text_dim`, ...). Those are read from the tensor shapes here.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Callable, Mapping
from typing import Any

from sorajax.models.wan_vae_config import (
    WAN21_LATENTS_MEAN,
    WAN21_LATENTS_STD,
    WAN22_LATENTS_MEAN,
    WAN22_LATENTS_STD,
    WanVAEConfig,
)

Shapes = Mapping[str, tuple[int, ...]]
_PARAM = r"(weight|bias)"


@dataclasses.dataclass(frozen=True)
class Renames:
    """Ordered rules (pattern, replacement): a key takes the first rule whose pattern matches all of it.

    A replacement is a `re` template (`\\1` ...) or a function of the match (None: no such key); a key
    no rule matches renames to None.
    """

    rules: tuple[tuple[str, str | Callable[[re.Match], str | None]], ...]

    def __call__(self, key: str) -> str | None:
        for pattern, replacement in self.rules:
            if match := re.fullmatch(pattern, key):
                return match.expand(replacement) if isinstance(replacement, str) else replacement(match)
        return None


def _modules(prefix: str, target: str, table: Mapping[str, str], leaf: str = _PARAM) -> tuple[tuple[str, str], ...]:
    """Rules renaming `prefix + module + leaf` to `target + table[module] + leaf` (groups of prefix kept)."""
    groups = re.compile(prefix).groups
    return tuple((prefix + re.escape(old) + r"\." + leaf, target + new + "." + f"\\{groups + 1}")
                 for old, new in table.items())


# ---- DiT: wan/modules/model.py (WanModel) -> diffusers' WanTransformer3DModel ----------------------------
_DIT_TOP = {"patch_embedding": "patch_embedding", "text_embedding.0": "condition_embedder.text_embedder.linear_1",
            "text_embedding.2": "condition_embedder.text_embedder.linear_2",
            "time_embedding.0": "condition_embedder.time_embedder.linear_1",
            "time_embedding.2": "condition_embedder.time_embedder.linear_2",
            "time_projection.1": "condition_embedder.time_proj", "head.head": "proj_out"}
_DIT_BLOCK = {"self_attn.q": "attn1.to_q", "self_attn.k": "attn1.to_k", "self_attn.v": "attn1.to_v",
              "self_attn.o": "attn1.to_out.0", "self_attn.norm_q": "attn1.norm_q", "self_attn.norm_k": "attn1.norm_k",
              "cross_attn.q": "attn2.to_q", "cross_attn.k": "attn2.to_k", "cross_attn.v": "attn2.to_v",
              "cross_attn.o": "attn2.to_out.0", "cross_attn.norm_q": "attn2.norm_q", "cross_attn.norm_k": "attn2.norm_k",
              "norm3": "norm2",  # the affine norm before cross-attention (Wan's norm1/norm2 have no weights)
              "ffn.0": "ffn.net.0.proj", "ffn.2": "ffn.net.2"}
WAN_DIT_RENAMES = Renames((
    *_modules("", "", _DIT_TOP),
    (r"head\.modulation", "scale_shift_table"),
    (r"blocks\.(\d+)\.modulation", r"blocks.\1.scale_shift_table"),
    *_modules(r"blocks\.(\d+)\.", r"blocks.\1.", _DIT_BLOCK),
))


def wan_dit_diffusers_config(original: Mapping[str, Any], shapes: Shapes) -> dict[str, Any]:
    """A WanModel `config.json` (+ the checkpoint's shapes) as the diffusers config `wan_dit_config` reads.

    Raises ValueError for what sorajax does not run (image-conditioned variants, windowed attention).
    """
    model_type = original.get("model_type", "t2v")
    if model_type not in ("t2v", "ti2v"):
        raise ValueError(f"model_type {model_type!r} is an image- or audio-conditioned Wan variant: sorajax converts "
                         "the T2V and TI2V models (model_type 't2v' / 'ti2v')")
    for name, wanted in (("window_size", [-1, -1]), ("text_len", 512), ("eps", 1e-6)):
        value = original.get(name, wanted)
        if (list(value) if isinstance(value, (list, tuple)) else value) != wanted:
            raise ValueError(f"{name} {value!r} is not Wan's released {wanted!r}, which sorajax expects")
    dim, heads = int(original["dim"]), int(original["num_heads"])
    if dim % heads:
        raise ValueError(f"dim {dim} is not a multiple of num_heads {heads}: the config.json is not a Wan model's")
    # Fields WanModel leaves out of its config.json: from the shapes, else Wan's defaults.
    text_dim = original.get("text_dim") or shapes.get("text_embedding.0.weight", (dim, 4096))[1]
    patch = original.get("patch_size") or shapes.get("patch_embedding.weight", (0, 0, 1, 2, 2))[2:]
    return {
        "_class_name": "WanTransformer3DModel", "num_attention_heads": heads, "attention_head_dim": dim // heads,
        "in_channels": int(original["in_dim"]), "out_channels": int(original["out_dim"]), "text_dim": int(text_dim),
        "freq_dim": int(original.get("freq_dim", 256)), "ffn_dim": int(original["ffn_dim"]),
        "num_layers": int(original["num_layers"]), "patch_size": [int(p) for p in patch],
        "cross_attn_norm": bool(original.get("cross_attn_norm", True)),
        "qk_norm": "rms_norm_across_heads" if original.get("qk_norm", True) else None,
        "image_dim": None, "added_kv_proj_dim": None,
    }


# ---- VAE: wan/modules/vae.py (2.1) and Wan2.2's vae2_2.py -> diffusers' AutoencoderKLWan ------------------
_VAE_WHOLE = Renames((
    (r"conv1\." + _PARAM, r"quant_conv.\1"), (r"conv2\." + _PARAM, r"post_quant_conv.\1"),
    (r"(encoder|decoder)\.conv1\." + _PARAM, r"\1.conv_in.\2"),
    (r"(encoder|decoder)\.head\.0\.gamma", r"\1.norm_out.gamma"),
    (r"(encoder|decoder)\.head\.2\." + _PARAM, r"\1.conv_out.\2"),
))
# Inside a residual block, a resample or an attention block. No name is a dotted suffix of another,
# so a key splits into (block, inner) one way only.
_VAE_INNER = {
    "residual.0.gamma": "norm1.gamma", "residual.2.weight": "conv1.weight", "residual.2.bias": "conv1.bias",
    "residual.3.gamma": "norm2.gamma", "residual.6.weight": "conv2.weight", "residual.6.bias": "conv2.bias",
    "shortcut.weight": "conv_shortcut.weight", "shortcut.bias": "conv_shortcut.bias",
    "resample.1.weight": "resample.1.weight", "resample.1.bias": "resample.1.bias",
    "time_conv.weight": "time_conv.weight", "time_conv.bias": "time_conv.bias",
    "norm.gamma": "norm.gamma", "to_qkv.weight": "to_qkv.weight", "to_qkv.bias": "to_qkv.bias",
    "proj.weight": "proj.weight", "proj.bias": "proj.bias",
}


def _level_block(side: str, level: int, index: int, blocks: int) -> str | None:
    """Diffusers' name of a 2.2 level's `index`-th block: a resnet, or the resampler after `blocks` resnets."""
    where = "down_blocks" if side == "encoder" else "up_blocks"
    if index < blocks:
        return f"{side}.{where}.{level}.resnets.{index}"
    return f"{side}.{where}.{level}.{'downsampler' if side == 'encoder' else 'upsampler'}" if index == blocks else None


def _vae_blocks(config: WanVAEConfig) -> Renames:
    """Block prefixes: Wan's (2.1 flat `downsamples.N`, 2.2 nested `downsamples.i.downsamples.j`) -> diffusers'."""
    r = config.num_res_blocks
    middle = ((r"(encoder|decoder)\.middle\.0", r"\1.mid_block.resnets.0"),
              (r"(encoder|decoder)\.middle\.1", r"\1.mid_block.attentions.0"),
              (r"(encoder|decoder)\.middle\.2", r"\1.mid_block.resnets.1"))
    if config.residual:  # 2.2: levels of r (encoder) / r + 1 (decoder) blocks, then the resampler
        levels = ((r"encoder\.downsamples\.(\d+)\.downsamples\.(\d+)",
                   lambda m: _level_block("encoder", int(m[1]), int(m[2]), r)),
                  (r"decoder\.upsamples\.(\d+)\.upsamples\.(\d+)",
                   lambda m: _level_block("decoder", int(m[1]), int(m[2]), r + 1)))
    else:  # 2.1: diffusers keeps the encoder's flat index; the decoder's r + 1 blocks and upsampler per level
        def decoder(m: re.Match) -> str:
            level, index = divmod(int(m[1]), r + 2)
            return (f"decoder.up_blocks.{level}.upsamplers.0" if index == r + 1
                    else f"decoder.up_blocks.{level}.resnets.{index}")
        levels = ((r"encoder\.downsamples\.(\d+)", r"encoder.down_blocks.\1"),
                  (r"decoder\.upsamples\.(\d+)", decoder))
    return Renames((*middle, *levels))


def wan_vae_renames(config: WanVAEConfig) -> Callable[[str], str | None]:
    """Original VAE key -> diffusers key for `config`'s layout (None: no such key in Wan's VAE)."""
    blocks = _vae_blocks(config)

    def rename(key: str) -> str | None:
        if (whole := _VAE_WHOLE(key)) is not None:
            return whole
        for inner, target in _VAE_INNER.items():
            if key.endswith("." + inner) and (block := blocks(key[: -len(inner) - 1])) is not None:
                return f"{block}.{target}"
        return None

    return rename


def _count(shapes: Shapes, pattern: str) -> int:
    """How many distinct values the first group of `pattern` takes over the keys (e.g. blocks)."""
    return len({m[1] for key in shapes if (m := re.match(pattern, key))})


def wan_vae_original_version(shapes: Shapes) -> str:
    """`wan2.2` for Wan2.2's nested level layout (`encoder.downsamples.i.downsamples.j`), else `wan2.1`."""
    return "wan2.2" if _count(shapes, r"encoder\.downsamples\.\d+\.downsamples\.(\d+)\.") else "wan2.1"


def wan_vae_original_config(shapes: Shapes, version: str) -> WanVAEConfig:
    """The VAE config of a Wan `.pth` state dict, read from its shapes (the file holds no config).

    Raises KeyError for a tensor the inference needs and ValueError for sizes no WanVAEConfig has;
    the latent statistics are Wan's published ones, so only 16 (2.1) and 48 (2.2) latent channels pass.
    """
    residual = version == "wan2.2"
    base, pixels = shapes["encoder.conv1.weight"][:2]
    latent = shapes["conv2.weight"][0]
    if residual:
        levels = _count(shapes, r"encoder\.downsamples\.(\d+)\.")
        blocks = _count(shapes, r"encoder\.downsamples\.0\.downsamples\.(\d+)\.residual\.")
        last = [f"encoder.downsamples.{i}.downsamples.{blocks - 1}" for i in range(levels)]
        resamples = [f"encoder.downsamples.{i}.downsamples.{blocks}" for i in range(levels - 1)]
    else:
        resample_at = sorted(int(m[1]) for key in shapes if (m := re.fullmatch(
            r"encoder\.downsamples\.(\d+)\.resample\.1\.weight", key)))
        blocks = resample_at[0] if resample_at else _count(shapes, r"encoder\.downsamples\.(\d+)\.residual\.")
        levels = len(resample_at) + 1
        last = [f"encoder.downsamples.{i * (blocks + 1) + blocks - 1}" for i in range(levels)]
        resamples = [f"encoder.downsamples.{i * (blocks + 1) + blocks}" for i in range(levels - 1)]
    multipliers = tuple(shapes[f"{block}.residual.6.weight"][0] // base for block in last)
    stats = {("wan2.1", 16): (WAN21_LATENTS_MEAN, WAN21_LATENTS_STD),
             ("wan2.2", 48): (WAN22_LATENTS_MEAN, WAN22_LATENTS_STD)}.get((version, latent))
    if stats is None:
        raise ValueError(f"a {version} VAE with {latent} latent channels has no published latent statistics "
                         "(Wan2.1's VAE has 16, Wan2.2's 48): convert a released Wan VAE")
    patch = 2 if residual else 1
    return WanVAEConfig(
        base_channels=base, decoder_base_channels=shapes["decoder.conv1.weight"][0] // multipliers[-1] if residual else 0,
        channel_multipliers=multipliers, num_res_blocks=blocks,
        temporal_downsample=tuple(f"{block}.time_conv.weight" in shapes for block in resamples),
        latent_channels=latent, residual=residual, patch_size=patch, image_channels=pixels // (patch * patch),
        latents_mean=stats[0], latents_std=stats[1])


# ---- UMT5: wan/modules/t5.py (T5Encoder, umt5-xxl) -> transformers' UMT5EncoderModel ----------------------
_T5_BLOCK = {"norm1": "layer.0.layer_norm", "attn.q": "layer.0.SelfAttention.q", "attn.k": "layer.0.SelfAttention.k",
             "attn.v": "layer.0.SelfAttention.v", "attn.o": "layer.0.SelfAttention.o",
             "pos_embedding.embedding": "layer.0.SelfAttention.relative_attention_bias",
             "norm2": "layer.1.layer_norm", "ffn.gate.0": "layer.1.DenseReluDense.wi_0",  # the GELU branch
             "ffn.fc1": "layer.1.DenseReluDense.wi_1", "ffn.fc2": "layer.1.DenseReluDense.wo"}
WAN_T5_RENAMES = Renames((
    (r"token_embedding\.weight", "shared.weight"),
    (r"norm\.weight", "encoder.final_layer_norm.weight"),
    *_modules(r"blocks\.(\d+)\.", r"encoder.block.\1.", _T5_BLOCK, "(weight)"),
))


def umt5_original_config(shapes: Shapes) -> dict[str, Any]:
    """transformers' `config.json` of Wan's T5 encoder state dict, from its shapes (KeyError if one is absent).

    What the shapes do not show is Wan's fixed choice for umt5-xxl: relative positions saturate at
    128, eps 1e-6, gated GELU(tanh), </s> = 1 and <pad> = 0.
    """
    vocab, width = shapes["token_embedding.weight"]
    buckets, heads = shapes["blocks.0.pos_embedding.embedding.weight"]
    layers = _count(shapes, r"blocks\.(\d+)\.")
    return {"architectures": ["UMT5EncoderModel"], "model_type": "umt5", "vocab_size": vocab, "d_model": width,
            "d_kv": shapes["blocks.0.attn.q.weight"][0] // heads, "num_heads": heads,
            "d_ff": shapes["blocks.0.ffn.fc1.weight"][0], "num_layers": layers, "num_decoder_layers": layers,
            "relative_attention_num_buckets": buckets, "relative_attention_max_distance": 128,
            "layer_norm_epsilon": 1e-6, "feed_forward_proj": "gated-gelu", "dense_act_fn": "gelu_new",
            "is_gated_act": True, "is_encoder_decoder": True, "tie_word_embeddings": False,
            "pad_token_id": 0, "eos_token_id": 1, "decoder_start_token_id": 0, "tokenizer_class": "T5Tokenizer"}
