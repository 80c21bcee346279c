"""World probes: read colour, shape, motion and framing of the main object from pixels alone.

A generated video of the built-in world should show what its prompt asked for: did the red square
really move left, is it fully in frame? These probes answer from uint8 pixels only, so they can
score any sampler. Per frame: estimate the background colour from the frame border, find the
world's wall (a frame-spanning band of a neutral occluder colour) and drop it, keep pixels far
from the background, label connected blobs and give each a palette colour. The main object is the
colour with the most blob area over the clip (world objects never share a colour); on each frame
its largest blob is the object. A soft coverage map (how far each pixel lies from the background
towards the object colour, as the renderer's antialiasing mixes them) gives a sub-pixel centroid,
an area, and the mask the shape fit uses (see `probe_shapes`).

Measured on ground-truth world clips (one object, 12 frames or a still image, a quarter of them
images, 360 clips over 64x64, 48x80 and 80x48; world defaults: walls in 30% and pans in 20%):
    colour 100%, shape 99.7%, direction 100% (240 videos whose object is in plain view at both
    ends), in-frame flag 100% (329 clips whose object is not within half a pixel of an edge).
    Walls in every clip: colour 100%, shape 99.2%, direction 100%, in-frame 100%.
    Gaussian noise (std 10/255) and blur (sigma 0.7 px): colour 100%, shape 98.9%,
    direction 99.6%, in-frame 97%. Noise 15/255 and blur 1.2 px: colour 99.7%, shape 92.8%,
    direction 99.6%, in-frame 95%.
Shape is the weakest probe: under the 1.2 px blur a fifth of crosses (a small one has 3-pixel arms
at 64x64) read as diamonds. `tests/test_probes.py -s` prints the rates on 72 such clips.
With two objects the probe follows the one with more visible area, which is the scene's first
(front) object only half the time: probe prompts therefore ask for one object.
Chance levels on a balanced prompt set: colour 1/8, shape 1/5, direction 1/9.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Iterable

import numpy as np
from scipy import ndimage

from sorajax.data.world.facts import STILL_THRESHOLD, direction_word
from sorajax.data.world.options import OBJECT_COLOURS, OCCLUDER_COLOURS, SHAPE_NOUNS
from sorajax.eval.probe_shapes import shape_errors
from sorajax.video_io import to_uint8

__all__ = [
    "DIRECTIONS",
    "ObjectTrack",
    "ProbeExpectation",
    "ProbeResult",
    "agreement_rates",
    "classify_colour",
    "find_main_object",
    "motion_direction",
    "probe_video",
    "track_shape",
]

# The world's direction words, in compass order, read from `direction_word` itself, plus "still".
DIRECTIONS: tuple[str, ...] = tuple(
    direction_word(math.cos(math.radians(45.0 * k)), -math.sin(math.radians(45.0 * k))) for k in range(8)
) + ("still",)

# RGB distance from the background above which a pixel is foreground: above texture and noise
# (about 20), below half the smallest object/background contrast (150 / 2).
FOREGROUND_DISTANCE = 45.0
# A blob is an object only if its core colour is this far from the background (half the
# smallest object contrast); fainter blobs are shading or blended edges.
_OBJECT_DISTANCE = 75.0
# A row/column is a wall when this share of it is wall-coloured foreground.
_WALL_SHARE = 0.6
_WALL_GROWTH = 2  # pixels a wall may grow over its blended edge
_BLEND_TOLERANCE = 35.0  # RGB distance from the wall-background colour line that still counts as a blend
_MIN_BLOB_SHARE = 1e-3  # blobs below this share of the frame (or 4 pixels) are specks
# Lightness counts half in colour distances: generated colours drift in brightness more than hue.
_LIGHTNESS_WEIGHT = 0.5
_SHAPE_FRAMES = 3  # frames whose shape fits are pooled


def _lab(rgb: np.ndarray) -> np.ndarray:
    """sRGB (0..255, any leading shape) -> CIE L*a*b* under D65."""
    c = np.asarray(rgb, np.float64) / 255.0
    linear = np.where(c <= 0.04045, c / 12.92, ((c + 0.055) / 1.055) ** 2.4)
    to_xyz = np.array([[0.4124, 0.3576, 0.1805], [0.2126, 0.7152, 0.0722], [0.0193, 0.1192, 0.9505]])
    xyz = linear @ to_xyz.T / np.array([0.95047, 1.0, 1.08883])
    eps = (6.0 / 29.0) ** 3
    f = np.where(xyz > eps, np.cbrt(xyz), xyz / (3.0 * (6.0 / 29.0) ** 2) + 4.0 / 29.0)
    lightness = 116.0 * f[..., 1] - 16.0
    return np.stack([lightness, 500.0 * (f[..., 0] - f[..., 1]), 200.0 * (f[..., 1] - f[..., 2])], -1)


_OBJECT_NAMES = tuple(OBJECT_COLOURS)
_OBJECT_LAB = _lab(np.array(list(OBJECT_COLOURS.values())))
_REFERENCE_LAB = _lab(np.array(list(OBJECT_COLOURS.values()) + list(OCCLUDER_COLOURS.values())))
_LAB_WEIGHTS = np.array([_LIGHTNESS_WEIGHT, 1.0, 1.0])


def classify_colour(rgb: Iterable[float]) -> str:
    """Nearest object colour name in L*a*b* (lightness down-weighted) to an RGB triple (0..255)."""
    rgb = np.asarray(rgb, np.float64)
    if rgb.shape != (3,) or not np.all(np.isfinite(rgb)):
        raise ValueError(f"rgb must be 3 finite numbers in 0..255, got {rgb!r}; pass e.g. track.rgb.")
    distance = np.linalg.norm((_lab(rgb)[None] - _OBJECT_LAB) * _LAB_WEIGHTS, axis=-1)
    return _OBJECT_NAMES[int(np.argmin(distance))]


@dataclasses.dataclass(frozen=True, eq=False)
class ObjectTrack:
    """The main object over a clip. Per-frame arrays have length T; NaN where it was not found.

    centroids are (column, row) in array-index units, like `ObjectFacts.pixel_centres`.
    masks hold soft coverage in [0, 1]; areas are their sums (pixels).
    """

    colour: str | None  # palette colour that picked the object, None if nothing was found
    found: np.ndarray  # [T] bool
    centroids: np.ndarray  # [T, 2]
    areas: np.ndarray  # [T]
    colours_rgb: np.ndarray  # [T, 3] core colour of the object's blob
    touches_border: np.ndarray  # [T] bool: coverage >= 0.5 on the outermost row or column
    touches_wall: np.ndarray  # [T] bool: the object's blob borders a wall (so it may be cut)
    masks: np.ndarray  # [T, H, W] float32
    walls: np.ndarray  # [T, H, W] bool
    background_rgb: np.ndarray  # [T, 3]

    @property
    def num_frames(self) -> int:
        return int(self.found.shape[0])

    @property
    def frame_size(self) -> tuple[int, int]:
        return int(self.masks.shape[1]), int(self.masks.shape[2])

    @property
    def any_found(self) -> bool:
        return bool(self.found.any())

    @property
    def rgb(self) -> np.ndarray:
        """Median object colour over the frames where it was found."""
        if not self.any_found:
            raise ValueError(
                "No object was found in this clip, so it has no colour; check track.any_found first."
            )
        return np.median(self.colours_rgb[self.found], axis=0)

    @property
    def fully_in_frame(self) -> bool | None:
        """True when the object never reaches the frame edge on any frame where it was found."""
        return None if not self.any_found else not bool(self.touches_border[self.found].any())


def _as_video(video: np.ndarray) -> np.ndarray:
    frames = to_uint8(np.asarray(video))
    if frames.ndim == 3:
        frames = frames[None]
    if frames.ndim != 4 or frames.shape[-1] != 3 or frames.shape[0] < 1:
        raise ValueError(
            f"video must be [T, H, W, 3] (or one [H, W, 3] image), got shape {frames.shape}; "
            "drop the batch axis and keep RGB channels last."
        )
    if min(frames.shape[1:3]) < 4:
        raise ValueError(
            f"frames of {frames.shape[1]}x{frames.shape[2]} pixels are too small to probe; use at least 4x4."
        )
    return frames


def _background(frame: np.ndarray) -> np.ndarray:
    """Background colour: median of the border pixels, refined by averaging the ones close to it."""
    border = np.concatenate([frame[0], frame[-1], frame[1:-1, 0], frame[1:-1, -1]])
    estimate = np.median(border, axis=0)
    near = border[np.linalg.norm(border - estimate, axis=-1) < FOREGROUND_DISTANCE]
    return near.mean(axis=0) if len(near) >= 8 else estimate


def _wall_mask(frame: np.ndarray, background: np.ndarray, foreground: np.ndarray) -> np.ndarray:
    """Pixels of the world's wall: full columns or rows whose colour is nearest a wall colour,
    grown by up to `_WALL_GROWTH` pixels over the antialiased (or blurred) edge, where colours lie
    between the wall's and the background's; object pixels next to the wall are not such blends."""
    distance = np.linalg.norm(_lab(frame)[:, :, None] - _REFERENCE_LAB, axis=-1)
    wallish = foreground & (np.argmin(distance, axis=-1) >= len(_OBJECT_NAMES))
    columns = wallish.mean(axis=0) >= _WALL_SHARE
    rows = wallish.mean(axis=1) >= _WALL_SHARE
    wall = columns[None, :] | rows[:, None]
    if not wall.any():
        return wall
    axis = np.median(frame[wall], axis=0) - background
    share = np.clip(((frame - background) @ axis) / max(float(axis @ axis), 1e-6), 0.0, 1.0)
    blend = np.linalg.norm(frame - background - share[..., None] * axis, axis=-1) < _BLEND_TOLERANCE
    for _ in range(_WALL_GROWTH):
        wall = wall | (ndimage.binary_dilation(wall) & blend)
    return wall


@dataclasses.dataclass(frozen=True)
class _Blob:
    pixels: np.ndarray  # [H, W] bool
    area: int
    rgb: np.ndarray  # [3] core colour
    colour: str


@dataclasses.dataclass(frozen=True)
class _Frame:
    background: np.ndarray  # [3]
    wall: np.ndarray  # [H, W] bool
    blobs: tuple[_Blob, ...]


def _segment(frame: np.ndarray) -> _Frame:
    """Background, wall and the colour blobs of one frame (float RGB)."""
    background = _background(frame)
    distance = np.linalg.norm(frame - background, axis=-1)
    foreground = distance > FOREGROUND_DISTANCE
    wall = _wall_mask(frame, background, foreground)
    labels, count = ndimage.label(foreground & ~wall)
    sizes = np.bincount(labels.ravel(), minlength=count + 1)
    min_area = max(4, int(round(_MIN_BLOB_SHARE * labels.size)))
    blobs = []
    for label in np.flatnonzero(sizes >= min_area):
        if label == 0:
            continue
        pixels = labels == label
        blob_distance = distance[pixels]
        core = blob_distance >= 0.8 * np.percentile(blob_distance, 95)  # skip blended edge pixels
        rgb = np.median(frame[pixels][core], axis=0)
        if np.linalg.norm(rgb - background) < _OBJECT_DISTANCE:
            continue
        blobs.append(_Blob(pixels, int(sizes[label]), rgb, classify_colour(rgb)))
    return _Frame(background, wall, tuple(blobs))


def _coverage(frame: np.ndarray, seg: _Frame, blob: _Blob) -> np.ndarray:
    """Soft coverage of the blob: each pixel's position on the background -> object colour line."""
    region = ndimage.binary_dilation(blob.pixels) & ~seg.wall
    axis = blob.rgb - seg.background
    alpha = ((frame - seg.background) @ axis) / max(float(axis @ axis), 1e-6)
    return np.where(region, np.clip(alpha, 0.0, 1.0), 0.0).astype(np.float32)


def find_main_object(video: np.ndarray) -> ObjectTrack:
    """Segment and track the main object of a [T, H, W, 3] clip (uint8, or float in [-1, 1]).

    The main object is the palette colour whose blobs cover the most area over the clip; on each
    frame its largest blob is taken. Frames where it is missing (hidden, or never drawn) have
    found=False. A clip with nothing but background gives a track with colour None.
    """
    frames = _as_video(video).astype(np.float64)
    num_frames, height, width, _ = frames.shape
    segments = [_segment(frame) for frame in frames]
    votes: dict[str, int] = {}
    for seg in segments:
        for blob in seg.blobs:
            votes[blob.colour] = votes.get(blob.colour, 0) + blob.area
    main = max(votes, key=votes.__getitem__) if votes else None
    found = np.zeros(num_frames, bool)
    centroids = np.full((num_frames, 2), np.nan)
    areas = np.zeros(num_frames)
    colours = np.full((num_frames, 3), np.nan)
    border = np.zeros(num_frames, bool)
    near_wall = np.zeros(num_frames, bool)
    masks = np.zeros((num_frames, height, width), np.float32)
    walls = np.stack([seg.wall for seg in segments])
    rows, cols = np.indices((height, width), dtype=np.float64)
    for t, seg in enumerate(segments):
        candidates = [b for b in seg.blobs if b.colour == main]
        if not candidates:
            continue
        blob = max(candidates, key=lambda b: b.area)
        alpha = _coverage(frames[t], seg, blob)
        mass = float(alpha.sum())
        if mass <= 0.0:
            continue
        found[t] = True
        masks[t] = alpha
        areas[t] = mass
        centroids[t] = ((cols * alpha).sum() / mass, (rows * alpha).sum() / mass)
        colours[t] = blob.rgb
        solid = alpha >= 0.5
        border[t] = bool(solid[0].any() or solid[-1].any() or solid[:, 0].any() or solid[:, -1].any())
        near_wall[t] = bool((ndimage.binary_dilation(blob.pixels, iterations=2) & seg.wall).any())
    return ObjectTrack(
        colour=main,
        found=found,
        centroids=centroids,
        areas=areas,
        colours_rgb=colours,
        touches_border=border,
        touches_wall=near_wall,
        masks=masks,
        walls=walls,
        background_rgb=np.stack([seg.background for seg in segments]),
    )


def _clear_frames(track: ObjectTrack, min_share: float) -> np.ndarray:
    """Frames where the whole object is seen: found, off the edges and the wall, near full size."""
    clear = track.found & ~track.touches_border & ~track.touches_wall
    if clear.any():
        clear &= track.areas >= min_share * track.areas[clear].max()
    return clear


def motion_direction(track: ObjectTrack) -> str | None:
    """Direction word of the object's net image displacement, as `direction_word` names it.

    Measured between the first and last frames where the object is fully seen (a cut-off object's
    centroid is pulled inwards), in short-side units like the facts. None for a single frame, or
    when fewer than two frames show the object.
    """
    if track.num_frames < 2:
        return None
    usable = _clear_frames(track, 0.7)
    if usable.sum() < 2 and track.any_found:
        usable = track.found & (track.areas >= 0.5 * track.areas[track.found].max())
    if usable.sum() < 2:
        return None
    first, last = np.flatnonzero(usable)[[0, -1]]
    dx, dy = (track.centroids[last] - track.centroids[first]) / min(track.frame_size)
    return direction_word(float(dx), float(dy), STILL_THRESHOLD)


def track_shape(track: ObjectTrack) -> str | None:
    """World shape of the tracked object, pooling shape fits over up to five clear frames."""
    if not track.any_found:
        return None
    clear = _clear_frames(track, 0.85)
    if clear.any():
        candidates = np.flatnonzero(clear)
    else:  # always cut by the edge or the wall: fit the biggest view, ignoring wall pixels
        candidates = np.flatnonzero(track.areas == track.areas[track.found].max())
    picks = candidates[np.unique(np.linspace(0, len(candidates) - 1, _SHAPE_FRAMES).round().astype(int))]
    totals: dict[str, float] = {}
    for t in picks:
        if track.areas[t] < 4.0:
            continue
        for shape, error in shape_errors(track.masks[t], track.walls[t]).items():
            totals[shape] = totals.get(shape, 0.0) + error
    return min(totals, key=totals.__getitem__) if totals else None


@dataclasses.dataclass(frozen=True)
class ProbeExpectation:
    """What a prompt asks for. None leaves an attribute unchecked; in_frame defaults to True."""

    colour: str | None = None
    shape: str | None = None  # world shape name ("circle"), not the caption noun ("ball")
    direction: str | None = None
    in_frame: bool | None = True

    def __post_init__(self) -> None:
        if self.colour is not None and self.colour not in OBJECT_COLOURS:
            raise ValueError(f"Unknown colour {self.colour!r}; choose from {sorted(OBJECT_COLOURS)}.")
        if self.shape is not None and self.shape not in SHAPE_NOUNS:
            nouns = {noun: shape for shape, noun in SHAPE_NOUNS.items()}
            hint = ""
            if self.shape in nouns:
                hint = f" (the noun {self.shape!r} is the shape {nouns[self.shape]!r})"
            raise ValueError(f"Unknown shape {self.shape!r}{hint}; choose from {sorted(SHAPE_NOUNS)}.")
        if self.direction is not None and self.direction not in DIRECTIONS:
            raise ValueError(f"Unknown direction {self.direction!r}; choose from {list(DIRECTIONS)}.")


@dataclasses.dataclass(frozen=True)
class ProbeResult:
    """Measured attributes and whether each agrees with the expectation (None: not checked)."""

    found: bool
    colour: str | None
    shape: str | None
    direction: str | None  # None for images and when too few frames show the object
    fully_in_frame: bool | None
    colour_ok: bool | None
    shape_ok: bool | None
    direction_ok: bool | None
    in_frame_ok: bool | None
    note: str = ""


def _agrees(expected: object, measured: object) -> bool | None:
    return None if expected is None else bool(measured is not None and measured == expected)


def probe_video(video: np.ndarray, expectation: ProbeExpectation) -> ProbeResult:
    """Measure the main object of a clip (or image) and compare it with `expectation`.

    A clip without any object disagrees on every checked attribute and says so in `note`.
    Direction is checked only on clips of two or more frames.
    """
    if not isinstance(expectation, ProbeExpectation):
        raise ValueError(
            f"expectation must be a ProbeExpectation, got {type(expectation).__name__}; "
            "build one with ProbeExpectation(colour=..., shape=..., direction=...)."
        )
    track = find_main_object(video)
    is_video = track.num_frames > 1
    expected_direction = expectation.direction if is_video else None
    if not track.any_found:
        asked = (expectation.colour, expectation.shape, expected_direction, expectation.in_frame)
        flags = [None if value is None else False for value in asked]
        return ProbeResult(False, None, None, None, None, *flags, note="no object found")
    colour = classify_colour(track.rgb)
    shape = track_shape(track)
    direction = motion_direction(track) if is_video else None
    note = ""
    if is_video and direction is None:
        note = "direction unknown: object seen on fewer than two frames"
    return ProbeResult(
        found=True,
        colour=colour,
        shape=shape,
        direction=direction,
        fully_in_frame=track.fully_in_frame,
        colour_ok=_agrees(expectation.colour, colour),
        shape_ok=_agrees(expectation.shape, shape),
        direction_ok=_agrees(expected_direction, direction),
        in_frame_ok=_agrees(expectation.in_frame, track.fully_in_frame),
        note=note,
    )


def agreement_rates(results: Iterable[ProbeResult]) -> dict[str, float | int]:
    """Share of checked results that agree, per attribute, with the counts behind each share.

    Keys: colour, shape, direction, in_frame, found (rates in [0, 1], NaN when nothing was
    checked) and num_results, num_found, num_colour, num_shape, num_direction, num_in_frame.
    """
    results = list(results)
    if not all(isinstance(r, ProbeResult) for r in results):
        raise ValueError(
            "agreement_rates takes ProbeResults from probe_video; got other objects in the list."
        )
    out: dict[str, float | int] = {"num_results": len(results), "num_found": sum(r.found for r in results)}
    out["found"] = out["num_found"] / len(results) if results else math.nan
    for name in ("colour", "shape", "direction", "in_frame"):
        checked = [getattr(r, f"{name}_ok") for r in results if getattr(r, f"{name}_ok") is not None]
        out[name] = float(np.mean(checked)) if checked else math.nan
        out[f"num_{name}"] = len(checked)
    return out
