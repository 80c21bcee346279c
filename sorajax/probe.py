"""Score a trained run on the world probes: does the video show the prompt's colour, shape and motion?

    python -m sorajax.probe --run=runs/main/dit [--num_prompts=48 --sampler=dpmpp_2m --steps=10 --step=500 --step_cache=0.1]
"""

import dataclasses

from absl import app, flags

from sorajax import cli
from sorajax.diffusion.samplers import SAMPLER_METHODS
from sorajax.eval.probe_report import format_report, run_probe_report
from sorajax.logging_setup import quiet_library_logs
from sorajax.pipeline import Pipeline

_RUN = flags.DEFINE_string("run", "runs/main/dit", "DiT run directory")
_NUM = flags.DEFINE_integer("num_prompts", 48, "prompts from the fixed probe set")
_FRAMES = flags.DEFINE_integer("frames", 9, "frames per video prompt (1 + 4k)")
_STEPS = flags.DEFINE_integer("steps", None, "sampler steps (default: the run's config)")
_SAMPLER = flags.DEFINE_enum("sampler", None, list(SAMPLER_METHODS), "ODE solver")
_GUIDANCE = flags.DEFINE_float("guidance", None, "classifier-free guidance scale")
_STEP_CACHE = flags.DEFINE_float("step_cache", None, "DiT step cache threshold (0 = off)")
_SEED = flags.DEFINE_integer("seed", 0, "noise seed")
_OUT = flags.DEFINE_string("out", None, "folder for probe_report.json and a contact sheet")
_STEP = flags.DEFINE_integer("step", None, "checkpoint step to score (default: the latest), for agreement-vs-budget curves")


def main(argv: list[str]) -> None:
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {argv[1:]}")
    quiet_library_logs()
    pipeline = Pipeline.from_run(_RUN.value, step=_STEP.value)
    request = pipeline.defaults
    overrides = {k: v for k, v in dict(steps=_STEPS.value, method=_SAMPLER.value, guidance=_GUIDANCE.value,
                                       seed=_SEED.value, step_cache=_STEP_CACHE.value).items() if v is not None}
    request = dataclasses.replace(request, **overrides)
    request.check()  # before the progress bar starts
    report = run_probe_report(pipeline, _NUM.value, _FRAMES.value, request, out_dir=_OUT.value)
    print(format_report(report))


if __name__ == "__main__":
    cli.run(main)
