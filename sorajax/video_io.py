"""Reading and writing videos and images: the file boundary where pixels change dtype.

Inside sorajax pixels are float32 [T, H, W, 3] in [-1, 1]; on disk they are uint8. `to_uint8` and
`to_float` are the only conversions between the two, and every writer here accepts either.

Decoding goes through `imageio_ffmpeg.read_frames` (the ffmpeg binary shipped in the
imageio-ffmpeg wheel), so anything that ffmpeg reads works: mp4, webm, mkv, gif, ... We do not use
`mediapy.read_video`: it passes `-vsync`, an option ffmpeg 8+ removed. Encoding: mp4 is H.264 in
yuv420p, which plays everywhere but needs an even width and height; odd sizes are padded by
repeating the last row/column (or refused with `odd_size="error"`). GIF is written by ffmpeg with
a palette computed from the whole clip, so flat-coloured synthetic videos come back exactly.
"""

from __future__ import annotations

import contextlib
import os
import re
import tempfile
from pathlib import Path
from typing import Any, Iterator, Literal, NamedTuple

import numpy as np
from etils import epath
from einops import repeat
from PIL import Image, UnidentifiedImageError

# imageio-ffmpeg otherwise starts ffmpeg with preexec_fn=os.setpgrp, which runs Python in the
# forked child of a process whose JAX threads are live: a known deadlock risk (JAX warns on every
# call). Without it, subprocess can spawn ffmpeg without running Python code after the fork; the
# only cost is that Ctrl-C also reaches ffmpeg, which then stops as well.
os.environ.setdefault("IMAGEIO_FFMPEG_NO_PREVENT_SIGINT", "1")

VIDEO_READ_EXTENSIONS = (".mp4", ".m4v", ".mov", ".mkv", ".webm", ".avi", ".gif", ".mpg", ".mpeg", ".ogv", ".flv", ".wmv")
VIDEO_WRITE_EXTENSIONS = (".mp4", ".gif")
IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg")
# Float frames beyond this are not [-1, 1] pixels that overshot a little (those are clipped) but
# another convention such as [0, 255]; refusing them catches a silent, very wrong conversion.
FLOAT_RANGE_LIMIT = 2.0
# ffmpeg's stderr lines that state a cause (the banner and build flags around them do not).
FFMPEG_CAUSE = re.compile(r"invalid|error|not found|partial file|does not contain|no such", re.IGNORECASE)
REENCODE_HINT = "check the file, or re-encode it: ffmpeg -i INPUT -c:v libx264 -pix_fmt yuv420p OUTPUT.mp4"


def _ffmpeg() -> Any:
    """imageio_ffmpeg, imported when a video is read or written: pixels and images need no ffmpeg."""
    try:
        import imageio_ffmpeg
    except ImportError as error:
        raise ImportError("reading or writing video needs imageio-ffmpeg; fix: pip install imageio-ffmpeg") from error
    return imageio_ffmpeg


class VideoReadError(ValueError):
    """A video or image file exists but cannot be decoded (empty, truncated, corrupt)."""


class VideoClip(NamedTuple):
    """Decoded frames uint8 [T, H, W, 3] and their frame rate; unpacks as `frames, fps`."""

    frames: np.ndarray
    fps: float


class VideoInfo(NamedTuple):
    """What `probe_video` learns without keeping any frames."""

    width: int
    height: int
    fps: float
    num_frames: int
    duration: float


def to_uint8(pixels: np.ndarray) -> np.ndarray:
    """float [-1, 1] (clipped) or uint8 pixels -> uint8 [0, 255], rounding to nearest."""
    pixels = np.asarray(pixels)
    if pixels.dtype == np.uint8:
        return pixels
    if not np.issubdtype(pixels.dtype, np.floating):
        raise ValueError(
            f"pixels must be uint8 or float in [-1, 1], got dtype {pixels.dtype}; "
            "cast 0..255 integers with .astype(np.uint8)."
        )
    if pixels.size:
        low, high = float(np.min(pixels)), float(np.max(pixels))
        if not (np.isfinite(low) and np.isfinite(high)) or low < -FLOAT_RANGE_LIMIT or high > FLOAT_RANGE_LIMIT:
            raise ValueError(
                f"float pixels must be in [-1, 1], got values in [{low}, {high}]; "
                "pass uint8 for 0..255 data, or map [0, 1] data with x * 2 - 1."
            )
    scaled = (np.clip(pixels.astype(np.float32), -1.0, 1.0) + 1.0) * 127.5
    return np.round(scaled).astype(np.uint8)


def to_float(pixels: np.ndarray) -> np.ndarray:
    """uint8 [0, 255] pixels -> float32 [-1, 1] (float input is returned as float32 unchanged)."""
    pixels = np.asarray(pixels)
    if np.issubdtype(pixels.dtype, np.floating):
        return pixels.astype(np.float32)
    if pixels.dtype != np.uint8:
        raise ValueError(f"pixels must be uint8 or float, got dtype {pixels.dtype}; cast with .astype(np.uint8).")
    return pixels.astype(np.float32) / 127.5 - 1.0


def _existing_file(path: str | Path, extensions: tuple[str, ...], kind: str) -> Path:
    path = Path(path)
    _check_extension(path, extensions, kind)
    if not path.is_file():
        raise FileNotFoundError(f"{kind} file {path} does not exist; check the path.")
    if path.stat().st_size == 0:
        raise VideoReadError(f"{kind} file {path} is empty (0 bytes); {REENCODE_HINT}")
    return path


def _check_extension(path: Path, extensions: tuple[str, ...], kind: str) -> None:
    if path.suffix.lower() not in extensions:
        raise ValueError(f"unsupported {kind} extension {path.suffix!r} for {path}; supported: {', '.join(extensions)}")


def _ffmpeg_cause(message: str) -> str:
    """The first line of ffmpeg's log that says what went wrong, without its '[demuxer @ 0x..]' tag."""
    for line in message.splitlines():
        if FFMPEG_CAUSE.search(line) and "--enable" not in line:
            return re.sub(r"^(\[[^\]]*\]\s*)+", "", line.strip())
    return message.strip().splitlines()[-1] if message.strip() else "no output"


def _decode(path: Path, output_params: list[str]) -> tuple[dict, list[np.ndarray]]:
    """Run ffmpeg over the file; turn its failures into a VideoReadError naming the file."""
    reader = _ffmpeg().read_frames(str(path), output_params=output_params)
    try:
        meta = next(reader)
        width, height = meta["size"]
        frames = [np.frombuffer(chunk, np.uint8).reshape(height, width, 3) for chunk in reader]
    except (OSError, RuntimeError, StopIteration) as error:
        cause = _ffmpeg_cause(str(error))
        raise VideoReadError(f"cannot decode video {path} (ffmpeg: {cause}); {REENCODE_HINT}") from error
    finally:
        reader.close()
    if not frames:
        raise VideoReadError(f"video {path} has no decodable frames; {REENCODE_HINT}")
    return meta, frames


def read_video(path: str | Path, max_frames: int | None = None) -> VideoClip:
    """Decode a video to uint8 [T, H, W, 3]; `max_frames` stops ffmpeg early instead of decoding all."""
    path = _existing_file(path, VIDEO_READ_EXTENSIONS, "video")
    if max_frames is not None and max_frames < 1:
        raise ValueError(f"max_frames must be >= 1 or None, got {max_frames}")
    output_params = [] if max_frames is None else ["-frames:v", str(int(max_frames))]
    meta, frames = _decode(path, output_params)
    return VideoClip(np.stack(frames), float(meta["fps"]))


def probe_video(path: str | Path) -> VideoInfo:
    """Size, frame rate and exact frame count (ffmpeg decodes the stream once, keeping nothing)."""
    path = _existing_file(path, VIDEO_READ_EXTENSIONS, "video")
    meta, _ = _decode(path, ["-frames:v", "1"])
    try:
        num_frames, duration = _ffmpeg().count_frames_and_secs(str(path))
    except RuntimeError as error:
        raise VideoReadError(f"cannot count the frames of {path}; {REENCODE_HINT}") from error
    width, height = meta["size"]
    return VideoInfo(int(width), int(height), float(meta["fps"]), int(num_frames), float(duration))


def _validated_frames(frames: np.ndarray) -> np.ndarray:
    frames = np.asarray(frames)
    if frames.ndim != 4 or frames.shape[-1] != 3 or 0 in frames.shape:
        raise ValueError(
            f"frames must be [T, H, W, 3] with T, H, W >= 1, got shape {frames.shape}; "
            "add a time axis to a single image with frames[None]."
        )
    return to_uint8(frames)


def _even_sized(frames: np.ndarray, odd_size: Literal["pad", "error"]) -> np.ndarray:
    """yuv420p halves chroma resolution, so H.264 needs even sides: pad by edge repeat or refuse."""
    _, height, width, _ = frames.shape
    pad_h, pad_w = height % 2, width % 2
    if not (pad_h or pad_w):
        return frames
    if odd_size == "error":
        raise ValueError(
            f"mp4 (H.264, yuv420p) needs an even width and height, got {width}x{height}; "
            "crop or pad the frames, or pass odd_size='pad'."
        )
    if odd_size != "pad":
        raise ValueError(f"odd_size must be 'pad' or 'error', got {odd_size!r}")
    return np.pad(frames, ((0, 0), (0, pad_h), (0, pad_w), (0, 0)), mode="edge")


def _as_path(path: str | os.PathLike) -> Path:
    text = os.fspath(path)
    return epath.Path(text) if "://" in text else Path(text)


@contextlib.contextmanager
def writable_file(path: str | os.PathLike, copy: bool | None = None) -> Iterator[Path]:
    """A local file to write `path` through: itself, or for a URL (gs://...) a temporary file copied there.

    ffmpeg and PIL write local files; run directories may live in a bucket (`etils.epath` copies).
    """
    text = os.fspath(path)
    if not ("://" in text if copy is None else copy):
        Path(text).parent.mkdir(parents=True, exist_ok=True)
        yield Path(text)
        return
    with tempfile.TemporaryDirectory() as tmp:
        local = Path(tmp) / os.path.basename(text)
        yield local
        target = epath.Path(text)
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(local.read_bytes())


def write_video(
    path: str | os.PathLike,
    frames: np.ndarray,
    fps: float = 24.0,
    *,
    crf: int = 18,
    odd_size: Literal["pad", "error"] = "pad",
) -> Path:
    """Write uint8 or [-1, 1] float frames [T, H, W, 3] to .mp4 (H.264, `crf` 0..51) or .gif.

    Returns the path (a URL such as gs://... is written through a local temporary file).
    An mp4 with an odd width or height is padded to even sides (see module doc).
    """
    _check_extension(Path(os.fspath(path)), VIDEO_WRITE_EXTENSIONS, "video")
    if not (np.isfinite(fps) and fps > 0):
        raise ValueError(f"fps must be a positive number, got {fps}")
    if not 0 <= crf <= 51:
        raise ValueError(f"crf must be in [0, 51] (lower is better quality), got {crf}")
    frames = _validated_frames(frames)
    if os.fspath(path).lower().endswith(".mp4"):
        frames = _even_sized(frames, odd_size)
        codec, pix_fmt = "libx264", "yuv420p"
        output_params = ["-crf", str(int(crf)), "-movflags", "+faststart"]
    else:
        codec, pix_fmt = "gif", "pal8"
        palette = "split[a][b];[a]palettegen=stats_mode=full[p];[b][p]paletteuse=dither=none"
        output_params = ["-filter_complex", palette, "-loop", "0"]
    _, height, width, _ = frames.shape
    with writable_file(path) as local:
        _encode_video(local, frames, fps, codec, pix_fmt, output_params)
    return _as_path(path)


def _encode_video(path: Path, frames: np.ndarray, fps: float, codec: str, pix_fmt: str,
                  output_params: list[str]) -> None:
    _, height, width, _ = frames.shape
    path.unlink(missing_ok=True)  # so a failed encode cannot leave an old file looking like success
    writer = _ffmpeg().write_frames(
        str(path),
        (width, height),
        fps=float(fps),
        codec=codec,
        pix_fmt_out=pix_fmt,
        quality=None,
        macro_block_size=1,
        ffmpeg_log_level="error",
        output_params=output_params,
    )
    writer.send(None)
    for frame in frames:
        writer.send(np.ascontiguousarray(frame))
    writer.close()
    if not path.is_file() or path.stat().st_size == 0:
        raise OSError(f"ffmpeg wrote nothing to {path} ({width}x{height}, {len(frames)} frames); see its error above.")


def read_image(path: str | Path) -> np.ndarray:
    """Read a png/jpg as uint8 [H, W, 3] (grey, palette and alpha images are converted to RGB)."""
    path = _existing_file(path, IMAGE_EXTENSIONS, "image")
    try:
        with Image.open(path) as image:
            return np.asarray(image.convert("RGB"))
    except (UnidentifiedImageError, OSError) as error:
        raise VideoReadError(f"cannot decode image {path} ({error}); check the file or re-save it as png.") from error


def write_image(path: str | os.PathLike, image: np.ndarray, *, jpeg_quality: int = 95) -> Path:
    """Write uint8 or [-1, 1] float [H, W, 3] to .png (lossless) or .jpg/.jpeg (a URL through a temporary file)."""
    suffix = Path(os.fspath(path)).suffix.lower()
    _check_extension(Path(os.fspath(path)), IMAGE_EXTENSIONS, "image")
    image = np.asarray(image)
    if image.ndim != 3 or image.shape[-1] != 3:
        raise ValueError(f"image must be [H, W, 3], got shape {image.shape}; take one frame with video[t].")
    pixels = _validated_frames(repeat(image, "h w c -> 1 h w c"))[0]
    options = {"quality": jpeg_quality} if suffix in (".jpg", ".jpeg") else {}
    with writable_file(path) as local:
        Image.fromarray(pixels).save(local, **options)
    return _as_path(path)
