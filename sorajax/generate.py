"""Generate videos (mp4) and images (png) from prompts with a trained DiT run.

    python -m sorajax.generate --run=runs/main/dit --prompt="A red ball moves to the left" \
        --width=80 --height=48 --frames=9 --seed=0 --steps=10 --sampler=dpmpp_2m --guidance=4 --out=outputs/

Repeat --prompt (or use --prompts_file, one prompt per line) for several prompts. One frame
(--frames=1) makes an image. A contact sheet of everything generated is written to <out>/contact_sheet.png.
"""

import os
import re

from absl import app, flags

from sorajax.eval.contact_sheet import contact_sheet
from sorajax.logging_setup import quiet_library_logs
from sorajax.pipeline import Pipeline
from sorajax.video_io import write_image, write_video

_RUN = flags.DEFINE_string("run", "runs/main/dit", "DiT run directory (sorajax.train_dit --workdir)")
_PROMPT = flags.DEFINE_multi_string("prompt", [], "a prompt; repeat the flag for several")
_PROMPTS_FILE = flags.DEFINE_string("prompts_file", None, "text file with one prompt per line")
_NEGATIVE = flags.DEFINE_string("negative_prompt", None, "what to steer away from (replaces the empty caption)")
_WIDTH = flags.DEFINE_integer("width", None, "pixels (default: the run's first training size)")
_HEIGHT = flags.DEFINE_integer("height", None, "pixels")
_FRAMES = flags.DEFINE_integer("frames", None, "1 + 4k frames; 1 makes an image")
_SEED = flags.DEFINE_integer("seed", 0, "noise seed")
_STEPS = flags.DEFINE_integer("steps", None, "sampler steps (default: the run's config)")
_SAMPLER = flags.DEFINE_enum("sampler", None, ["euler", "heun", "dpmpp_2m"], "ODE solver")
_GUIDANCE = flags.DEFINE_float("guidance", None, "classifier-free guidance scale (1 = none)")
_FPS = flags.DEFINE_float("fps", 8.0, "frames per second of the written mp4")
_OUT = flags.DEFINE_string("out", "outputs", "output folder")
_NO_EMA = flags.DEFINE_bool("no_ema", False, "sample with the raw instead of the EMA weights")


def _prompts() -> list[str]:
    prompts = list(_PROMPT.value)
    if _PROMPTS_FILE.value:
        with open(_PROMPTS_FILE.value, encoding="utf-8") as f:
            prompts += [line.strip() for line in f if line.strip()]
    if not prompts:
        raise app.UsageError("give at least one --prompt or a --prompts_file")
    return prompts


def _slug(text: str, limit: int = 40) -> str:
    return re.sub(r"[^a-z0-9]+", "_", text.lower()).strip("_")[:limit] or "prompt"


def main(argv: list[str]) -> None:
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {argv[1:]}")
    quiet_library_logs()
    prompts = _prompts()
    pipeline = Pipeline.from_run(_RUN.value, use_ema=not _NO_EMA.value)
    overrides = {k: v for k, v in dict(
        width=_WIDTH.value, height=_HEIGHT.value, frames=_FRAMES.value, seed=_SEED.value, steps=_STEPS.value,
        method=_SAMPLER.value, guidance=_GUIDANCE.value,
    ).items() if v is not None}
    videos = pipeline.generate(prompts, negative_prompt=_NEGATIVE.value, **overrides)
    os.makedirs(_OUT.value, exist_ok=True)
    for i, (prompt, video) in enumerate(zip(prompts, videos)):
        stem = os.path.join(_OUT.value, f"{i:02d}_{_slug(prompt)}")
        path = write_image(stem + ".png", video[0]) if video.shape[0] == 1 else write_video(stem + ".mp4", video, _FPS.value)
        print(f"{path}  <- {prompt!r}")
    print(write_image(os.path.join(_OUT.value, "contact_sheet.png"), contact_sheet(videos)))


if __name__ == "__main__":
    app.run(main)
