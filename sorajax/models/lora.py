"""LoRA adapters for any DiT: low-rank updates of chosen kernels, merged into the base weights.

Why: fine-tuning a 14B DiT needs the weights, their gradients and two Adam moments in memory; a
rank-r adapter per kernel trains ~1% of that. Each targeted kernel W gets A (its input axes + a
rank axis, small random) and B (the rank axis + its output axes, zeros), so the adapted model
equals the base at step 0. `merge` computes W' = W + (alpha / rank) * A @ B, with the input and
output axes flattened (einops), for per-block kernels, scanned kernels (stacked [depth, ...]) and
DenseGeneral kernels with head axes alike. The same function runs inside the jitted train step
(the base a frozen argument) and at export, so training and sampling see the same weights.

Adapters carry logical axis names derived from their kernel's (the rank axis `lora_rank` is
unsharded), so they are laid out like the base under the run's rules.
"""

from __future__ import annotations

import dataclasses
import re
from typing import Any

import einops
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
from flax import traverse_util

from sorajax.config_dataclasses import from_mapping

RANK_AXIS = "lora_rank"
STACK_AXIS = "layers"  # scanned blocks stack their kernels on this leading axis
# Kernels whose input side is (heads, kv): attention output projections (DenseGeneral over two axes).
HEAD_INPUT_AXES = ("heads", "kv")
# Attention q/k/v/out and MLP kernels of every block (not the caption pool, embeddings or the final layer).
DEFAULT_TARGETS = (r"(self|cross)_attn/(query|key|value|out)/kernel$", r"mlp/fc[12]/kernel$")
ADAPTER_KEYS = ("lora_a", "lora_b")


@dataclasses.dataclass(frozen=True)
class LoraConfig:
    """`train.lora`: rank 0 trains the whole network; rank r > 0 trains adapters of the `targets` kernels."""

    rank: int = 0
    alpha: float = 0.0  # scale alpha / rank; 0 means alpha = rank (scale 1)
    targets: tuple[str, ...] = DEFAULT_TARGETS  # regular expressions searched in 'block_0/self_attn/query/kernel'
    base_weights: str = "ema_params"  # which weight tree of the init_from run is the frozen base

    def __post_init__(self) -> None:
        if self.rank < 0 or (self.rank == 0 and self.alpha):
            raise ValueError(f"train.lora.rank={self.rank} with alpha={self.alpha}: set train.lora.rank to a "
                             "positive adapter rank (e.g. 16) to train LoRA, or leave rank and alpha at 0")
        if self.alpha < 0:
            raise ValueError(f"train.lora.alpha must be >= 0 (0 means alpha = rank), got {self.alpha}")
        if self.rank and not self.targets:
            raise ValueError("train.lora.targets is empty: give regular expressions over kernel paths, e.g. "
                             f"{list(DEFAULT_TARGETS)}")
        for pattern in self.targets:
            try:
                re.compile(pattern)
            except re.error as error:
                raise ValueError(f"train.lora.targets entry {pattern!r} is not a regular expression ({error})")
        if self.base_weights not in ("ema_params", "params"):
            raise ValueError(f"train.lora.base_weights must be 'ema_params' or 'params', got {self.base_weights!r}")

    @property
    def enabled(self) -> bool:
        return self.rank > 0

    @property
    def scale(self) -> float:
        return (self.alpha or self.rank) / self.rank

    @classmethod
    def from_mapping(cls, values: Any) -> "LoraConfig":
        return from_mapping(cls, values, "train.lora")

    def to_dict(self) -> dict[str, Any]:
        return {**dataclasses.asdict(self), "targets": list(self.targets)}


def _path_name(path: tuple[str, ...]) -> str:
    return "/".join(path)


def _axis_split(names: tuple[str | None, ...]) -> tuple[int, int]:
    """(stacked axes, input axes) of a kernel with logical `names`; the rest are its output axes."""
    stacked = 1 if names and names[0] == STACK_AXIS else 0
    inputs = len(HEAD_INPUT_AXES) if tuple(names[stacked:stacked + 2]) == HEAD_INPUT_AXES else 1
    return stacked, inputs


def target_kernels(boxed_params: Any, lora: LoraConfig) -> dict[tuple[str, ...], Any]:
    """{path: boxed kernel} of the kernels `lora.targets` match, or a ValueError listing some kernel paths."""
    flat = traverse_util.flatten_dict(boxed_params, is_leaf=lambda _, x: isinstance(x, nn.meta.AxisMetadata))
    kernels = {path: leaf for path, leaf in flat.items() if path[-1] == "kernel"}
    patterns = [re.compile(p) for p in lora.targets]
    chosen = {path: leaf for path, leaf in kernels.items() if any(p.search(_path_name(path)) for p in patterns)}
    if not chosen:
        examples = ", ".join(sorted(_path_name(p) for p in kernels)[:6])
        raise ValueError(f"train.lora.targets {list(lora.targets)} match no kernel of this DiT; its kernels are "
                         f"e.g. {examples}")
    return chosen


def init_adapters(boxed_params: Any, lora: LoraConfig, rng: jax.Array) -> dict:
    """Adapters (boxed with logical names) for `boxed_params` (a DiT's params as `init` returns them, or their
    `jax.eval_shape`): per targeted kernel {'lora_a': N(0, 1/fan_in), 'lora_b': zeros}, nested like the params."""
    adapters = {}
    for i, (path, kernel) in enumerate(sorted(target_kernels(boxed_params, lora).items())):
        names, shape = tuple(kernel.names), tuple(kernel.value.shape)
        stacked, inputs = _axis_split(names)
        lead, ins, outs = slice(0, stacked), slice(stacked, stacked + inputs), slice(stacked + inputs, None)
        fan_in = int(np.prod(shape[ins]))
        a = jax.random.normal(jax.random.fold_in(rng, i), (*shape[lead], *shape[ins], lora.rank), jnp.float32)
        b = jnp.zeros((*shape[lead], lora.rank, *shape[outs]), jnp.float32)
        adapters[path] = {
            "lora_a": nn.LogicallyPartitioned(a / np.sqrt(fan_in), names=(*names[lead], *names[ins], RANK_AXIS)),
            "lora_b": nn.LogicallyPartitioned(b, names=(*names[lead], RANK_AXIS, *names[outs])),
        }
    return traverse_util.unflatten_dict(adapters)


def _letters(prefix: str, count: int) -> list[str]:
    return [f"{prefix}{i}" for i in range(count)]


def kernel_delta(a: jax.Array, b: jax.Array, kernel_shape: tuple[int, ...]) -> jax.Array:
    """A @ B over the rank axis, shaped like the kernel. Layout from shapes alone: A is stack + in + (r,),
    B is stack + (r,) + out, the kernel stack + in + out."""
    stacked = a.ndim + b.ndim - len(kernel_shape) - 2
    lead, ins, outs = _letters("s", stacked), _letters("i", a.ndim - stacked - 1), _letters("o", b.ndim - stacked - 1)
    s, i, o = " ".join(lead), " ".join(ins), " ".join(outs)
    a2 = einops.rearrange(a, f"{s} {i} r -> {s} ({i}) r")
    b2 = einops.rearrange(b, f"{s} r {o} -> {s} r ({o})")
    delta = jnp.einsum("...ir,...ro->...io", a2, b2)
    sizes = dict(zip(ins + outs, kernel_shape[stacked:]))
    return einops.rearrange(delta, f"{s} ({i}) ({o}) -> {s} {i} {o}", **sizes)


def merge(base: Any, adapters: Any, scale: float) -> Any:
    """The base params with every adapted kernel replaced by W + scale * A @ B (in W's dtype).

    Training calls it inside the jitted step (gradients reach only the adapters); export calls it once.
    """
    flat = traverse_util.flatten_dict(base)
    pairs = traverse_util.flatten_dict(adapters)
    for path in {p[:-1] for p in pairs}:
        if path not in flat:
            raise ValueError(f"adapter for {_path_name(path)} has no kernel in the base params: the adapters "
                             "were trained on another DiT")
        kernel = flat[path]
        delta = kernel_delta(pairs[(*path, "lora_a")], pairs[(*path, "lora_b")], tuple(kernel.shape))
        flat[path] = (kernel.astype(jnp.float32) + scale * delta).astype(kernel.dtype)
    return traverse_util.unflatten_dict(flat)


def parameter_count(tree: Any) -> int:
    """Number of numbers in a (possibly boxed) tree: the adapters' trainable parameter count."""
    return int(sum(np.prod(x.shape) for x in jax.tree.leaves(nn.meta.unbox(tree))))
