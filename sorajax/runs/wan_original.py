"""Wan's original release layout (e.g. Wan-AI/Wan2.1-T2V-1.3B) as a converter source, read without PyTorch.

The layout is one folder:

    config.json                                  WanModel's own config (dim, num_heads, model_type, ...)
    diffusion_pytorch_model[-0000N-of-0000M].safetensors (+ .index.json)   the DiT, under Wan's key names
    Wan2.1_VAE.pth | Wan2.2_VAE.pth              the VAE's state dict (a PyTorch zip pickle), no config
    models_t5_umt5-xxl-enc-bf16.pth              Wan's T5 encoder's state dict (bfloat16), no config
    google/umt5-xxl/                             the tokenizer (tokenizer.json and / or spiece.model)

It becomes a :class:`~sorajax.runs.wan_sources.WanSource` like a diffusers folder: configs from
`config.json` and the tensor shapes (`sorajax.models.wan_original_keys`), tensors read in place and
renamed to the names the key maps read, so the same checks and writer convert it.
"""

from __future__ import annotations

import json
from pathlib import Path

from sorajax.models import pretrained
from sorajax.models.pretrained import CheckpointError
from sorajax.models.torch_pickle import TorchCheckpoint
from sorajax.models.wan_dit_weights import wan_dit_config
from sorajax.models.wan_original_keys import (
    WAN_DIT_RENAMES,
    WAN_T5_RENAMES,
    umt5_original_config,
    wan_dit_diffusers_config,
    wan_vae_original_config,
    wan_vae_original_version,
    wan_vae_renames,
)
from sorajax.models.wan_vae_config import WanVAEConfig
from sorajax.runs.wan_sources import ModelTensors, WanSource, check_channels, check_umt5_config, find_tokenizer

DIT_FAMILIES = ("WanModel",)
VAE_FILES = {"wan2.1": "Wan2.1_VAE.pth", "wan2.2": "Wan2.2_VAE.pth"}
T5_FILE = "models_t5_umt5-xxl-enc-bf16.pth"
TOKENIZER = Path("google") / "umt5-xxl"


def is_original_layout(folder: Path) -> bool:
    """A folder whose config.json is Wan's own (its `dim` / `num_heads`), not diffusers' pipeline layout."""
    path = folder / "config.json"
    if not path.is_file() or (folder / "transformer").is_dir():
        return False
    config = json.loads(path.read_text())
    return "dim" in config and "num_heads" in config


def _vae_file(root: Path) -> tuple[Path, str]:
    """The folder's one VAE file and the version its name says."""
    found = {version: root / name for version, name in VAE_FILES.items() if (root / name).is_file()}
    if not found:
        raise CheckpointError(f"{root / VAE_FILES['wan2.1']}: missing (nor {VAE_FILES['wan2.2']}): Wan's original layout "
                              "keeps the VAE there; download it from the model's repository")
    if len(found) > 1:
        raise CheckpointError(f"{root}: holds both {' and '.join(VAE_FILES.values())}: which VAE the model uses is "
                              "ambiguous; keep the one of the model's repository (Wan2.1: 2.1, Wan2.2-TI2V-5B: 2.2)")
    [(version, path)] = found.items()
    return path, version


def _vae(root: Path) -> tuple[Path, WanVAEConfig]:
    """The VAE file, checked against its name, and the config its shapes imply."""
    path, named = _vae_file(root)
    shapes = TorchCheckpoint(path).shapes()
    version = wan_vae_original_version(shapes)
    if version != named:
        raise CheckpointError(f"{path}: holds a {version} VAE (by its key layout), not the {named} its name says: the "
                              "file is renamed or mixed up; download the model's own VAE file")
    try:
        return path, wan_vae_original_config(shapes, version)
    except KeyError as error:
        raise CheckpointError(f"{path}: no {error} tensor: not a complete Wan {version} VAE; download it again") \
            from None
    except ValueError as error:
        raise CheckpointError(f"{path}: {error}") from None


def original_source(root: Path) -> WanSource:
    """Wan's original release folder `root`, read and configured; every problem one CheckpointError line."""
    config_path = root / "config.json"
    raw = pretrained.folder_config(root, DIT_FAMILIES, "Wan's original transformer (WanModel)")
    dit_files = tuple(pretrained.checkpoint_files(root))
    try:
        dit = wan_dit_config(wan_dit_diffusers_config(raw, pretrained.header_shapes(dit_files)[0]))
    except (KeyError, ValueError) as error:
        raise CheckpointError(f"{config_path}: {error}: use the config.json released with the weights") from None
    vae_path, vae = _vae(root)
    check_channels(dit, vae, config_path)
    t5_path = root / T5_FILE
    if not t5_path.is_file():
        raise CheckpointError(f"{t5_path}: missing: Wan's original layout keeps the UMT5 text encoder there; "
                              "download it from the model's repository")
    try:
        umt5 = umt5_original_config(TorchCheckpoint(t5_path).shapes())
    except KeyError as error:
        raise CheckpointError(f"{t5_path}: no {error} tensor: not Wan's UMT5 encoder; download it again") from None
    check_umt5_config(umt5, t5_path)
    tokenizer = find_tokenizer((root / TOKENIZER,), f"download the {TOKENIZER.as_posix()}/ folder of the model's "
                                                    "repository")
    return WanSource(
        root, "original", dit, vae, umt5, tokenizer,
        ModelTensors(dit_files, f"the Wan transformer in {root}", WAN_DIT_RENAMES),
        ModelTensors((vae_path,), f"the Wan VAE ({vae.version})", wan_vae_renames(vae)),
        ModelTensors((t5_path,), "the UMT5 text encoder", WAN_T5_RENAMES))
