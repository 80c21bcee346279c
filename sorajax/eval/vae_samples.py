"""Sample videos of the autoencoder: held-out world clips next to their reconstructions."""

from __future__ import annotations

import os
from typing import Any, Callable

import jax
import numpy as np

from sorajax.data.world import WorldOptions, generate_clip
from sorajax.data.world_batches import SPLIT_SEED_OFFSETS
from sorajax.eval.contact_sheet import contact_sheet
from sorajax.video_io import to_uint8, write_image, write_video


def write_reconstruction_samples(
    reconstruct: Callable, variables: Any, sizes: list[tuple[int, int, int]], seed: int,
    world_options: WorldOptions, out_dir: str, fps: float = 8.0,
) -> list[str]:
    """For each (frames, height, width): one held-out clip, written as `original | reconstruction`.

    Videos go to `<out_dir>/recon_<T>x<H>x<W>.mp4` (PNG for 1-frame images) and all of
    them to `<out_dir>/reconstructions.png` (rows: original, reconstruction, ...).
    Returns the written paths.
    """
    os.makedirs(out_dir, exist_ok=True)
    written, rows = [], []
    for i, (frames, height, width) in enumerate(sizes):
        clip = generate_clip(seed + SPLIT_SEED_OFFSETS["eval"], frames, height, width, world_options, index=10_000 + i)
        recon, _ = reconstruct(variables, clip.video[None])
        recon = to_uint8(np.asarray(jax.device_get(recon[0])))
        pair = np.concatenate([clip.video, recon], axis=2)  # side by side along width
        name = f"recon_{frames}x{height}x{width}"
        if frames == 1:
            written.append(str(write_image(os.path.join(out_dir, name + ".png"), pair[0])))
        else:
            written.append(str(write_video(os.path.join(out_dir, name + ".mp4"), pair, fps=fps)))
        rows += [clip.video, recon]
    sheet = os.path.join(out_dir, "reconstructions.png")
    written.append(str(write_image(sheet, contact_sheet(rows))))
    return written
