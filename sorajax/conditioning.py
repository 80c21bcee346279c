"""Frame masks for every prompting mode: which latent positions are given clean.

One mechanism serves image-to-video, extending forward or backward, connecting two
videos, loops and inpainting: a boolean mask over the latent grid `[t, h, w]` (True =
given). Given positions are packed as clean tokens (per-token t = 0, out of the loss)
and the samplers hold them at their values at every step; the rest is generated.

Decisions:
- Masks live in LATENT space. With the causal autoencoder, latent frame 0 encodes pixel
  frame 0 alone and latent frame j >= 1 encodes pixel frames f(j-1)+1 .. fj (f = the
  temporal factor, 4): the first k latent frames cover `1 + f(k-1)` pixel frames
  (`pixel_frames_for_latents`). Converting a pixel mask keeps a latent position given
  only if EVERY pixel it covers is given (`pixel_mask_to_latent`).
- A token is given iff every latent element of its patch is given (the rule of
  `sorajax.patches.pack`). `align_to_tokens` applies that rule to a mask, so what a
  mask says is given is exactly what the sampler holds clean.
- A mask must leave at least one token to generate; `validate_mask` says so otherwise.
- Training mixes masks in at random (`MaskRates`, `sample_training_mask`): each sample
  gets at most one mode, drawn with the configured probabilities; with all rates 0 no
  sample is masked. Frame modes need a video (t >= 2, connect t >= 3); spatial regions
  (inpainting / outpainting) apply to images too.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Mapping, Sequence

import einops
import numpy as np

from sorajax.config_dataclasses import from_mapping
from sorajax.patches import DEFAULT_PATCH, check_patch, patch_grid

TRAINING_MODES: tuple[str, ...] = (
    "image_to_video", "extend_forward", "extend_backward", "connect", "random_frames", "inpaint",
)


# ---- pixel frames <-> latent frames --------------------------------------------------------------
def pixel_frames_for_latents(num_latents: int, temporal_factor: int) -> int:
    """Pixel frames covered by the first `num_latents` latent frames: 1 + f (k - 1)."""
    if num_latents < 1:
        raise ValueError(f"need at least 1 latent frame, got {num_latents}")
    return 1 + temporal_factor * (num_latents - 1)


def latent_frame_spans(num_latents: int, temporal_factor: int) -> list[tuple[int, int]]:
    """[start, stop) pixel frames of each latent frame: (0, 1), (1, 1 + f), (1 + f, 1 + 2f), ..."""
    return [(0, 1)] + [(1 + temporal_factor * (j - 1), 1 + temporal_factor * j) for j in range(1, num_latents)]


# ---- masks for each mode (latent frames) ----------------------------------------------------------
def _check_frames(num_frames: int, what: str) -> None:
    if num_frames < 1:
        raise ValueError(f"{what}: the latent has {num_frames} frames; it needs at least 1")


def first_frames_mask(num_frames: int, count: int = 1) -> np.ndarray:
    """Frames [t]: the first `count` latent frames given (count = 1 is image-to-video)."""
    _check_frames(num_frames, "first_frames_mask")
    mask = np.zeros(num_frames, bool)
    mask[: max(count, 0)] = True
    return mask


def last_frames_mask(num_frames: int, count: int = 1) -> np.ndarray:
    """Frames [t]: the last `count` latent frames given (extend backward)."""
    _check_frames(num_frames, "last_frames_mask")
    mask = np.zeros(num_frames, bool)
    if count > 0:
        mask[-count:] = True
    return mask


def first_and_last_mask(num_frames: int, first: int = 1, last: int = 1) -> np.ndarray:
    """Frames [t]: the first `first` and last `last` latent frames given (connect, loop)."""
    return first_frames_mask(num_frames, first) | last_frames_mask(num_frames, last)


def frames_mask(num_frames: int, indices: Sequence[int]) -> np.ndarray:
    """Frames [t]: the listed latent frames given (keyframes)."""
    _check_frames(num_frames, "frames_mask")
    mask = np.zeros(num_frames, bool)
    for i in indices:
        if not -num_frames <= int(i) < num_frames:
            raise ValueError(f"latent frame {i} is outside a latent of {num_frames} frames; use 0..{num_frames - 1}")
        mask[int(i)] = True
    return mask


def region_mask(latent_shape: Sequence[int], box: Sequence[int], frames: Sequence[int] | None = None,
                inpaint: bool = True) -> np.ndarray:
    """[t, h, w] mask for a box (top, left, bottom, right) in latent units on the latent `frames` (None: all).

    inpaint=True regenerates the box (everything else given); False (outpainting) gives only the box.
    """
    t, h, w = (int(s) for s in latent_shape[:3])
    top, left, bottom, right = (int(v) for v in box)
    if not (0 <= top < bottom <= h and 0 <= left < right <= w):
        raise ValueError(f"box {tuple(box)} (top, left, bottom, right) must lie inside the latent {h}x{w} and "
                         "have positive size; pixel boxes are divided by the autoencoder's spatial factor")
    inside = np.zeros((t, h, w), bool)
    chosen = np.ones(t, bool) if frames is None else frames_mask(t, frames)
    inside[chosen, top:bottom, left:right] = True
    # Frames not chosen are given entirely (inpaint) or not at all (outpaint).
    return ~inside if inpaint else inside


def as_latent_mask(mask: np.ndarray, latent_shape: Sequence[int]) -> np.ndarray:
    """A frame mask [t] or position mask [t, h, w] as bool [t, h, w]; a ValueError on any other shape."""
    t, h, w = (int(s) for s in latent_shape[:3])
    mask = np.asarray(mask, bool)
    if mask.shape == (t,):
        return einops.repeat(mask, "t -> t h w", h=h, w=w)
    if mask.shape != (t, h, w):
        raise ValueError(f"mask has shape {mask.shape}; a latent {(t, h, w)} needs {(t,)} (frames) or {(t, h, w)}")
    return mask


def align_to_tokens(mask: np.ndarray, latent_shape: Sequence[int], patch: Sequence[int] = DEFAULT_PATCH) -> np.ndarray:
    """[t, h, w]: a position stays given only if its whole patch is given (what `pack` holds clean)."""
    pt, ph, pw = check_patch(patch)
    mask = as_latent_mask(mask, latent_shape)
    t = mask.shape[0]
    padded = np.concatenate([mask, np.repeat(mask[-1:], -t % pt, axis=0)], axis=0)  # pack pads with the last frame
    per_token = einops.reduce(padded, "(t pt) (h ph) (w pw) -> t h w", "min", pt=pt, ph=ph, pw=pw)
    full = einops.repeat(per_token, "t h w -> (t pt) (h ph) (w pw)", pt=pt, ph=ph, pw=pw)
    return full[:t]


def token_mask(mask: np.ndarray, latent_shape: Sequence[int], patch: Sequence[int] = DEFAULT_PATCH) -> np.ndarray:
    """[gt, gh, gw] bool: which tokens are given."""
    pt, ph, pw = check_patch(patch)
    aligned = align_to_tokens(mask, latent_shape, patch)
    padded = np.concatenate([aligned, np.repeat(aligned[-1:], -aligned.shape[0] % pt, axis=0)], axis=0)
    return padded[::pt, ::ph, ::pw]


def validate_mask(mask: np.ndarray, latent_shape: Sequence[int], patch: Sequence[int] = DEFAULT_PATCH) -> np.ndarray:
    """The token-aligned [t, h, w] mask, or a ValueError if it leaves nothing to generate."""
    patch_grid(latent_shape, patch)  # raises on sizes the patch does not fit
    tokens = token_mask(mask, latent_shape, patch)
    if tokens.all():
        raise ValueError(
            f"the conditioning mask gives all {tokens.size} tokens of the latent {tuple(latent_shape[:3])}, so "
            "nothing is left to generate: ask for more frames than you give (e.g. --frames larger than the "
            "input), give fewer context frames, or regenerate a larger region"
        )
    return align_to_tokens(mask, latent_shape, patch)


def pixel_mask_to_latent(given: np.ndarray, spatial_factor: int, temporal_factor: int) -> np.ndarray:
    """Pixel mask [T, H, W] (True = given) -> latent [t, h, w]: given only where every covered pixel is."""
    given = np.asarray(given, bool)
    if given.ndim != 3:
        raise ValueError(f"a pixel mask must be [T, H, W], got shape {given.shape}")
    frames, height, width = given.shape
    if (frames - 1) % temporal_factor or height % spatial_factor or width % spatial_factor:
        raise ValueError(f"pixel mask {given.shape} must have 1 + {temporal_factor}k frames and sides divisible by "
                         f"{spatial_factor} (the autoencoder's factors), like the video it masks")
    latents = 1 + (frames - 1) // temporal_factor
    per_frame = [given[a:b].all(axis=0) for a, b in latent_frame_spans(latents, temporal_factor)]
    return einops.reduce(np.stack(per_frame), "t (h s1) (w s2) -> t h w", "min", s1=spatial_factor, s2=spatial_factor)


# ---- training-time masks --------------------------------------------------------------------------
@dataclasses.dataclass(frozen=True)
class MaskRates:
    """Probability that a training sample gets each conditioning mode (at most one per sample).

    `max_given_fraction` caps the share of latent frames given by the frame modes.
    """

    image_to_video: float = 0.0
    extend_forward: float = 0.0
    extend_backward: float = 0.0
    connect: float = 0.0
    random_frames: float = 0.0
    inpaint: float = 0.0
    max_given_fraction: float = 0.5

    def __post_init__(self) -> None:
        for name in TRAINING_MODES:
            value = getattr(self, name)
            if not 0.0 <= value <= 1.0:
                raise ValueError(f"conditioning rate {name}={value} must be in [0, 1]")
        if self.total > 1.0 + 1e-9:
            raise ValueError(f"conditioning rates sum to {self.total:.3f} > 1: each sample gets at most one mode, "
                             "so lower them (e.g. ~0.35 in total)")
        if not 0.0 < self.max_given_fraction < 1.0:
            raise ValueError(f"max_given_fraction={self.max_given_fraction} must be in (0, 1)")

    @property
    def total(self) -> float:
        return float(sum(getattr(self, name) for name in TRAINING_MODES))

    @classmethod
    def from_mapping(cls, values: Mapping[str, Any] | None) -> "MaskRates":
        """From a dict or ConfigDict (e.g. `config.conditioning`), naming any unknown key."""
        return cls() if values is None else from_mapping(cls, values, "conditioning")


def _draw_mode(rng: np.random.Generator, rates: MaskRates) -> str | None:
    u = rng.random()
    for name in TRAINING_MODES:
        u -= getattr(rates, name)
        if u < 0:
            return name
    return None


def _frame_mode_mask(rng: np.random.Generator, mode: str, gt: int, rates: MaskRates) -> np.ndarray | None:
    """Mask over the gt token frames for a frame mode, or None where the mode does not apply."""
    most = max(1, min(gt - 1, int(np.floor(rates.max_given_fraction * gt))))
    if mode == "image_to_video":
        return first_frames_mask(gt, 1) if gt >= 2 else None
    if mode == "extend_forward":
        return first_frames_mask(gt, int(rng.integers(1, most + 1))) if gt >= 2 else None
    if mode == "extend_backward":
        return last_frames_mask(gt, int(rng.integers(1, most + 1))) if gt >= 2 else None
    if mode == "connect":
        if gt < 3:
            return None
        first = int(rng.integers(1, max(1, most - 1) + 1))
        last = int(rng.integers(1, max(1, min(most - first, gt - 1 - first)) + 1))
        return first_and_last_mask(gt, first, last)
    if mode == "random_frames":
        if gt < 2:
            return None
        chosen = rng.choice(gt, size=int(rng.integers(1, most + 1)), replace=False)
        return frames_mask(gt, chosen)
    raise ValueError(f"unknown frame mode {mode!r}")


def _region_token_mask(rng: np.random.Generator, grid: tuple[int, int, int]) -> np.ndarray | None:
    """[gt, gh, gw] token mask: a random box regenerated (inpaint) or kept (outpaint), half and half."""
    gt, gh, gw = grid
    if gh * gw < 2:
        return None
    box_h = int(rng.integers(max(1, gh // 4), max(1, (3 * gh) // 4) + 1))
    box_w = int(rng.integers(max(1, gw // 4), max(1, (3 * gw) // 4) + 1))
    if box_h == gh and box_w == gw:
        box_w -= 1 if gw > 1 else 0
        box_h -= 1 if box_w == gw else 0
    top, left = int(rng.integers(0, gh - box_h + 1)), int(rng.integers(0, gw - box_w + 1))
    return region_mask(grid, (top, left, top + box_h, left + box_w), inpaint=bool(rng.random() < 0.5))


def sample_training_mask(rng: np.random.Generator, latent_shape: Sequence[int], rates: MaskRates,
                         patch: Sequence[int] = DEFAULT_PATCH) -> np.ndarray | None:
    """A random token-aligned [t, h, w] mask for one training sample, or None (no conditioning).

    Draws nothing from `rng` when all rates are 0, so an unmasked data stream is unchanged.
    """
    if rates.total == 0.0:
        return None
    mode = _draw_mode(rng, rates)
    if mode is None:
        return None
    grid = patch_grid(latent_shape, patch)
    if mode == "inpaint":
        tokens = _region_token_mask(rng, grid)
    else:
        frames = _frame_mode_mask(rng, mode, grid[0], rates)
        tokens = None if frames is None else einops.repeat(frames, "t -> t h w", h=grid[1], w=grid[2])
    if tokens is None or tokens.all() or not tokens.any():
        return None
    pt, ph, pw = check_patch(patch)
    full = einops.repeat(tokens, "t h w -> (t pt) (h ph) (w pw)", pt=pt, ph=ph, pw=pw)
    return full[: int(latent_shape[0])]


# ---- what a sampling call is given ------------------------------------------------------------------
@dataclasses.dataclass(frozen=True)
class Conditioning:
    """Clean latents given to one sample: `latent` [t, h, w, c] (normalised; values where `mask` is False
    are ignored) and `mask` [t] or [t, h, w] (True = given)."""

    latent: np.ndarray
    mask: np.ndarray

    def checked(self, latent_shape: Sequence[int], patch: Sequence[int]) -> "Conditioning":
        """This conditioning with a token-aligned [t, h, w] mask, or a ValueError naming the problem."""
        latent = np.asarray(self.latent, np.float32)
        if latent.shape != tuple(latent_shape):
            raise ValueError(f"given latents have shape {latent.shape} but the sample is {tuple(latent_shape)}: "
                             "encode the conditioning video at the size and length you generate")
        return Conditioning(latent, validate_mask(self.mask, latent_shape, patch))
