"""One tiny trained autoencoder and DiT for the whole test session, trained once across xdist's workers.

Many test files only need *a* trained run to read, sample from or refuse bad input against; training it
(tracing, compiling, encoding the clips, evaluating, saving) was most of their cost, paid once per file.
Tests that train with their own settings still do so. The runs are read-only for their users: a test that
writes into a run copies it first (`copied_runs`).
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest
from filelock import FileLock

from sorajax.config_loading import load_config
from sorajax.train.dit_trainer import train_dit
from sorajax.train.vae_trainer import train_vae

VAE_OVERRIDES = {"train.steps": 1}  # configs/vae_tiny.py:smoke
DIT_OVERRIDES = {"train.steps": 1}  # configs/dit_tiny.py:smoke, on that autoencoder


def _session_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """This test session's own temporary root, which xdist's workers share (their folders sit below it)."""
    base = tmp_path_factory.getbasetemp()
    return base.parent if os.environ.get("PYTEST_XDIST_WORKER") else base


def shared_runs(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """<root> holding vae/ and dit/ (smoke configs, one step each), trained by whichever worker asks first."""
    root = _session_root(tmp_path_factory) / "shared_tiny_runs"
    with FileLock(f"{root}.lock"):
        if not (root / "trained").exists():
            shutil.rmtree(root, ignore_errors=True)  # a worker that died mid-training left a partial run
            train_vae(load_config("configs/vae_tiny.py:smoke", VAE_OVERRIDES), root / "vae")
            train_dit(load_config("configs/dit_tiny.py:smoke", {"vae_workdir": str(root / "vae"), **DIT_OVERRIDES}),
                      root / "dit")
            (root / "trained").touch()
    return root


def shared_vae(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The shared autoencoder run (read-only), for tests that train their own DiT on it."""
    return shared_runs(tmp_path_factory) / "vae"


def copied_runs(tmp_path_factory: pytest.TempPathFactory, root: Path) -> tuple[Path, Path]:
    """(vae, dit) copied into `root`, for tests that may write into a run; the DiT still reads the shared
    autoencoder its config names, which nothing writes."""
    source = shared_runs(tmp_path_factory)
    vae, dit = root / "vae", root / "dit"
    shutil.copytree(source / "vae", vae)
    shutil.copytree(source / "dit", dit)
    return vae, dit
