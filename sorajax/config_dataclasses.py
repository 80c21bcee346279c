"""Frozen config dataclasses built from dicts or ml_collections ConfigDicts.

Every model and schedule config (VAEConfig, DiTConfig, TrainingTimeConfig) is a
frozen dataclass so it can be a linen module attribute and a jit static argument;
configs arrive as ConfigDicts. One constructor turns one into the other, turning
lists into tuples (hashable) and refusing unknown keys with the list of valid ones,
so a typo in `--config.model.widht` is an error, not a silently ignored field.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Mapping, TypeVar

T = TypeVar("T")


def from_mapping(cls: type[T], values: Mapping[str, Any] | Any, what: str) -> T:
    """`cls(**values)` with lists as tuples; `what` names the config in the error for unknown keys."""
    if hasattr(values, "to_dict"):
        values = values.to_dict()
    known = {field.name for field in dataclasses.fields(cls)}
    unknown = sorted(set(values) - known)
    if unknown:
        raise ValueError(f"unknown {what} config keys {unknown}; valid keys are {sorted(known)}")
    return cls(**{k: tuple(v) if isinstance(v, (list, tuple)) else v for k, v in values.items()})
