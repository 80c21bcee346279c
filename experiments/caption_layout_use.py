"""When does the DiT start reading place and direction words? The paired mirror-caption test per checkpoint.

For each saved step of a run, held-out clips are denoised with their own caption and with its point
mirror (`sorajax.eval.caption_layout`). The printed table is the budget curve: accuracy 50% and a
zero loss gap mean the layout words are ignored (colour alone comes from the caption's other words).

    python experiments/caption_layout_use.py --run=runs/main/dit [--steps=500,1000]
"""

from __future__ import annotations

import os

from absl import app, flags

from sorajax.data.latent_cache import LatentClipSet
from sorajax.eval.caption_layout import caption_layout_use, format_layout_use
from sorajax.logging_setup import quiet_library_logs
from sorajax.pipeline import Pipeline
from sorajax.runs.checkpoints import Checkpointer

_RUN = flags.DEFINE_string("run", "runs/main/dit", "DiT run directory (its held-out latents_eval.npz is used)")
_STEPS = flags.DEFINE_list("steps", None, "checkpoint steps to test (default: every saved one)")
_CLIPS = flags.DEFINE_integer("num_clips", 64, "held-out clips to draw from (videos and images with layout words)")
_SEEDS = flags.DEFINE_integer("noise_seeds", 2, "noise draws per clip and level")


def main(argv: list[str]) -> None:
    del argv
    quiet_library_logs()
    clips = LatentClipSet.load(os.path.join(_RUN.value, "latents_eval.npz"))
    count = min(_CLIPS.value, len(clips))
    if _STEPS.value:
        steps = [int(s) for s in _STEPS.value]
    else:
        checkpointer = Checkpointer(os.path.join(_RUN.value, "checkpoints"), async_save=False)
        steps = checkpointer.all_steps()
        checkpointer.close()
    for step in steps:
        pipeline = Pipeline.from_run(_RUN.value, step=step)
        report = caption_layout_use(pipeline, clips.latents[:count], clips.captions[:count], noise_seeds=_SEEDS.value)
        print(f"step {step}, {next(iter(report.values()))['count']} clips (EMA weights)")
        print(format_layout_use(report), flush=True)


if __name__ == "__main__":
    app.run(main)
