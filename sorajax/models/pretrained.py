"""Filling a sorajax parameter tree from a pretrained checkpoint's tensors, key by key.

A model family that can load outside weights supplies a *key map*: for every checkpoint key, the
sorajax parameter it fills (a path in the Flax tree) and how the tensor is laid out differently
(a transpose, a reshape into heads). This module does the rest, the same way for every family:
it reads a checkpoint folder shard by shard (so host memory holds one tensor at a time beyond the
result), and refuses, in one line naming the file and the key, a folder of another model family,
a shard the index lists but the folder lacks, a key the map does not know, a tensor of the wrong
shape and a parameter no key filled. The same checks run on key/shape lists alone
(:func:`check_coverage`), so full-size checkpoints are verified without their weights.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Callable, Iterable, Iterator, Mapping
from pathlib import Path
from typing import Any

import flax.linen as nn
import jax
import numpy as np


def _same(x: np.ndarray) -> np.ndarray:
    return x


@dataclasses.dataclass(frozen=True)
class Target:
    """Where one checkpoint tensor goes: a parameter path and the re-layout into sorajax's form.

    ``optional``: the key may be absent (a tied copy such as T5's ``encoder.embed_tokens``, stored
    only under its other name); when present it fills the same parameter and must agree in shape.
    """

    path: tuple[str, ...]
    # Written with array methods or einops, so it runs on numpy arrays and, traced, on shapes alone.
    transform: Callable[[np.ndarray], np.ndarray] = _same
    optional: bool = False


KeyMap = Mapping[str, Target]


class CheckpointError(ValueError):
    """A checkpoint that does not fit the model; the message names the file and the key."""


def _leaves_by_path(abstract: Any) -> dict[tuple[str, ...], tuple[int, ...]]:
    """Shapes of every leaf of a (possibly boxed) parameter tree, by its path of dict keys."""
    flat = jax.tree_util.tree_flatten_with_path(nn.meta.unbox(abstract))[0]
    return {tuple(str(getattr(p, "key", p)) for p in path): tuple(leaf.shape) for path, leaf in flat}


def _place(entries: Iterable[tuple[str, str, Any]], key_map: KeyMap, abstract: Any, model: str,
           shape_of: Callable[[Any], tuple[int, ...]],
           store: Callable[[tuple[str, ...], Any], Any] | None = None) -> dict[tuple[str, ...], Any]:
    """The checks shared by loading and coverage; returns the transformed value of every filled path.

    `store(path, value)` (streaming) takes each value as it arrives and returns what to keep instead
    (e.g. a memory-mapped file's array), so the model never sits in memory whole.
    """
    expected = _leaves_by_path(abstract)
    filled: dict[tuple[str, ...], Any] = {}
    seen: set[str] = set()
    for source, key, value in entries:
        target = key_map.get(key)
        if target is None:
            raise CheckpointError(f"{source}: key {key!r} is not part of {model}: the folder holds another "
                                  "model or version; convert a matching checkpoint")
        if target.path not in expected:
            raise CheckpointError(f"{source}: key {key!r} maps to {'/'.join(target.path)}, which {model} with "
                                  "this config does not have: check the config against the checkpoint's")
        raw_shape = tuple(shape_of(value))
        value = target.transform(value)
        if tuple(shape_of(value)) != expected[target.path]:
            raise CheckpointError(
                f"{source}: key {key!r} has shape {raw_shape} ({tuple(shape_of(value))} in sorajax's layout), but "
                f"{'/'.join(target.path)} is {expected[target.path]}: the checkpoint is of another size than "
                "the config; use the config stored with the checkpoint")
        seen.add(key)
        if target.path not in filled:
            filled[target.path] = value if store is None else store(target.path, value)
    missing_keys = [k for k, t in key_map.items() if not t.optional and k not in seen]
    if missing_keys:
        raise CheckpointError(f"{model}: {len(missing_keys)} checkpoint keys are missing, first {missing_keys[0]!r}: "
                              "the folder is incomplete (a shard missing or truncated); download it again")
    unfilled = sorted(set(expected) - set(filled))
    if unfilled:
        raise CheckpointError(f"{model}: parameter {'/'.join(unfilled[0])} is filled by no checkpoint key "
                              f"({len(unfilled)} in all): the key map is incomplete for this config")
    return filled


def _nest(flat: Mapping[tuple[str, ...], Any]) -> dict[str, Any]:
    tree: dict[str, Any] = {}
    for path, value in flat.items():
        node = tree
        for name in path[:-1]:
            node = node.setdefault(name, {})
        node[path[-1]] = value
    return tree


def fill_params(tensors: Iterable[tuple[str, str, np.ndarray]], key_map: KeyMap, abstract: Any, model: str,
                dtype: Any = np.float32) -> dict[str, Any]:
    """A plain parameter tree from ``(source file, key, array)`` triples; every check of :func:`_place`."""
    def entries():
        for source, key, array in tensors:
            yield source, key, np.asarray(array)

    flat = _place(entries(), key_map, abstract, model, lambda a: a.shape)
    return _nest({path: np.asarray(value, dtype) for path, value in flat.items()})


def stream_params(tensors: Iterable[tuple[str, str, np.ndarray]], key_map: KeyMap, abstract: Any, model: str,
                  store: Callable[[tuple[str, ...], np.ndarray], Any]) -> dict[str, Any]:
    """Like :func:`fill_params`, but each re-laid-out tensor goes to `store` as it is read (one at a time)."""
    def entries():
        for source, key, array in tensors:
            yield source, key, np.asarray(array)

    return _nest(_place(entries(), key_map, abstract, model, lambda a: a.shape, store))


def header_shapes(files: Iterable[Path]) -> tuple[dict[str, tuple[int, ...]], dict[str, str]]:
    """(shape, file) of every tensor from the safetensors headers alone (nothing read): checks before converting."""
    from safetensors import safe_open

    shapes, sources = {}, {}
    for path in files:
        try:
            with safe_open(str(path), framework="numpy") as handle:
                for key in handle.keys():
                    shapes[key], sources[key] = tuple(handle.get_slice(key).get_shape()), str(path)
        except Exception as error:  # a truncated or garbled file: say which
            raise CheckpointError(f"{path}: not a readable safetensors file ({error}): download it again") from None
    return shapes, sources


def check_coverage(key_shapes: Mapping[str, tuple[int, ...]], key_map: KeyMap, abstract: Any, model: str,
                   source: str | Mapping[str, str] = "key list") -> None:
    """The loading checks on keys and shapes alone (nothing allocated): for full-size models in CI, and
    before a conversion writes anything. `source`: one name, or each key's file."""
    def shaped(key: str) -> Any:
        return jax.ShapeDtypeStruct(tuple(key_shapes[key]), np.float32)

    def entries():
        for key in key_shapes:
            yield (source if isinstance(source, str) else source[key]), key, shaped(key)

    relayout = {k: dataclasses.replace(t, transform=_abstract_transform(t.transform)) for k, t in key_map.items()}
    _place(entries(), relayout, abstract, model, lambda a: a.shape)


def _abstract_transform(transform: Callable[[np.ndarray], np.ndarray]) -> Callable[[Any], Any]:
    """The re-layout traced on a shape only (transforms are written with numpy-compatible jnp ops)."""
    def run(spec: Any) -> Any:
        return jax.eval_shape(lambda x: transform(x), spec)
    return run


def read_key_shapes(path: str | Path) -> dict[str, tuple[int, ...]]:
    """A key list fixture: one ``key<TAB>d0,d1,...`` line per checkpoint tensor."""
    shapes = {}
    for line in Path(path).read_text().splitlines():
        key, dims = line.split("\t")
        shapes[key] = tuple(int(d) for d in dims.split(",") if d)
    return shapes


def folder_config(folder: str | Path, families: Iterable[str], model: str) -> dict[str, Any]:
    """The folder's ``config.json``, refused unless its class names one of ``families``."""
    path = Path(folder) / "config.json"
    if not path.is_file():
        raise CheckpointError(f"{path}: no config.json: point at the model's folder (e.g. transformer/, vae/)")
    config = json.loads(path.read_text())
    names = [config.get("_class_name"), *config.get("architectures", [])]
    families = tuple(families)
    if not any(name in families for name in names if name):
        found = next((n for n in names if n), "no class name")
        raise CheckpointError(f"{path}: this folder holds {found}, not {model} ({' / '.join(families)}): "
                              "point at the matching model folder")
    return config


def checkpoint_files(folder: str | Path) -> list[Path]:
    """The folder's safetensors shards: those its index lists (each must exist) or the single file."""
    folder = Path(folder)
    indexes = sorted(folder.glob("*.safetensors.index.json"))
    if indexes:
        weight_map = json.loads(indexes[0].read_text()).get("weight_map", {})
        shards = sorted(set(weight_map.values()))
        for shard in shards:
            if not (folder / shard).is_file():
                key = next(k for k, v in weight_map.items() if v == shard)
                raise CheckpointError(f"{folder / shard}: shard listed in {indexes[0].name} (holding {key!r} and "
                                      "others) is missing: download the whole folder")
        return [folder / shard for shard in shards]
    files = sorted(folder.glob("*.safetensors"))
    if not files:
        raise CheckpointError(f"{folder}: no .safetensors files: point at a model folder with its weights")
    return files


def read_tensors(files: Iterable[Path]) -> Iterator[tuple[str, str, np.ndarray]]:
    """``(file, key, array)`` for every tensor, one at a time (bf16 stays bf16 through ml_dtypes)."""
    from safetensors import safe_open

    for path in files:
        with safe_open(str(path), framework="flax") as f:
            for key in f.keys():
                yield str(path), key, np.asarray(f.get_tensor(key))
