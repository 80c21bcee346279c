"""Start a new run from another run's weights (fine-tuning): `config.train.init_from`.

Why: a run that changes the data (new sizes, longer clips, a new mask mix) need not
relearn the world from scratch. The new run takes the source run's weights and EMA
weights; its optimizer, step counter, schedule and data order start fresh. The
source is read only, never written.

It applies only while the new run has no checkpoint of its own: once it has saved,
a restart resumes from its own newest checkpoint (preemption-safe as any run).
"""

from __future__ import annotations

import os
from typing import Any

from sorajax.train.checkpoint import read_run_meta, restore_run
from sorajax.train.loop import fingerprint_differences


def parse_source(spec: str) -> tuple[str, int | None]:
    """'runs/long' -> (runs/long, None: its newest step); 'runs/long:3000' -> (runs/long, 3000)."""
    path, sep, step = spec.rpartition(":")
    if sep and step.isdigit() and path:
        return path, int(step)
    return spec, None


def warm_start(state: Any, spec: str, fingerprint: str, vae_step: int) -> Any:
    """`state` (fresh, step 0) with params and EMA params taken from the run `spec` ('dir' or 'dir:step').

    Refuses a source trained with another model config or on another autoencoder's latents:
    either would load without a shape error and quietly train nonsense.
    """
    source, step = parse_source(spec)
    if not os.path.isdir(source):
        raise FileNotFoundError(f"train.init_from={spec!r}: no run directory {source!r}; give a DiT run directory "
                                "(optionally 'dir:step'), or leave init_from unset to train from scratch")
    meta = read_run_meta(source, step, "python -m sorajax.train_dit")  # checked before any array is read
    differences = fingerprint_differences(meta.get("model_fingerprint", ""), fingerprint)
    if differences:
        raise ValueError(f"train.init_from={spec!r} was trained with a different model config "
                         f"({'; '.join(differences)}); use the same config.model, patch, text_encoder and "
                         "prediction to fine-tune")
    if meta.get("vae_step") is not None and int(meta["vae_step"]) != int(vae_step):
        raise ValueError(f"train.init_from={spec!r} learned the latents of autoencoder step {meta['vae_step']}, this "
                         f"run uses step {vae_step}; point config.vae_workdir at the source run's autoencoder")
    # Restored into this state's structure and shardings (so a mesh run gets sharded weights); the
    # source's optimizer state and step are read along and dropped.
    saved, _ = restore_run(source, step, "python -m sorajax.train_dit", target=state)
    print(f"initialised from {source} step {meta.get('step')} (weights and EMA; optimizer and step start fresh)")
    return state.replace(params=saved.params, ema_params=saved.ema_params)
