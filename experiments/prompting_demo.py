"""One example of every prompting mode from a trained run, with the numbers the issue asks for.

    python experiments/prompting_demo.py --run=runs/main/dit --out=outputs/prompting_demo --num_prompts=16

Inputs are clips of the built-in world (the probe prompt set: one object of known colour,
shape and motion), so the world probes can score what comes out:
- image-to-video: the first frame of a clip, animated with its caption -> colour / shape /
  direction agreement, next to text-only generation of the same prompts;
- SDEdit: a clip re-imagined with its caption's colour word changed -> how often the new
  colour shows and the input's direction is kept, per strength (chance: 1/8 and 1/9);
- given-frame PSNR (animate, extend, connect, inpaint, outpaint): decoded given frames
  against the input pixels they came from;
- extend backward with three seeds; loop seam (last->first change vs typical step);
  a long video of four windows with the object's colour per window.
Writes every example (mp4), contact_sheet.png and report.json into --out.
"""

from __future__ import annotations

import dataclasses
import json
import os
import re
import sys

import numpy as np
from absl import app, flags

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from sorajax import prompting  # noqa: E402
from sorajax.data.world.options import OBJECT_COLOURS  # noqa: E402
from sorajax.eval.contact_sheet import contact_sheet  # noqa: E402
from sorajax.eval.probe_prompts import chance_levels, probe_prompt_set  # noqa: E402
from sorajax.eval.probes import ProbeExpectation, agreement_rates, probe_video  # noqa: E402
from sorajax.logging_setup import quiet_library_logs  # noqa: E402
from sorajax.long_video import generate_long_video  # noqa: E402
from sorajax.pipeline import Pipeline  # noqa: E402
from sorajax.video_io import write_image, write_video  # noqa: E402

_RUN = flags.DEFINE_string("run", "runs/main/dit", "DiT run directory")
_OUT = flags.DEFINE_string("out", "outputs/prompting_demo", "output folder")
_NUM_PROMPTS = flags.DEFINE_integer("num_prompts", 16, "world clips scored per probed mode (at least 3)", lower_bound=3)
_STRENGTHS = flags.DEFINE_list("strengths", ["0.5", "0.7", "0.85"], "SDEdit strengths to score")
_SEED = flags.DEFINE_integer("seed", 0, "noise seed")
_FPS = flags.DEFINE_float("fps", 8.0, "frames per second of the written mp4s")


def _mad(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.abs(a.astype(np.float32) - b.astype(np.float32)).mean())


def _recolour(caption: str, old: str, new: str) -> str:
    return re.sub(rf"\b{old}\b", new, caption)


def _probe_rates(videos, expectations) -> dict:
    rates = agreement_rates([probe_video(v, e) for v, e in zip(videos, expectations)])
    return {k: (round(v, 3) if isinstance(v, float) else v) for k, v in rates.items()}


def image_to_video(pipeline: Pipeline, prompts, seed: int) -> tuple[dict, list[np.ndarray]]:
    animated, psnrs = [], []
    for p in prompts:
        result = prompting.animate(pipeline, p.text, p.reference_clip().video[0], seed=seed)
        animated.append(result.video)
        psnrs.append(prompting.given_psnr(result))
    text_only = pipeline.generate([p.text for p in prompts], seed=seed)
    expectations = [p.expectation for p in prompts]
    return {"animate": _probe_rates(animated, expectations), "text_only": _probe_rates(text_only, expectations),
            "given_psnr_db": float(np.mean(psnrs))}, animated


def sdedit(pipeline: Pipeline, prompts, strengths, seed: int) -> tuple[dict, list[np.ndarray]]:
    colours = list(OBJECT_COLOURS)
    report, examples = {}, []
    for strength in strengths:
        outputs, colour_asks, motion_asks = [], [], []
        for k, p in enumerate(prompts):
            old = p.expectation.colour
            new = colours[(colours.index(old) + 1 + k % (len(colours) - 1)) % len(colours)]
            outputs.append(prompting.edit(pipeline, _recolour(p.text, old, new), p.reference_clip().video, strength,
                                          seed=seed).video)
            colour_asks.append(ProbeExpectation(colour=new, in_frame=None))
            motion_asks.append(ProbeExpectation(direction=p.expectation.direction, in_frame=None))
        report[str(strength)] = {"new_colour": _probe_rates(outputs, colour_asks)["colour"],
                                 "input_direction_kept": _probe_rates(outputs, motion_asks)["direction"]}
        examples.append(outputs[0])
    return report, examples


def main(argv: list[str]) -> None:
    del argv
    quiet_library_logs()
    pipeline = Pipeline.from_run(_RUN.value)
    request = pipeline.defaults
    out = _OUT.value
    os.makedirs(out, exist_ok=True)
    seed = _SEED.value
    prompts = probe_prompt_set(_NUM_PROMPTS.value, seed=0, num_frames=request.frames,
                               sizes=((request.height, request.width),), image_share=0.0)
    f = pipeline.temporal_factor
    report: dict = {"run": _RUN.value, "window": dataclasses.asdict(request), "chance": chance_levels()}
    examples: dict[str, np.ndarray] = {}

    report["image_to_video"], animated = image_to_video(pipeline, prompts, seed)
    examples["animate"] = animated[0]

    clip_a, clip_b = prompts[0].reference_clip().video, prompts[1].reference_clip().video
    forward = prompting.extend(pipeline, prompts[0].text, clip_a, "forward", seed=seed)
    examples["extend_forward"] = forward.video
    backs = [prompting.extend(pipeline, prompts[0].text, clip_a, "backward", context=1, seed=seed + s) for s in range(3)]
    ends = backs[0].window.shape[0] - f
    report["extend"] = {
        "forward_given_psnr_db": prompting.given_psnr(forward),
        "backward_given_psnr_db": [prompting.given_psnr(b) for b in backs],
        "backward_start_difference": [_mad(backs[i].window[:ends], backs[j].window[:ends]) for i, j in ((0, 1), (0, 2), (1, 2))],
        "backward_end_difference": [_mad(backs[i].window[ends:], backs[j].window[ends:]) for i, j in ((0, 1), (0, 2), (1, 2))],
    }
    for s, b in enumerate(backs):
        examples[f"extend_backward_seed{s}"] = b.video

    looped = prompting.loop(pipeline, prompts[0].text, clip_a, seed=seed)
    report["loop"] = {**prompting.loop_seam(looped.video), "naive_jump": _mad(clip_a[-1], clip_a[0]),
                      "given_psnr_db": prompting.given_psnr(looped)}
    examples["loop"] = looped.video

    connected = prompting.connect(pipeline, prompts[1].text, clip_a, clip_b, seed=seed)
    start = connected.given.copy()
    start[f + 1:] = False
    report["connect"] = {"given_psnr_db": prompting.given_psnr(connected),
                         "start_psnr_db": prompting.given_psnr(dataclasses.replace(connected, given=start)),
                         "end_psnr_db": prompting.given_psnr(dataclasses.replace(connected, given=connected.given & ~start))}
    examples["connect"] = connected.video

    report["sdedit"], edits = sdedit(pipeline, prompts, [float(s) for s in _STRENGTHS.value], seed)
    for strength, video in zip(_STRENGTHS.value, edits):
        examples[f"sdedit_{strength}"] = video

    h, w = request.height, request.width
    box = (h // 4, w // 4, h - h // 4, w - w // 4)
    inpainted = prompting.inpaint(pipeline, prompts[2].text, prompts[2].reference_clip().video,
                                  prompting.box_mask(request.frames, h, w, box), seed=seed)
    inner = prompts[3].reference_clip().video[:, box[0]:box[2], box[1]:box[3]]
    outpainted = prompting.outpaint(pipeline, prompts[3].text, inner, h, w, seed=seed)
    report["inpaint_given_psnr_db"] = prompting.given_psnr(inpainted)
    report["outpaint_given_psnr_db"] = prompting.given_psnr(outpainted)
    examples["inpaint"], examples["outpaint"] = inpainted.video, outpainted.video

    total = request.frames + 3 * (request.frames - 1)
    long = generate_long_video(pipeline, prompts[0].text, total, context=1, seed=seed)
    windows = [long[i: i + request.frames] for i in range(0, total - request.frames + 1, request.frames - 1)]
    report["long_video"] = {"frames": int(long.shape[0]), "window": request.frames,
                            "colour_per_window": [probe_video(v, ProbeExpectation()).colour for v in windows],
                            "asked_colour": prompts[0].expectation.colour}
    examples["long_video"] = long

    for name, video in examples.items():
        write_video(os.path.join(out, f"{name}.mp4"), video, _FPS.value)
    write_image(os.path.join(out, "contact_sheet.png"), contact_sheet(list(examples.values()), frames_per_row=8))
    with open(os.path.join(out, "report.json"), "w", encoding="utf-8") as f_out:
        json.dump(report, f_out, indent=2, default=float)
    print(json.dumps(report, indent=2, default=float))
    print(f"wrote {len(examples)} examples, contact_sheet.png and report.json to {out}")


if __name__ == "__main__":
    app.run(main)
