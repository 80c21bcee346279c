"""Pictures of a run: sample videos as one animated GIF grid, loss curves and probe agreement bars as PNGs.

A reader judges a run faster from its samples playing side by side and from its curves than from a
table of numbers; the main job writes these next to its samples and `sorajax.compare` draws several runs
on the same axes. Plots use matplotlib's Agg backend (no display needed).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from sorajax.eval.probe_report import wilson_interval
from sorajax.runs.metrics import read_metrics
from sorajax.runs.paths import PathLike
from sorajax.video_io import writable_file, write_video

PROBE_ASPECTS = ("colour", "shape", "direction", "in_frame")
_GAP, _CANVAS = 2, 40  # pixels between cells; the contact sheet's dark grey

Curve = tuple[str, Sequence[float], Sequence[float]]  # (label, steps, values)
SMOOTH_MIN_POINTS = 20  # fewer points (a run's evaluations) are drawn as measured: smoothing would make them lag


def video_grid(clips: Sequence[np.ndarray], columns: int = 3) -> np.ndarray:
    """uint8 frames [T, H', W', 3] showing uint8 clips [T_i, H_i, W_i, 3] of any sizes in a grid, all playing.

    Each cell is as large as the largest clip, the clip centred in it; a shorter clip holds its last frame.
    """
    if not clips:
        raise ValueError("video_grid needs at least one clip")
    for clip in clips:
        if clip.ndim != 4 or clip.shape[-1] != 3 or clip.dtype != np.uint8:
            raise ValueError(f"clips must be uint8 [T, H, W, 3]; got {clip.dtype} {clip.shape}")
    columns = max(1, min(columns, len(clips)))
    rows = math.ceil(len(clips) / columns)
    frames = max(c.shape[0] for c in clips)
    cell_h, cell_w = max(c.shape[1] for c in clips), max(c.shape[2] for c in clips)
    grid = np.full((frames, rows * (cell_h + _GAP) - _GAP, columns * (cell_w + _GAP) - _GAP, 3), _CANVAS, np.uint8)
    for i, clip in enumerate(clips):
        _, h, w, _ = clip.shape
        top = (i // columns) * (cell_h + _GAP) + (cell_h - h) // 2
        left = (i % columns) * (cell_w + _GAP) + (cell_w - w) // 2
        held = np.concatenate([clip, np.repeat(clip[-1:], frames - clip.shape[0], axis=0)])
        grid[:, top:top + h, left:left + w] = held
    return grid


def write_video_grid(path: PathLike, clips: Sequence[np.ndarray], columns: int = 3, fps: float = 8.0,
                     scale: int = 2) -> Any:
    """The clips as one looping animated GIF (`scale`x nearest-neighbour enlarged: the tiny models draw 64 px)."""
    grid = video_grid(clips, columns)
    if scale > 1:
        grid = grid.repeat(scale, axis=1).repeat(scale, axis=2)
    return write_video(path, grid, fps)


def metric_curve(run: PathLike, key: str) -> tuple[list[int], list[float]]:
    """(steps, values) of one scalar in a run's metrics.jsonl (rows without it skipped)."""
    rows = [row for row in read_metrics(run) if key in row and row[key] is not None]
    steps = {int(row["step"]): float(row[key]) for row in rows}  # a resumed run may log a step twice: last wins
    ordered = sorted(steps)
    return ordered, [steps[s] for s in ordered]


def _figure(panels: int, width: float = 5.0, height: float = 3.6) -> tuple[Any, Sequence[Any]]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(1, panels, figsize=(width * panels, height), squeeze=False)
    return figure, axes[0]


def _save(figure: Any, path: PathLike) -> Any:
    import matplotlib.pyplot as plt

    figure.tight_layout()
    with writable_file(path) as local:
        figure.savefig(local, dpi=110)
    plt.close(figure)
    return path


def smoothed(values: Sequence[float], weight: float = 0.8) -> list[float]:
    """Exponential moving average (TensorBoard's smoothing), bias-corrected so the first points are not pulled to 0."""
    out, average = [], 0.0
    for i, value in enumerate(values):
        average = weight * average + (1 - weight) * value
        out.append(average / (1 - weight ** (i + 1)))
    return out


def plot_curves(path: PathLike, panels: Sequence[tuple[str, Sequence[Curve]]], ylabel: str | Sequence[str] = "loss",
                log_y: bool = True, smooth: float = 0.8, xlabel: str = "step", log_x: bool = False) -> Any:
    """One PNG with a panel per (title, curves); each curve raw (faint) and smoothed, labelled.

    `ylabel` is one label for every panel or one per panel.
    """
    ylabels = [ylabel] * len(panels) if isinstance(ylabel, str) else list(ylabel)
    figure, axes = _figure(len(panels))
    for axis, panel_ylabel, (title, curves) in zip(axes, ylabels, panels, strict=True):
        for index, (label, steps, values) in enumerate(curves):
            colour = f"C{index % 10}"
            if len(values) >= SMOOTH_MIN_POINTS and smooth > 0:
                axis.plot(steps, values, color=colour, alpha=0.25, linewidth=0.8)
                axis.plot(steps, smoothed(values, smooth), color=colour, label=label, linewidth=1.6)
            else:
                axis.plot(steps, values, color=colour, label=label, marker="o")  # sparse (evaluations): as measured
        axis.set_title(title)
        axis.set_xlabel(xlabel)
        axis.set_ylabel(panel_ylabel)
        shown = [v for _, _, values in curves for v in values]
        if log_y and shown and min(shown) > 0 and max(shown) >= 10 * min(shown):  # within a decade a log axis
            axis.set_yscale("log")                                                # labels ticks '2.29 x 10^0'
        if log_x and all(x > 0 for _, steps, _ in curves for x in steps):
            axis.set_xscale("log")
        axis.grid(alpha=0.3)
        if curves:
            axis.legend(fontsize=8)
    return _save(figure, path)


def training_curves(path: PathLike, vae_run: PathLike, dit_run: PathLike) -> Any:
    """The main job's curves: the autoencoder's loss, the DiT's training loss and its held-out loss."""
    panels = [("autoencoder", [("training loss", *metric_curve(vae_run, "loss"))]),
              ("text-to-video DiT", [("training loss", *metric_curve(dit_run, "loss")),
                                     ("held-out loss", *metric_curve(dit_run, "eval/val_loss")),
                                     ("held-out loss, EMA weights", *metric_curve(dit_run, "eval/val_loss_ema"))])]
    return plot_curves(path, [(title, [c for c in curves if c[1]]) for title, curves in panels])


def probe_bars(path: PathLike, reports: Mapping[str, Mapping[str, Any]], title: str = "world-probe agreement") -> Any:
    """Grouped bars: per probe aspect, one bar per report with its 95% Wilson interval; chance as a dash."""
    figure, (axis,) = _figure(1, width=max(5.0, 1.6 + 1.3 * len(PROBE_ASPECTS) * max(1, len(reports)) ** 0.5))
    names = list(reports)
    width = 0.8 / max(1, len(names))
    for j, name in enumerate(names):
        rates = reports[name]["rates"]
        xs, heights, errors = [], [], [[], []]
        for i, aspect in enumerate(PROBE_ASPECTS):
            if aspect not in rates:
                continue
            rate, count = float(rates[aspect]), int(rates.get(f"num_{aspect}", 0))
            low, high = wilson_interval(rate, count)
            xs.append(i - 0.4 + width * (j + 0.5))
            heights.append(rate)
            errors[0].append(rate - low)
            errors[1].append(high - rate)
        axis.bar(xs, heights, width * 0.92, yerr=errors, capsize=3, label=name, color=f"C{j % 10}")
    chance = next(iter(reports.values())).get("chance", {}) if reports else {}
    marked = [i for i, aspect in enumerate(PROBE_ASPECTS) if aspect in chance]
    for i in marked:
        axis.hlines(chance[PROBE_ASPECTS[i]], i - 0.45, i + 0.45, colors="black", linestyles="dashed", linewidth=1,
                    label="chance" if i == marked[0] else None)
    axis.set_xticks(range(len(PROBE_ASPECTS)), [a.replace("_", " ") for a in PROBE_ASPECTS])
    axis.set_ylim(0, 1.05)
    axis.set_ylabel("share of probe prompts")
    axis.set_title(title)
    axis.grid(axis="y", alpha=0.3)
    axis.legend(fontsize=8)
    return _save(figure, path)
