"""Held-out evaluation of the autoencoder on built-in-world clips: PSNR and SSIM, and its steps.

Held-out clips come from the world's `eval` split, disjoint from training. Scores are computed on
the device per clip (mean over frames), so a sharded evaluation returns a few numbers, not clips;
they are averaged, and also reported per clip size so a user sees whether images, portrait or
landscape clips lag.
"""

from __future__ import annotations

from typing import Any, Callable, Iterable

import jax
import jax.numpy as jnp
import numpy as np

from sorajax.eval.image_metrics import psnr, ssim
from sorajax.models.vae import pixels_from_uint8


def make_reconstruct(vae: Any) -> Callable:
    """(variables, uint8 video) -> (reconstruction in [-1, 1], posterior mean latents)."""

    def reconstruct(variables: dict[str, Any], video_uint8: jax.Array) -> tuple[jax.Array, jax.Array]:
        mean, _ = vae.apply(variables, pixels_from_uint8(video_uint8), method="encode")
        recon = vae.apply(variables, mean, method="decode")
        return jnp.clip(recon.astype(jnp.float32), -1.0, 1.0), mean

    return reconstruct


def make_encode(vae: Any) -> Callable:
    """(variables, uint8 video) -> posterior mean latents (unnormalised)."""

    def encode(variables: dict[str, Any], video_uint8: jax.Array) -> jax.Array:
        return vae.apply(variables, pixels_from_uint8(video_uint8), method="encode")[0]

    return encode


def make_scores(vae: Any) -> Callable:
    """(variables, uint8 video [B, T, H, W, 3]) -> {'psnr': [B], 'ssim': [B]} per clip, on the device."""
    reconstruct = make_reconstruct(vae)

    def scores(variables: dict[str, Any], video_uint8: jax.Array) -> dict[str, jax.Array]:
        recon, _ = reconstruct(variables, video_uint8)
        target = pixels_from_uint8(video_uint8)
        return {"psnr": psnr(recon, target).mean(axis=-1), "ssim": ssim(recon, target).mean(axis=-1)}

    return scores


def evaluate_reconstruction(scores: Callable, variables: Any, batches: Iterable[Any]) -> dict[str, float]:
    """Mean PSNR/SSIM over all clips of `batches` (each {'video': ...}), plus `psnr/<T>x<H>x<W>` per size."""
    per_size: dict[str, list[float]] = {}
    psnrs, ssims = [], []
    for batch in batches:
        video = batch["video"]
        result = jax.device_get(scores(variables, video))
        clip_psnr, clip_ssim = np.asarray(result["psnr"]).tolist(), np.asarray(result["ssim"]).tolist()
        psnrs += clip_psnr
        ssims += clip_ssim
        per_size.setdefault("x".join(str(v) for v in video.shape[1:4]), []).extend(clip_psnr)
    if not psnrs:
        raise ValueError("evaluation got no clips: eval.num_batches must be >= 1")
    result = {"psnr": float(np.mean(psnrs)), "ssim": float(np.mean(ssims)), "num_clips": float(len(psnrs))}
    result.update({f"psnr/{k}": float(np.mean(v)) for k, v in sorted(per_size.items())})
    return result


def collect_latents(encode: Callable, variables: Any, batches: Iterable[Any]) -> list[np.ndarray]:
    """Posterior-mean latents of every batch (clip sizes may differ), for latent statistics.

    `encode(variables, uint8 video) -> latents`: encoder only, no decode wasted on statistics.
    """
    return [np.asarray(jax.device_get(encode(variables, batch["video"]))) for batch in batches]
