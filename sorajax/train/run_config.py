"""A run's `config.json`, and what changed when a run is resumed with different settings.

Resume only refuses a different MODEL (see `loop.resume`); other settings may legitimately change
between restarts (more steps, another eval cadence, a new learning rate). Those changes are easy to
make by accident, for example by re-running a command after its defaults moved, and they bend a
run mid-way (a new `train.steps` reshapes the learning-rate schedule from the current step on). So
the run says which settings changed, and keeps every earlier config in `config_history.jsonl`
instead of overwriting the record of how its first part was trained.
"""

from __future__ import annotations

import json
import os
from typing import Any

import jax

CONFIG_FILE = "config.json"
HISTORY_FILE = "config_history.jsonl"


def flatten_settings(tree: Any, prefix: str = "") -> dict[str, Any]:
    """{'train.steps': 2000, ...} from nested dicts (lists and tuples stay whole values)."""
    if isinstance(tree, dict):
        flat: dict[str, Any] = {}
        for key, value in tree.items():
            flat.update(flatten_settings(value, f"{prefix}{key}."))
        return flat
    return {prefix[:-1]: tree}


def setting_changes(saved: dict, current: dict, absent_means_off: bool = False) -> list[str]:
    """'key: saved -> current' for every setting whose value differs (lists compare equal to tuples).

    With `absent_means_off`, a key only one side has counts as unchanged when that side has it off
    (False, None, 0, ''): options are added switched off, so a config that predates one matches.
    """
    old, new = flatten_settings(_as_json(saved)), flatten_settings(_as_json(current))
    changes = []
    for key in sorted(old.keys() | new.keys()):
        if absent_means_off and ((key not in old and not new[key]) or (key not in new and not old[key])):
            continue
        if old.get(key, "<unset>") != new.get(key, "<unset>"):
            changes.append(f"{key}: {old.get(key, '<unset>')} -> {new.get(key, '<unset>')}")
    return changes


def _as_json(tree: Any) -> Any:
    """Round-trips through JSON so tuples become lists, as they are in a saved config.json."""
    return json.loads(json.dumps(tree, default=str))


def _to_dict(config: Any) -> dict:
    return json.loads(config.to_json_best_effort()) if hasattr(config, "to_json_best_effort") else _as_json(config)


def record_run_config(workdir: str, config: Any, resumed_step: int | None) -> list[str]:
    """Writes `config.json`; on a resume with changed settings, keeps the old one and says what changed.

    `resumed_step` is the step the run continues from (None for a fresh run, whose config simply
    replaces any leftover file). Returns the changes (empty when there are none). Only process 0
    writes, so hosts sharing a filesystem do not race on the files.
    """
    path = os.path.join(workdir, CONFIG_FILE)
    current = _to_dict(config)
    changes: list[str] = []
    if resumed_step is not None and os.path.exists(path):
        with open(path, encoding="utf-8") as f:
            saved = json.load(f)
        changes = setting_changes(saved, current)
        if changes and jax.process_index() == 0:
            with open(os.path.join(workdir, HISTORY_FILE), "a", encoding="utf-8") as f:
                f.write(json.dumps({"replaced_at_step": resumed_step, "config": saved}) + "\n")
            print(f"resuming at step {resumed_step} with settings changed since the last start ({len(changes)}): "
                  + "; ".join(changes) + f". The earlier config is kept in {HISTORY_FILE}; pass a new --workdir "
                  "for a clean run with these settings.")
    if jax.process_index() != 0:
        return changes
    tmp = path + ".tmp"
    with open(tmp, "w", encoding="utf-8") as f:
        json.dump(current, f, indent=2)
    os.replace(tmp, path)
    return changes
