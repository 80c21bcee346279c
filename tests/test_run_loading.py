"""Inference loads a run as it lies: moved, from another working directory, with its optimizer state gone.

The project below is made the way the main job makes it (relative paths, runs/vae beside runs/dit),
with a DiT trained to predict x0.
"""

import os
import shutil

import numpy as np
import pytest

from sorajax.config_loading import load_config
from sorajax.pipeline import Pipeline
from sorajax.runs.checkpoints import Checkpointer, CheckpointNotFoundError
from sorajax.train.dit_trainer import train_dit
from sorajax.train.vae_trainer import train_vae

REQUEST = dict(frames=5, height=16, width=16, steps=2, seed=4)


@pytest.fixture(scope="module")
def project(tmp_path_factory):
    root = tmp_path_factory.mktemp("project")
    previous = os.getcwd()
    os.chdir(root)
    try:
        train_vae(load_config("configs/vae_tiny.py:smoke", {"train.steps": 1}), "runs/vae")
        train_dit(load_config("configs/dit_tiny.py:smoke", {"vae_workdir": "runs/vae", "train.steps": 2,
                                                           "prediction": "x0"}), "runs/dit")
    finally:
        os.chdir(previous)
    return root


@pytest.fixture(scope="module")
def reference(project):
    return Pipeline.from_run(project / "runs" / "dit").generate(["a red ball"], **REQUEST)[0]


def test_the_run_remembers_its_prediction_and_sampling_defaults(project):
    pipeline = Pipeline.from_run(project / "runs" / "dit")
    assert pipeline.prediction == "x0"
    assert (pipeline.defaults.frames, pipeline.defaults.height, pipeline.defaults.width) == (5, 16, 16)
    assert pipeline.autoencoder_run == project / "runs" / "vae"


def test_a_moved_project_samples_from_another_working_directory(project, reference, tmp_path, monkeypatch):
    moved = tmp_path / "moved"
    shutil.copytree(project, tmp_path / "copy")
    (tmp_path / "copy").rename(moved)  # the copy's old path is gone too
    (tmp_path / "elsewhere").mkdir()
    monkeypatch.chdir(tmp_path / "elsewhere")
    pipeline = Pipeline.from_run(os.path.relpath(moved / "runs" / "dit"))
    assert pipeline.autoencoder_run == moved / "runs" / "vae"  # found beside it, not at the recorded path
    np.testing.assert_array_equal(pipeline.generate(["a red ball"], **REQUEST)[0], reference)


def test_a_dit_moved_alone_finds_its_autoencoder_where_it_was(project, reference, tmp_path, monkeypatch):
    shutil.copytree(project / "runs" / "dit", tmp_path / "dit")
    monkeypatch.chdir(tmp_path)
    pipeline = Pipeline.from_run("dit")
    assert pipeline.autoencoder_run == project / "runs" / "vae"
    np.testing.assert_array_equal(pipeline.generate(["a red ball"], **REQUEST)[0], reference)
    shutil.copytree(project / "runs" / "dit", tmp_path / "far" / "away" / "dit")
    os.rename(project / "runs" / "vae", project / "runs" / "vae_gone")
    try:
        with pytest.raises(CheckpointNotFoundError, match="autoencoder run .* is not at .*vae.*pass its directory"):
            Pipeline.from_run(tmp_path / "far" / "away" / "dit")
        found = Pipeline.from_run(tmp_path / "far" / "away" / "dit", autoencoder_run=project / "runs" / "vae_gone")
        np.testing.assert_array_equal(found.generate(["a red ball"], **REQUEST)[0], reference)
    finally:
        os.rename(project / "runs" / "vae_gone", project / "runs" / "vae")


def test_a_run_without_optimizer_state_samples_the_same(project, reference, tmp_path):
    """Inference restores the EMA weights alone: strip everything else from the checkpoints and nothing changes."""
    runs = tmp_path / "runs"
    shutil.copytree(project / "runs", runs)
    full = Checkpointer(runs / "dit" / "checkpoints", async_save=False)
    steps = full.all_steps()
    saved = {step: full.restore(step=step) for step in steps}
    full.close()
    shutil.rmtree(runs / "dit" / "checkpoints")
    slim = Checkpointer(runs / "dit" / "checkpoints", async_save=False)
    for step, (state, meta) in saved.items():
        assert "opt_state" in state
        slim.save(step, {"ema_params": state["ema_params"]}, meta=meta)
    slim.close()
    pipeline = Pipeline.from_run(runs / "dit")
    np.testing.assert_array_equal(pipeline.generate(["a red ball"], **REQUEST)[0], reference)
