"""Damaged checkpoints: how to tell one from a wrong request, and where it goes.

A checkpoint step can be damaged after its atomic commit (a disk error, a half-copied run, a
file removed by hand). Restoring it fails with whatever Orbax or TensorStore meets first: JSON
errors, `FileNotFoundError`, `ValueError` wrapping a TensorStore status, a bare `Exception`, a
`KeyError` for an empty step. So damage is recognised at the boundary of ONE step's restore, by
elimination: the caller checks the request against the step's saved shapes first
(:func:`target_differences`, a `CheckpointMismatchError` otherwise), and running out of memory
is not damage either; any other failure of that step is.

A damaged step is moved aside, never deleted, to ``<checkpoints>/damaged/<step>-<time>`` with a
``DAMAGE.txt`` saying why: Orbax lists only integer-named folders, so it no longer sees the step,
and a person can still inspect or recover it.
"""

from __future__ import annotations

import collections
import datetime
import re
from typing import Any

import jax
from etils import epath

DAMAGED = "damaged"
_MAX_REASON = 160


class CheckpointMismatchError(ValueError):
    """The request does not fit the checkpoint (another model's shapes): a caller's error, not damage."""


class NoIntactCheckpointError(FileNotFoundError):
    """Every checkpoint step of a run failed to restore."""


def failure_reason(error: BaseException) -> str:
    """One short line for a restore failure: the innermost cause's type and first line (Orbax wraps TensorStore's
    status in a bare Exception), without TensorStore's spec dumps and database paths."""
    seen = {id(error)}
    while (inner := error.__cause__ or error.__context__) is not None and id(inner) not in seen:
        seen.add(id(inner))
        error = inner
    text = str(error).strip().splitlines()[0] if str(error).strip() else ""
    text = re.split(r" \[tensorstore_spec=| See full TensorStore details|\. Available items", text)[0]
    text = re.sub(r' in OCDBT database at local file "[^"]*"', "", text).strip(" '\"")
    if len(text) > _MAX_REASON:
        text = text[:_MAX_REASON - 3] + "..."
    return f"{type(error).__name__}: {text}" if text else type(error).__name__


def is_resource_error(error: BaseException) -> bool:
    """Out of host or device memory: the checkpoint may be fine, the machine is too small."""
    text = str(error)
    return isinstance(error, MemoryError) or "RESOURCE_EXHAUSTED" in text or "Out of memory" in text


def _top_name(key: Any) -> str:
    for attr in ("key", "name", "idx"):
        if hasattr(key, attr):
            return str(getattr(key, attr))
    return str(key)


def _shapes_by_entry(tree: Any) -> dict[str, collections.Counter]:
    """Each top-level entry's array shapes, as a multiset: names below the top differ between a saved tree
    (dicts and lists) and a live one (dataclasses, named tuples), shapes do not."""
    found: dict[str, collections.Counter] = collections.defaultdict(collections.Counter)
    for path, leaf in jax.tree_util.tree_flatten_with_path(tree)[0]:
        if path and hasattr(leaf, "shape"):
            found[_top_name(path[0])][tuple(leaf.shape)] += 1
    return found


def target_differences(saved_tree: Any, target: Any) -> str | None:
    """How `target` (arrays or ShapeDtypeStructs) differs from a step's saved tree, or None when it fits.

    Entries of the saved tree that the target leaves out are not compared (partial restores)."""
    saved, wanted = _shapes_by_entry(saved_tree), _shapes_by_entry(target)
    for entry, shapes in wanted.items():
        if entry not in saved:
            return f"no entry {entry!r} is saved (saved: {sorted(saved)})"
        if shapes != saved[entry]:
            extra, missing = shapes - saved[entry], saved[entry] - shapes
            return (f"{entry!r} differs: {sum(saved[entry].values())} arrays saved, {sum(shapes.values())} asked for"
                    f"; e.g. asked {next(iter(extra), None)}, saved {next(iter(missing), None)}")
    return None


def move_aside(directory: epath.Path, step: int, reason: str) -> epath.Path:
    """Moves step folder `step` of `directory` to ``damaged/<step>-<UTC time>`` with the reason; returns where."""
    now = datetime.datetime.now(datetime.timezone.utc).strftime("%Y%m%dT%H%M%S%fZ")
    destination = directory / DAMAGED / f"{step}-{now}"
    destination.parent.mkdir(parents=True, exist_ok=True)
    (directory / str(step)).rename(destination)
    (destination / "DAMAGE.txt").write_text(f"step {step} failed to restore: {reason}\n")
    return destination


def damaged_names(directory: epath.Path) -> list[str]:
    """The folders moved aside so far (``<step>-<time>``)."""
    folder = directory / DAMAGED
    return sorted(p.name for p in folder.iterdir()) if folder.is_dir() else []


def none_intact_message(directory: epath.Path, failed: dict[int, str]) -> str:
    """One line: no step of `directory` restores, which failed and how, and how to start fresh."""
    what = "; ".join(f"step {step}: {reason}" for step, reason in failed.items()) or \
        f"earlier damaged steps are in {directory / DAMAGED}"
    return (f"no intact checkpoint in {directory} ({what}): start fresh with a new --workdir, or move "
            f"{directory.parent} away and rerun; the damaged steps are kept in {directory / DAMAGED}")
