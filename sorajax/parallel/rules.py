"""Logical axis rules (logical name -> mesh axes) as plain data, one table per model family.

Models only name their dimensions ('batch', 'length', 'embed', ...); these tables say which mesh
axis each name is split over. A config may replace a table (``config.parallel.rules = [["embed",
"fsdp"], ...]``); anything a table leaves out is replicated.

Flax resolves a spec left to right and skips a mesh axis already used in it, so a DiT activation
("batch", "length", "embed") becomes P(('data', 'fsdp'), 'sequence', None) while a parameter
("embed", "mlp") becomes P('fsdp', 'tensor'): weights are FSDP-sharded on their embed dimension and
tensor-parallel on heads / MLP hidden. The autoencoder's convolution kernels split their output
channels over ``fsdp``; its activations ``[B, T, H, W, C]`` split clips over data/fsdp and height
over ``sequence`` (spatial parallelism for large frames).
"""

from __future__ import annotations

from typing import Any, Sequence

from sorajax.config_dataclasses import check_sections

Rules = tuple[tuple[str, Any], ...]

DIT_RULES: Rules = (
    ("batch", ("data", "fsdp")),
    ("length", "sequence"),
    ("embed", "fsdp"),
    ("heads", "tensor"),
    ("kv", None),
    ("mlp", "tensor"),
    ("modulation", None),
    ("text_length", None),
    ("text_embed", None),
    ("patch", None),
    ("layers", None),
    ("lora_rank", None),  # LoRA adapters' rank axis (sorajax.models.lora): small, kept whole
)

VAE_RULES: Rules = (
    ("batch", ("data", "fsdp")),
    ("frames", None),
    ("height", "sequence"),
    ("width", None),
    ("channels", None),
    ("kernel_t", None),
    ("kernel_h", None),
    ("kernel_w", None),
    ("conv_in", None),
    ("conv_out", "fsdp"),
)


def rules_from_config(config: Any, default: Rules) -> Rules:
    """The rule table of a run config's `parallel` section (`rules`: [[name, axis | [axes] | None], ...]),
    or `default` when the section or its table is absent."""
    section = config.get("parallel") or {}
    check_sections(section, {"rules"}, "parallel")
    rules: Sequence[Sequence[Any]] | None = section.get("rules")
    if rules is None:
        return default
    table = []
    for entry in rules:
        if len(entry) != 2 or not isinstance(entry[0], str):
            raise ValueError(f"a logical axis rule is [name, mesh_axis_or_axes_or_None], got {entry!r}")
        axes = entry[1]
        table.append((entry[0], tuple(axes) if isinstance(axes, (list, tuple)) else axes))
    return tuple(table)
