"""Where a Wan checkpoint's tensors come from: one interface over diffusers' folders and Wan's own release.

Why: the converter's checks (`pretrained.check_coverage` from shapes, before anything is written) and
its streaming writer (`pretrained.stream_params`) run on `(file, key, tensor)` entries named as
sorajax's key maps expect. A diffusers folder holds them as they are; Wan's original layout
(`sorajax.runs.wan_original`) holds the same tensors under Wan's module names, partly in `.pth`
pickles. :class:`ModelTensors` reads either file kind and renames on the fly, so the original
layout converts without being copied into a staging folder first (tens of GB for 14B).
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np

from sorajax.models import pretrained
from sorajax.models.dit import DiTConfig
from sorajax.models.pretrained import CheckpointError
from sorajax.models.torch_pickle import TorchCheckpoint
from sorajax.models.umt5 import UMT5Config
from sorajax.models.umt5_tokenizer import TOKENIZER_FILES
from sorajax.models.umt5_weights import DECODER_PREFIXES
from sorajax.models.wan_dit_weights import WAN_DIT_FAMILIES, wan_dit_config
from sorajax.models.wan_vae_config import WanVAEConfig
from sorajax.models.wan_vae_keys import FAMILIES as VAE_FAMILIES

def _file_shapes(path: Path) -> dict[str, tuple[int, ...]]:
    if path.suffix == ".safetensors":
        return pretrained.header_shapes([path])[0]
    return TorchCheckpoint(path).shapes()


def _file_tensors(path: Path) -> Iterator[tuple[str, np.ndarray]]:
    if path.suffix == ".safetensors":
        for _, key, array in pretrained.read_tensors([path]):
            yield key, array
    else:
        yield from TorchCheckpoint(path).tensors()


@dataclasses.dataclass(frozen=True)
class ModelTensors:
    """One model's checkpoint files (safetensors or `.pth`), read as entries under its key map's names.

    `rename` (Wan's original layout): the file's key -> the key map's; a key it does not know is
    refused by its own name (so nothing unknown slips through under a borrowed name). Keys starting
    with `skip` are left out (the decoder of an encoder-decoder text model).
    """

    files: tuple[Path, ...]
    model: str  # how errors name the model
    rename: Callable[[str], str | None] | None = None
    skip: tuple[str, ...] = ()

    def _name(self, path: Path, key: str) -> tuple[str, str] | None:
        """(key map name, file label for errors) of a file's key; None when skipped."""
        if self.skip and key.startswith(self.skip):
            return None
        if self.rename is None:
            return key, str(path)
        name = self.rename(key)
        if name is None:
            raise CheckpointError(f"{path}: key {key!r} is not part of {self.model} in Wan's release layout: the "
                                  "file holds another model or version; convert a matching checkpoint")
        return name, str(path) if name == key else f"{path} (Wan's {key!r})"

    def shapes(self) -> tuple[dict[str, tuple[int, ...]], dict[str, str]]:
        """(shape, file label) of every entry, from the files' headers / pickles alone (no tensor read)."""
        shapes: dict[str, tuple[int, ...]] = {}
        labels: dict[str, str] = {}
        for path in self.files:
            for key, shape in _file_shapes(path).items():
                named = self._name(path, key)
                if named is None:
                    continue
                if named[0] in shapes:
                    raise CheckpointError(f"{named[1]}: key {named[0]!r} is also in {labels[named[0]]}: the folder "
                                          "mixes two checkpoints; download it again")
                shapes[named[0]], labels[named[0]] = tuple(shape), named[1]
        return shapes, labels

    def tensors(self) -> Iterator[tuple[str, str, np.ndarray]]:
        """`(file label, key map name, array)` one at a time (safetensors: loaded; `.pth`: memory-mapped)."""
        for path in self.files:
            for key, array in _file_tensors(path):
                named = self._name(path, key)
                if named is not None:
                    yield named[1], named[0], array


@dataclasses.dataclass(frozen=True)
class WanSource:
    """A Wan checkpoint folder: its models' configs and tensors, in either layout (not yet checked)."""

    root: Path
    layout: str  # "diffusers" or "original"
    dit: DiTConfig
    vae: WanVAEConfig
    umt5: dict[str, Any]  # the text encoder's config.json, in transformers' layout
    tokenizer: Path
    transformer: ModelTensors
    vae_tensors: ModelTensors
    text_encoder: ModelTensors


def check_channels(dit: DiTConfig, vae: WanVAEConfig, config_path: Path) -> None:
    """The DiT's patches must be whole patches of the VAE's latent channels (else the parts are of two models)."""
    if dit.patch_dim % vae.latent_channels:
        raise CheckpointError(f"{config_path}: the transformer's input channels do not match the VAE's "
                              f"{vae.latent_channels} latent channels: the transformer and vae are of different models")


def find_tokenizer(folders: tuple[Path, ...], fix: str) -> Path:
    """The first folder holding tokenizer.json or spiece.model; else one line naming where it looked."""
    for folder in folders:
        if any((folder / name).is_file() for name in TOKENIZER_FILES):
            return folder
    raise CheckpointError(f"{folders[0]}: no tokenizer.json or spiece.model: {fix}")


def check_umt5_config(raw: dict[str, Any], where: Path) -> None:
    """The text encoder's config must be one `UMT5Config` computes (refused naming `where` otherwise)."""
    try:
        UMT5Config.from_hf_dict(raw)
    except (KeyError, ValueError) as error:
        raise CheckpointError(f"{where}: {error}: use the config saved with the checkpoint") from None


def _part(root: Path, name: str) -> Path:
    folder = root / name
    if not (folder / "config.json").is_file():
        raise CheckpointError(f"{folder}: missing (no config.json): a Wan checkpoint in diffusers' layout has "
                              "transformer/, vae/, text_encoder/ and tokenizer/; download the whole repository")
    return folder


def diffusers_source(root: Path) -> WanSource:
    """A diffusers-layout Wan folder (transformer/, vae/, text_encoder/, tokenizer/) with its configs read."""
    vae_raw = pretrained.folder_config(_part(root, "vae"), VAE_FAMILIES, "the Wan VAE")
    try:
        vae = WanVAEConfig.from_diffusers(vae_raw)
    except ValueError as error:
        raise CheckpointError(f"{root / 'vae' / 'config.json'}: {error}") from None
    transformer = _part(root, "transformer")
    dit_raw = pretrained.folder_config(transformer, WAN_DIT_FAMILIES, "a Wan transformer")
    try:
        dit = wan_dit_config(dit_raw)
    except ValueError as error:
        raise CheckpointError(f"{transformer / 'config.json'}: {error}") from None
    check_channels(dit, vae, transformer / "config.json")
    text_encoder = _part(root, "text_encoder")
    umt5 = json.loads((text_encoder / "config.json").read_text())
    check_umt5_config(umt5, text_encoder / "config.json")
    tokenizer = find_tokenizer((root / "tokenizer", text_encoder), "download the tokenizer/ folder")
    return WanSource(
        root, "diffusers", dit, vae, umt5, tokenizer,
        ModelTensors(tuple(pretrained.checkpoint_files(transformer)), f"the Wan transformer in {transformer}"),
        ModelTensors(tuple(pretrained.checkpoint_files(root / "vae")), f"the Wan VAE ({vae.version})"),
        ModelTensors(tuple(pretrained.checkpoint_files(text_encoder)), "the UMT5 text encoder",
                     skip=DECODER_PREFIXES))

