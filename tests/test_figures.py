"""Pictures of runs: the GIF grid holds every clip's pixels where they belong; plots read the right numbers."""

from __future__ import annotations

import json

import numpy as np
import pytest

from sorajax.eval import figures
from sorajax.video_io import read_image, read_video


def _clip(frames: int, height: int, width: int, value: int) -> np.ndarray:
    clip = np.full((frames, height, width, 3), value, np.uint8)
    clip[:, 0, 0] = np.arange(frames)[:, None] * 10  # a moving marker: frame t has 10 t in its corner
    return clip


def test_video_grid_places_each_clip_centred_and_holds_short_clips_on_their_last_frame():
    clips = [_clip(3, 4, 6, 200), _clip(2, 2, 2, 100), _clip(3, 4, 4, 50)]
    grid = figures.video_grid(clips, columns=2)
    # cells 4 x 6 with 2-pixel gaps: 2 rows x 2 columns
    assert grid.shape == (3, 4 + 2 + 4, 6 + 2 + 6, 3) and grid.dtype == np.uint8
    np.testing.assert_array_equal(grid[:, 0:4, 0:6], clips[0])
    np.testing.assert_array_equal(grid[:2, 1:3, 10:12], clips[1])  # centred in its 4 x 6 cell at (0, 8)
    np.testing.assert_array_equal(grid[2, 1:3, 10:12], clips[1][-1])  # held
    np.testing.assert_array_equal(grid[:, 6:10, 1:5], clips[2])
    assert (grid[:, 6:10, 8:14] == 40).all()  # the empty fourth cell is canvas
    with pytest.raises(ValueError, match=r"^clips must be uint8 \[T, H, W, 3\]; got float32"):
        figures.video_grid([np.zeros((1, 2, 2, 3), np.float32)])


def test_the_gif_grid_plays_every_frame(tmp_path):
    clips = [np.full((4, 8, 8, 3), v, np.uint8) for v in (30, 120, 220)]
    for t in range(4):
        clips[0][t, :4] = 60 * t  # the first clip changes over time
    path = figures.write_video_grid(tmp_path / "samples.gif", clips, columns=3, scale=2)
    video = read_video(path).frames
    assert video.shape == (4, 16, 2 * (3 * 8 + 4), 3)
    assert abs(int(video[0, 12, 24, 0]) - 120) <= 8 and abs(int(video[3, 12, 44, 0]) - 220) <= 8
    assert [abs(int(video[t, 2, 2, 0]) - 60 * t) <= 8 for t in range(4)] == [True] * 4


def test_smoothing_is_bias_corrected_and_metric_curves_keep_the_last_value_of_a_step(tmp_path):
    assert figures.smoothed([2.0, 2.0, 2.0]) == pytest.approx([2.0, 2.0, 2.0])
    assert figures.smoothed([0.0, 1.0], weight=0.5) == pytest.approx([0.0, 2 / 3])
    rows = [{"step": 1, "loss": 3.0}, {"step": 2, "loss": 2.0}, {"step": 2, "eval/val_loss": 2.5},
            {"step": 2, "loss": 1.5}, {"step": 3, "loss": 1.0}]  # step 2 logged again after a resume
    (tmp_path / "metrics.jsonl").write_text("\n".join(json.dumps(r) for r in rows))
    assert figures.metric_curve(tmp_path, "loss") == ([1, 2, 3], [3.0, 1.5, 1.0])
    assert figures.metric_curve(tmp_path, "eval/val_loss") == ([2], [2.5])


def test_training_curves_and_probe_bars_are_written_as_pictures(tmp_path):
    vae, dit = tmp_path / "vae", tmp_path / "dit"
    for run, rows in ((vae, [{"step": s, "loss": 1 / s} for s in range(1, 40)]),
                      (dit, [{"step": s, "loss": 2 / s} for s in range(1, 40)] + [{"step": 39, "eval/val_loss": 0.2}])):
        run.mkdir()
        (run / "metrics.jsonl").write_text("\n".join(json.dumps(r) for r in rows))
    curves = read_image(figures.training_curves(tmp_path / "curves.png", vae, dit))
    assert curves.shape == (int(3.6 * 110), int(2 * 5.0 * 110), 3) and curves.std() > 10  # two panels, drawn
    report = {"rates": {"colour": 0.9, "num_colour": 48, "shape": 0.25, "num_shape": 48, "direction": 0.05,
                        "num_direction": 40, "in_frame": 0.7, "num_in_frame": 48},
              "chance": {"colour": 0.2, "shape": 0.2, "direction": 0.11}}
    bars = read_image(figures.probe_bars(tmp_path / "probe.png", {"main": report, "4x": report}))
    assert bars.shape[0] == int(3.6 * 110) and bars.std() > 10
