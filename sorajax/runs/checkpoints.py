"""Orbax checkpoints of a run: model state, data-iterator position and JSON metadata.

One `Checkpointer` per run directory (``<run>/checkpoints``). Saves are asynchronous (training
goes on while arrays are written), atomic (Orbax writes to a temporary folder and renames it, so
a run killed mid-save keeps the previous checkpoint) and keep the newest N. The grain iterator's
position is saved next to the model, so a resumed run sees exactly the batches an uninterrupted
run would have seen. Readers can restore a PART of the saved state (:meth:`Checkpointer.restore_part`):
inference asks for the weights it samples with and never reads the optimizer state.

Damage: a step that fails to restore is reported (one warning), moved aside into
``<checkpoints>/damaged/`` and the next older step is tried (:meth:`Checkpointer.newest_intact`,
see `sorajax.runs.damage`). The writer (the runner, holding the run's lock) and a reader of a run no
live trainer holds move it; a reader of a live run only skips it.

A save of a tree that is NOT in memory (the converter's memory-mapped files) can bound the host
memory it takes with `save_concurrent_bytes`: see :meth:`Checkpointer.save`.
"""

from __future__ import annotations

import contextlib
import json
from typing import Any, Callable, Iterator, Mapping, TypeVar

import jax
import numpy as np
import orbax.checkpoint as ocp
from absl import logging
from etils import epath

from sorajax.runs.damage import (DAMAGED, CheckpointMismatchError, NoIntactCheckpointError, damaged_names,
                                 failure_reason, is_resource_error, move_aside, none_intact_message, target_differences)
from sorajax.runs.paths import PathLike, run_path
from sorajax.runs.save_failure import (CheckpointSaveError, join_abandoned_saves, quiet_orbax_write_errors,
                                       save_failure_message, write_errno)
from sorajax.runs.writer_lock import may_rearrange

try:  # grain's Orbax handler for iterator state.
    from grain.checkpoint import CheckpointRestore as _GrainRestore
    from grain.checkpoint import CheckpointSave as _GrainSave
except ImportError:  # pragma: no cover - older grain layout
    from grain.python import PyGrainCheckpointRestore as _GrainRestore  # type: ignore
    from grain.python import PyGrainCheckpointSave as _GrainSave  # type: ignore

CHECKPOINTS = "checkpoints"
T = TypeVar("T")


class CheckpointNotFoundError(FileNotFoundError):
    """Raised when a checkpoint is required but the directory holds none (or not the asked step)."""


def abstract_like(tree: Any) -> Any:
    """Restore target with the same shapes, dtypes and shardings as `tree`."""

    def leaf(x: Any) -> Any:
        if isinstance(x, jax.Array):
            return jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=x.sharding)
        return x

    return jax.tree.map(leaf, tree)


def memmap_as_host_array(leaf: Any) -> Any:
    """A memory-mapped array as a jax array on the host CPU over the same pages (other leaves, and dtypes jax
    would narrow without x64, unchanged)."""
    if not isinstance(leaf, np.memmap) or jax.dtypes.canonicalize_dtype(leaf.dtype) != leaf.dtype:
        return leaf
    return jax.device_put(leaf, jax.devices("cpu")[0], may_alias=True)


def _check_bound(state: Any, bound: int) -> None:
    """Orbax writes a leaf only when all of it fits under the bound: a larger leaf would fail mid-save."""
    sizes = {jax.tree_util.keystr(path): leaf.nbytes for path, leaf in jax.tree_util.tree_leaves_with_path(state)
             if hasattr(leaf, "nbytes")}
    name, largest = max(sizes.items(), key=lambda item: item[1], default=("", 0))
    if largest >= bound:
        raise ValueError(f"save_concurrent_bytes={bound} does not exceed the largest leaf, {name} of {largest} bytes: "
                         f"pass more than {largest}")


class Checkpointer:
    """Saves and restores `(state, data iterator, metadata)` under `directory`."""

    def __init__(self, directory: PathLike, *, max_to_keep: int = 3, save_every: int = 1, async_save: bool = True,
                 save_concurrent_bytes: int | None = None, writer: bool = False):
        """`save_concurrent_bytes`: at most this many bytes of arrays being written at once (Orbax's
        ``save_concurrent_gb``; its default, 96 GB, is no bound for one host). Must exceed the largest leaf.

        `writer`: this process holds the run's writer lock (the runner): it removes unfinished saves a killed
        run left (Orbax's tmp folders, never listed as steps) and moves damaged steps aside without asking."""
        self.directory = run_path(directory)
        self.save_every = max(int(save_every), 1)
        self.save_concurrent_bytes = save_concurrent_bytes
        self.writer = writer
        self._failed: dict[int, str] = {}  # steps found damaged, with why
        self._pending: int | None = None  # the step of the last save (async: maybe still being written)
        self._save_failed = False
        quiet_orbax_write_errors()
        options = ocp.CheckpointManagerOptions(
            max_to_keep=max_to_keep,
            save_interval_steps=1,  # the trainer decides when; see `should_save`.
            enable_async_checkpointing=async_save,
            create=True,
            cleanup_tmp_directories=writer,  # a reader must not remove a live trainer's save in progress
        )
        registry = None
        if save_concurrent_bytes is not None:  # the state's saves are bounded; other items as Orbax registers them
            registry = ocp.handlers.DefaultCheckpointHandlerRegistry()
            # Orbax counts in GB; a fraction is what a bound of a few tensors needs.
            bounded = ocp.StandardCheckpointHandler(save_concurrent_gb=save_concurrent_bytes / 1e9)
            registry.add("state", ocp.args.StandardSave, bounded)
            registry.add("state", ocp.args.StandardRestore, bounded)
            registry.add("state", ocp.args.PyTreeRestore, ocp.PyTreeCheckpointHandler())  # restore_part
        self._manager = ocp.CheckpointManager(self.directory, options=options, handler_registry=registry)

    def latest_step(self) -> int | None:
        return self._manager.latest_step()

    def all_steps(self) -> list[int]:
        return list(self._manager.all_steps())

    def newest_intact(self, read: Callable[[int], T], step: int | None = None) -> tuple[int, T]:
        """`(step, read(step))` for the newest step `read` succeeds on (only `step`, when given).

        A step `read` fails on is damaged unless the failure is a `CheckpointMismatchError` (the request does
        not fit: re-raised) or memory running out (re-raised): it is reported in one warning, moved aside (see
        `sorajax.runs.damage`) and the next older step is tried. None left: `NoIntactCheckpointError`.
        """
        candidates = [step] if step is not None else sorted(set(self.all_steps()) - set(self._failed), reverse=True)
        for candidate in candidates:
            try:
                return candidate, read(candidate)
            except CheckpointMismatchError:
                raise
            except Exception as error:  # noqa: BLE001 - Orbax/TensorStore raise many types; one step's boundary
                if is_resource_error(error):
                    raise
                self._set_aside(candidate, failure_reason(error), fallback=step is None)
        if step is not None:
            raise NoIntactCheckpointError(
                f"checkpoint step {step} in {self.directory} is damaged ({self._failed[step]}); saved steps now: "
                f"{self.all_steps() or 'none'}: pass one of them, or no step for the newest intact one")
        raise NoIntactCheckpointError(none_intact_message(self.directory, self._failed))

    def _set_aside(self, step: int, reason: str, fallback: bool) -> None:
        """Records `step` as damaged, moves it aside where this process may, and says so in one warning."""
        self._failed[step] = reason
        folder = self.directory / str(step)
        if not folder.exists():
            done = "it is gone (removed while being read, e.g. by its trainer's keep_checkpoints)"
        elif jax.process_index() != 0:
            done = "process 0 moves it aside"
        elif not (self.writer or may_rearrange(self.directory.parent)):
            done = "left in place (a live trainer holds this run, or it is read-only here)"
        else:
            try:
                done = f"moved to {move_aside(self.directory, step, reason)}"
            except OSError as error:
                done = f"left in place: could not move it ({failure_reason(error)})"
            self._manager.reload()  # Orbax's step list, without the step moved away
        then = "; trying the next older step" if fallback else ""
        logging.warning("checkpoint step %d in %s is damaged (%s): %s%s", step, self.directory, reason, done, then)

    def should_save(self, step: int, last_step: int) -> bool:
        return step % self.save_every == 0 or step == last_step

    def save(self, step: int, state: Any, *, data_iterator: Any = None, meta: Mapping[str, Any] | None = None) -> None:
        """Writes `state` (+ iterator position, metadata) as checkpoint `step`.

        Memory-mapped leaves (``np.memmap``) are written a few at a time when `save_concurrent_bytes` is set:
        Orbax's numpy handler would copy every numpy leaf into memory before writing (the whole model) and
        ignores the bound, so they go to Orbax as CPU jax arrays over the same memory (no copy), whose
        writes the bound limits. The arrays written are the same either way (Orbax records them as jax arrays
        of the host CPU); readers restore them into their own targets and devices.
        """
        if self.save_concurrent_bytes is not None:
            _check_bound(state, self.save_concurrent_bytes)
            state = jax.tree.map(memmap_as_host_array, state)
        args = {"state": ocp.args.StandardSave(state), "meta": ocp.args.JsonSave(dict(meta or {}))}
        if data_iterator is not None:
            args["data"] = _GrainSave(data_iterator)
        self.wait()  # the previous save's failure is reported as that step's
        self._failed.pop(step, None)  # a step found damaged (and moved aside) is written anew
        with self._write_failures(step):
            self._pending = step
            self._manager.save(step, args=ocp.args.Composite(**args), force=True)

    @contextlib.contextmanager
    def _write_failures(self, step: int | None) -> Iterator[None]:
        """A write the OS refuses (disk full, read-only, ...) becomes one `CheckpointSaveError` (see
        `sorajax.runs.save_failure`); reported once, as a later wait or close meets the same failure again."""
        try:
            yield
        except Exception as error:  # noqa: BLE001 - sorted by OS error code below; anything else re-raised
            code = write_errno(error)
            if code is None:
                raise
            join_abandoned_saves()
            if self._save_failed:
                return
            self._save_failed = True
            self._manager.reload()
            intact = [s for s in self.all_steps() if s != step]
            raise CheckpointSaveError(save_failure_message(self.directory, step, code, intact)) from None

    def restore(self, target_state: Any = None, *, step: int | None = None, data_iterator: Any = None) -> tuple[Any, dict]:
        """The whole saved state, into the structure/shardings of `target_state` (arrays or ShapeDtypeStructs).

        With no target the tree comes back as written (nested dicts of arrays).
        """
        step = self._step_or_latest(step)
        target = None if target_state is None else abstract_like(target_state)
        if target is not None:
            self._check_fits(step, target)
        args = {"state": ocp.args.StandardRestore(target), "meta": ocp.args.JsonRestore()}
        if data_iterator is not None:
            args["data"] = _GrainRestore(data_iterator)
        restored = self._manager.restore(step, args=ocp.args.Composite(**args))
        return restored["state"], dict(restored["meta"] or {})

    def restore_part(self, target: Mapping[str, Any], *, step: int | None = None) -> dict[str, Any]:
        """Only the top-level entries of the saved state that `target` names, e.g. ``{'ema_params': ...}``.

        `target` gives each entry's structure as ShapeDtypeStructs (with shardings to restore sharded; without,
        onto this host's first device); nothing else of the checkpoint is read from disk.
        """
        step = self._step_or_latest(step)
        one_device = jax.sharding.SingleDeviceSharding(jax.local_devices()[0])
        target = jax.tree.map(lambda x: x if getattr(x, "sharding", None) is not None else
                              jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=one_device), dict(target))
        self._check_fits(step, target)
        args = ocp.args.PyTreeRestore(item=target, restore_args=ocp.checkpoint_utils.construct_restore_args(target),
                                      partial_restore=True)
        restored = self._manager.restore(step, args=ocp.args.Composite(state=args))
        return dict(restored["state"])

    def saved_shapes(self, entry: str, step: int | None = None) -> Any:
        """ShapeDtypeStructs of one top-level entry of the saved state, from Orbax's metadata (no array is read).

        For trees whose structure only the checkpoint knows (a LoRA run's adapters)."""
        tree = self._saved_tree(self._step_or_latest(step))
        return jax.tree.map(lambda m: jax.ShapeDtypeStruct(tuple(m.shape), m.dtype), tree[entry])

    def _saved_tree(self, step: int) -> Any:
        """The saved state's tree of array metadata (shapes, dtypes), read from its metadata file alone."""
        handler = ocp.PyTreeCheckpointHandler()
        try:
            return handler.metadata(self.directory / str(step) / "state").tree
        finally:
            handler.close()

    def _check_fits(self, step: int, target: Any) -> None:
        """Refuses a restore target of other shapes than step `step` saved, before Orbax fails on it (so that a
        wrong request is never taken for a damaged checkpoint)."""
        problem = target_differences(self._saved_tree(step), target)
        if problem is not None:
            raise CheckpointMismatchError(f"checkpoint step {step} in {self.directory} does not fit the model it is "
                                          f"restored into ({problem}): load it with the config it was trained with")

    def read_meta(self, step: int | None = None) -> dict:
        """Reads only the JSON metadata of a checkpoint (config, step), no arrays."""
        step = self._step_or_latest(step)
        path = self.directory / str(step) / "meta" / "metadata"
        if path.exists():
            return json.loads(path.read_text())
        restored = self._manager.restore(step, args=ocp.args.Composite(meta=ocp.args.JsonRestore()))
        return dict(restored["meta"] or {})

    def _step_or_latest(self, step: int | None) -> int:
        step = self.latest_step() if step is None else step
        if step is None:
            raise CheckpointNotFoundError(f"no checkpoint in {self.directory}: nothing has been saved there yet")
        return step

    def wait(self) -> None:
        with self._write_failures(self._pending):
            self._manager.wait_until_finished()

    def close(self) -> None:
        try:
            self.wait()
        finally:
            with self._write_failures(self._pending):
                self._manager.close()


def open_run(run: PathLike, step: int | None, train_command: str) -> Checkpointer:
    """A run's checkpointer for reading, or a clear error when it has no checkpoints or not the asked `step`.

    `train_command` completes the error message: how to make the checkpoint that is missing.
    """
    run = run_path(run)
    ckpt_dir = run / CHECKPOINTS
    if not ckpt_dir.is_dir():
        raise CheckpointNotFoundError(
            f"no checkpoints under {str(run)!r} (expected {ckpt_dir}); train one with `{train_command} "
            f"--workdir={run}`, or pass the run directory that has one"
        )
    ckpt = Checkpointer(ckpt_dir, async_save=False)
    saved = ckpt.all_steps()
    if not saved or (step is not None and step not in saved):
        ckpt.close()
        damaged = [name for name in damaged_names(ckpt_dir) if step is None or name.startswith(f"{step}-")]
        if damaged:
            raise NoIntactCheckpointError(none_intact_message(ckpt_dir, {}) if step is None else
                                          f"checkpoint step {step} of {run} was found damaged and moved to "
                                          f"{ckpt_dir / DAMAGED / damaged[-1]}; saved steps: {saved or 'none'}")
        what = "no checkpoint" if not saved else f"no checkpoint of step {step}"
        raise CheckpointNotFoundError(
            f"{what} under {ckpt_dir}; saved steps: {saved or 'none'} "
            f"(train with `{train_command} --workdir={run}`; older steps are removed after keep_checkpoints newer saves)"
        )
    return ckpt


def read_run_meta(run: PathLike, step: int | None, train_command: str) -> dict:
    """A run's checkpoint metadata (config, fingerprint, step) without reading any array."""
    ckpt = open_run(run, step, train_command)
    try:
        return ckpt.newest_intact(ckpt.read_meta, step)[1]
    finally:
        ckpt.close()


def restore_run_part(run: PathLike, step: int | None, train_command: str,
                     target: Mapping[str, Any]) -> tuple[dict[str, Any], dict]:
    """Only the state entries `target` names (see :meth:`Checkpointer.restore_part`), and the metadata, of step
    `step` or else the newest intact one (the metadata's 'step' says which)."""
    ckpt = open_run(run, step, train_command)
    try:
        return ckpt.newest_intact(lambda s: (ckpt.restore_part(target, step=s), ckpt.read_meta(s)), step)[1]
    finally:
        ckpt.close()


def checkpoints_dir(run: PathLike) -> epath.Path:
    return run_path(run) / CHECKPOINTS
