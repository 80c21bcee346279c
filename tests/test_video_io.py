"""Video/image file I/O: round trips through real encoders, sizes, dtype conversion and clear errors."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from sorajax import video_io as vio


def world_frames(num_frames: int, height: int, width: int) -> np.ndarray:
    """Flat background, a flat-coloured square drifting right and down: like the procedural world."""
    frames = np.empty((num_frames, height, width, 3), np.uint8)
    frames[...] = (30, 60, 160)
    side = max(2, min(height, width) // 4)
    for t in range(num_frames):
        top, left = (t * 2) % (height - side + 1), (t * 3) % (width - side + 1)
        frames[t, top : top + side, left : left + side] = (230, 50, 40)
    return frames


def mean_abs_error(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.abs(a.astype(np.int16) - b.astype(np.int16)).mean())


def test_mp4_round_trip_is_close(tmp_path):
    frames = world_frames(9, 48, 64)
    path = vio.write_video(tmp_path / "clip.mp4", frames, fps=12, crf=10)
    clip = vio.read_video(path)
    assert clip.frames.shape == frames.shape and clip.frames.dtype == np.uint8
    assert clip.fps == pytest.approx(12.0)
    assert mean_abs_error(clip.frames, frames) < 4.0
    # Motion survives: the square's centre of mass moves like the original's.
    red = (clip.frames[..., 0] > 150).astype(float)
    cols = (red * np.arange(64)).sum(axis=(1, 2)) / red.sum(axis=(1, 2))
    original = (frames[..., 0] > 150).astype(float)
    want = (original * np.arange(64)).sum(axis=(1, 2)) / original.sum(axis=(1, 2))
    np.testing.assert_allclose(cols, want, atol=1.0)
    frames_out, fps = vio.read_video(path)  # also unpacks like a tuple
    assert frames_out.shape[0] == 9 and fps == pytest.approx(12.0)


def test_float_frames_are_converted_and_max_frames_stops_early(tmp_path):
    frames = world_frames(8, 32, 32)
    path = vio.write_video(tmp_path / "float.mp4", vio.to_float(frames), fps=8, crf=10)
    clip = vio.read_video(path, max_frames=3)
    assert clip.frames.shape == (3, 32, 32, 3)
    assert mean_abs_error(clip.frames, frames[:3]) < 4.0
    info = vio.probe_video(path)
    assert (info.width, info.height, info.num_frames) == (32, 32, 8)
    assert info.fps == pytest.approx(8.0) and info.duration == pytest.approx(1.0, abs=0.05)
    with pytest.raises(ValueError, match="max_frames"):
        vio.read_video(path, max_frames=0)


def test_gif_round_trip_is_exact_for_flat_colours(tmp_path):
    frames = world_frames(6, 20, 30)
    frames[3] = frames[2]  # a repeated frame must not be merged away
    path = vio.write_video(tmp_path / "clip.gif", frames, fps=10)
    clip = vio.read_video(path)
    assert clip.frames.shape == frames.shape and clip.fps == pytest.approx(10.0)
    assert np.abs(clip.frames.astype(int) - frames).max() <= 1
    assert vio.probe_video(path).num_frames == 6


@pytest.mark.parametrize("suffix", [".png", ".jpg"])
def test_image_round_trip(tmp_path, suffix):
    image = world_frames(1, 21, 34)[0]
    image[0, 0] = (1, 2, 3)
    path = vio.write_image(tmp_path / f"frame{suffix}", image)
    back = vio.read_image(path)
    assert back.shape == (21, 34, 3) and back.dtype == np.uint8
    if suffix == ".png":
        np.testing.assert_array_equal(back, image)
    else:
        assert mean_abs_error(back, image) < 3.0


def test_image_from_float_pixels(tmp_path):
    image = np.linspace(-1, 1, 5 * 4 * 3, dtype=np.float32).reshape(5, 4, 3)
    back = vio.read_image(vio.write_image(tmp_path / "float.png", image))
    np.testing.assert_array_equal(back, vio.to_uint8(image))
    assert back[0, 0, 0] == 0 and back[-1, -1, -1] == 255


@pytest.mark.parametrize("height,width", [(24, 40), (40, 24)])
def test_portrait_and_landscape_keep_orientation(tmp_path, height, width):
    frames = world_frames(5, height, width)
    clip = vio.read_video(vio.write_video(tmp_path / "clip.mp4", frames, fps=24, crf=10))
    assert clip.frames.shape == (5, height, width, 3)
    assert mean_abs_error(clip.frames, frames) < 4.0


def test_odd_sizes_are_padded_to_even_or_refused(tmp_path):
    frames = world_frames(3, 17, 23)
    clip = vio.read_video(vio.write_video(tmp_path / "odd.mp4", frames, fps=10, crf=10))
    assert clip.frames.shape == (3, 18, 24, 3)
    assert mean_abs_error(clip.frames[:, :17, :23], frames) < 4.0
    assert mean_abs_error(clip.frames[:, 17, :23], frames[:, 16]) < 6.0  # padding repeats the edge
    with pytest.raises(ValueError, match="even width and height"):
        vio.write_video(tmp_path / "refused.mp4", frames, odd_size="error")
    gif = vio.read_video(vio.write_video(tmp_path / "odd.gif", frames, fps=10))
    assert gif.frames.shape == (3, 17, 23, 3)  # gif has no chroma subsampling: exact size kept


def test_single_frame_video(tmp_path):
    frames = world_frames(1, 16, 16)
    clip = vio.read_video(vio.write_video(tmp_path / "one.mp4", frames, fps=24, crf=10))
    assert clip.frames.shape == (1, 16, 16, 3)
    assert mean_abs_error(clip.frames, frames) < 4.0
    assert vio.probe_video(tmp_path / "one.mp4").num_frames == 1


def test_pixel_conversions():
    pixels = np.array([0, 1, 127, 128, 254, 255], np.uint8)
    as_float = vio.to_float(pixels)
    assert as_float.dtype == np.float32 and as_float[0] == -1.0 and as_float[-1] == 1.0
    np.testing.assert_array_equal(vio.to_uint8(as_float), pixels)
    np.testing.assert_array_equal(vio.to_uint8(np.array([-1.3, 0.0, 1.2])), [0, 128, 255])  # overshoot clipped
    with pytest.raises(ValueError, match=r"\[0, 255\]|x \* 2 - 1"):
        vio.to_uint8(np.array([0.0, 255.0]))
    with pytest.raises(ValueError, match="dtype int64"):
        vio.to_uint8(np.array([0, 255]))


def test_bad_arrays_and_extensions_are_refused(tmp_path):
    with pytest.raises(ValueError, match=r"\[T, H, W, 3\]"):
        vio.write_video(tmp_path / "x.mp4", np.zeros((16, 16, 3), np.uint8))
    with pytest.raises(ValueError, match=r"\[T, H, W, 3\]"):
        vio.write_video(tmp_path / "x.mp4", np.zeros((2, 16, 16, 4), np.uint8))
    with pytest.raises(ValueError, match="dtype int32"):
        vio.write_video(tmp_path / "x.mp4", np.zeros((2, 16, 16, 3), np.int32))
    with pytest.raises(ValueError, match=r"supported: \.mp4, \.gif"):
        vio.write_video(tmp_path / "x.avi", np.zeros((2, 16, 16, 3), np.uint8))
    with pytest.raises(ValueError, match=r"\.png, \.jpg"):
        vio.write_image(tmp_path / "x.bmp", np.zeros((4, 4, 3), np.uint8))
    with pytest.raises(ValueError, match="supported: .mp4"):
        vio.read_video(tmp_path / "notes.txt")
    with pytest.raises(ValueError, match="fps"):
        vio.write_video(tmp_path / "x.mp4", np.zeros((2, 16, 16, 3), np.uint8), fps=0)
    assert not list(tmp_path.iterdir())


def test_missing_file_names_the_path(tmp_path):
    missing = tmp_path / "nowhere" / "clip.mp4"
    with pytest.raises(FileNotFoundError, match=str(missing)):
        vio.read_video(missing)
    with pytest.raises(FileNotFoundError, match="frame.png"):
        vio.read_image(tmp_path / "frame.png")


def write_bytes(path: Path, data: bytes) -> Path:
    path.write_bytes(data)
    return path


def test_empty_corrupt_and_truncated_files(tmp_path):
    good = vio.write_video(tmp_path / "good.mp4", world_frames(4, 16, 16), fps=8)
    broken = {
        "empty.mp4": b"",
        "random.mp4": np.random.default_rng(0).integers(0, 256, 4096, dtype=np.uint8).tobytes(),
        "truncated.mp4": good.read_bytes()[:300],
    }
    for name, data in broken.items():
        path = write_bytes(tmp_path / name, data)
        with pytest.raises(vio.VideoReadError, match=name) as caught:
            vio.read_video(path)
        assert "re-encode" in str(caught.value) and isinstance(caught.value, ValueError)
        with pytest.raises(vio.VideoReadError, match=name):
            vio.probe_video(path)
    with pytest.raises(vio.VideoReadError, match="broken.png"):
        vio.read_image(write_bytes(tmp_path / "broken.png", b"not a png at all"))
