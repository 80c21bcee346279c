"""Generate videos (mp4) and images (png) from prompts with a trained DiT run, optionally prompted
with images and videos.

    python -m sorajax.generate --run=runs/main/dit --prompt="A red ball moves to the left" \
        --width=80 --height=48 --frames=9 --seed=0 --steps=10 --sampler=dpmpp_2m --guidance=4 --out=outputs/

Repeat --prompt (or use --prompts_file, one prompt per line) for several prompts. An empty prompt
is refused; --unconditional samples with the empty caption instead (no prompt needed). One frame
(--frames=1) makes an image. A contact sheet of everything generated is written to <out>/contact_sheet.png.

Prompting with images and videos (at most one mode; --frames is the window the model generates,
the width and height come from the input):
    --image in.png                               animate an image (it becomes the first frame)
    --extend forward|backward --video in.mp4     extend a clip in time (--context latent frames given)
    --loop [--video in.mp4 | --image in.png]     a seamless loop (of the clip, or of one generated;
                                                 --context latent frames of its start lead the way back)
    --connect a.mp4 b.mp4                        a transition from the end of a to the start of b
    --edit in.mp4 --strength 0.6                 SDEdit: re-imagine a clip with the prompt
    --inpaint in.mp4 --region top,left,bottom,right [--region_frames 5:9]
                                                 regenerate a box (pixels; whole frames by default)
    --outpaint in.mp4 --width W --height H [--offset top,left]
                                                 place a clip on a larger canvas and fill the rest
    --long N [--image in.png]                    N frames, past the trained window, by repeated
                                                 forward extension (--context latent frames overlap)

Large sizes: --tile 32 [--tile_overlap 8] encodes and decodes in blended spatial tiles of 32 latent pixels
(bounded memory); a request whose estimated memory exceeds the device is refused before anything is allocated.

Faster sampling: --step_cache 0.2 skips the DiT's blocks after the first at network calls where the residual
its first block adds changed less than 20% (relative L1) since the last full call (0 = off, the default; see
sorajax.models.dit_step_cache; benchmarks/sampling_cache.py measures speed and quality).
"""

from __future__ import annotations

import dataclasses
import re
from typing import Any

import numpy as np
from absl import app, flags

from sorajax import cli, prompting
from sorajax.diffusion.samplers import SAMPLER_METHODS
from sorajax.eval.contact_sheet import contact_sheet
from sorajax.logging_setup import quiet_library_logs
from sorajax.long_video import generate_long_video
from sorajax.memory_estimate import SizeCeiling
from sorajax.models.vae_chunked import checked_tile
from sorajax.pipeline import Pipeline, SampleRequest
from sorajax.prompt_expansion import build_prompt_expander
from sorajax.runs.paths import run_path
from sorajax.video_io import read_image, read_video, write_image, write_video

_RUN = flags.DEFINE_string("run", "runs/main/dit", "DiT run directory (sorajax.train_dit --workdir)")
_PROMPT = flags.DEFINE_multi_string("prompt", [], "a prompt; repeat the flag for several")
_PROMPTS_FILE = flags.DEFINE_string("prompts_file", None, "text file with one prompt per line")
_UNCONDITIONAL = flags.DEFINE_bool("unconditional", False,
                                  "sample with the empty caption (no --prompt; empty prompts are refused otherwise)")
_NEGATIVE = flags.DEFINE_string("negative_prompt", None, "what to steer away from (replaces the empty caption)")
_WIDTH = flags.DEFINE_integer("width", None, "pixels (default: the run's first training size)")
_HEIGHT = flags.DEFINE_integer("height", None, "pixels")
_FRAMES = flags.DEFINE_integer("frames", None, "1 + 4k frames; 1 makes an image")
_SEED = flags.DEFINE_integer("seed", 0, "noise seed")
_STEPS = flags.DEFINE_integer("steps", None, "sampler steps (default: the run's config)")
_SAMPLER = flags.DEFINE_enum("sampler", None, list(SAMPLER_METHODS), "ODE solver")
_GUIDANCE = flags.DEFINE_float("guidance", None, "classifier-free guidance scale (1 = none)")
_STEP_CACHE = flags.DEFINE_float("step_cache", None, "DiT step cache threshold (0 = off; 0.1-0.3 skips blocks "
                                 "at steps that change little; default: the run's sample.step_cache)")
_FPS = flags.DEFINE_float("fps", 8.0, "frames per second of the written mp4")
_OUT = flags.DEFINE_string("out", "outputs", "output folder")
_EXPAND = flags.DEFINE_bool(
    "expand_prompt", False,
    "expand short prompts into the detailed caption style the model was trained on (offline world rules)")
_NO_EMA = flags.DEFINE_bool("no_ema", False, "sample with the raw instead of the EMA weights")
# Prompting with images and videos.
_IMAGE = flags.DEFINE_string("image", None, "png/jpg to animate (first frame of the video)")
_VIDEO = flags.DEFINE_string("video", None, "mp4 to extend (--extend) or to loop (--loop)")
_EXTEND = flags.DEFINE_enum("extend", None, ["forward", "backward"], "extend --video in time")
_CONTEXT = flags.DEFINE_integer("context", None,
                                "latent frames of the input given (extend, long; loop: of the clip's start)")
_LOOP = flags.DEFINE_bool("loop", False, "make a seamless loop")
_CONNECT = flags.DEFINE_string("connect", None, "first video of a transition; the second follows: --connect a.mp4 b.mp4")
_EDIT = flags.DEFINE_string("edit", None, "mp4 to edit with SDEdit (with --strength)")
_STRENGTH = flags.DEFINE_float("strength", 0.6, "SDEdit strength in [0, 1]: 0 keeps the input, 1 ignores it")
_INPAINT = flags.DEFINE_string("inpaint", None, "mp4 whose --region is regenerated")
_REGION = flags.DEFINE_string("region", None, "top,left,bottom,right in pixels (inpaint)")
_REGION_FRAMES = flags.DEFINE_string("region_frames", None, "start:stop frames of the region (default: all)")
_OUTPAINT = flags.DEFINE_string("outpaint", None, "mp4 placed on a --width x --height canvas")
_OFFSET = flags.DEFINE_string("offset", None, "top,left of the clip on the outpaint canvas (default: centred)")
_LONG = flags.DEFINE_integer("long", None, "total frames of a long video (repeated forward extension)")
# Memory: large frames fit one accelerator when coded in tiles; requests that cannot fit are refused up front.
_SHIFT = flags.DEFINE_float("shift", None, "constant noise-level shift (default: the run's; Wan uses 3-12)")
_BF16 = flags.DEFINE_bool("bfloat16_weights", False, "hold the DiT's weights in bfloat16 (half the memory)")
_TILE = flags.DEFINE_integer("tile", None, "encode / decode in spatial tiles of this many latent pixels (e.g. 32)")
_TILE_OVERLAP = flags.DEFINE_integer("tile_overlap", None, "latent pixels neighbouring tiles share (default tile/4)")


def _prompts() -> list[str]:
    """The prompts to sample; an empty one is refused unless --unconditional asks for the empty caption."""
    prompts = list(_PROMPT.value)
    if _PROMPTS_FILE.value:
        path = run_path(_PROMPTS_FILE.value)  # local or gs://
        if not path.is_file():
            raise ValueError(f"--prompts_file {path} does not exist: pass a text file with one prompt per line")
        lines = path.read_text().splitlines()
        prompts += [line.strip() for line in lines if line.strip()]
    if _UNCONDITIONAL.value:
        if any(p.strip() for p in prompts):
            raise app.UsageError("--unconditional samples with the empty caption: drop --prompt / --prompts_file, "
                                 "or drop --unconditional")
        return [""]
    if not prompts:
        raise app.UsageError("give at least one --prompt or a --prompts_file (--unconditional: no prompt)")
    empty = [i for i, p in enumerate(prompts) if not p.strip()]
    if empty:
        raise app.UsageError(f"--prompt number {empty[0] + 1} is empty: write a prompt, or pass --unconditional to "
                             "sample with the empty caption")
    return prompts


def _slug(text: str, limit: int = 40) -> str:
    return re.sub(r"[^a-z0-9]+", "_", text.lower()).strip("_")[:limit] or "prompt"


def _ints(text: str, count: int, flag: str, separator: str = ",") -> list[int]:
    try:
        values = [int(v) for v in text.split(separator)]
    except ValueError:
        values = []
    if len(values) != count:
        raise app.UsageError(f"--{flag}={text!r} must be {count} integers separated by {separator!r}")
    return values


def selected_mode(second_video: str | None) -> str | None:
    """The one prompting mode the flags ask for (None: text only); a UsageError for conflicting modes."""
    modes = {
        "extend": _EXTEND.value is not None, "loop": _LOOP.value, "connect": _CONNECT.value is not None,
        "edit": _EDIT.value is not None, "inpaint": _INPAINT.value is not None,
        "outpaint": _OUTPAINT.value is not None, "long": _LONG.value is not None,
    }
    chosen = [name for name, on in modes.items() if on]
    if len(chosen) > 1:
        raise app.UsageError(f"choose one prompting mode, got {chosen}")
    if chosen == ["connect"] and second_video is None:
        raise app.UsageError("--connect needs two videos: --connect a.mp4 b.mp4")
    if chosen == ["extend"] and not _VIDEO.value:
        raise app.UsageError("--extend needs --video in.mp4")
    if chosen == ["inpaint"] and not _REGION.value:
        raise app.UsageError("--inpaint needs --region top,left,bottom,right")
    if chosen == ["outpaint"] and not (_WIDTH.value and _HEIGHT.value):
        raise app.UsageError("--outpaint needs the canvas size: --width W --height H")
    if _IMAGE.value and chosen not in ([], ["loop"], ["long"]):
        raise app.UsageError(f"--image works alone (animate), with --loop or with --long, not with --{chosen[0]}")
    if _VIDEO.value and chosen not in (["extend"], ["loop"]):
        raise app.UsageError("--video is the input of --extend or --loop; the other modes name their video")
    if chosen:
        return chosen[0]
    return "animate" if _IMAGE.value else None


def _given_context() -> int:
    """--context, 1 when unset; an explicit 0 reaches the mode, whose error names the fix."""
    return 1 if _CONTEXT.value is None else _CONTEXT.value


def run_mode(pipeline: Pipeline, mode: str, prompt: str, second_video: str | None,
             overrides: dict[str, Any]) -> prompting.Prompted | np.ndarray:
    """One prompt through one prompting mode: a `Prompted` result, or frames for a long video."""
    negative = _NEGATIVE.value
    window = {k: v for k, v in overrides.items() if k not in ("width", "height")}
    image = read_image(_IMAGE.value) if _IMAGE.value else None
    if mode == "animate":
        return prompting.animate(pipeline, prompt, image, negative_prompt=negative, **window)
    if mode == "extend":
        return prompting.extend(pipeline, prompt, read_video(_VIDEO.value).frames, _EXTEND.value,
                                context=_CONTEXT.value, negative_prompt=negative, **window)
    if mode == "loop":
        base = read_video(_VIDEO.value).frames if _VIDEO.value else None
        if image is not None:
            base = prompting.animate(pipeline, prompt, image, negative_prompt=negative, **window).video
        return prompting.loop(pipeline, prompt, base, negative_prompt=negative, context=_given_context(),
                              **(window if base is not None else overrides))
    if mode == "connect":
        return prompting.connect(pipeline, prompt, read_video(_CONNECT.value).frames, read_video(second_video).frames,
                                 negative_prompt=negative, **window)
    if mode == "edit":
        return prompting.edit(pipeline, prompt, read_video(_EDIT.value).frames, _STRENGTH.value,
                              negative_prompt=negative, **window)
    if mode == "inpaint":
        video = read_video(_INPAINT.value).frames
        frames = None if not _REGION_FRAMES.value else _ints(_REGION_FRAMES.value, 2, "region_frames", ":")
        region = prompting.box_mask(video.shape[0], video.shape[1], video.shape[2],
                                    tuple(_ints(_REGION.value, 4, "region")), frames)
        return prompting.inpaint(pipeline, prompt, video, region, negative_prompt=negative, **window)
    if mode == "outpaint":
        top, left = _ints(_OFFSET.value, 2, "offset") if _OFFSET.value else (None, None)
        return prompting.outpaint(pipeline, prompt, read_video(_OUTPAINT.value).frames, overrides["height"],
                                  overrides["width"], top, left, negative_prompt=negative, **window)
    if mode == "long":
        return generate_long_video(pipeline, prompt, _LONG.value, context=_given_context(), image=image,
                                   negative_prompt=negative, **(window if image is not None else overrides))
    raise ValueError(f"unknown prompting mode {mode!r}")


def main(argv: list[str]) -> None:
    second_video = None
    if _CONNECT.value and len(argv) == 2:  # `--connect a.mp4 b.mp4`: b.mp4 arrives as an argument
        second_video = argv.pop(1)
    elif _CONNECT.value and "," in _CONNECT.value:
        _CONNECT.value, second_video = _CONNECT.value.split(",", 1)
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {argv[1:]}")
    mode = selected_mode(second_video)
    quiet_library_logs()
    prompts = _prompts()
    captions = build_prompt_expander("world" if _EXPAND.value else "none").expand_all(prompts, seed=_SEED.value)
    for prompt, caption in zip(prompts, captions):
        if caption != prompt:
            print(f"expanded {prompt!r} -> {caption!r}")
    tile, tile_overlap = checked_tile(_TILE.value, _TILE_OVERLAP.value)  # refused before any weights load
    ceiling = SizeCeiling.current()
    ceiling.check(_FRAMES.value or 1, _HEIGHT.value or 1, _WIDTH.value or 1)
    ceiling.limit("videos", len(prompts), "max_count", "give fewer prompts per command")
    if _LONG.value is not None:
        ceiling.limit("--long", _LONG.value, "max_long_frames", "make a shorter video")
    overrides = {k: v for k, v in dict(
        width=_WIDTH.value, height=_HEIGHT.value, frames=_FRAMES.value, seed=_SEED.value, steps=_STEPS.value,
        method=_SAMPLER.value, guidance=_GUIDANCE.value, shift=_SHIFT.value, step_cache=_STEP_CACHE.value,
    ).items() if v is not None}
    dataclasses.replace(SampleRequest(frames=1, height=1, width=1), **overrides).check()  # before any weights load
    pipeline = Pipeline.from_run(_RUN.value, use_ema=False if _NO_EMA.value else None,
                                 weights_dtype="bfloat16" if _BF16.value else None)
    pipeline.allow_empty_prompts = _UNCONDITIONAL.value
    if tile is not None:
        pipeline.tile, pipeline.tile_overlap = tile, tile_overlap
    if mode is None:
        videos = pipeline.generate(captions, negative_prompt=_NEGATIVE.value, **overrides)
    else:
        videos = []
        for caption in captions:
            result = run_mode(pipeline, mode, caption, second_video, overrides)
            if isinstance(result, prompting.Prompted):
                if result.given.any():
                    print(f"{mode}: given frames reproduced at {prompting.given_psnr(result):.1f} dB PSNR")
                if mode == "loop":
                    seam = prompting.loop_seam(result.video)
                    print(f"loop: last->first change {seam['jump']:.1f}, typical frame step {seam['typical']:.1f}")
                result = result.video
            videos.append(result)
    out = run_path(_OUT.value)
    tag = "" if mode is None else f"{mode}_"
    for i, (prompt, video) in enumerate(zip(prompts, videos)):
        stem = out / f"{i:02d}_{tag}{_slug(prompt) if prompt else 'unconditional'}"
        path = write_image(f"{stem}.png", video[0]) if video.shape[0] == 1 else write_video(f"{stem}.mp4", video, _FPS.value)
        print(f"{path}  <- {prompt!r}")
    print(write_image(out / "contact_sheet.png", contact_sheet(videos)))


if __name__ == "__main__":
    cli.run(main)
