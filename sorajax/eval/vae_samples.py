"""Sample videos of the autoencoder: held-out world clips next to their reconstructions."""

from __future__ import annotations

from typing import Any, Callable

import jax
import numpy as np

from sorajax.data.world import WorldOptions, WorldSource
from sorajax.eval.contact_sheet import contact_sheet
from sorajax.runs.paths import PathLike, run_path
from sorajax.video_io import to_uint8, write_image, write_video


def write_reconstruction_samples(
    reconstruct: Callable, variables: Any, sizes: list[tuple[int, int, int]], seed: int,
    world_options: WorldOptions, out_dir: PathLike, fps: float = 8.0,
) -> list[str]:
    """For each (frames, height, width): one held-out clip, written as `original | reconstruction`.

    Videos go to `<out_dir>/recon_<T>x<H>x<W>.mp4` (PNG for 1-frame images) and all of
    them to `<out_dir>/reconstructions.png` (rows: original, reconstruction, ...).
    Returns the written paths.
    """
    out = run_path(out_dir)
    written, rows = [], []
    held_out = WorldSource(sizes, seed, world_options, split="eval")
    for i, (frames, height, width) in enumerate(sizes):
        clip = held_out.clip(10_000 + i, (frames, height, width))
        recon, _ = reconstruct(variables, clip.video[None])
        recon = to_uint8(np.asarray(jax.device_get(recon[0])))
        pair = np.concatenate([clip.video, recon], axis=2)  # side by side along width
        name = f"recon_{frames}x{height}x{width}"
        if frames == 1:
            written.append(str(write_image(out / f"{name}.png", pair[0])))
        else:
            written.append(str(write_video(out / f"{name}.mp4", pair, fps=fps)))
        rows += [clip.video, recon]
    written.append(str(write_image(out / "reconstructions.png", contact_sheet(rows))))
    return written
