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
from typing import Any, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from sorajax.data.latent_cache import LatentClipSet
from sorajax.diffusion.flow import add_noise, flow_matching_loss, velocity_target
from sorajax.patches import Sample, pack, patch_grid
from sorajax.pipeline import TEXT_LEN_STEP, Pipeline

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


def caption_layout_use(
    pipeline: Pipeline,
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

    loss_fn = _make_losses(pipeline)
    per_level: dict[float, dict[str, list[float]]] = {t: {"true": [], "mirror": [], "none": []} for t in levels}
    for index, (latent, caption) in enumerate(kept):
        true_text, mirror_text = pipeline.caption_tokens([caption, mirror_caption(caption)])
        num_tokens = int(np.prod(patch_grid(latent.shape, pipeline.patch)))
        text_len = -(-max(len(true_text), len(mirror_text)) // TEXT_LEN_STEP) * TEXT_LEN_STEP
        batches = [pack([Sample(latent=latent, text=text)], num_tokens, text_len, pipeline.patch, rows=1)[0]
                   for text in (true_text, mirror_text)]
        for t in levels:
            for seed in range(noise_seeds):
                rng = jax.random.PRNGKey(seed * 1_000_003 + index)
                true_loss, mirror_loss, none_loss = loss_fn(pipeline.dit_params, batches[0], batches[1], rng, t)
                per_level[t]["true"].append(float(true_loss))
                per_level[t]["mirror"].append(float(mirror_loss))
                per_level[t]["none"].append(float(none_loss))
    report = {}
    for t, losses in per_level.items():
        true, mirror, none = (np.asarray(losses[k]) for k in ("true", "mirror", "none"))
        report[t] = {"accuracy": float(np.mean(true < mirror)), "layout_gap": float(np.mean(mirror - true)),
                     "caption_gain": float(np.mean(none - true)), "count": len(kept)}
    return report


def _make_losses(pipeline: Pipeline):
    """jit(params, true batch, mirror batch, rng, t) -> (loss with true, mirrored, no caption)."""
    dit = pipeline.dit

    @jax.jit
    def losses(params, true_batch, mirror_batch, rng, t):
        x0 = jnp.asarray(true_batch.tokens, jnp.float32)
        real = true_batch.segment_ids > 0
        noise = jax.random.normal(rng, x0.shape, jnp.float32)
        t_tokens = jnp.where(real, t, 0.0).astype(jnp.float32)
        x_t = add_noise(x0, noise, t_tokens)

        def loss(text, text_segment_ids):
            velocity = dit.apply({"params": params}, x_t, true_batch.positions, true_batch.segment_ids, t_tokens,
                                 text, text_segment_ids)
            return flow_matching_loss(velocity, velocity_target(x0, noise), real)[0]

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
