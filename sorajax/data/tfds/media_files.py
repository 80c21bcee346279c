"""User media on disk -> checked, decoded frames; and frames <-> compact per-frame bytes.

Why this layer exists: real folders hold broken files (truncated downloads, zero-byte
placeholders, a 40k x 40k scan, a text file named .mp4). The dataset builder must skip
each with a reason it can count and log, never crash halfway through a build and never
leave a hole in a batch. Everything here is host-side numpy/PIL/ffmpeg.

Inputs: a folder scanned recursively (a caption for `clip.mp4` may sit in `clip.txt`), or a
manifest (`.jsonl` lines or `.csv` rows) with a `path` column (relative to the manifest),
an optional `caption` column, and any other columns, kept as per-clip metadata.

Storage: each frame is encoded on its own (PNG lossless, or JPEG) and all frames of a clip
are concatenated into one uint8 buffer with offsets. Per-frame coding lets the pipeline
decode only the frames its temporal sampling picks, and needs no TensorFlow to read.
"""

from __future__ import annotations

import csv
import dataclasses
import io
import json
import logging
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, UnidentifiedImageError

from sorajax.video_io import IMAGE_EXTENSIONS, VIDEO_READ_EXTENSIONS, VideoReadError, read_video

log = logging.getLogger(__name__)

MANIFEST_NAMES = ("manifest.jsonl", "manifest.csv")
FRAME_FORMATS = ("png", "jpeg")
# Files next to media that are not media themselves (captions, manifests, notes).
SIDECAR_EXTENSIONS = (".txt", ".json", ".jsonl", ".csv", ".md")
Image.MAX_IMAGE_PIXELS = None  # we apply our own, clearer size limit before decoding.


@dataclasses.dataclass(frozen=True)
class MediaEntry:
    """One file to ingest: where it is, its caption ('' if none) and extra manifest fields."""

    path: Path
    key: str  # unique, stable id of the clip (its path relative to the source)
    caption: str = ""
    metadata: dict[str, Any] = dataclasses.field(default_factory=dict)

    @property
    def is_image(self) -> bool:
        return self.path.suffix.lower() in IMAGE_EXTENSIONS


@dataclasses.dataclass(frozen=True)
class MediaLimits:
    """Files beyond these are skipped as 'too large' (checked before a full decode)."""

    max_bytes: int = 2 * 1024**3
    max_side: int = 8192
    max_pixels: int = 4096 * 4096
    max_frames: int = 3600  # a minute at 60 fps

    def check_size(self, height: int, width: int) -> None:
        if max(height, width) > self.max_side or height * width > self.max_pixels:
            raise MediaRejected(
                "too large", f"{width}x{height} frames exceed max_side={self.max_side} / max_pixels={self.max_pixels}"
            )


class MediaRejected(ValueError):
    """A file that cannot be used; `reason` is the short category the skip report counts."""

    def __init__(self, reason: str, detail: str):
        super().__init__(f"{reason}: {detail}")
        self.reason, self.detail = reason, detail


@dataclasses.dataclass
class LoadedMedia:
    frames: np.ndarray  # uint8 [T, H, W, 3]
    fps: float  # 0.0 for an image


@dataclasses.dataclass
class SkipReport:
    """What was skipped and why; logged once per file and summarised at the end."""

    used: int = 0
    skipped: list[tuple[str, str, str]] = dataclasses.field(default_factory=list)  # (key, reason, detail)

    def skip(self, key: str, reason: str, detail: str) -> None:
        self.skipped.append((key, reason, detail))
        log.warning("skipping %s (%s): %s", key, reason, detail)

    @property
    def counts(self) -> dict[str, int]:
        return dict(Counter(reason for _, reason, _ in self.skipped))

    def summary(self) -> str:
        counts = ", ".join(f"{n} {reason}" for reason, n in sorted(self.counts.items())) or "none"
        return f"{self.used} files used, {len(self.skipped)} skipped ({counts})"

    def to_json(self) -> dict[str, Any]:
        return {"used": self.used, "skipped_counts": self.counts,
                "skipped": [{"key": k, "reason": r, "detail": d} for k, r, d in self.skipped]}


# ---- finding files ------------------------------------------------------------------------------
def _is_media(path: Path) -> bool:
    return path.suffix.lower() in VIDEO_READ_EXTENSIONS + IMAGE_EXTENSIONS


def scan_folder(root: Path, report: SkipReport) -> list[MediaEntry]:
    """Every image/video under `root` (sorted), captioned by a same-stem .txt file if there is one."""
    entries = []
    for path in sorted(p for p in root.rglob("*") if p.is_file()):
        key = path.relative_to(root).as_posix()
        if _is_media(path):
            sidecar = path.with_suffix(".txt")
            caption = sidecar.read_text(encoding="utf-8").strip() if sidecar.is_file() else ""
            entries.append(MediaEntry(path, key, caption))
        elif path.suffix.lower() not in SIDECAR_EXTENSIONS and not path.name.startswith("."):
            report.skip(key, "unsupported type", f"extension {path.suffix!r} is neither a video nor an image")
    return entries


def _manifest_rows(manifest: Path) -> list[dict[str, Any]]:
    if manifest.suffix.lower() == ".jsonl":
        rows = []
        for number, line in enumerate(manifest.read_text(encoding="utf-8").splitlines(), 1):
            if line.strip():
                try:
                    rows.append(json.loads(line))
                except json.JSONDecodeError as error:
                    raise ValueError(f"{manifest} line {number} is not JSON ({error}); fix or remove that line") from None
        return rows
    if manifest.suffix.lower() == ".csv":
        with manifest.open(newline="", encoding="utf-8") as f:
            return list(csv.DictReader(f))
    raise ValueError(f"manifest {manifest} must be .jsonl or .csv")


def read_manifest(manifest: Path) -> list[MediaEntry]:
    """Rows with a `path` (relative to the manifest's folder), optional `caption`, other fields as metadata."""
    entries, seen = [], set()
    for number, row in enumerate(_manifest_rows(manifest), 1):
        if not isinstance(row, dict) or not row.get("path"):
            raise ValueError(f"{manifest} row {number} has no 'path' field; every row needs the media file's path")
        rel = str(row["path"])
        if rel in seen:
            raise ValueError(f"{manifest} lists {rel!r} twice (row {number}); keep one row per file")
        seen.add(rel)
        metadata = {k: v for k, v in row.items() if k not in ("path", "caption")}
        entries.append(MediaEntry(manifest.parent / rel, rel, str(row.get("caption") or ""), metadata))
    return entries


def find_media(src: str | Path, report: SkipReport) -> list[MediaEntry]:
    """A manifest file, a folder with manifest.jsonl/.csv, or a plain folder to scan."""
    src = Path(src)
    if src.is_file():
        return read_manifest(src)
    if not src.is_dir():
        raise FileNotFoundError(f"source {src} does not exist; pass a folder of videos/images or a .jsonl/.csv manifest")
    for name in MANIFEST_NAMES:
        if (src / name).is_file():
            return read_manifest(src / name)
    return scan_folder(src, report)


# ---- loading with checks ------------------------------------------------------------------------
def _load_image(path: Path, limits: MediaLimits) -> LoadedMedia:
    try:
        with Image.open(path) as image:
            limits.check_size(image.height, image.width)  # header only: no decode yet
            pixels = np.asarray(image.convert("RGB"))
    except (UnidentifiedImageError, OSError, SyntaxError) as error:
        raise MediaRejected("corrupt", f"cannot decode image ({error})") from None
    return LoadedMedia(pixels[None], 0.0)


def _load_video(path: Path, limits: MediaLimits) -> LoadedMedia:
    try:
        first = read_video(path, max_frames=1)
        limits.check_size(*first.frames.shape[1:3])
        clip = read_video(path, max_frames=limits.max_frames + 1)
    except VideoReadError as error:
        raise MediaRejected("corrupt", str(error)) from None
    if len(clip.frames) > limits.max_frames:
        raise MediaRejected("too large", f"more than max_frames={limits.max_frames} frames")
    fps = clip.fps if np.isfinite(clip.fps) and clip.fps > 0 else 0.0
    if fps == 0.0:
        raise MediaRejected("corrupt", f"video reports no usable frame rate ({clip.fps})")
    return LoadedMedia(clip.frames, float(fps))


def load_media(entry: MediaEntry, limits: MediaLimits) -> LoadedMedia:
    """Decoded frames of `entry`, or MediaRejected naming why it cannot be used."""
    path = entry.path
    if not path.is_file():
        raise MediaRejected("missing", f"{path} does not exist")
    try:
        size = path.stat().st_size
        with path.open("rb") as f:
            f.read(1)
    except OSError as error:
        raise MediaRejected("unreadable", str(error)) from None
    if size == 0:
        raise MediaRejected("empty", "the file has 0 bytes")
    if size > limits.max_bytes:
        raise MediaRejected("too large", f"{size} bytes exceed max_bytes={limits.max_bytes}")
    return _load_image(path, limits) if entry.is_image else _load_video(path, limits)


# ---- per-frame encoding -------------------------------------------------------------------------
def encode_frames(frames: np.ndarray, frame_format: str = "png", jpeg_quality: int = 95) -> tuple[np.ndarray, np.ndarray]:
    """uint8 [T, H, W, 3] -> (one uint8 buffer of all encoded frames, int64 offsets [T + 1])."""
    if frame_format not in FRAME_FORMATS:
        raise ValueError(f"frame_format {frame_format!r} is not supported; use one of {FRAME_FORMATS}")
    chunks, offsets = [], [0]
    for frame in frames:
        buffer = io.BytesIO()
        if frame_format == "png":
            Image.fromarray(frame).save(buffer, format="PNG", compress_level=6)
        else:
            Image.fromarray(frame).save(buffer, format="JPEG", quality=jpeg_quality)
        chunks.append(buffer.getvalue())
        offsets.append(offsets[-1] + len(chunks[-1]))
    return np.frombuffer(b"".join(chunks), np.uint8), np.asarray(offsets, np.int64)


def decode_frames(data: np.ndarray, offsets: np.ndarray, indices: Any = None) -> np.ndarray:
    """The frames at `indices` (all when None) from an `encode_frames` buffer, uint8 [n, H, W, 3]."""
    count = len(offsets) - 1
    indices = range(count) if indices is None else [int(i) for i in indices]
    frames = []
    raw = np.asarray(data, np.uint8).tobytes()
    for i in indices:
        if not 0 <= i < count:
            raise IndexError(f"frame {i} is outside a clip of {count} frames")
        with Image.open(io.BytesIO(raw[offsets[i] : offsets[i + 1]])) as image:
            frames.append(np.asarray(image.convert("RGB")))
    return np.stack(frames)
