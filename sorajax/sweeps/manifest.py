"""A sweep's record on disk: the manifest listing its members and each finished member's marker.

`<workdir>/sweep.json` lists every member (overrides, run directory, launch commands, status), rewritten
whenever a status changes, so a reader (`sorajax.compare`, a person, a scheduler script) sees the sweep
without parsing logs. A member is finished when `<run>/sweep_member.json` exists: the sweep writes it
only after the member's commands exited 0 AND its checkpoint reached the final step (a trainer stopped
by a signal also exits 0, after saving where it was).
"""

from __future__ import annotations

import json
from typing import Any

from sorajax.runs.paths import PathLike, run_path, write_text_atomic

MANIFEST = "sweep.json"
MARKER = "sweep_member.json"
LOG = "sweep.log"
STATUSES = ("pending", "started", "running", "done", "failed", "interrupted")


def write_manifest(workdir: PathLike, record: dict[str, Any]) -> None:
    path = run_path(workdir)
    path.mkdir(parents=True, exist_ok=True)
    write_text_atomic(path / MANIFEST, json.dumps(record, indent=2, default=str))


def read_manifest(workdir: PathLike) -> dict[str, Any] | None:
    """A sweep workdir's manifest, or None when `workdir` is not a sweep's."""
    path = run_path(workdir) / MANIFEST
    return json.loads(path.read_text()) if path.exists() else None


def read_marker(run: PathLike) -> dict[str, Any] | None:
    path = run_path(run) / MARKER
    return json.loads(path.read_text()) if path.exists() else None


def write_marker(run: PathLike, record: dict[str, Any]) -> None:
    write_text_atomic(run_path(run) / MARKER, json.dumps(record, indent=2, default=str))
