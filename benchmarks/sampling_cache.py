"""The DiT step cache's speed and quality: cached against uncached sampling of the same prompts, in one run.

    nice python benchmarks/sampling_cache.py --run=runs/main/dit [--steps 10 20 50 --thresholds 0.1 0.2 0.3
        --num_prompts 16 --repeats 5]

For each step count, the run's sampler, guidance and noise seeds:
- seconds per sample of the sampler alone (``Pipeline.sample_latents``: text encoding + the DiT loop, no
  decode), uncached and at each threshold, wall and process-CPU, timed interleaved after a compile (each
  repeat runs every setting, alternately in forward and reverse order), median of ``--repeats``,
  ``--timing_prompts`` prompts of one size per call;
- the share of block evaluations skipped (``Pipeline.last_step_cache``);
- the distance of the decoded cached samples to the uncached ones over the probe prompts: mean absolute
  pixel difference (0-255) and PSNR;
- world-probe agreement (colour / shape / direction / in-frame, ``sorajax.eval.probe_report.run_probe_report``,
  the probe CLI's function) and the share of prompts whose measured colour, shape and direction all equal
  the uncached sample's (paired: less noisy than the rates at a few prompts).
"""

from __future__ import annotations

import argparse
import dataclasses
import statistics
import time
from typing import Any, Sequence

import numpy as np

from sorajax.eval.probe_report import run_probe_report
from sorajax.host_memory import reexec_with_tunables
from sorajax.logging_setup import quiet_library_logs
from sorajax.pipeline import Pipeline

PROBES = ("colour", "shape", "direction", "in_frame")


class RecordingGenerator:
    """The pipeline as the probe report's generator, keeping every video it returns (for pixel distances)."""

    def __init__(self, pipeline: Pipeline):
        self.pipeline, self.videos = pipeline, []

    def generate(self, prompts: Sequence[str], request: Any = None, **overrides: Any) -> list[np.ndarray]:
        videos = self.pipeline.generate(prompts, request, **overrides)
        self.videos.extend(videos)
        return videos


def probe_run(pipeline: Pipeline, request: Any, num_prompts: int, frames: int) -> tuple[dict, list[np.ndarray], Any]:
    recorder = RecordingGenerator(pipeline)
    report = run_probe_report(recorder, num_prompts, frames, request)
    return report, recorder.videos, pipeline.last_step_cache


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = float(np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2))
    return float("inf") if mse == 0 else 10.0 * np.log10(255.0**2 / mse)


def same_verdicts(report: dict, reference: dict) -> float:
    keys = ("colour", "shape", "direction")
    pairs = zip(report["prompts"], reference["prompts"])
    return float(np.mean([all(a["measured"][k] == b["measured"][k] for k in keys) for a, b in pairs]))


def timed_sampling(pipeline: Pipeline, requests: dict[float, Any], prompts: list[str],
                   repeats: int) -> dict[float, tuple[float, float]]:
    """Median (wall, process CPU) seconds per sample of `sample_latents` for each threshold's request.

    Interleaved, in forward then reverse order on alternate repeats, so a load change on a shared machine
    does not favour one setting; CPU seconds (all of this process's threads) are less sensitive to other
    processes on the machine than wall seconds.
    """
    shape = pipeline.latent_shape(requests[0.0].frames, requests[0.0].height, requests[0.0].width)
    for request in requests.values():  # compile (and encode the prompts) outside the timing
        pipeline.sample_latents(prompts, shape, request)
    seconds: dict[float, list[tuple[float, float]]] = {threshold: [] for threshold in requests}
    order = list(requests)
    for repeat in range(repeats):
        for threshold in order if repeat % 2 == 0 else order[::-1]:
            wall, cpu = time.perf_counter(), time.process_time()
            pipeline.sample_latents(prompts, shape, requests[threshold])
            seconds[threshold].append(((time.perf_counter() - wall) / len(prompts),
                                       (time.process_time() - cpu) / len(prompts)))
    return {threshold: (statistics.median(w for w, _ in values), statistics.median(c for _, c in values))
            for threshold, values in seconds.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--run", default="runs/main/dit")
    parser.add_argument("--steps", type=int, nargs="+", default=[10, 20, 50])
    parser.add_argument("--thresholds", type=float, nargs="+", default=[0.1, 0.2, 0.3])
    parser.add_argument("--num_prompts", type=int, default=16)
    parser.add_argument("--frames", type=int, default=9)
    parser.add_argument("--timing_prompts", type=int, default=4)
    parser.add_argument("--repeats", type=int, default=6)
    args = parser.parse_args()
    quiet_library_logs()
    pipeline = Pipeline.from_run(args.run)
    base = dataclasses.replace(pipeline.defaults, frames=args.frames, seed=1234)
    timing_prompts = ["a red ball moves to the left"] * args.timing_prompts
    rows = []
    for steps in args.steps:
        requests = {threshold: dataclasses.replace(base, steps=steps, step_cache=threshold)
                    for threshold in [0.0, *args.thresholds]}
        seconds = timed_sampling(pipeline, requests, timing_prompts, args.repeats)
        reference, reference_videos, _ = probe_run(pipeline, requests[0.0], args.num_prompts, args.frames)
        rows.append((steps, 0.0, seconds[0.0], (1.0, 1.0), 0.0, 0.0, float("inf"), reference["rates"], 1.0))
        for threshold in args.thresholds:
            report, videos, stats = probe_run(pipeline, requests[threshold], args.num_prompts, args.frames)
            distance = float(np.mean([np.abs(a.astype(np.float32) - b).mean() for a, b in zip(videos, reference_videos)]))
            quality = float(np.mean([psnr(a, b) for a, b in zip(videos, reference_videos)]))
            speedup = tuple(base / cached for base, cached in zip(seconds[0.0], seconds[threshold]))
            rows.append((steps, threshold, seconds[threshold], speedup, stats.skipped_blocks, distance, quality,
                         report["rates"], same_verdicts(report, reference)))
    print(f"\n{args.run}: {pipeline.defaults.method}, guidance {pipeline.defaults.guidance}, {args.num_prompts} probe "
          f"prompts of {args.frames} frames; timing: {args.timing_prompts} prompts at "
          f"{base.frames}x{base.height}x{base.width}, median of {args.repeats}, interleaved")
    print(f"{'steps':>5s} {'cache':>5s} {'wall s':>7s} {'CPU s':>7s} {'speedup':>13s} {'skipped':>7s} {'|Δpx|':>6s} "
          f"{'PSNR':>6s} " + " ".join(f"{name:>9s}" for name in PROBES) + f" {'same':>5s}")
    for steps, threshold, (wall, cpu), (wall_x, cpu_x), skipped, distance, quality, rates, same in rows:
        print(f"{steps:5d} {threshold:5.2f} {wall:7.4f} {cpu:7.4f} {wall_x:5.2f}x/{cpu_x:5.2f}x {skipped:7.1%} "
              f"{distance:6.2f} {quality:6.1f} " + " ".join(f"{rates[name]:9.1%}" for name in PROBES) + f" {same:5.0%}")
    print("speedup: uncached over cached, wall / CPU seconds; skipped: share of block evaluations; |Δpx|, PSNR: "
          "decoded cached samples against the uncached ones (0-255); same: prompts whose measured colour, shape and "
          "direction all equal the uncached sample's")


if __name__ == "__main__":
    reexec_with_tunables()  # time sorajax as its commands run it: malloc tuned for XLA (sorajax.host_memory)
    main()
