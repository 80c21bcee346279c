"""Prompting with images and videos: animate, extend, connect, loop, edit, inpaint, outpaint.

Every mode is one `Pipeline.generate` call over a window of `request.frames` frames (the
size the model was trained on, by default) with some latent frames or regions GIVEN
(`sorajax.conditioning`), except SDEdit, which starts from the noised input instead.

How inputs become given latents, with the causal autoencoder (latent 0 = pixel frame 0
alone, latent j >= 1 = pixel frames 4j-3 .. 4j):
- First k latents of a window (animate, extend forward, the start of connect/loop): the
  last `1 + 4(k-1)` pixel frames of the input are encoded as a fresh clip. A causal
  decoder then reproduces exactly the VAE round trip of those frames at the window start.
- Last k latents (extend backward, the end of connect/loop): the input's first `1 + 4k`
  frames are encoded and latents 1..k are given; they stand for input frames 1..4k. Input
  frame 0 would share a latent with generated frames, so it is regenerated there and the
  joined video uses the input's own frame 0. (In the window those latents follow
  generated frames, not the input's frame 0 alone: a small mismatch the model absorbs.)
- Loop: the clip V is connected to ITSELF: a transition window starts with V's last frame
  and ends with V's frames 1..4b; the loop is V followed by the transition's new frames,
  which lead back into V's frame 0 when the loop repeats.

Results carry the decoded window, the joined video and, for measuring, which window
pixels stand for given input (`given`) next to that input (`reference`).
"""

from __future__ import annotations

import dataclasses
from typing import Any

import einops
import numpy as np

from sorajax.conditioning import Conditioning, first_and_last_mask, first_frames_mask, last_frames_mask, \
    pixel_mask_to_latent, pixel_frames_for_latents
from sorajax.pipeline import Pipeline, SampleRequest
from sorajax.video_io import to_float, to_uint8


@dataclasses.dataclass(frozen=True)
class Prompted:
    """A prompting result (uint8 pixels).

    video: what the mode is for (e.g. the input followed by its extension, the loop, the composite).
    window: the clip the model generated, decoded.
    given: bool [T, H, W] over `window`: pixels decoded from given (clean) latents.
    reference: uint8 [T, H, W, 3]: the input pixels those given pixels stand for (0 elsewhere).
    latent: the window's sampled latent [t, h, w, c] (given positions hold their values exactly).
    """

    video: np.ndarray
    window: np.ndarray
    given: np.ndarray
    reference: np.ndarray
    latent: np.ndarray


def given_psnr(result: Prompted) -> float:
    """PSNR (dB) of the window's given pixels against the input they came from; NaN if none are given."""
    if not result.given.any():
        return float("nan")
    diff = result.window.astype(np.float64) - result.reference.astype(np.float64)
    mse = float(np.mean(diff[result.given] ** 2))
    return float("inf") if mse == 0 else 10.0 * np.log10(255.0**2 / mse)


def loop_seam(video: np.ndarray) -> dict[str, float]:
    """Mean absolute pixel change (0..255) of the wrap (last -> first frame) and of ordinary steps (median)."""
    frames = np.asarray(video, np.float32)
    if frames.ndim != 4 or frames.shape[0] < 3:
        raise ValueError(f"a loop needs a video [T >= 3, H, W, 3], got shape {frames.shape}")
    steps = np.abs(np.diff(frames, axis=0)).mean(axis=(1, 2, 3))
    return {"jump": float(np.abs(frames[0] - frames[-1]).mean()), "typical": float(np.median(steps)),
            "max_step": float(steps.max())}


# ---- input checks -------------------------------------------------------------------------------
def as_video(pixels: np.ndarray, what: str = "video") -> np.ndarray:
    """uint8 or [-1, 1] float [T, H, W, 3] (or an image [H, W, 3]) -> float32 [T, H, W, 3]."""
    pixels = to_float(np.asarray(pixels))
    if pixels.ndim == 3:
        pixels = pixels[None]
    if pixels.ndim != 4 or pixels.shape[-1] != 3:
        raise ValueError(f"the {what} must be [T, H, W, 3] (an image [H, W, 3]), got shape {pixels.shape}")
    return pixels


def fit_frames(video: np.ndarray, temporal_factor: int, min_frames: int, what: str) -> np.ndarray:
    """The longest 1 + 4k prefix of `video`, or a ValueError if it has fewer than `min_frames` frames."""
    frames = video.shape[0]
    if frames < min_frames:
        raise ValueError(f"the {what} has {frames} frames, too short to condition on: this mode needs at least "
                         f"{min_frames}; give a longer clip or less context (--context)")
    return video[: 1 + (frames - 1) // temporal_factor * temporal_factor]


def _check_size(pipeline: Pipeline, request: SampleRequest, video: np.ndarray, what: str) -> tuple[int, ...]:
    """The window's latent shape, refused in one line if the input's size does not fit the models or the
    request does not fit the device's memory (asked here, before the input is encoded)."""
    height, width = video.shape[1:3]
    try:
        shape = pipeline.latent_shape(request.frames, height, width)
    except ValueError as error:
        raise ValueError(f"the {what} is {height}x{width} pixels, which does not fit: {error} "
                         "(crop or resize the input)") from None
    pipeline.check_memory(shape, 1, request.guidance != 1.0)
    return shape


def _request(pipeline: Pipeline, request: SampleRequest | None, overrides: dict[str, Any], height: int,
             width: int) -> SampleRequest:
    request = dataclasses.replace(request or pipeline.defaults, **overrides)
    return dataclasses.replace(request, height=height, width=width)


def _default_context(num_latents: int) -> int:
    return max(1, min(num_latents - 1, num_latents // 2))


def _frames_mask(window: np.ndarray, frames: slice) -> np.ndarray:
    given = np.zeros(window.shape[:3], bool)
    given[frames] = True
    return given


def _reference(window: np.ndarray, frames: slice, pixels: np.ndarray) -> np.ndarray:
    reference = np.zeros_like(window)
    reference[frames] = to_uint8(pixels)
    return reference


def _generate(pipeline: Pipeline, prompt: str, request: SampleRequest, condition: Conditioning | None,
              negative_prompt: str | None, edit: np.ndarray | None = None,
              strength: float = 1.0, noise: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """(decoded window uint8, its latent) for one prompt; `noise` replaces the seed's initial noise."""
    pipeline.check_request([prompt], request, None if negative_prompt is None else [negative_prompt])
    shape = pipeline.latent_shape(request.frames, request.height, request.width)
    latent = pipeline.sample_latents([prompt], shape, request, None if negative_prompt is None else [negative_prompt],
                                     [condition], None if edit is None else [edit], strength,
                                     None if noise is None else [noise])[0]
    return pipeline.decode(latent), latent


# ---- modes ----------------------------------------------------------------------------------------
def animate(pipeline: Pipeline, prompt: str, image: np.ndarray, request: SampleRequest | None = None,
            negative_prompt: str | None = None, noise: np.ndarray | None = None, **overrides: Any) -> Prompted:
    """Image-to-video: the image is encoded as a 1-frame latent and given as the window's first frame.

    This is Wan2.2-TI2V's trained task, exactly as it runs it (the first latent frame clean, t = 0).
    """
    image = as_video(image, "image")
    if image.shape[0] != 1:
        raise ValueError(f"animate takes one image [H, W, 3], got {image.shape[0]} frames; use extend() for videos")
    request = _request(pipeline, request, overrides, *image.shape[1:3])
    shape = _check_size(pipeline, request, image, "image")
    latent = np.zeros(shape, np.float32)
    latent[:1] = pipeline.encode(image)
    window, z = _generate(pipeline, prompt, request, Conditioning(latent, first_frames_mask(shape[0], 1)), negative_prompt,
                          noise=noise)
    first = slice(0, 1)
    return Prompted(window, window, _frames_mask(window, first), _reference(window, first, image), z)


def extend(pipeline: Pipeline, prompt: str, video: np.ndarray, direction: str = "forward",
           request: SampleRequest | None = None, context: int | None = None, negative_prompt: str | None = None,
           **overrides: Any) -> Prompted:
    """Extends `video` forward or backward in time by one window (`request.frames`).

    `context`: latent frames of the input given (default half the window's): forward gives the
    input's last 1 + 4(context-1) frames at the window start, backward its frames 1..4 context
    at the window end. `video` of the result is the input joined with the new frames.
    """
    if direction not in ("forward", "backward"):
        raise ValueError(f"direction must be 'forward' or 'backward', got {direction!r}")
    video = as_video(video)
    f = pipeline.temporal_factor
    request = _request(pipeline, request, overrides, *video.shape[1:3])
    shape = _check_size(pipeline, request, video, "video")
    n = shape[0]
    k = _default_context(n) if context is None else int(context)
    if k < 1:
        raise ValueError(f"context must be >= 1 latent frame, got {k}")
    latent = np.zeros(shape, np.float32)
    if direction == "forward":
        span = pixel_frames_for_latents(k, f)
        video = fit_frames(video, f, span, "video")
        tail = video[-span:]
        latent[:k] = pipeline.encode(tail)
        window, z = _generate(pipeline, prompt, request, Conditioning(latent, first_frames_mask(n, k)), negative_prompt)
        given = slice(0, span)
        joined = np.concatenate([to_uint8(video), window[span:]])
        return Prompted(joined, window, _frames_mask(window, given), _reference(window, given, tail), z)
    span = 1 + f * k
    video = fit_frames(video, f, span, "video")
    latent[n - k:] = pipeline.encode(video[:span])[1:]
    window, z = _generate(pipeline, prompt, request, Conditioning(latent, last_frames_mask(n, k)), negative_prompt)
    total = window.shape[0]
    given = slice(total - f * k, total)
    joined = np.concatenate([window[: total - f * k - 1], to_uint8(video)])
    return Prompted(joined, window, _frames_mask(window, given), _reference(window, given, video[1:span]), z)


def connect(pipeline: Pipeline, prompt: str, first: np.ndarray, second: np.ndarray,
            request: SampleRequest | None = None, context: tuple[int, int] = (1, 1),
            negative_prompt: str | None = None, **overrides: Any) -> Prompted:
    """A transition window that starts as `first` ends and ends as `second` begins.

    `context` = (a, b): the last 1 + 4(a-1) frames of `first` are given at the window start,
    frames 1..4b of `second` at its end. `video` of the result is first + new frames + second.
    """
    first, second = as_video(first, "first video"), as_video(second, "second video")
    if first.shape[1:] != second.shape[1:]:
        raise ValueError(f"the two videos must have the same height and width, got {first.shape[1:3]} and "
                         f"{second.shape[1:3]}: resize one of them")
    f = pipeline.temporal_factor
    a, b = (int(c) for c in context)
    if a < 1 or b < 1:
        raise ValueError(f"connect needs at least 1 given latent frame at each end, got context {context}")
    request = _request(pipeline, request, overrides, *first.shape[1:3])
    shape = _check_size(pipeline, request, first, "first video")
    n = shape[0]
    head_span, tail_span = pixel_frames_for_latents(a, f), 1 + f * b
    first = fit_frames(first, f, head_span, "first video")
    second = fit_frames(second, f, tail_span, "second video")
    latent = np.zeros(shape, np.float32)
    latent[:a] = pipeline.encode(first[-head_span:])
    if n - b > a:  # otherwise validate_mask says that nothing is left to generate
        latent[n - b:] = pipeline.encode(second[:tail_span])[1:]
    window, z = _generate(pipeline, prompt, request, Conditioning(latent, first_and_last_mask(n, a, b)), negative_prompt)
    total = window.shape[0]
    given = _frames_mask(window, slice(0, head_span)) | _frames_mask(window, slice(total - f * b, total))
    reference = _reference(window, slice(0, head_span), first[-head_span:])
    reference[total - f * b:] = to_uint8(second[1:tail_span])
    joined = np.concatenate([to_uint8(first), window[head_span: total - f * b - 1], to_uint8(second)])
    return Prompted(joined, window, given, reference, z)


def loop(pipeline: Pipeline, prompt: str, video: np.ndarray | None = None, request: SampleRequest | None = None,
         negative_prompt: str | None = None, context: int = 1, **overrides: Any) -> Prompted:
    """A seamless loop: `video` (generated from the prompt when None) connected back to its own start.

    The result's `video` is the input followed by the transition's new frames; played on repeat,
    its last frame leads into its first as any frame leads into the next (see `loop_seam`).
    `context`: latent frames of the clip's start (4 frames each) that the transition leads into.
    More of them anchor the transition's look to the clip (in a 17-frame window, 2 instead of 1 cut
    the seam's jump on world clips by 30-43%) but leave fewer frames to generate.
    """
    if context < 1:
        raise ValueError(f"a loop needs at least 1 latent frame of the clip's start to lead into, got context {context}")
    if video is None:
        video = pipeline.generate([prompt], request, negative_prompt=negative_prompt, **overrides)[0]
    video = as_video(video)
    result = connect(pipeline, prompt, video, video, request, (1, context), negative_prompt, **overrides)
    f = pipeline.temporal_factor
    new_frames = result.window[1: result.window.shape[0] - f * context - 1]
    fitted = to_uint8(fit_frames(video, f, 1 + f * context, "video"))
    return Prompted(np.concatenate([fitted, new_frames]), result.window, result.given, result.reference,
                    result.latent)


def edit(pipeline: Pipeline, prompt: str, video: np.ndarray, strength: float, request: SampleRequest | None = None,
         negative_prompt: str | None = None, **overrides: Any) -> Prompted:
    """SDEdit: the input's latents noised to t = strength, then denoised with `prompt`.

    strength 0 returns the input's latents unchanged (the autoencoder's round trip in pixels);
    strength 1 is ordinary generation with the same seed.
    """
    video = fit_frames(as_video(video), pipeline.temporal_factor, 1, "video")
    request = _request(pipeline, request, overrides, *video.shape[1:3])
    request = dataclasses.replace(request, frames=video.shape[0])
    _check_size(pipeline, request, video, "video")
    window, z = _generate(pipeline, prompt, request, None, negative_prompt, edit=pipeline.encode(video),
                       strength=strength)
    return Prompted(window, window, np.zeros(window.shape[:3], bool), np.zeros_like(window), z)


def box_mask(frames: int, height: int, width: int, box: tuple[int, int, int, int],
             frame_range: tuple[int, int] | None = None) -> np.ndarray:
    """Pixel mask [T, H, W], True inside `box` = (top, left, bottom, right) on frames [start, stop)."""
    top, left, bottom, right = (int(v) for v in box)
    if not (0 <= top < bottom <= height and 0 <= left < right <= width):
        raise ValueError(f"box {tuple(box)} (top, left, bottom, right) must lie inside the {height}x{width} frame "
                         "and have positive size")
    start, stop = (0, frames) if frame_range is None else (int(frame_range[0]), int(frame_range[1]))
    if not 0 <= start < stop <= frames:
        raise ValueError(f"frame range [{start}, {stop}) must lie inside the video's {frames} frames")
    mask = np.zeros((frames, height, width), bool)
    mask[start:stop, top:bottom, left:right] = True
    return mask


def _latent_mask_to_pixels(mask: np.ndarray, spatial_factor: int, temporal_factor: int) -> np.ndarray:
    frames = np.concatenate([mask[:1]] + [np.repeat(mask[j:j + 1], temporal_factor, 0) for j in range(1, len(mask))])
    return einops.repeat(frames, "t h w -> t (h s1) (w s2)", s1=spatial_factor, s2=spatial_factor)


def inpaint(pipeline: Pipeline, prompt: str, video: np.ndarray, regenerate: np.ndarray,
            request: SampleRequest | None = None, negative_prompt: str | None = None, **overrides: Any) -> Prompted:
    """Regenerates the pixels where `regenerate` [T, H, W] is True, given the rest.

    The given region shrinks to whole tokens (16x16 pixels and one latent frame with the
    tiny models); `video` of the result composites the input's own pixels over the given region.
    """
    video = fit_frames(as_video(video), pipeline.temporal_factor, 1, "video")
    regenerate = np.asarray(regenerate, bool)[: video.shape[0]]
    if regenerate.shape != video.shape[:3]:
        raise ValueError(f"the mask is {regenerate.shape} but the video is {video.shape[:3]}: give one flag per "
                         "pixel of every frame (see box_mask)")
    request = dataclasses.replace(_request(pipeline, request, overrides, *video.shape[1:3]), frames=video.shape[0])
    shape = _check_size(pipeline, request, video, "video")
    latent_mask = pixel_mask_to_latent(~regenerate, pipeline.spatial_factor, pipeline.temporal_factor)
    condition = Conditioning(pipeline.encode(video), latent_mask).checked(shape, pipeline.patch)
    if not condition.mask.any():
        token = pipeline.spatial_factor * max(pipeline.patch[1:])
        raise ValueError(f"no whole token ({token}x{token} pixels, one latent frame) of the kept region is given, so "
                         "the input would be ignored: keep a larger region, aligned to multiples of "
                         f"{token} pixels")
    window, z = _generate(pipeline, prompt, request, condition, negative_prompt)
    given = _latent_mask_to_pixels(condition.mask, pipeline.spatial_factor, pipeline.temporal_factor)
    reference = np.where(given[..., None], to_uint8(video), 0).astype(np.uint8)
    composite = np.where(given[..., None], to_uint8(video), window).astype(np.uint8)
    return Prompted(composite, window, given, reference, z)


def outpaint(pipeline: Pipeline, prompt: str, video: np.ndarray, height: int, width: int,
             top: int | None = None, left: int | None = None, request: SampleRequest | None = None,
             negative_prompt: str | None = None, **overrides: Any) -> Prompted:
    """Places `video` on a larger height x width canvas (centred unless top/left) and generates the rest."""
    video = fit_frames(as_video(video), pipeline.temporal_factor, 1, "video")
    frames, h, w = video.shape[:3]
    top = (height - h) // 2 if top is None else int(top)
    left = (width - w) // 2 if left is None else int(left)
    if not (0 <= top and 0 <= left and top + h <= height and left + w <= width):
        raise ValueError(f"a {h}x{w} video at (top={top}, left={left}) does not fit a {height}x{width} canvas: "
                         "make the canvas larger than the video")
    canvas = np.zeros((frames, height, width, 3), np.float32)
    canvas[:, top:top + h, left:left + w] = video
    keep = box_mask(frames, height, width, (top, left, top + h, left + w))
    return inpaint(pipeline, prompt, canvas, ~keep, request, negative_prompt, **overrides)
