"""Start a new run from another run's weights (fine-tuning): `config.train.init_from`.

Why: a run that changes the data (new sizes, longer clips, a new mask mix) need not relearn the
world from scratch. The new run takes the source run's weights (and EMA weights); its optimizer,
step counter, schedule and data order start fresh. Only those weight trees are read from the
source (never its optimizer state), and the source is never written.

It applies only while the new run has no checkpoint of its own: once it has saved, a restart
resumes from its own newest checkpoint (preemption-safe as any run).
"""

from __future__ import annotations

from typing import Any, Mapping, Sequence

import jax
import jax.numpy as jnp

from sorajax.runs.checkpoints import abstract_like, read_run_meta, restore_run_part
from sorajax.runs.loaders import saved_weights
from sorajax.runs.paths import run_path
from sorajax.runs.records import fingerprint_differences


def parse_source(spec: str) -> tuple[str, int | None]:
    """'runs/long' -> (runs/long, None: its newest step); 'runs/long:3000' -> (runs/long, 3000)."""
    path, sep, step = spec.rpartition(":")
    if sep and step.isdigit() and path:
        return path, int(step)
    return spec, None


def warm_start(state: Any, spec: str, fingerprint: str, train_command: str, must_match: Mapping[str, Any],
               entries: Sequence[str] = ("params", "ema_params")) -> Any:
    """`state` (fresh, step 0) with its weight trees `entries` taken from the run `spec` ('dir' or 'dir:step').

    Refuses a source trained with another model config, or whose metadata differs in a `must_match`
    entry (e.g. the autoencoder step whose latents it learned): either would load without a shape
    error and quietly train nonsense. Checked from the metadata before any array is read.
    """
    source, step = parse_source(spec)
    if not run_path(source).is_dir():
        raise FileNotFoundError(f"train.init_from={spec!r}: no run directory {source!r}; give a run directory "
                                "(optionally 'dir:step'), or leave init_from unset to train from scratch")
    meta = read_run_meta(source, step, train_command)
    differences = fingerprint_differences(meta.get("model_fingerprint", ""), fingerprint)
    if differences:
        raise ValueError(f"train.init_from={spec!r} was trained with a different model config "
                         f"({'; '.join(differences)}); use the same config.model, patch, text_encoder and "
                         "prediction to fine-tune")
    for key, value in must_match.items():
        if meta.get(key) is not None and meta[key] != value:
            raise ValueError(f"train.init_from={spec!r} has {key}={meta[key]}, this run {value}: they must match "
                             "(for the autoencoder step: point config.vae_workdir at the source run's autoencoder)")
    names = [name for name in entries if hasattr(state, name)]
    stored = {name: saved_weights(meta, name) for name in names}  # a converted run has params only
    # Restored into this state's structure and shardings (a mesh run gets sharded weights).
    restored, restored_meta = restore_run_part(source, step, train_command,  # an older step if this one is damaged
                                               {stored[name]: abstract_like(getattr(state, name)) for name in names})
    print(f"initialised from {source} step {restored_meta.get('step')} ({', '.join(names)}; optimizer and step start fresh)")
    values, used = {}, set()
    for name in names:  # one saved tree for two state entries: the second gets its own copy (donation)
        values[name] = restored[stored[name]] if stored[name] not in used else jax.tree.map(jnp.copy, restored[stored[name]])
        used.add(stored[name])
    return state.replace(**values)
