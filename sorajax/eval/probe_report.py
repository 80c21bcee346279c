"""Sample the fixed probe prompt set with a pipeline and score what comes out.

The prompts are descriptive world captions of one object with a known colour,
shape and motion; the probes read those back from the generated pixels. The
report gives agreement rates next to chance, and the per-prompt detail.
"""

from __future__ import annotations

import collections
import json
import math
from typing import Any, Protocol, Sequence

import numpy as np
from tqdm.auto import tqdm

from sorajax.diffusion.sampling import SampleRequest
from sorajax.eval.contact_sheet import contact_sheet
from sorajax.eval.probe_prompts import chance_levels, probe_prompt_set
from sorajax.eval.probes import agreement_rates, probe_video
from sorajax.runs.paths import PathLike, run_path
from sorajax.video_io import write_image


class VideoGenerator(Protocol):
    """Anything that turns prompts into uint8 videos (a `sorajax.pipeline.Pipeline`)."""

    def generate(self, prompts: Sequence[str], request: SampleRequest | None = None, **overrides: Any) -> list[np.ndarray]:
        ...


def run_probe_report(pipeline: VideoGenerator, num_prompts: int, num_frames: int, request: SampleRequest,
                     out_dir: PathLike | None = None, seed: int = 0) -> dict[str, Any]:
    """Generates every prompt (grouped by size, so each size compiles once) and scores it."""
    prompts = probe_prompt_set(num_prompts, seed=seed, num_frames=num_frames)
    by_size: dict[tuple, list[int]] = collections.defaultdict(list)
    for i, p in enumerate(prompts):
        by_size[p.size].append(i)
    videos: list[np.ndarray | None] = [None] * len(prompts)
    with tqdm(total=len(prompts), desc="probe samples", dynamic_ncols=True) as bar:
        for (frames, height, width), indices in by_size.items():
            out = pipeline.generate([prompts[i].text for i in indices], request, frames=frames, height=height,
                                    width=width, seed=request.seed + indices[0])
            for i, video in zip(indices, out):
                videos[i] = video
            bar.update(len(indices))
    results = [probe_video(v, p.expectation) for v, p in zip(videos, prompts)]
    report = {
        "rates": agreement_rates(results),
        "chance": chance_levels(),
        "sampler": {"method": request.method, "steps": request.steps, "guidance": request.guidance},
        "prompts": [
            {"prompt": p.text, "expected": {"colour": p.expectation.colour, "shape": p.expectation.shape,
                                            "direction": p.expectation.direction},
             "measured": {"colour": r.colour, "shape": r.shape, "direction": r.direction, "note": r.note}}
            for p, r in zip(prompts, results)
        ],
    }
    if out_dir:
        out = run_path(out_dir)
        out.mkdir(parents=True, exist_ok=True)
        (out / "probe_report.json").write_text(json.dumps(report, indent=2, default=str))
        write_image(out / "probe_contact_sheet.png", contact_sheet(videos[:24]))
    return report


def wilson_interval(rate: float, count: int, z: float = 1.96) -> tuple[float, float]:
    """95% interval of an agreement rate measured on `count` prompts (Wilson score: sane at 0% and 100%).

    Why: at 48 prompts a rate moves ~10 points between sampling seeds; comparing two runs needs the width.
    """
    if count <= 0:
        return 0.0, 1.0
    denominator = 1.0 + z * z / count
    centre = (rate + z * z / (2 * count)) / denominator
    half = z * math.sqrt(rate * (1.0 - rate) / count + z * z / (4 * count * count)) / denominator
    # The interval holds the rate itself: at 0% or 100% rounding could leave it a hair outside (and a plot's
    # error bar negative).
    return max(0.0, min(rate, centre - half)), min(1.0, max(rate, centre + half))


def format_report(report: dict[str, Any]) -> str:
    rates, chance = report["rates"], report["chance"]
    lines = [f"probe agreement ({report['sampler']['method']}, {report['sampler']['steps']} steps, "
             f"guidance {report['sampler']['guidance']}):"]
    for name in ("colour", "shape", "direction", "in_frame"):
        if name in rates:
            count = rates.get(f"num_{name}")
            span = ""
            if isinstance(count, int):
                low, high = wilson_interval(rates[name], count)
                span = f"  [95%: {low:.0%}-{high:.0%}]"
            floor = f"   (chance {chance[name]:.2f})" if name in chance else ""
            lines.append(f"  {name:10s} {rates[name]:6.1%} of {count if count is not None else '?'}{span}{floor}")
    return "\n".join(lines)
