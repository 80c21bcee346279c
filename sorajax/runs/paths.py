"""One path type for every run file: ``etils.epath``, which Orbax and TensorBoard also accept.

Why: pod users pass ``--workdir=gs://bucket/run``. Run code never calls ``os.path`` / ``open``
on run files; it goes through :func:`run_path`, so a bucket works wherever its filesystem
backend is installed, and a local path is made absolute once, at the entry, so nothing later
depends on the process's working directory.

A run that points at another run (a DiT at its autoencoder) stores a :class:`RunLink`: the
path relative to itself (survives moving both together) and the absolute path (survives
moving only the referring run, or loading from another working directory).
"""

from __future__ import annotations

import dataclasses
import os
from typing import Any

from etils import epath

PathLike = str | os.PathLike


def is_local(path: PathLike) -> bool:
    """True for paths of this machine's filesystem (no ``scheme://``)."""
    return "://" not in os.fspath(path)


def run_path(path: PathLike) -> epath.Path:
    """``path`` as an epath.Path; local paths absolute (``~`` expanded), URLs as given."""
    text = os.fspath(path)
    return epath.Path(os.path.abspath(os.path.expanduser(text)) if is_local(text) else text)


@dataclasses.dataclass(frozen=True)
class RunLink:
    """Where another run lies, seen from a run directory: relative (moves with it) and absolute."""

    relative: str | None
    absolute: str

    @classmethod
    def between(cls, target: PathLike, base: PathLike) -> "RunLink":
        """The link from run directory ``base`` to run directory ``target``."""
        target_path, base_path = run_path(target), run_path(base)
        relative = None
        if is_local(target_path) and is_local(base_path):
            relative = os.path.relpath(os.fspath(target_path), os.fspath(base_path))
        return cls(relative=relative, absolute=os.fspath(target_path))

    def to_json(self) -> dict[str, Any]:
        return {"relative": self.relative, "absolute": self.absolute}

    @classmethod
    def from_json(cls, data: Any) -> "RunLink":
        """From a stored link, or from a bare path string (runs made before links were stored)."""
        if isinstance(data, str):  # as the user typed it: relative to the directory training ran in
            return cls(relative=None, absolute=data)
        return cls(relative=data.get("relative"), absolute=data["absolute"])

    def candidates(self, base: PathLike) -> list[epath.Path]:
        """Paths to try, most portable first: relative to ``base`` (the referring run), then absolute."""
        found = []
        if self.relative is not None:
            found.append(run_path(run_path(base) / self.relative))
        found.append(run_path(self.absolute))
        return list({os.fspath(p): p for p in found}.values())


def write_text_atomic(path: epath.Path, text: str) -> None:
    """Write then rename, so a reader never sees half a file (a crash leaves the old one)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.parent / f".{path.name}.tmp"
    tmp.write_text(text)
    tmp.replace(path)


def write_bytes_atomic(path: epath.Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.parent / f".{path.name}.tmp"
    tmp.write_bytes(data)
    tmp.replace(path)
