"""A sweep file and its members: plain Python naming config overrides, and the two helpers that build them.

A sweep file (experiments/sweeps/*.py) is a Python module with these names:

    MEMBERS = grid({"train.steps": [250, 1000]}, {"data.framing": ["native", "square"]})  # required
    SHARED = {"vae_workdir": "runs/main/vae"}  # optional: overrides every member gets
    CONFIG = "configs/dit_tiny.py"             # optional: the config when --config is not given
    COMMAND = "sorajax.train_dit"              # optional: the trainer (default: the config's kind)
    PROBE_PROMPTS = 48                         # optional: a probe report after each DiT member (0: none)

Why plain Python rather than YAML: a sweep is a few lines of lists, and Python already has the
literals (tuples for clip sizes), the comments and the arithmetic (`[250 * 4**k for k in range(3)]`).
Keys are dotted config paths, exactly what `--config.a.b=v` takes on the command line.
"""

from __future__ import annotations

import dataclasses
import hashlib
import itertools
import json
import os
import re
from collections.abc import Mapping, Sequence
from typing import Any

Overrides = dict[str, Any]
TRAINERS = ("sorajax.train_dit", "sorajax.train_vae")
_SAFE = re.compile(r"[^A-Za-z0-9._=,+-]+")
MAX_NAME = 96  # characters of a member's directory name before it is shortened with a hash


def zipped(lists: Mapping[str, Sequence[Any]]) -> list[Overrides]:
    """Members from parallel lists: {"a": [1, 2], "b": [3, 4]} -> [{"a": 1, "b": 3}, {"a": 2, "b": 4}]."""
    lengths = {key: len(values) for key, values in lists.items()}
    if not lists or len(set(lengths.values())) != 1 or 0 in lengths.values():
        raise ValueError(f"zipped needs non-empty lists of one length, got lengths {lengths}")
    return [dict(zip(lists, values)) for values in zip(*lists.values())]


def grid(*axes: Mapping[str, Sequence[Any]]) -> list[Overrides]:
    """Every combination of the axes; an axis with several keys moves them together (as `zipped`)."""
    if not axes:
        raise ValueError("grid needs at least one axis, e.g. grid({'train.steps': [250, 1000]})")
    return [{k: v for member in combination for k, v in member.items()}
            for combination in itertools.product(*(zipped(axis) for axis in axes))]


@dataclasses.dataclass(frozen=True)
class SweepFile:
    """What a sweep file says (see the module docstring)."""

    path: str
    members: tuple[Overrides, ...]
    shared: Overrides = dataclasses.field(default_factory=dict)
    config: str | None = None
    command: str | None = None
    probe_prompts: int = 0


def _check_overrides(overrides: Any, where: str) -> Overrides:
    if not isinstance(overrides, Mapping) or not all(isinstance(k, str) and k for k in overrides):
        raise ValueError(f"{where} must be a dict of dotted config keys to values, got {overrides!r}")
    return dict(overrides)


def load_sweep(path: str) -> SweepFile:
    """Reads a sweep file; a missing or malformed name is one line naming the file and the fix."""
    if not os.path.isfile(path):
        raise FileNotFoundError(f"sweep file {path!r} not found; sweep files live in experiments/sweeps/")
    from sorajax.config_loading import python_file_module

    try:
        module = python_file_module(path, "sorajax_sweep")
    except Exception as error:  # the sweep file's own error names the file
        raise ValueError(f"sweep file {path!r} failed to load: {type(error).__name__}: {error}") from error
    members = getattr(module, "MEMBERS", None)
    if not isinstance(members, Sequence) or isinstance(members, str) or not members:
        raise ValueError(f"sweep file {path!r} must define MEMBERS, a non-empty list of override dicts "
                         "(e.g. MEMBERS = grid({'train.steps': [250, 1000]}))")
    members = tuple(_check_overrides(m, f"{path}: MEMBERS[{i}]") for i, m in enumerate(members))
    command = getattr(module, "COMMAND", None)
    if command is not None and command not in TRAINERS:
        raise ValueError(f"sweep file {path!r}: COMMAND {command!r} is not a trainer; use one of {TRAINERS}")
    config = getattr(module, "CONFIG", None)
    if config is not None and not isinstance(config, str):
        raise ValueError(f"sweep file {path!r}: CONFIG must be a config file[:variant] string, got {config!r}")
    probe = getattr(module, "PROBE_PROMPTS", 0)
    if isinstance(probe, bool) or not isinstance(probe, int) or probe < 0:
        raise ValueError(f"sweep file {path!r}: PROBE_PROMPTS must be a whole number >= 0, got {probe!r}")
    return SweepFile(path=path, members=members, shared=_check_overrides(getattr(module, "SHARED", {}), "SHARED"),
                     config=config, command=command, probe_prompts=probe)


def _value_text(value: Any) -> str:
    if isinstance(value, (list, tuple)):
        return "x".join(_value_text(v) for v in value) if all(not isinstance(v, (list, tuple)) for v in value) \
            else "+".join(_value_text(v) for v in value)
    return str(value)


def _short_keys(keys: set[str]) -> dict[str, str]:
    """Each key's last part ('train.steps' -> 'steps') unless two keys share it: then the whole key."""
    last = [k.rsplit(".", 1)[-1] for k in keys]
    return {k: k.rsplit(".", 1)[-1] if last.count(k.rsplit(".", 1)[-1]) == 1 else k for k in keys}


def _digest(overrides: Overrides) -> str:
    return hashlib.sha1(json.dumps(overrides, sort_keys=True, default=repr).encode()).hexdigest()[:8]


def member_names(members: Sequence[Overrides]) -> list[str]:
    """Readable, filesystem-safe, unique and stable directory names: 'steps=250,framing=square'.

    The name is the member's own overrides (short keys, in the order written); 'base' for a member with
    none. A name too long, or one two members would share after making it safe, gets a hash of the overrides.
    """
    seen: dict[str, int] = {}
    for i, member in enumerate(members):
        key = json.dumps(member, sort_keys=True, default=repr)
        if key in seen:
            raise ValueError(f"sweep members {seen[key]} and {i} have the same overrides {member}: drop one")
        seen[key] = i
    short = _short_keys({k for member in members for k in member})
    names = []
    for member in members:
        name = ",".join(f"{short[k]}={_value_text(v)}" for k, v in member.items()) or "base"
        name = _SAFE.sub("-", name).strip(".") or "member"
        names.append(name if len(name) <= MAX_NAME else f"{name[:MAX_NAME - 9]},{_digest(member)}")
    clashes = {n for n in names if names.count(n) > 1}
    return [f"{n},{_digest(m)}" if n in clashes else n for n, m in zip(names, members)]


def override_flag(key: str, value: Any) -> str:
    """`--config.key=value` as the trainers' config flags parse it back (strings bare, the rest as literals)."""
    return f"--config.{key}={value if isinstance(value, str) else repr(value)}"
