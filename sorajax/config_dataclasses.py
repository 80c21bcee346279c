"""Frozen config dataclasses built from dicts or ml_collections ConfigDicts, checked once.

Every config section a part reads (the model, the noise schedule, the data, the trainer, sampling)
is a frozen dataclass, so it can be a linen module attribute or a jit static argument, and is built
ONCE where a command starts. One constructor turns a ConfigDict section into one: lists become
tuples (hashable, at any depth), unknown keys are refused with the list of valid ones (a typo in
`--config.model.widht` is an error, not a silently ignored field), and a value of the wrong kind
(a string for an int, a float for a bool) is refused by name. Each class's own `__post_init__`
then checks the values' ranges.
"""

from __future__ import annotations

import dataclasses
import difflib
import types
import typing
from typing import Any, Mapping, TypeVar

T = TypeVar("T")

_SIMPLE = {int: "an integer", float: "a number", bool: "true or false", str: "a string"}


def unknown_key(key: str, section: str, known: Any) -> str:
    """The one message every config path gives for a key the config does not have (files, overrides, sections):
    the key, where, the keys that exist, and the nearest one."""
    known = sorted(str(k) for k in known)
    where = f"config '{section}'" if section else "the config"
    near = difflib.get_close_matches(key, known, n=1)
    hint = f"; did you mean '{near[0]}'?" if near else ""
    return f"unknown key '{key}' in {where}; known keys: {', '.join(known)}{hint}"


def _as_tuples(value: Any) -> Any:
    if isinstance(value, (list, tuple)):
        return tuple(_as_tuples(v) for v in value)
    return value


def _check_kind(what: str, name: str, hint: Any, value: Any) -> Any:
    """The value, if it suits a simple annotation (int, float, bool, str, or one of them | None)."""
    allowed = typing.get_args(hint) if isinstance(hint, types.UnionType) or typing.get_origin(hint) is typing.Union \
        else (hint,)
    if value is None and type(None) in allowed:
        return value
    simple = [t for t in allowed if t in _SIMPLE]
    if not simple or len(simple) != len([t for t in allowed if t is not type(None)]):
        return value  # tuples, mappings, nested types: the class checks them
    for kind in simple:
        if kind is bool and isinstance(value, bool):
            return value
        if kind is int and isinstance(value, int) and not isinstance(value, bool):
            return value
        if kind is float and isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        if kind is str and isinstance(value, str):
            return value
    expected = " or ".join(_SIMPLE[t] for t in simple) + (" (or None)" if type(None) in allowed else "")
    raise ValueError(f"{what}.{name} must be {expected}, got {value!r}")


def from_mapping(cls: type[T], values: Mapping[str, Any] | Any, what: str) -> T:
    """`cls(**values)` with lists as tuples; `what` names the config section in errors."""
    if hasattr(values, "to_dict"):
        values = values.to_dict()
    if not isinstance(values, Mapping):
        raise ValueError(f"the {what} config must be a mapping of settings, got {values!r}")
    fields = {field.name: field for field in dataclasses.fields(cls)}
    unknown = sorted(set(values) - set(fields))
    if unknown:
        raise ValueError(unknown_key(unknown[0], what, fields))
    hints = typing.get_type_hints(cls)
    checked = {k: _check_kind(what, k, hints.get(k), _as_tuples(v)) for k, v in values.items()}
    return cls(**checked)


def check_sections(config: Mapping[str, Any] | Any, known: Any, what: str) -> None:
    """Refuse top-level config keys no part reads (a misspelt section would be silently ignored)."""
    keys = set(config.keys())
    unknown = sorted(keys - set(known))
    if unknown:
        raise ValueError(unknown_key(unknown[0], what, known))
