"""Held-out evaluation of the autoencoder on built-in-world clips: PSNR and SSIM.

Held-out clips come from the world's `eval` seed range, disjoint from training.
Scores are per clip (mean over frames), then averaged, and also reported per
clip size so a user sees whether images, portrait or landscape clips lag.
"""

from __future__ import annotations

from typing import Any, Callable, Iterable

import jax
import numpy as np

from sorajax.eval.image_metrics import psnr, ssim
from sorajax.train.vae_step import pixels_from_uint8


def evaluate_reconstruction(
    reconstruct: Callable, variables: Any, batches: Iterable[dict[str, np.ndarray]]
) -> dict[str, float]:
    """Mean PSNR/SSIM over all clips of `batches`, plus `psnr/<T>x<H>x<W>` per size."""
    per_size: dict[str, list[float]] = {}
    psnrs, ssims = [], []
    for batch in batches:
        video = batch["video"]
        recon, _ = reconstruct(variables, video)
        target = pixels_from_uint8(video)
        clip_psnr = np.asarray(jax.device_get(psnr(recon, target))).mean(axis=-1)
        clip_ssim = np.asarray(jax.device_get(ssim(recon, target))).mean(axis=-1)
        psnrs.extend(clip_psnr.tolist())
        ssims.extend(clip_ssim.tolist())
        key = "x".join(str(v) for v in video.shape[1:4])
        per_size.setdefault(key, []).extend(clip_psnr.tolist())
    if not psnrs:
        raise ValueError("evaluation got no clips: eval.num_batches must be >= 1")
    result = {"psnr": float(np.mean(psnrs)), "ssim": float(np.mean(ssims)), "num_clips": float(len(psnrs))}
    result.update({f"psnr/{k}": float(np.mean(v)) for k, v in sorted(per_size.items())})
    return result


def collect_latents(encode: Callable, variables: Any, batches: Iterable[dict[str, np.ndarray]]) -> list[np.ndarray]:
    """Posterior-mean latents of every batch (clip sizes may differ), for latent statistics.

    `encode(variables, uint8 video) -> latents`: encoder only, no decode wasted on statistics.
    """
    return [np.asarray(jax.device_get(encode(variables, batch["video"]))) for batch in batches]
