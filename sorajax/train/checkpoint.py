"""Orbax checkpointing for every trainer: model state, data-iterator state, metadata.

One `Checkpointer` per run directory. Saves are asynchronous (training goes on
while arrays are written), atomic (Orbax writes to a temporary folder and renames
it, so a run killed mid-save leaves the previous checkpoint intact) and keep the
newest N. The grain iterator's position is saved next to the model, so a resumed
run sees exactly the batches an uninterrupted run would have seen.
"""

from __future__ import annotations

import json
import os
from typing import Any, Mapping

import jax
import orbax.checkpoint as ocp

try:  # grain's Orbax handler for iterator state.
    from grain.checkpoint import CheckpointRestore as _GrainRestore
    from grain.checkpoint import CheckpointSave as _GrainSave
except ImportError:  # pragma: no cover - older grain layout
    from grain.python import PyGrainCheckpointRestore as _GrainRestore  # type: ignore
    from grain.python import PyGrainCheckpointSave as _GrainSave  # type: ignore


class CheckpointNotFoundError(FileNotFoundError):
    """Raised when a checkpoint is required but the directory holds none."""


def abstract_like(tree: Any) -> Any:
    """Restore target with the same shapes, dtypes and shardings as `tree`."""

    def leaf(x: Any) -> Any:
        if isinstance(x, jax.Array):
            return jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=x.sharding)
        return x

    return jax.tree.map(leaf, tree)


class Checkpointer:
    """Saves and restores `(state, data iterator, metadata)` under `directory`."""

    def __init__(self, directory: str, *, max_to_keep: int = 3, save_every: int = 1, async_save: bool = True):
        self.directory = os.path.abspath(directory)
        self.save_every = max(int(save_every), 1)
        options = ocp.CheckpointManagerOptions(
            max_to_keep=max_to_keep,
            save_interval_steps=1,  # the trainer decides when; see `should_save`.
            enable_async_checkpointing=async_save,
            create=True,
        )
        self._manager = ocp.CheckpointManager(self.directory, options=options)

    def latest_step(self) -> int | None:
        return self._manager.latest_step()

    def all_steps(self) -> list[int]:
        return list(self._manager.all_steps())

    def should_save(self, step: int, last_step: int) -> bool:
        return step % self.save_every == 0 or step == last_step

    def save(self, step: int, state: Any, *, data_iterator: Any = None, meta: Mapping[str, Any] | None = None) -> None:
        args = {"state": ocp.args.StandardSave(state), "meta": ocp.args.JsonSave(dict(meta or {}))}
        if data_iterator is not None:
            args["data"] = _GrainSave(data_iterator)
        self._manager.save(step, args=ocp.args.Composite(**args), force=True)

    def restore(self, target_state: Any = None, *, step: int | None = None, data_iterator: Any = None) -> tuple[Any, dict]:
        """Restores into the structure/shardings of `target_state` (arrays or ShapeDtypeStructs).

        With no target the saved tree comes back as it was written (nested dicts of
        arrays), which is what inference needs: it reads params and ignores the rest.
        """
        step = self.latest_step() if step is None else step
        if step is None:
            raise CheckpointNotFoundError(
                f"no checkpoint in {self.directory}: train first (e.g. python -m sorajax.train_vae "
                f"--workdir={os.path.dirname(self.directory)}) or point to the run directory that has one"
            )
        target = None if target_state is None else abstract_like(target_state)
        args = {"state": ocp.args.StandardRestore(target), "meta": ocp.args.JsonRestore()}
        if data_iterator is not None:
            args["data"] = _GrainRestore(data_iterator)
        restored = self._manager.restore(step, args=ocp.args.Composite(**args))
        return restored["state"], dict(restored["meta"] or {})

    def read_meta(self, step: int | None = None) -> dict:
        """Reads only the JSON metadata of a checkpoint (config, step), no arrays."""
        step = self.latest_step() if step is None else step
        if step is None:
            raise CheckpointNotFoundError(f"no checkpoint in {self.directory}")
        path = os.path.join(self.directory, str(step), "meta", "metadata")
        if os.path.exists(path):
            with open(path, encoding="utf-8") as f:
                return json.load(f)
        restored = self._manager.restore(step, args=ocp.args.Composite(meta=ocp.args.JsonRestore()))
        return dict(restored["meta"] or {})

    def wait(self) -> None:
        self._manager.wait_until_finished()

    def close(self) -> None:
        self._manager.wait_until_finished()
        self._manager.close()


def _open_run(workdir: str, step: int | None, train_command: str) -> Checkpointer:
    """The run's checkpointer, or a clear error when it has no checkpoints or not the asked `step`."""
    ckpt_dir = os.path.join(workdir, "checkpoints")
    if not os.path.isdir(ckpt_dir):
        raise CheckpointNotFoundError(
            f"no checkpoints under {workdir!r} (expected {ckpt_dir}); train one with `{train_command} "
            f"--workdir={workdir}`, or pass the run directory that has one"
        )
    ckpt = Checkpointer(ckpt_dir, async_save=False)
    if step is not None and step not in ckpt.all_steps():
        saved = ckpt.all_steps()
        ckpt.close()
        raise CheckpointNotFoundError(
            f"no checkpoint of step {step} under {ckpt_dir}; saved steps: {saved or 'none'} "
            "(older ones are removed after keep_checkpoints newer saves)"
        )
    return ckpt


def read_run_meta(workdir: str, step: int | None, train_command: str) -> dict:
    """A run's checkpoint metadata (config, fingerprint, step) without reading any array."""
    ckpt = _open_run(workdir, step, train_command)
    try:
        return ckpt.read_meta(step)
    finally:
        ckpt.close()


def restore_run(workdir: str, step: int | None, train_command: str, target: Any = None) -> tuple[Any, dict]:
    """The saved tree and metadata of a run directory's newest (or `step`) checkpoint.

    Without `target` the tree comes back as saved (inference reads its params); with one, it is restored
    into that structure, dtypes and shardings (Orbax checks the shapes). `train_command` completes the
    error message when the run has no checkpoints.
    """
    ckpt = _open_run(workdir, step, train_command)
    try:
        return ckpt.restore(target, step=step)
    finally:
        ckpt.close()
