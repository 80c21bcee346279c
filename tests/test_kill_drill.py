"""The kill -9 drill, 3 kills: a trainer killed at random moments and resumed ends bitwise equal to a straight run.

experiments/kill_drill.py runs the full drill (20 kills); here its own code runs a short one. The uninterrupted
run is this process's (the same trainer, in-process); the killed lives are `python -m sorajax.train_vae`.
"""

import importlib.util
import os
import sys

import jax

from sorajax.config_loading import load_config
from sorajax.runs.metrics import read_metrics
from sorajax.train.vae_trainer import train_vae

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
STEPS = 9


def _kill_drill():
    spec = importlib.util.spec_from_file_location("kill_drill", os.path.join(REPO, "experiments", "kill_drill.py"))
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # its dataclasses look their module up
    spec.loader.exec_module(module)
    return module


def test_three_kills_resume_to_bitwise_equal_losses_and_weights(tmp_path):
    kill_drill = _kill_drill()
    straight = str(tmp_path / "straight")
    train_vae(load_config("configs/vae_tiny.py:drill", {"train.steps": STEPS}), straight)
    passed, report = kill_drill.drill(str(tmp_path / "drill"), kills=3, steps=STEPS, seed=1,
                                      compile_cache=jax.config.jax_compilation_cache_dir, straight=straight)
    print(report)
    assert passed, report
    assert report.splitlines()[-1].startswith("PASS: 3 kills (SIGKILL), 3/3 resumed from the newest checkpoint; "
                                              f"logged metrics of {STEPS} steps bitwise equal; final state ")
    steps = [r["step"] for r in read_metrics(tmp_path / "drill" / "killed") if "loss" in r]
    assert steps == list(range(1, STEPS + 1))  # re-logged steps replaced, none twice
