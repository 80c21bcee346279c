"""Named DiT sizes: DiT's own S/B/L/XL, a CPU-sized one, and the open Wan models as sorajax DiTs.

The Wan presets switch the DiT to Wan's exact computation (``../shared/WAN_NOTES.md``): shared
modulation, QK RMS norm over the whole width, no text LayerNorm / caption pooling / frame-position
embedding, the table-form final layer, explicit MLP widths, RoPE split 44/42/42 of a 128-wide head
(weights 22:21:21 in feature pairs), UMT5-XXL text (4096 wide) and 1x2x2 patches of the VAE's latent
channels (16 for Wan2.1's VAE, 48 for Wan2.2's). Loading their checkpoints: ``sorajax.models.wan_dit_weights``.
"""

from __future__ import annotations

from typing import Any

_WAN: dict[str, Any] = dict(
    modulation="shared",
    qk_norm_axis="width",
    text_norm=False,
    caption_pool="none",
    frame_position=False,
    final_layer="table",
    rope_axis_weights=(22, 21, 21),
    text_dim=4096,
)

DIT_PRESETS: dict[str, dict[str, Any]] = {
    "tiny": dict(width=128, depth=4, num_heads=4),
    "S": dict(width=384, depth=12, num_heads=6),
    "B": dict(width=768, depth=12, num_heads=12),
    "L": dict(width=1024, depth=24, num_heads=16),
    "XL": dict(width=1152, depth=28, num_heads=16),
    "wan2.1-t2v-1.3b": dict(_WAN, width=1536, depth=30, num_heads=12, mlp_hidden_dim=8960, patch_dim=64),
    "wan2.1-t2v-14b": dict(_WAN, width=5120, depth=40, num_heads=40, mlp_hidden_dim=13824, patch_dim=64),
    "wan2.2-ti2v-5b": dict(_WAN, width=3072, depth=30, num_heads=24, mlp_hidden_dim=14336, patch_dim=192),
}
