"""Videos longer than the trained window, by repeated forward extension with overlap.

    window 1: generated from the prompt (or animated from an image)
    window i: its first `context` latent frames are GIVEN, encoded from the last
              1 + 4(context - 1) frames made so far; the rest is generated
    each window contributes its frames after the overlap

Memory stays bounded: the DiT always sees one window's tokens, the autoencoder encodes
the overlap and decodes each window in causal chunks (`ChunkedCodec`), and the stream
holds only the overlap frames between windows; `stream_long_video` yields frame chunks
as they are made, so a writer can put them on disk without holding the whole video.
The subject stays the one of the first window because every window starts from the
clean frames the previous one ended with (and the same prompt).
"""

from __future__ import annotations

import dataclasses
from typing import Any, Iterator

import numpy as np

from sorajax.conditioning import Conditioning, first_frames_mask, pixel_frames_for_latents
from sorajax.pipeline import Pipeline, SampleRequest
from sorajax.prompting import as_video
from sorajax.video_io import to_uint8


def window_plan(total_frames: int, window_frames: int, context: int, temporal_factor: int) -> list[int]:
    """New frames each window contributes: the first window all of them, later ones f (n - context)."""
    latents = 1 + (window_frames - 1) // temporal_factor
    if not 1 <= context < latents:
        raise ValueError(f"context must be between 1 and {latents - 1} latent frames for a {window_frames}-frame "
                         f"window (something must be left to generate), got {context}")
    if total_frames < window_frames:
        raise ValueError(f"a long video of {total_frames} frames is shorter than one {window_frames}-frame window: "
                         f"ask for at least {window_frames} frames, or make one window with --frames")
    step = window_frames - pixel_frames_for_latents(context, temporal_factor)
    counts = [min(total_frames, window_frames)]
    while sum(counts) < total_frames:
        counts.append(min(step, total_frames - sum(counts)))
    return counts


def stream_long_video(pipeline: Pipeline, prompt: str, total_frames: int, request: SampleRequest | None = None,
                      context: int = 1, image: np.ndarray | None = None, negative_prompt: str | None = None,
                      **overrides: Any) -> Iterator[np.ndarray]:
    """Yields uint8 frame chunks [n, H, W, 3] adding up to `total_frames` frames.

    Window i samples with seed `request.seed + i`. `image` (optional) is the first frame.
    """
    request = dataclasses.replace(request or pipeline.defaults, **overrides)
    if image is not None:
        image = as_video(image, "image")
        request = dataclasses.replace(request, height=image.shape[1], width=image.shape[2])
    shape = pipeline.latent_shape(request.frames, request.height, request.width)
    pipeline.check_memory(shape, 1, request.guidance != 1.0)  # every window is this size: refused before the first
    f = pipeline.temporal_factor
    plan = window_plan(total_frames, request.frames, context, f)
    overlap = pixel_frames_for_latents(context, f)
    tail: np.ndarray | None = None
    for i, count in enumerate(plan):
        latent = np.zeros(shape, np.float32)
        if i == 0:
            given = None if image is None else first_frames_mask(shape[0], 1)
            if image is not None:
                latent[:1] = pipeline.encode(image)
        else:
            given = first_frames_mask(shape[0], context)
            latent[:context] = pipeline.encode(tail)
        window_request = dataclasses.replace(request, seed=request.seed + i)
        condition = None if given is None else Conditioning(latent, given)
        z = pipeline.sample_latents([prompt], shape, window_request, [negative_prompt] if negative_prompt else None,
                                    [condition])[0]
        window = pipeline.decode(z, chunked=True)
        new = window[:count] if i == 0 else window[overlap: overlap + count]
        made = new if tail is None else np.concatenate([tail, new])
        tail = made[-overlap:]
        yield to_uint8(new)


def generate_long_video(pipeline: Pipeline, prompt: str, total_frames: int, request: SampleRequest | None = None,
                        context: int = 1, image: np.ndarray | None = None, negative_prompt: str | None = None,
                        **overrides: Any) -> np.ndarray:
    """uint8 [total_frames, H, W, 3]: `stream_long_video` joined."""
    return np.concatenate(list(stream_long_video(pipeline, prompt, total_frames, request, context, image,
                                                 negative_prompt, **overrides)))
