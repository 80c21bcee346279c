"""Spacetime patches and NaViT-style "patch n' pack": latents of any size -> one fixed-shape `PackedBatch`.

Why: the denoiser trains on videos and images at their native duration, resolution and aspect
ratio. Every latent `[t, h, w, c]` is cut into patches `(pt, ph, pw)`; each patch is one token that
keeps its integer grid position `(t, h, w)` (for 3D RoPE). Several samples then share one row of
fixed length L, so a jitted step compiles once for `[B, L]` no matter how the sizes mix.

Decisions (the contract other modules rely on):
- Token layout: `(t pt) (h ph) (w pw) c -> (t h w) (pt ph pw c)`: tokens are t-major, then h, then
  w; features are patch-time-major, channel last. Positions are patch-grid indices in that order.
- Time padding: a latent whose frame count is not a multiple of `pt` (an image, t = 1, with pt = 2)
  is padded by repeating its last frame; `unpatchify` is given the real shape and crops it back.
  Height and width are never padded: a non-multiple is a ValueError naming the size to use.
- Conditioning: `Sample.cond_mask` marks latent positions given clean (`[t, h, w]`, or `[t]` for
  whole frames). A token is conditioning iff EVERY latent element of its patch is given (padded
  frames copy the last frame's mask). Conditioning tokens get `t = 0` and `loss_mask = False`.
- Noise level before the trainer sets it: the trainer draws `t`; until then `pack` writes `Sample.t` (a scalar or
  one value per token) on generated tokens, or 1.0 when it is None; conditioning and padding get 0.
- Text: the kept caption tokens (`text_mask` True, in order) are packed into text rows of length
  `text_len` with the same segment id as the sample's video tokens; 0 marks text padding.
- Rows: greedy first-fit-decreasing on (tokens, text) sizes; a row is full when either does not fit.
  Within a row, segments are in input order and numbered 1..n. Everything is deterministic.
- `PackedBatch` holds numpy arrays from `pack` (put it on devices with `jax.device_put`); the
  host-only `PackLayout` says where each input sample went, which is all `unpack` needs.
"""

from __future__ import annotations

import dataclasses
from typing import Sequence

import einops
import jax
import jax.numpy as jnp
import numpy as np
from flax import struct

Patch = tuple[int, int, int]
DEFAULT_PATCH: Patch = (1, 2, 2)
_TOKENS = "(t pt) (h ph) (w pw) c -> (t h w) (pt ph pw c)"
_LATENT = "(t h w) (pt ph pw c) -> (t pt) (h ph) (w pw) c"
# Logical names of each PackedBatch field's dimensions: rows over data/fsdp, tokens over sequence.
PACKED_BATCH_AXES: dict[str, tuple[str | None, ...]] = {
    "tokens": ("batch", "length", "patch"),
    "positions": ("batch", "length", None),
    "segment_ids": ("batch", "length"),
    "t": ("batch", "length"),
    "loss_mask": ("batch", "length"),
    "text": ("batch", "text_length", "text_embed"),
    "text_segment_ids": ("batch", "text_length"),
}


def packed_batch_axes(path: tuple, leaf: object) -> tuple[str | None, ...]:
    """The logical names of a PackedBatch leaf (a `names_for` for `sorajax.parallel.sharding`)."""
    return PACKED_BATCH_AXES[path[-1].name]


def check_patch(patch: Sequence[int]) -> Patch:
    """Validates a patch size and returns it as a tuple of three positive ints."""
    values = tuple(int(p) for p in patch)
    if len(values) != 3 or any(p < 1 for p in values):
        raise ValueError(f"patch must be three positive ints (pt, ph, pw), got {tuple(patch)}; e.g. (1, 2, 2)")
    return values  # type: ignore[return-value]


def patch_grid(latent_shape: Sequence[int], patch: Sequence[int] = DEFAULT_PATCH) -> tuple[int, int, int]:
    """Patch-grid size (gt, gh, gw) of a latent `[t, h, w, ...]`; time is rounded up (it gets padded)."""
    pt, ph, pw = check_patch(patch)
    if len(latent_shape) < 3:
        raise ValueError(f"latent shape must start with (t, h, w), got {tuple(latent_shape)}")
    t, h, w = (int(s) for s in latent_shape[:3])
    if t < 1:
        raise ValueError(f"latent has {t} frames; it needs at least 1 (an image is a 1-frame latent)")
    for name, size, step in (("height", h, ph), ("width", w, pw)):
        if size < step or size % step:
            fixed = max(step, size - size % step)
            raise ValueError(
                f"latent {name} {size} is not a multiple of the patch {name} {step}: crop or resize the input so its "
                f"latent {name} is a multiple of {step} (e.g. {fixed}; in pixels, a multiple of {step} x the VAE's "
                f"spatial factor)"
            )
    return -(-t // pt), h // ph, w // pw


def num_patches(latent_shape: Sequence[int], patch: Sequence[int] = DEFAULT_PATCH) -> int:
    """Token count of a latent without patchifying it (what a data pipeline needs to plan rows)."""
    gt, gh, gw = patch_grid(latent_shape, patch)
    return gt * gh * gw


def grid_positions(grid: Sequence[int]) -> np.ndarray:
    """int32 `[gt*gh*gw, 3]` patch-grid indices (t, h, w) in token order (t-major, then h, then w)."""
    axes = np.meshgrid(*(np.arange(g, dtype=np.int32) for g in grid), indexing="ij")
    return einops.rearrange(np.stack(axes, axis=-1), "t h w three -> (t h w) three")


def _pad_time(latent, pt: int):
    """Repeats the last frame until the frame count is a multiple of pt (numpy or jax input)."""
    missing = -latent.shape[0] % pt
    if not missing:
        return latent
    xp = jnp if isinstance(latent, jax.Array) else np
    return xp.concatenate([latent, einops.repeat(latent[-1:], "1 ... -> n ...", n=missing)], axis=0)


def patchify(latent, patch: Sequence[int] = DEFAULT_PATCH) -> tuple[np.ndarray, np.ndarray]:
    """Latent `[t, h, w, c]` -> (tokens `[N, pt*ph*pw*c]`, int32 positions `[N, 3]`).

    Works on numpy or jax arrays (tokens keep the input's array type). Time is padded by repeating the
    last frame; pass the real shape to `unpatchify` to crop it back.
    """
    if latent.ndim != 4:
        raise ValueError(f"patchify expects one latent [t, h, w, c], got shape {tuple(latent.shape)}; loop over a batch")
    grid = patch_grid(latent.shape, patch)
    pt, ph, pw = check_patch(patch)
    tokens = einops.rearrange(_pad_time(latent, pt), _TOKENS, pt=pt, ph=ph, pw=pw)
    return tokens, grid_positions(grid)


def unpatchify(tokens, latent_shape: Sequence[int], patch: Sequence[int] = DEFAULT_PATCH):
    """Exact inverse of `patchify`: tokens `[N, P]` -> latent `[t, h, w, c]` with the REAL (unpadded) t.

    `latent_shape` is the original `(t, h, w)` or `(t, h, w, c)`; the channel count comes from the token
    width, so a model that predicts a different number of channels per patch still unpatchifies.
    """
    pt, ph, pw = check_patch(patch)
    gt, gh, gw = patch_grid(latent_shape, patch)
    if tokens.ndim != 2 or tokens.shape[0] != gt * gh * gw:
        raise ValueError(
            f"tokens of shape {tuple(tokens.shape)} do not fit latent shape {tuple(latent_shape)} with patch "
            f"{(pt, ph, pw)}: expected [{gt * gh * gw}, P]; pass the shape the tokens were patchified from"
        )
    if tokens.shape[1] % (pt * ph * pw):
        raise ValueError(f"token width {tokens.shape[1]} is not a multiple of pt*ph*pw = {pt * ph * pw}: wrong patch size?")
    latent = einops.rearrange(tokens, _LATENT, t=gt, h=gh, w=gw, pt=pt, ph=ph, pw=pw)
    return latent[: int(latent_shape[0])]


@dataclasses.dataclass(frozen=True)
class Sample:
    """One video or image to pack: its latent, caption embeddings and what is given clean.

    latent: float `[t, h, w, c]` (an image has t = 1).
    text: caption embeddings `[Lt, D]`; `text_mask` `[Lt]` bool keeps the real tokens (None: all real).
    cond_mask: bool `[t, h, w]` latent positions given clean, or `[t]` for whole frames (None: none).
    t: noise level for the generated tokens: a scalar, `[N]` per token (patchify order), or None (1.0).
    """

    latent: np.ndarray
    text: np.ndarray
    text_mask: np.ndarray | None = None
    cond_mask: np.ndarray | None = None
    t: float | np.ndarray | None = None

    def num_tokens(self, patch: Sequence[int] = DEFAULT_PATCH) -> int:
        return num_patches(np.shape(self.latent), patch)

    def num_text(self) -> int:
        return int(np.shape(self.text)[0] if self.text_mask is None else np.count_nonzero(self.text_mask))


@struct.dataclass
class PackedBatch:
    """What the denoiser sees: B rows of L tokens, several samples per row (see module docstring)."""

    tokens: np.ndarray  # [B, L, P] float32
    positions: np.ndarray  # [B, L, 3] int32 patch-grid (t, h, w)
    segment_ids: np.ndarray  # [B, L] int32, 0 = padding, 1..n = sample within the row
    t: np.ndarray  # [B, L] float32 noise level per token, 0 on conditioning and padding
    loss_mask: np.ndarray  # [B, L] bool, generated tokens only
    text: np.ndarray  # [B, Lt, D] float32
    text_segment_ids: np.ndarray  # [B, Lt] int32, same ids as the video tokens, 0 = padding


@dataclasses.dataclass(frozen=True)
class SegmentLayout:
    """Where one input sample lives in a packed batch."""

    sample_index: int  # index into the list given to `pack`
    row: int
    segment_id: int  # 1..n within the row
    token_start: int
    num_tokens: int
    text_start: int
    num_text: int
    latent_shape: tuple[int, int, int, int]  # real (t, h, w, c), before time padding
    grid: tuple[int, int, int]  # patch grid (gt, gh, gw)

    @property
    def frames(self) -> int:
        """Real latent time length (the padded one is grid[0] * pt)."""
        return self.latent_shape[0]


@dataclasses.dataclass(frozen=True)
class PackLayout:
    """Host-side record of a `pack` call; not part of the device pytree."""

    segments: tuple[SegmentLayout, ...]  # in input sample order
    num_rows: int
    seq_len: int
    text_len: int
    patch: Patch

    def row_segments(self, row: int) -> list[SegmentLayout]:
        """The segments of one row, in segment-id order."""
        return sorted((s for s in self.segments if s.row == row), key=lambda s: s.segment_id)

    @property
    def max_segments(self) -> int:
        """Most samples in any row (a static bound for per-segment arrays on device)."""
        counts = np.bincount([s.row for s in self.segments], minlength=self.num_rows)
        return int(counts.max()) if counts.size else 0


def plan_rows(
    token_counts: Sequence[int],
    text_counts: Sequence[int],
    seq_len: int,
    text_len: int,
    rows: int | None = None,
) -> list[list[int]]:
    """First-fit-decreasing assignment of items to rows; returns each row's item indices, ascending.

    An item fits a row when both its tokens and its text tokens fit what is left. Items are placed
    largest first (ties: more text first, then lower index), so the plan is deterministic. With `rows`,
    exactly that many rows are returned (trailing ones may be empty) or a ValueError says what to change.
    """
    if len(token_counts) != len(text_counts):
        raise ValueError(f"got {len(token_counts)} token counts but {len(text_counts)} text counts; give one of each per item")
    if seq_len < 1 or text_len < 0:
        raise ValueError(f"seq_len must be >= 1 and text_len >= 0, got seq_len={seq_len}, text_len={text_len}")
    for i, (n, m) in enumerate(zip(token_counts, text_counts)):
        if n < 1 or m < 0:
            raise ValueError(f"item {i} has {n} tokens and {m} text tokens; every item needs >= 1 token and >= 0 text")
        if n > seq_len:
            raise ValueError(f"item {i} has {n} tokens but seq_len is {seq_len}: raise seq_len to at least {n} or lower its resolution/duration")
        if m > text_len:
            raise ValueError(f"item {i} has {m} text tokens but text_len is {text_len}: raise text_len to at least {m} or shorten its caption")
    order = sorted(range(len(token_counts)), key=lambda i: (-token_counts[i], -text_counts[i], i))
    free_tokens: list[int] = []
    free_text: list[int] = []
    members: list[list[int]] = []
    for i in order:
        n, m = token_counts[i], text_counts[i]
        row = next((r for r in range(len(members)) if free_tokens[r] >= n and free_text[r] >= m), None)
        if row is None:
            row = len(members)
            members.append([])
            free_tokens.append(seq_len)
            free_text.append(text_len)
        members[row].append(i)
        free_tokens[row] -= n
        free_text[row] -= m
    if rows is not None:
        if len(members) > rows:
            raise ValueError(
                f"{len(token_counts)} samples ({sum(token_counts)} tokens, {sum(text_counts)} text tokens) need "
                f"{len(members)} rows of seq_len={seq_len}, text_len={text_len} by first-fit-decreasing, but rows={rows}: "
                f"raise seq_len or rows, or lower the resolution/duration (or pack fewer samples)"
            )
        members.extend([] for _ in range(rows - len(members)))
    return [sorted(row) for row in members]


@dataclasses.dataclass(frozen=True)
class _Patched:
    """One sample cut into tokens, with per-token conditioning and noise level."""

    tokens: np.ndarray
    positions: np.ndarray
    is_cond: np.ndarray
    t: np.ndarray
    text: np.ndarray
    latent_shape: tuple[int, int, int, int]
    grid: tuple[int, int, int]


def _token_cond_mask(cond_mask, latent_shape: Sequence[int], patch: Patch, index: int) -> np.ndarray:
    """Per-token conditioning: True iff every latent element of the patch is given clean."""
    t, h, w = latent_shape[:3]
    n = num_patches(latent_shape, patch)
    if cond_mask is None:
        return np.zeros(n, bool)
    mask = np.asarray(cond_mask, bool)
    if mask.shape == (t,):
        mask = einops.repeat(mask, "t -> t h w", h=h, w=w)
    if mask.shape != (t, h, w):
        raise ValueError(f"sample {index}: cond_mask has shape {mask.shape}; expected {(t, h, w)} (latent positions) or {(t,)} (frames)")
    pt, ph, pw = patch
    per_patch = einops.rearrange(_pad_time(mask, pt), "(t pt) (h ph) (w pw) -> (t h w) (pt ph pw)", pt=pt, ph=ph, pw=pw)
    return per_patch.all(axis=-1)


def _token_noise_level(t, n: int, index: int) -> np.ndarray:
    if t is None:
        return np.ones(n, np.float32)
    values = np.asarray(t, np.float32)
    if values.ndim == 0:
        return np.full(n, values, np.float32)
    if values.shape != (n,):
        raise ValueError(f"sample {index}: t has shape {values.shape}; give a scalar or one value per token, shape {(n,)}")
    return values


def _patch_sample(sample: Sample, patch: Patch, index: int) -> _Patched:
    latent = np.asarray(sample.latent, np.float32)
    if latent.ndim != 4:
        raise ValueError(f"sample {index}: latent must be [t, h, w, c], got shape {latent.shape}; an image is [1, h, w, c]")
    text = np.asarray(sample.text, np.float32)
    if text.ndim != 2:
        raise ValueError(f"sample {index}: text must be caption embeddings [Lt, D], got shape {text.shape}")
    if sample.text_mask is not None:
        text_mask = np.asarray(sample.text_mask, bool)
        if text_mask.shape != text.shape[:1]:
            raise ValueError(f"sample {index}: text_mask has shape {text_mask.shape} but text has {text.shape[0]} tokens; give one flag per token")
        text = text[text_mask]
    try:
        tokens, positions = patchify(latent, patch)
    except ValueError as error:
        raise ValueError(f"sample {index}: {error}") from None
    is_cond = _token_cond_mask(sample.cond_mask, latent.shape, patch, index)
    noise = np.where(is_cond, 0.0, _token_noise_level(sample.t, len(tokens), index)).astype(np.float32)
    return _Patched(tokens, positions, is_cond, noise, text, tuple(latent.shape), patch_grid(latent.shape, patch))


def pack(
    samples: Sequence[Sample],
    seq_len: int,
    text_len: int,
    patch: Sequence[int] = DEFAULT_PATCH,
    rows: int | None = None,
) -> tuple[PackedBatch, PackLayout]:
    """Patchifies samples and packs them into `[rows, seq_len]` token rows and `[rows, text_len]` text rows."""
    if not samples:
        raise ValueError("pack needs at least one sample (the text width D comes from the samples)")
    patch = check_patch(patch)
    patched = [_patch_sample(s, patch, i) for i, s in enumerate(samples)]
    widths = {p.tokens.shape[1] for p in patched}
    dims = {p.text.shape[1] for p in patched}
    if len(widths) > 1 or len(dims) > 1:
        raise ValueError(f"samples disagree on latent channels (token widths {sorted(widths)}) or text width {sorted(dims)}; encode all with one VAE and one text encoder")
    for i, p in enumerate(patched):
        if len(p.tokens) > seq_len:
            raise ValueError(
                f"sample {i} (latent {p.latent_shape}, patch {patch}) has {len(p.tokens)} tokens but seq_len is {seq_len}: "
                f"raise seq_len to at least {len(p.tokens)} or lower that sample's resolution/duration"
            )
    plan = plan_rows([len(p.tokens) for p in patched], [len(p.text) for p in patched], seq_len, text_len, rows)

    batch_rows = len(plan)
    tokens = np.zeros((batch_rows, seq_len, widths.pop()), np.float32)
    positions = np.zeros((batch_rows, seq_len, 3), np.int32)
    segment_ids = np.zeros((batch_rows, seq_len), np.int32)
    noise = np.zeros((batch_rows, seq_len), np.float32)
    loss_mask = np.zeros((batch_rows, seq_len), bool)
    text = np.zeros((batch_rows, text_len, dims.pop()), np.float32)
    text_segment_ids = np.zeros((batch_rows, text_len), np.int32)
    segments: list[SegmentLayout] = []
    for row, members in enumerate(plan):
        start = text_start = 0
        for segment_id, index in enumerate(members, start=1):
            p = patched[index]
            span = slice(start, start + len(p.tokens))
            tokens[row, span], positions[row, span], noise[row, span] = p.tokens, p.positions, p.t
            segment_ids[row, span] = segment_id
            loss_mask[row, span] = ~p.is_cond
            text_span = slice(text_start, text_start + len(p.text))
            text[row, text_span], text_segment_ids[row, text_span] = p.text, segment_id
            segments.append(
                SegmentLayout(index, row, segment_id, start, len(p.tokens), text_start, len(p.text), p.latent_shape, p.grid)
            )
            start, text_start = span.stop, text_span.stop
    batch = PackedBatch(tokens, positions, segment_ids, noise, loss_mask, text, text_segment_ids)
    layout = PackLayout(tuple(sorted(segments, key=lambda s: s.sample_index)), batch_rows, seq_len, text_len, patch)
    return batch, layout


def unpack(tokens, layout: PackLayout) -> list[np.ndarray]:
    """Packed tokens `[B, L, P]` (e.g. the sampler's output) -> one latent `[t, h, w, c]` per input sample, in order."""
    tokens = np.asarray(tokens)
    if tokens.ndim != 3 or tokens.shape[:2] != (layout.num_rows, layout.seq_len):
        raise ValueError(
            f"tokens of shape {tokens.shape} do not match the layout's [{layout.num_rows}, {layout.seq_len}, P]; "
            f"unpack the tokens of the batch this layout came from"
        )
    return [
        unpatchify(tokens[s.row, s.token_start : s.token_start + s.num_tokens], s.latent_shape, layout.patch)
        for s in layout.segments
    ]


def unpack_text(text, layout: PackLayout) -> list[np.ndarray]:
    """Packed text `[B, Lt, D]` -> each sample's kept caption embeddings `[n_i, D]`, in input order."""
    text = np.asarray(text)
    return [text[s.row, s.text_start : s.text_start + s.num_text] for s in layout.segments]


def packing_efficiency(packed: PackedBatch | PackLayout) -> float:
    """Fraction of token slots that hold a sample's token (1.0 = no padding)."""
    if isinstance(packed, PackLayout):
        slots = packed.num_rows * packed.seq_len
        return sum(s.num_tokens for s in packed.segments) / slots if slots else 0.0
    segment_ids = np.asarray(packed.segment_ids)
    return float(np.count_nonzero(segment_ids) / segment_ids.size) if segment_ids.size else 0.0


def segment_positions(segment_ids: jax.Array) -> jax.Array:
    """Index of each token within its segment, `[B, L]` int32 (traceable; segments must be contiguous).

    Padding gets its index within its padding run. Useful for per-sample gathers and debugging.
    """
    segment_ids = jnp.asarray(segment_ids)
    index = jnp.broadcast_to(jnp.arange(segment_ids.shape[-1], dtype=jnp.int32), segment_ids.shape)
    is_start = jnp.concatenate(
        [jnp.ones_like(segment_ids[..., :1], bool), segment_ids[..., 1:] != segment_ids[..., :-1]], axis=-1
    )
    starts = jax.lax.cummax(jnp.where(is_start, index, 0), axis=segment_ids.ndim - 1)
    return index - starts


def segment_sizes(segment_ids: jax.Array, max_segments: int) -> jax.Array:
    """Tokens per segment, `[B, max_segments]` int32; column k counts segment id k + 1 (traceable).

    Why: the noise-level shift grows with each sample's token count; pair with `per_segment_to_tokens`.
    """
    segment_ids = jnp.asarray(segment_ids)
    ids = jnp.arange(1, max_segments + 1, dtype=segment_ids.dtype)
    return jnp.sum(segment_ids[..., None] == ids, axis=-2, dtype=jnp.int32)


def per_segment_to_tokens(values: jax.Array, segment_ids: jax.Array) -> jax.Array:
    """Spreads per-segment values `[B, S]` (column k = segment k + 1) onto tokens `[B, L]`; padding gets 0."""
    values, segment_ids = jnp.asarray(values), jnp.asarray(segment_ids)
    gathered = jnp.take_along_axis(values, jnp.clip(segment_ids - 1, 0, values.shape[-1] - 1), axis=-1)
    return jnp.where(segment_ids > 0, gathered, jnp.zeros_like(gathered))
