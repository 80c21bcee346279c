"""Wan's original release layout (e.g. Wan-AI/Wan2.1-T2V-1.3B), recognised so `sorajax.convert` can say what it needs.

The original layout is one folder with the transformer's `config.json` (`dim`, `num_heads`, ...) and
`diffusion_pytorch_model*.safetensors` under Wan's own key names, the VAE as `Wan2.1_VAE.pth` /
`Wan2.2_VAE.pth` and UMT5 as `models_t5_umt5-xxl-enc-bf16.pth` (PyTorch pickles).
"""

from __future__ import annotations

import json
from pathlib import Path

from sorajax.models.pretrained import CheckpointError


def is_original_layout(folder: Path) -> bool:
    """A folder whose config.json is Wan's own (its `dim` / `num_heads`), not diffusers' pipeline layout."""
    path = folder / "config.json"
    if not path.is_file() or (folder / "transformer").is_dir():
        return False
    config = json.loads(path.read_text())
    return "dim" in config and "num_heads" in config


def original_as_diffusers(folder: Path, staged: Path) -> Path:
    raise CheckpointError(f"{folder}: Wan's original release layout is not converted yet: download the -Diffusers "
                          "repository of the same model (e.g. Wan-AI/Wan2.1-T2V-1.3B-Diffusers) and convert that")
