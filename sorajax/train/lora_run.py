"""The frozen base of a LoRA run: which run and step it is, read the same way on every (re)start.

A LoRA run's checkpoints hold only adapters (and their EMA and optimizer moments); the base
weights are re-read from `train.init_from` each time the run starts. The first start records the
base (a RunLink, its step, which weight tree, its model fingerprint) in every checkpoint's meta;
a restart reads that same step again and refuses a base that changed (another run directory,
another step, another model), since adapters trained on one base are wrong on any other.
"""

from __future__ import annotations

import json
import os
from typing import Any, Callable

from sorajax.models.lora import LoraConfig, merge
from sorajax.runs.checkpoints import Checkpointer, checkpoints_dir, read_run_meta
from sorajax.runs.loaders import LORA_BASE_KEY
from sorajax.runs.paths import PathLike, RunLink, run_path
from sorajax.runs.records import fingerprint, fingerprint_differences
from sorajax.train.warm_start import parse_source


def lora_fingerprint(model_fingerprint: str, lora: LoraConfig) -> str:
    """The model's fingerprint plus the adapters' settings: resume refuses other adapters or base weights."""
    adapters = {"rank": lora.rank, "targets": list(lora.targets), "base_weights": lora.base_weights}
    return fingerprint({**json.loads(model_fingerprint), "lora": adapters})


def _recorded_base(run: PathLike) -> dict | None:
    """The base a LoRA run recorded in its newest checkpoint, or None for a run that has not saved yet."""
    if not checkpoints_dir(run).is_dir():
        return None
    ckpt = Checkpointer(checkpoints_dir(run), async_save=False)
    try:
        meta = ckpt.read_meta() if ckpt.latest_step() is not None else None
    finally:
        ckpt.close()
    if meta is not None and LORA_BASE_KEY not in meta:
        raise ValueError(f"the checkpoints in {run} are not a LoRA run's (no {LORA_BASE_KEY!r} in their meta): pass a "
                         "new --workdir for a LoRA fine-tune, or set train.lora.rank=0 to resume that run")
    return None if meta is None else meta[LORA_BASE_KEY]


def resolve_base(spec: str, run: PathLike, model_fingerprint: str, train_command: str) -> dict:
    """The base entry ({run, step, fingerprint}) for a start of the LoRA run `run` on `spec`.

    A fresh run takes `spec`'s step (its newest unless 'dir:step'); a restart takes the recorded one
    and refuses a different run directory, step or model.
    """
    source, step = parse_source(spec)
    if not run_path(source).is_dir():
        raise FileNotFoundError(f"train.init_from={spec!r}: no run directory {source!r}; give the LoRA base run "
                                "('dir' or 'dir:step')")
    recorded = _recorded_base(run)
    if recorded is not None:
        places = {os.fspath(p) for p in RunLink.from_json(recorded["run"]).candidates(run)}
        if os.fspath(run_path(source)) not in places:
            raise ValueError(f"train.init_from={spec!r} is not the base this LoRA run was trained on "
                             f"({recorded['run']['absolute']} step {recorded['step']}): point init_from back at it, "
                             "or pass a new --workdir to adapt another base")
        if step is not None and step != recorded["step"]:
            raise ValueError(f"train.init_from={spec!r} names step {step}, but this LoRA run's adapters were trained "
                             f"on step {recorded['step']} of its base: use '{source}:{recorded['step']}' (or no step)")
        step = recorded["step"]
    meta = read_run_meta(source, step, train_command)
    base_fingerprint = meta.get("model_fingerprint", "")
    differences = fingerprint_differences(base_fingerprint, model_fingerprint)
    if recorded is not None and base_fingerprint != recorded["fingerprint"]:
        differences = differences or ["the base run's model changed since this LoRA run started"]
    if differences:
        raise ValueError(f"train.init_from={spec!r} was trained with a different model config "
                         f"({'; '.join(differences)}); a LoRA run adapts a base of the same config.model, patch, "
                         "text_encoder and prediction")
    return {"run": RunLink.between(source, run).to_json(), "step": int(meta["step"]), "fingerprint": base_fingerprint}


def merged_weights(lora: LoraConfig) -> Callable[[Any, Any], Any]:
    """`weights(frozen, trainable)` for `make_train_step` and evaluation: the base with the adapters merged."""
    return lambda base, adapters: merge(base, adapters, lora.scale)
