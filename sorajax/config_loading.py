"""Loading `configs/*.py` files from Python (tests, notebooks, the main job).

The command lines use `ml_collections.config_flags` (`--config=configs/x.py:variant
--config.train.steps=10`); this module gives Python callers the same thing without
absl flags, with the same rule: overriding a key the config does not have is an
error that names the key and the keys that exist.
"""

from __future__ import annotations

import ast
import importlib.util
import os
from typing import Any, Mapping

import ml_collections

from sorajax.config_dataclasses import unknown_key

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CONFIGS = os.path.join(REPO_ROOT, "configs")


def python_file_module(path: str, prefix: str) -> Any:
    """The module a Python file defines (configs, sweep files: plain Python read by path); its errors propagate."""
    module_spec = importlib.util.spec_from_file_location(f"{prefix}_{os.path.basename(path)[:-3]}", path)
    module = importlib.util.module_from_spec(module_spec)
    module_spec.loader.exec_module(module)
    return module


def bundled_config(name: str) -> str:
    """The path of one of the repository's config files (command defaults work from any directory)."""
    return os.path.join(CONFIGS, name)


def load_config(spec: str, overrides: Mapping[str, Any] | None = None) -> ml_collections.ConfigDict:
    """`spec` is `path/to/config.py[:variant]`; relative paths are tried from the repo root too."""
    path, _, variant = spec.partition(":")
    if not os.path.exists(path) and os.path.exists(os.path.join(REPO_ROOT, path)):
        path = os.path.join(REPO_ROOT, path)
    if not os.path.exists(path):
        raise FileNotFoundError(f"config file {path!r} not found; configs live in {os.path.join(REPO_ROOT, 'configs')}")
    try:
        module = python_file_module(path, "sorajax_config")
        config = module.get_config(variant or None)
    except Exception as error:  # a config file's own error (a bad variant, a typo) names the file
        raise ValueError(f"config {spec!r} failed to load: {type(error).__name__}: {error}") from error
    for key, value in (overrides or {}).items():
        apply_override(config, key, value)
    return config


def check_key(config: ml_collections.ConfigDict, dotted_key: str) -> ml_collections.ConfigDict:
    """The section holding `a.b.c`'s last part; a KeyError naming the unknown part, its section and the known keys.

    The one check for overrides from Python and from the command line (`sorajax.cli.define_config`).
    """
    node = config
    parts = dotted_key.split(".")
    for i, part in enumerate(parts):
        section = ".".join(parts[:i])
        if not isinstance(node, ml_collections.ConfigDict):
            raise KeyError(f"config '{section}' is a value ({node!r}), not a section: it has no key '{part}'")
        if part not in node:
            raise KeyError(unknown_key(part, section, node.keys()))
        if i < len(parts) - 1:
            node = node[part]
    return node


def apply_override(config: ml_collections.ConfigDict, dotted_key: str, value: Any) -> None:
    """Sets `a.b.c = value`, refusing keys the config does not define."""
    node = check_key(config, dotted_key)
    parts = dotted_key.split(".")
    if isinstance(value, str):
        try:
            value = ast.literal_eval(value)
        except (ValueError, SyntaxError):
            pass
    node[parts[-1]] = value
