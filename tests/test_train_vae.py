"""The autoencoder trainer end to end on tiny world clips: logs, checkpoints, exact resume."""

import json
import os

import jax
import numpy as np
import pytest

from sorajax.config_loading import load_config
from sorajax.runs.loaders import load_autoencoder
from sorajax.runs.checkpoints import CheckpointNotFoundError
from sorajax.runs.metrics import read_metrics
from sorajax.train.vae_trainer import train_vae

TINY = {"data.sizes": ((5, 16, 16),), "eval.sizes": ((5, 16, 16),), "train.save_every": 2, "eval.every": 2}


def _config(steps: int, **extra):
    return load_config("configs/vae_tiny.py:smoke", {**TINY, "train.steps": steps, **extra})


def _params(workdir: str):
    return jax.tree.leaves(load_autoencoder(workdir).variables)


def test_interrupted_run_resumes_to_the_same_weights_as_an_uninterrupted_one(tmp_path):
    straight, resumed = str(tmp_path / "straight"), str(tmp_path / "resumed")
    metrics = train_vae(_config(4), straight)
    assert set(metrics) >= {"psnr", "ssim", "psnr/5x16x16"}
    assert np.isfinite(metrics["psnr"]) and 0 < metrics["psnr"] < 60

    train_vae(_config(2), resumed)  # "preempted" after step 2 ...
    resumed_metrics = train_vae(_config(4), resumed)  # ... and restarted with the same command.
    assert resumed_metrics["psnr"] == pytest.approx(metrics["psnr"], rel=1e-5)
    # Run again once finished (the main job rerun): no training, and the saved evaluation comes back, not nothing.
    assert train_vae(_config(4), resumed) == resumed_metrics
    for a, b in zip(_params(straight), _params(resumed), strict=True):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))

    log = read_metrics(os.path.join(resumed, "metrics.jsonl"))
    train_steps = [r["step"] for r in log if "loss" in r]
    assert train_steps == [1, 2, 3, 4]  # resumed at 3, nothing repeated or skipped
    assert all(np.isfinite(r["loss"]) for r in log if "loss" in r)
    assert os.path.isdir(os.path.join(resumed, "tensorboard"))
    trained = load_autoencoder(resumed)
    assert trained.step == 4
    stats = trained.variables["latent_stats"]
    assert stats["std"].shape == (trained.vae.config.latent_channels,)
    assert not np.allclose(np.asarray(stats["std"]), 1.0)  # real statistics were stored with the weights


def test_resuming_with_a_different_model_is_refused(tmp_path):
    workdir = str(tmp_path / "run")
    train_vae(_config(1, **{"train.save_every": 1}), workdir)
    with pytest.raises(ValueError, match="different autoencoder config.*new --workdir"):
        train_vae(_config(2, **{"vae.latent_channels": 8}), workdir)
    with open(os.path.join(workdir, "config.json")) as f:
        assert json.load(f)["vae"]["latent_channels"] == 4  # the run's record was not overwritten


def test_a_wall_budget_stops_training_evaluated_and_saved(tmp_path):
    workdir = str(tmp_path / "run")
    metrics = train_vae(_config(50, **{"train.max_seconds": 1e-9}), workdir)  # over budget after the first step
    assert np.isfinite(metrics["psnr"])  # the stop evaluates (and stores the latent statistics) like a last step
    assert load_autoencoder(workdir).step == 1


def test_loading_a_missing_autoencoder_names_the_training_command(tmp_path):
    with pytest.raises(CheckpointNotFoundError, match="python -m sorajax.train_vae"):
        load_autoencoder(str(tmp_path / "nothing"))


def test_a_resumed_run_restores_without_computing_the_initial_state(tmp_path, monkeypatch):
    """Only a fresh run compiles and runs the init (8.5 s for the main job's autoencoder); a resume restores
    into the init's traced shapes and shardings, and continues to the same steps."""
    from sorajax.parallel.context import MeshContext

    inits = []
    real_init = MeshContext.init
    monkeypatch.setattr(MeshContext, "init", lambda self, *a, **k: inits.append(1) or real_init(self, *a, **k))
    run = tmp_path / "run"
    train_vae(load_config("configs/vae_tiny.py:drill", {"train.steps": 2}), str(run))
    assert len(inits) == 1
    train_vae(load_config("configs/vae_tiny.py:drill", {"train.steps": 4}), str(run))
    assert len(inits) == 1  # the second run resumed from step 2 without an init
    assert load_autoencoder(str(run)).step == 4
    assert [r["step"] for r in read_metrics(run) if "loss" in r] == [1, 2, 3, 4]
