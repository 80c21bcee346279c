"""The Wan model families in sorajax: how each samples by default, and a pipeline straight from a diffusers folder.

Why one table: the converter writes a family's defaults into a run's `sample` section, and sampling
a diffusers folder directly uses the same numbers, so a converted run and the folder it came from
sample alike. The values are the release code's own (`wan/configs/`, `generate.py` of Wan2.1 and
Wan2.2): UniPC for flow matching, 50 steps, guidance 5, shift 5, Wan's negative prompt, and the
sizes each model was trained at. Wan2.1's VAE and 1x2x2 patches need sides in multiples of 16
pixels, Wan2.2's (x16 VAE) multiples of 32; frames are 1 + 4k.

Trained tasks: Wan2.1-T2V text to video; Wan2.2-TI2V-5B text to video and image to video (the
first latent frame given clean at t = 0: sorajax's `animate`). Every other prompting mode
(extend, loop, connect, SDEdit, inpaint / outpaint, long videos) runs on these weights through
per-token t as well, zero-shot: the models never saw those masks in training.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp

from sorajax.diffusion.sampling import SampleConfig, SampleRequest
from sorajax.diffusion.timesteps import TrainingTimeConfig
from sorajax.models.dit import DiT
from sorajax.models.pretrained import CheckpointError
from sorajax.models.umt5_text import load_umt5_text_encoder
from sorajax.models.wan_dit_weights import load_wan_dit
from sorajax.models.wan_vae import WanVAE, wan_variables
from sorajax.models.wan_vae_keys import load_wan_vae

# Wan's default negative prompt (wan/configs/shared_config.py), used as the unconditional caption.
WAN_NEGATIVE_PROMPT = (
    "色调艳丽，过曝，静态，细节模糊不清，字幕，风格，作品，画作，画面，静止，整体发灰，最差质量，低质量，JPEG压缩残留，丑陋的，"
    "残缺的，多余的手指，画得不好的手部，画得不好的脸部，畸形的，毁容的，形态畸形的肢体，手指融合，静止不动的画面，杂乱的背景，"
    "三条腿，背景人很多，倒着走"
)


@dataclasses.dataclass(frozen=True)
class WanFamily:
    """One released family: its VAE version, the DiT preset of its sizes, and its sampling defaults."""

    name: str
    vae_version: str
    sample: SampleConfig
    size_step: int  # pixel sides are multiples of this (VAE factor x patch)
    tasks: tuple[str, ...]


FAMILIES = {
    "wan2.1-t2v": WanFamily("wan2.1-t2v", "wan2.1", SampleConfig(
        method="unipc", steps=50, guidance=5.0, use_ema=False, frames=81, height=480, width=832,
        schedule="wan", shift=5.0, negative_prompt=WAN_NEGATIVE_PROMPT), 16, ("text-to-video",)),
    "wan2.2-ti2v": WanFamily("wan2.2-ti2v", "wan2.2", SampleConfig(
        method="unipc", steps=50, guidance=5.0, use_ema=False, frames=121, height=704, width=1280,
        schedule="wan", shift=5.0, negative_prompt=WAN_NEGATIVE_PROMPT), 32, ("text-to-video", "image-to-video")),
}
# The DiT presets of the released sizes, by (family, width).
PRESETS = {("wan2.1-t2v", 1536): "wan2.1-t2v-1.3b", ("wan2.1-t2v", 5120): "wan2.1-t2v-14b",
           ("wan2.2-ti2v", 3072): "wan2.2-ti2v-5b"}
# Wan's training noise levels: its shift, constant (no token-count dependence).
def wan_time_config(shift: float) -> TrainingTimeConfig:
    return TrainingTimeConfig(logit_mean=0.0, logit_std=1.0, base_tokens=1, base_shift=shift, max_tokens=2,
                              max_shift=shift)


def family_of_vae(version: str) -> WanFamily:
    """The family whose VAE is `version` ('wan2.1' or 'wan2.2')."""
    for family in FAMILIES.values():
        if family.vae_version == version:
            return family
    raise CheckpointError(f"no Wan family uses a {version} VAE: sorajax knows {sorted(FAMILIES)}")


def check_family(found: WanFamily, asked: str | None, where: str) -> WanFamily:
    """`found`, unless the user asked for another family by name (then a one-line refusal)."""
    if asked not in (None, "auto", found.name):
        if asked not in FAMILIES:
            raise CheckpointError(f"unknown Wan family {asked!r}: use one of {sorted(FAMILIES)} or 'auto'")
        raise CheckpointError(f"{where} holds a {found.name} model (its VAE is {found.vae_version}), not {asked}: "
                              f"pass --family={found.name} or auto, or point at a {asked} checkpoint")
    return found


def scheduler_shift(folder: Path, default: float) -> float:
    """The flow shift a diffusers folder's scheduler was saved with (its own default when absent)."""
    path = folder / "scheduler" / "scheduler_config.json"
    if path.is_file():
        return float(json.loads(path.read_text()).get("flow_shift", default))
    return default


def pipeline_from_diffusers(folder: str | Path, family: str | None = None, weights_dtype: str | None = None) -> Any:
    """A sorajax `Pipeline` over a diffusers Wan folder as it is (transformer/, vae/, text_encoder/, tokenizer/).

    The same models `sorajax.convert` writes into a run, loaded in place: for trying a download before
    converting it, and for checking sorajax against diffusers on the same folder.
    """
    from sorajax.pipeline import Pipeline  # the pipeline imports the model families, not this module

    folder = Path(folder)
    vae_config, vae_params = load_wan_vae(folder / "vae")
    found = check_family(family_of_vae(vae_config.version), family, str(folder))
    dit_config, dit_params = load_wan_dit(folder / "transformer")
    text_encoder = load_umt5_text_encoder(folder / "text_encoder", folder / "tokenizer")
    sample = dataclasses.replace(found.sample, shift=scheduler_shift(folder, found.sample.shift))
    vae = WanVAE(vae_config)
    params = jax.tree.map(jnp.asarray, dit_params)
    return Pipeline(vae, wan_variables(vae_config, vae_params), DiT(dit_config), params, text_encoder,
                    dit_config_patch(dit_config, vae_config.latent_channels), wan_time_config(sample.shift),
                    SampleRequest.defaults(sample), "velocity", sample.schedule, sample.negative_prompt, weights_dtype)


def dit_config_patch(config: Any, latent_channels: int) -> tuple[int, int, int]:
    """The patch size of a Wan DiT (1 x p x p) from its patch width and the latent channels."""
    area = config.patch_dim // latent_channels
    side = int(round(area**0.5))
    if side * side != area:
        raise CheckpointError(f"patch width {config.patch_dim} over {latent_channels} latent channels is not 1 x p x p")
    return (1, side, side)
