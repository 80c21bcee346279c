"""A run's record of its settings: `config.json`, its history, and the model fingerprint.

Resume refuses a different MODEL (the fingerprint: the settings that shape the weights); other
settings may legitimately change between restarts (more steps, another eval cadence, a new
learning rate). Those changes are easy to make by accident, for example by re-running a command
after its defaults moved, and they bend a run mid-way (a new `train.steps` reshapes the
learning-rate schedule from the current step on). So the run says which settings changed, and
keeps every earlier config in `config_history.jsonl` instead of overwriting the record of how its
first part was trained.
"""

from __future__ import annotations

import json
from typing import Any

import jax

from sorajax.runs.paths import PathLike, run_path, write_text_atomic

CONFIG_FILE = "config.json"
HISTORY_FILE = "config_history.jsonl"


def as_json_tree(config: Any) -> Any:
    """A config (ConfigDict, dict) as plain JSON data: tuples become lists, as in a saved config.json."""
    if hasattr(config, "to_json_best_effort"):
        return json.loads(config.to_json_best_effort())
    return json.loads(json.dumps(config, default=str))


def flatten_settings(tree: Any, prefix: str = "") -> dict[str, Any]:
    """{'train.steps': 2000, ...} from nested dicts (lists and tuples stay whole values)."""
    if isinstance(tree, dict):
        flat: dict[str, Any] = {}
        for key, value in tree.items():
            flat.update(flatten_settings(value, f"{prefix}{key}."))
        return flat
    return {prefix[:-1]: tree}


def setting_changes(saved: Any, current: Any, absent_means_off: bool = False) -> list[str]:
    """'key: saved -> current' for every setting whose value differs (lists compare equal to tuples).

    With `absent_means_off`, a key only one side has counts as unchanged when that side has it off
    (False, None, 0, ''): options are added switched off, so a config that predates one matches.
    """
    old, new = flatten_settings(as_json_tree(saved)), flatten_settings(as_json_tree(current))
    changes = []
    for key in sorted(old.keys() | new.keys()):
        if absent_means_off and ((key not in old and not new[key]) or (key not in new and not old[key])):
            continue
        if old.get(key, "<unset>") != new.get(key, "<unset>"):
            changes.append(f"{key}: {old.get(key, '<unset>')} -> {new.get(key, '<unset>')}")
    return changes


def fingerprint(section: Any) -> str:
    """A stable string for the settings that shape a model; checkpoints store it to refuse mismatched resumes."""
    return json.dumps(as_json_tree(section), sort_keys=True)


def fingerprint_differences(saved: str, current: str) -> list[str]:
    """'key: saved -> current' for every model setting that differs; [] when the two mean the same model."""
    try:
        old, new = json.loads(saved), json.loads(current)
    except (TypeError, ValueError):  # not JSON: compare as opaque strings
        return [] if saved == current else [f"{saved} -> {current}"]
    return setting_changes(old, new, absent_means_off=True)


def record_run_config(run: PathLike, config: Any, resumed_step: int | None) -> list[str]:
    """Writes `config.json`; on a resume with changed settings, keeps the old one and says what changed.

    `resumed_step` is the step the run continues from (None for a fresh run, whose config simply
    replaces any leftover file). Returns the changes (empty when there are none). Only process 0
    writes, so hosts sharing a filesystem do not race on the files.
    """
    run = run_path(run)
    path = run / CONFIG_FILE
    current = as_json_tree(config)
    changes: list[str] = []
    if resumed_step is not None and path.exists():
        saved = json.loads(path.read_text())
        changes = setting_changes(saved, current)
        if changes and jax.process_index() == 0:
            history = run / HISTORY_FILE
            previous = history.read_text() if history.exists() else ""
            entry = json.dumps({"replaced_at_step": resumed_step, "config": saved})
            write_text_atomic(history, previous + entry + "\n")
            print(f"resuming at step {resumed_step} with settings changed since the last start ({len(changes)}): "
                  + "; ".join(changes) + f". The earlier config is kept in {HISTORY_FILE}; pass a new --workdir "
                  "for a clean run with these settings.")
    if jax.process_index() == 0:
        write_text_atomic(path, json.dumps(current, indent=2))
    return changes
