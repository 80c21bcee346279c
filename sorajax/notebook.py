"""What the notebooks in colab/ share: the budget switch, where runs go, commands that fail loudly.

A notebook's `parameters` cell sets `BUDGET`; the environment variable SORAJAX_NOTEBOOK_BUDGET
overrides it (tests/test_notebooks.py runs every notebook on "smoke" that way). Runs go under
SORAJAX_NOTEBOOK_RUNS (default runs/notebooks): the quickstart's main job writes
`<runs>/main_<budget>`, and the other notebooks sample from that run (training it first if it is
missing), so one trained run serves them all.

    smoke  the tests' tiny settings (configs/*:smoke): seconds per cell, pictures of noise
    demo   the main job shortened to a few minutes on a CPU runtime
    full   the main job as the README runs it (~20 min on a 2-core CPU)
"""

from __future__ import annotations

import io
import os
import subprocess
import sys
from pathlib import Path
from typing import Mapping, Sequence

import numpy as np

BUDGETS = ("smoke", "demo", "full")
BUDGET_ENV = "SORAJAX_NOTEBOOK_BUDGET"
RUNS_ENV = "SORAJAX_NOTEBOOK_RUNS"

# Main-job flags per budget (python -m sorajax.main; `demo` keeps every stage, with fewer steps and clips).
MAIN_JOB_FLAGS: dict[str, tuple[str, ...]] = {
    # smoke: the tests' configs, one evaluation and one checkpoint per stage (at the end).
    "smoke": ("--vae_config=configs/vae_tiny.py:smoke", "--dit_config=configs/dit_tiny.py:smoke", "--probe_prompts=2",
              "--vae_config.eval.every=4", "--vae_config.train.save_every=4", "--dit_config.eval.every=4",
              "--dit_config.train.save_every=4"),
    "demo": ("--vae_config.train.steps=200", "--vae_config.train.noise_ramp_steps=100",
             "--vae_config.train.save_every=200", "--vae_config.eval.every=200",
             "--dit_config.train.steps=400", "--dit_config.data.num_clips=512", "--dit_config.train.save_every=400",
             "--dit_config.eval.every=400", "--probe_prompts=16"),
    "full": (),
}


def chosen_budget(notebook_value: str) -> str:
    """The notebook's BUDGET unless SORAJAX_NOTEBOOK_BUDGET says otherwise; an unknown name is one clear error."""
    budget = os.environ.get(BUDGET_ENV) or notebook_value
    if budget not in BUDGETS:
        raise ValueError(f"unknown budget {budget!r}: set BUDGET (or {BUDGET_ENV}) to one of {', '.join(BUDGETS)}")
    return budget


def runs_folder() -> Path:
    """Where the notebooks put their runs (SORAJAX_NOTEBOOK_RUNS, else runs/notebooks under the working directory)."""
    return Path(os.environ.get(RUNS_ENV) or "runs/notebooks").resolve()


def main_job_dir(budget: str) -> Path:
    return runs_folder() / f"main_{budget}"


def main_job_command(budget: str) -> list[str]:
    """`python -m sorajax.main` for a budget, with this kernel's Python."""
    return [sys.executable, "-m", "sorajax.main", f"--workdir={main_job_dir(budget)}", *MAIN_JOB_FLAGS[budget]]


def run_command(args: Sequence[str], cwd: str | Path | None = None) -> None:
    """Runs a command with its output shown as it comes; a non-zero exit raises, so a notebook never goes on silently."""
    args = [str(a) for a in args]
    process = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, cwd=cwd)
    assert process.stdout is not None
    # newline="": progress bars' carriage returns reach the notebook, which redraws the line in place.
    for line in io.TextIOWrapper(process.stdout, encoding="utf-8", errors="replace", newline=""):
        print(line, end="", flush=True)
    if process.wait() != 0:
        raise RuntimeError(f"{' '.join(args[1:] if args[0] == sys.executable else args)} failed with exit code "
                           f"{process.returncode} (its last lines are above)")


def main_job_finished(workdir: Path) -> bool:
    """The main job writes samples.gif after both trainings and the samples: its mark of a usable run."""
    return (workdir / "samples" / "samples.gif").is_file()


def trained_run(budget: str) -> Path:
    """The main job's run for `budget` (its folder with vae/ and dit/), trained now if no finished run is there."""
    workdir = main_job_dir(budget)
    if not main_job_finished(workdir):
        print(f"no finished main job in {workdir}: training it now (the quickstart notebook does the same)")
        run_command(main_job_command(budget))
    return workdir


def show_videos(videos: Mapping[str, np.ndarray], fps: float = 8.0, height: int = 160) -> None:
    """Titled videos side by side, scaled up (the tiny models' clips are 16-80 pixels), as GIFs.

    mediapy encodes them with the ffmpeg binary of the imageio-ffmpeg wheel: no system ffmpeg needed.
    """
    import imageio_ffmpeg
    import mediapy

    mediapy.set_ffmpeg(imageio_ffmpeg.get_ffmpeg_exe())
    mediapy.show_videos({title: np.asarray(v) for title, v in videos.items()}, fps=fps, height=height,
                        codec="gif")
