"""Does a trained DiT read the caption's place and direction words? A paired loss test on real clips.

Sample probes (`sorajax.eval.probes`) only move once a model draws the layout well, and with 48
prompts they carry ~10 points of seed noise. This asks the model directly, before it draws well:
denoise a held-out clip once with its own caption and once with the caption's point mirror
(left <-> right, top <-> bottom, up <-> down; every other word kept), from the same noise.
A model that ignores the layout words scores both the same; one that reads them denoises better
with the true caption. Being paired (same clip, same noise), it needs only tens of clips.

Reported per noise level t: `accuracy` P(loss_true < loss_mirror) (0.5 = not used), `layout_gap`
mean(loss_mirror - loss_true), and `caption_gain` mean(loss_no_caption - loss_true), the whole
caption's worth, to set the gap against. Layout is decided at high t, so look there first.
"""

from __future__ import annotations

import dataclasses
import re
from typing import Any, Protocol, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from sorajax.data.latent_cache import LatentClipSet
from sorajax.diffusion.sampling import Denoiser
from sorajax.diffusion.validation import fixed_level_loss
from sorajax.patches import Sample, pack, patch_grid

TEXT_LEN_STEP = 16  # caption rows rounded up to this, so captions of similar length share one program

MIRROR_WORDS = {
    "left": "right", "right": "left", "top": "bottom", "bottom": "top",
    "up": "down", "down": "up", "upward": "downward", "downward": "upward",
    "upwards": "downwards", "downwards": "upwards", "above": "below", "below": "above",
}
_MIRROR_PATTERN = re.compile(r"\b(" + "|".join(MIRROR_WORDS) + r")\b", re.IGNORECASE)
DEFAULT_LEVELS = (0.5, 0.7, 0.85, 0.95)
LAYOUT_LEVELS = (0.85, 0.95)  # where the caption alone must place the object: the training-time gap


def mirror_caption(caption: str) -> str:
    """The caption of the clip turned half a turn: place and direction words swapped, case kept."""
    def swap(match: re.Match) -> str:
        word = match.group(1)
        mirrored = MIRROR_WORDS[word.lower()]
        return mirrored.capitalize() if word[0].isupper() else mirrored

    return _MIRROR_PATTERN.sub(swap, caption)


def mirrored_clip_set(clips: LatentClipSet, text_encoder: Any) -> LatentClipSet:
    """The same clips with every caption replaced by its mirror (and re-embedded): for paired losses.

    Packing depends on the latents alone, so packing both sets with one seed pairs every clip with
    itself; clips whose caption has no layout word get identical text (they add zero to the gap).
    """
    mirrored = [mirror_caption(c) for c in clips.captions]
    embeddings, masks = text_encoder.encode(mirrored)
    texts = [np.asarray(e[m], np.float32) for e, m in zip(embeddings, masks)]
    return dataclasses.replace(clips, texts=texts, captions=mirrored, key=clips.key + ":mirrored")


class CaptionedDenoiser(Protocol):
    """What the test needs of a trained model (a `sorajax.pipeline.Pipeline` has it all)."""

    denoise: Denoiser
    dit_params: Any
    patch: tuple[int, int, int]
    prediction: str

    def caption_tokens(self, prompts: Sequence[str]) -> list[np.ndarray]: ...


def caption_layout_use(
    model: CaptionedDenoiser,
    latents: Sequence[np.ndarray],
    captions: Sequence[str],
    levels: Sequence[float] = DEFAULT_LEVELS,
    noise_seeds: int = 2,
) -> dict[float, dict[str, float]]:
    """Per noise level: accuracy, layout_gap and caption_gain (see the module docstring) and `count`.

    Clips whose caption has no layout word (the mirror equals the caption) are skipped; at least one
    must be left. Each clip runs alone in its row, so no packing choice can leak between clips.
    """
    if len(latents) != len(captions):
        raise ValueError(f"got {len(latents)} latents but {len(captions)} captions: give one caption per clip")
    if not levels or not all(0.0 < t <= 1.0 for t in levels):
        raise ValueError(f"noise levels must lie in (0, 1], got {list(levels)}")
    if noise_seeds < 1:
        raise ValueError(f"noise_seeds must be at least 1, got {noise_seeds}")
    kept = [(np.asarray(z, np.float32), c) for z, c in zip(latents, captions) if mirror_caption(c) != c]
    if not kept:
        raise ValueError("no caption names a place or direction (left/right/top/bottom/up/down): nothing to test")

    loss_fn = _make_losses(model.denoise, model.prediction)
    per_level: dict[float, dict[str, list[float]]] = {t: {"true": [], "mirror": [], "none": []} for t in levels}
    for index, (latent, caption) in enumerate(kept):
        true_text, mirror_text = model.caption_tokens([caption, mirror_caption(caption)])
        num_tokens = int(np.prod(patch_grid(latent.shape, model.patch)))
        text_len = -(-max(len(true_text), len(mirror_text)) // TEXT_LEN_STEP) * TEXT_LEN_STEP
        batches = [pack([Sample(latent=latent, text=text)], num_tokens, text_len, model.patch, rows=1)[0]
                   for text in (true_text, mirror_text)]
        for t in levels:
            for seed in range(noise_seeds):
                rng = jax.random.PRNGKey(seed * 1_000_003 + index)
                true_loss, mirror_loss, none_loss = loss_fn(model.dit_params, batches[0], batches[1], rng, t)
                per_level[t]["true"].append(float(true_loss))
                per_level[t]["mirror"].append(float(mirror_loss))
                per_level[t]["none"].append(float(none_loss))
    report = {}
    for t, losses in per_level.items():
        true, mirror, none = (np.asarray(losses[k]) for k in ("true", "mirror", "none"))
        report[t] = {"accuracy": float(np.mean(true < mirror)), "layout_gap": float(np.mean(mirror - true)),
                     "caption_gain": float(np.mean(none - true)), "count": len(kept)}
    return report


def _make_losses(denoise: Denoiser, prediction: str):
    """jit(params, true batch, mirror batch, rng, t) -> (loss with true, mirrored, no caption)."""

    @jax.jit
    def losses(params, true_batch, mirror_batch, rng, t):
        noise = jax.random.normal(rng, true_batch.tokens.shape, jnp.float32)

        def loss(text, text_segment_ids):
            batch = true_batch.replace(text=text, text_segment_ids=text_segment_ids)
            return fixed_level_loss(denoise, params, batch, noise, t, prediction)

        return (loss(true_batch.text, true_batch.text_segment_ids),
                loss(mirror_batch.text, mirror_batch.text_segment_ids),
                loss(jnp.zeros_like(true_batch.text), true_batch.text_segment_ids))  # training's dropped caption

    return losses


def format_layout_use(report: dict[float, dict[str, float]]) -> str:
    lines = ["caption layout words (true vs point-mirrored caption, paired loss on held-out clips):",
             "     t   P(true better)   loss gap (mirror - true)   whole caption's gain"]
    for t, row in sorted(report.items()):
        lines.append(f"  {t:4.2f}   {row['accuracy']:14.1%}   {row['layout_gap']:+24.4f}   {row['caption_gain']:+20.4f}")
    return "\n".join(lines)
