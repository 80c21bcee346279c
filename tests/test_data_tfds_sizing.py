"""Clip sizing: pixel budget with aspect kept and sides snapped; 1 + 4k frames at a target fps."""

import numpy as np
import pytest

from sorajax.data.clip_sizing import (
    SizingConfig,
    apply_plan,
    frame_count,
    native_size,
    plan_clip,
    temporal_plan,
)


@pytest.mark.parametrize("height,width", [(1080, 1920), (1920, 1080), (720, 720), (480, 854), (2048, 2048)])
def test_native_size_meets_the_budget_keeps_aspect_and_snaps(height, width):
    cfg = SizingConfig(pixel_budget=256 * 256, size_multiple=16)
    out_h, out_w = native_size(height, width, cfg)
    assert out_h % 16 == 0 and out_w % 16 == 0
    assert 0.8 * cfg.pixel_budget <= out_h * out_w <= cfg.pixel_budget
    assert abs(np.log((out_w / out_h) / (width / height))) < 0.08


def test_small_clips_are_not_upscaled_unless_asked():
    cfg = SizingConfig(pixel_budget=256 * 256, size_multiple=16)
    assert native_size(100, 60, cfg) == (96, 48)
    assert native_size(100, 60, SizingConfig(pixel_budget=256 * 256, size_multiple=16, allow_upscale=True))[0] > 256


def test_temporal_plan_resamples_fps_and_keeps_1_plus_4k_frames():
    cfg = SizingConfig(max_frames=17, target_fps=8.0)
    rng = np.random.default_rng(0)
    indices = temporal_plan(300, 24.0, cfg, rng)  # 12.5 s at 24 fps -> every 3rd frame, 17 kept
    assert len(indices) == 17 and np.all(np.diff(indices) == 3) and indices[-1] < 300
    assert temporal_plan(1, 0.0, cfg, rng) == (0,)  # an image
    assert len(temporal_plan(12, 8.0, cfg, rng)) == 9  # 12 frames -> the largest 1 + 4k is 9
    assert len(temporal_plan(40, 4.0, cfg, rng)) == 17  # never repeats frames to raise the rate
    assert np.all(np.diff(temporal_plan(40, 4.0, cfg, rng)) == 1)
    assert frame_count(40, SizingConfig(max_frames=33, frame_counts=(1, 9, 17))) == 17


def test_plans_are_deterministic_by_seed_and_apply_exactly():
    cfg = SizingConfig(pixel_budget=32 * 48, size_multiple=16, max_frames=5)
    a, b = plan_clip(3, 30, 64, 96, 10.0, cfg, seed=1), plan_clip(3, 30, 64, 96, 10.0, cfg, seed=1)
    assert a == b and plan_clip(3, 30, 64, 96, 10.0, cfg, seed=2).frame_indices != a.frame_indices
    frames = np.random.default_rng(0).integers(0, 255, (5, 64, 96, 3), dtype=np.uint8)
    out = apply_plan(frames, a)
    assert out.shape == (5, 32, 48, 3) and out.dtype == np.uint8
    flat = np.full((1, 64, 96, 3), 77, np.uint8)
    np.testing.assert_array_equal(apply_plan(flat, a), np.full((1, 32, 48, 3), 77, np.uint8))


@pytest.mark.parametrize("kwargs,message", [
    (dict(framing="letterbox"), "framing"),
    (dict(max_frames=8), "1 \\+ 4k"),
    (dict(pixel_budget=10), "pixel_budget"),
    (dict(target_fps=0.0), "target_fps"),
])
def test_bad_sizing_configs_name_the_fix(kwargs, message):
    with pytest.raises(ValueError, match=message):
        SizingConfig(**kwargs)
