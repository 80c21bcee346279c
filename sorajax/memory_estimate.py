"""How much memory a sampling request needs, estimated BEFORE anything is allocated, and a refusal if it cannot fit.

Running out of memory half-way through a 720p decode wastes minutes and says little; a request whose estimate
exceeds the device is refused up front in one line naming the estimate, the limit and the fixes. The estimate
counts what an inference step keeps alive at its peak (XLA frees each layer's activations before the next):

- the DiT's weights (their dtype) and the text encoder's weights;
- the widest layer of one DiT forward over the packed rows (doubled by classifier-free guidance): the residual
  stream, q/k/v, the MLP's hidden layer, and the attention scores -- rows x heads x L^2 floats with XLA's
  attention, none with the fused kernels (cuDNN / splash), whose memory is linear in L;
- the autoencoder's widest decoder activation for one chunk of time (and one tile of space when tiled).

Each part is validated against XLA's compiled ``memory_analysis()`` (tests/test_memory_estimate.py at small
sizes, benchmarks/memory_estimate.py at real ones): never below it by more than a stated margin.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Sequence
from typing import Any

import jax
import numpy as np

from sorajax.patches import patch_grid
from sorajax.size_ceiling import CEILING_ENV, SizeCeiling  # noqa: F401  (re-exported: callers check sizes here)

GIB = 1024**3
FLOAT32 = 4
# Live copies of the widest layer at its peak: its input, its output and one temporary (measured, see the tests).
LIVE_COPIES = 3
# Live copies of the L x L attention scores (scores, their softmax, the mask select, one temporary).
SCORE_COPIES = 4
# Live copies of the decoder's widest activation (XLA's CPU figure for Wan 2.1's decoder tends to 8 at 480p).
DECODER_COPIES = 8
# Frames a causal time convolution (kernel 3) puts before its input: the padding, or the cache carried in.
CAUSAL_PAD_FRAMES = 2
# The sampler's per-token state besides the DiT: x, the prediction, the solver's history and the given tokens.
SAMPLER_COPIES = 6


@dataclasses.dataclass(frozen=True)
class MemoryEstimate:
    """Bytes a sampling request needs at its peak, by part."""

    dit_weights: int
    activations: int
    text_encoder: int
    vae_decode: int

    @property
    def total(self) -> int:
        return self.dit_weights + self.activations + self.text_encoder + self.vae_decode

    def refusal(self, limit: int) -> str:
        """The one line a request over ``limit`` bytes is refused with."""
        return (f"this request needs ~{_gib(self.total)} GiB (DiT weights {_gib(self.dit_weights)}, activations "
                f"{_gib(self.activations)}, VAE decode {_gib(self.vae_decode)}) but the device has {_gib(limit)} GiB: "
                "use fewer frames, a smaller size, tiling (--tile), bf16 weights, --long, or more devices")


def _gib(size: int) -> str:
    return f"{size / GIB:.1f}"


def tree_bytes(tree: Any) -> int:
    """Bytes of every array (or ShapeDtypeStruct) leaf of ``tree``."""
    return int(sum(np.prod(leaf.shape) * np.dtype(leaf.dtype).itemsize for leaf in jax.tree_util.tree_leaves(tree)))


def linear_attention(attention_impl: str, backend: str | None = None) -> bool:
    """Whether the DiT's attention keeps no L x L scores (fused cuDNN / splash kernels) on this backend."""
    backend = backend or jax.default_backend()
    return attention_impl in ("cudnn", "splash") or (attention_impl == "auto" and backend in ("gpu", "tpu"))


def dit_activation_bytes(config: Any, rows: int, tokens: int, text_tokens: int, linear: bool) -> int:
    """The widest layer of one DiT forward over ``rows`` packed rows of ``tokens`` tokens, ``LIVE_COPIES`` times."""
    act = np.dtype(config.dtype).itemsize
    hidden = config.mlp_hidden_dim or int(config.width * config.mlp_ratio)
    dense = rows * tokens * act * max(4 * config.width, hidden + config.width)  # q, k, v + out; or the MLP
    scores = rows * config.num_heads * tokens * (text_tokens + (0 if linear else tokens)) * FLOAT32
    sampler = SAMPLER_COPIES * rows * tokens * config.patch_dim * FLOAT32
    return LIVE_COPIES * dense + SCORE_COPIES * scores + sampler


def vae_decode_bytes(config: Any, weights: int, latent_shape: Sequence[int], chunk_latents: int | None,
                     tile: int | None) -> int:
    """The decoder's ``weights`` bytes (XLA holds about one more copy while it runs) and ``DECODER_COPIES`` of its
    widest activation for one chunk (``None``: the whole clip) of one tile (``None``: the frame).

    Level ``i`` of the decoder runs ``base_channels * channel_multipliers[i]`` channels at ``1 / 2^i`` of the
    output's side; every level is counted at the chunk's full output frame count (an upper bound) plus the
    frames its causal convolutions put before it.
    """
    frames, height, width, _ = latent_shape
    latents = frames if chunk_latents is None else min(frames, chunk_latents)
    out_frames = 1 + config.temporal_factor * (latents - 1) if chunk_latents is None else config.temporal_factor * latents
    side = config.spatial_factor // getattr(config, "patch_size", 1)  # Wan 2.2 decodes patches of 2 x 2 pixels
    h, w = (height, width) if tile is None else (min(tile, height), min(tile, width))
    pixels = h * side * w * side
    base = getattr(config, "decoder_base_channels", None) or config.base_channels
    widest = max(base * m * pixels // 4**i for i, m in enumerate(config.channel_multipliers))
    act = np.dtype(config.dtype).itemsize
    return 2 * weights + DECODER_COPIES * widest * (out_frames + CAUSAL_PAD_FRAMES) * act


def device_limit_bytes(device: Any = None) -> int:
    """The accelerator's allocatable bytes (``memory_stats()['bytes_limit']``), or the host's available RAM on CPU."""
    device = device or jax.local_devices()[0]
    stats = device.memory_stats() if device.platform != "cpu" else None
    if stats and "bytes_limit" in stats:
        return int(stats["bytes_limit"])
    return host_available_bytes()


def host_available_bytes() -> int:
    try:
        with open("/proc/meminfo") as meminfo:
            for line in meminfo:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_AVPHYS_PAGES")


def check_fits(estimate: "MemoryEstimate | TrainingEstimate", limit: int | None = None) -> None:
    """Raise a one-line ValueError when ``estimate`` exceeds ``limit`` bytes (default: this device's)."""
    limit = device_limit_bytes() if limit is None else limit
    if estimate.total > limit:
        raise ValueError(estimate.refusal(limit))


def check_host_fits(size: int, what: str, fixes: str, limit: int | None = None) -> None:
    """Refuse (one-line ValueError) holding ``size`` bytes of ``what`` in host memory when more than is available."""
    limit = host_available_bytes() if limit is None else limit
    if size > limit:
        raise ValueError(f"{what} needs ~{_gib(size)} GiB of host memory but {_gib(limit)} GiB are available: {fixes}")


def estimate_sampling(dit_config: Any, dit_params: Any, text_params: Any, vae_config: Any, vae_params: Any,
                      latent_shape: Sequence[int], tokens: int, count: int, guided: bool, text_tokens: int,
                      tile: int | None = None, chunk_latents: int | None = None) -> MemoryEstimate:
    """The peak of sampling ``count`` videos of ``latent_shape`` (``tokens`` DiT tokens each) and decoding one.

    The params may be abstract (ShapeDtypeStructs): nothing is allocated. ``chunk_latents``
    None decodes the whole clip at once; tiled decoding always goes chunk by chunk.
    """
    rows = count * (2 if guided else 1)
    activations = 0 if dit_config is None else dit_activation_bytes(  # None: a network that is not a DiT
        dit_config, rows, tokens, text_tokens, linear_attention(dit_config.attention_impl))
    return MemoryEstimate(dit_weights=tree_bytes(dit_params), activations=activations,
                          text_encoder=tree_bytes(text_params),
                          vae_decode=vae_decode_bytes(vae_config, tree_bytes(vae_params), latent_shape,
                                                      chunk_latents, tile))


def check_sampling_request(pipeline: Any, latent_shape: Sequence[int], count: int, guided: bool, tile: int | None,
                           limit: int | None = None) -> None:
    """Refuse (one-line ValueError) sampling ``count`` latents of ``latent_shape`` on ``pipeline`` (a
    :class:`sorajax.pipeline.Pipeline`) when its estimate exceeds this device's memory, before any allocation.

    Checked where every sampling path meets (``Pipeline.sample_latents``), so the prompting modes and each
    window of a long video are checked as ``generate`` is.
    """
    tokens = int(np.prod(patch_grid(latent_shape, pipeline.patch)))
    text_tokens = getattr(pipeline.text_encoder, "max_length", 512)
    estimate = estimate_sampling(getattr(pipeline.dit, "config", None), pipeline.dit_params, getattr(pipeline.text_encoder, "params", {}),
                                 pipeline.vae.config, pipeline.vae_variables, latent_shape, tokens, count, guided,
                                 text_tokens, tile, None if tile is None else 2)
    check_fits(estimate, limit)


# ---- training ---------------------------------------------------------------------------------------------
# Copies of the weights a training state holds: the weights, Adam's two moments and the gradients (+ the EMA).
ADAM_COPIES = 4
# Tensors a VAE convolution keeps for the backward pass: its input, the group-norm output and the activation.
CONV_KEPT = 3


@dataclasses.dataclass(frozen=True)
class TrainingEstimate:
    """Bytes one training step needs on each device at its peak, by part (a floor: XLA's temporaries come on top)."""

    state: int  # weights, their optimizer moments, gradients (and EMA), split over the mesh's fsdp x tensor axes
    activations: int  # what the forward keeps for the backward pass, split over every device
    request: str  # what was asked, e.g. "data.rows=4 x data.seq_len=384"
    fixes: str

    @property
    def total(self) -> int:
        return self.state + self.activations

    def refusal(self, limit: int) -> str:
        return (f"training with {self.request} needs ~{_gib(self.total)} GiB per device (state {_gib(self.state)}, "
                f"activations {_gib(self.activations)}) but the device has {_gib(limit)} GiB: {self.fixes}")


def mesh_splits(mesh: Any) -> tuple[int, int]:
    """(shards of the training state: fsdp x tensor, shards of the activations: every device) of ``mesh``."""
    shape = dict(mesh.shape)
    return shape.get("fsdp", 1) * shape.get("tensor", 1), int(np.prod(list(shape.values())))


def estimate_dit_training(config: Any, params: Any, rows: int, seq_len: int, text_len: int, trained: bool = True,
                          mesh: Any = None) -> TrainingEstimate:
    """One DiT step over ``rows`` packed rows of ``seq_len`` tokens (``params`` abstract: nothing is allocated).

    ``trained`` False: the weights are a frozen base (LoRA), held once. A block without remat keeps its q, k, v,
    attention output, projections and MLP hidden layer (and, with XLA's attention, the L x L scores and their
    softmax); with remat it keeps its input, and one block is recomputed at a time.
    """
    state_shards, devices = mesh_splits(mesh) if mesh is not None else (1, 1)
    weights = tree_bytes(params)
    act = np.dtype(config.dtype).itemsize
    hidden = config.mlp_hidden_dim or int(config.width * config.mlp_ratio)
    scores = config.num_heads * seq_len * (text_len + (0 if linear_attention(config.attention_impl) else seq_len))
    block = rows * seq_len * act * (6 * config.width + 2 * hidden) + 2 * rows * scores * FLOAT32
    kept = config.depth * block if config.remat_policy == "none" else \
        config.depth * rows * seq_len * config.width * act + block
    return TrainingEstimate(
        state=weights * ((ADAM_COPIES + 1) if trained else 1) // state_shards, activations=kept // devices,
        request=f"data.rows={rows} x data.seq_len={seq_len}",
        fixes="use fewer data.rows or a shorter data.seq_len, model.remat_policy='full', a smaller model, "
              "or more devices (mesh.fsdp shards the state)")


def estimate_vae_training(config: Any, params: Any, batch: int, frames: int, height: int, width: int,
                          mesh: Any = None) -> TrainingEstimate:
    """One autoencoder step on ``batch`` clips of ``frames x height x width`` (its largest size or crop).

    Each level's convolutions keep ``CONV_KEPT`` tensors at that level's channels and resolution, in the
    encoder and again in the decoder.
    """
    state_shards, devices = mesh_splits(mesh) if mesh is not None else (1, 1)
    act = np.dtype(config.dtype).itemsize
    convs = 2 * config.num_res_blocks + 1
    kept, pixels, length = 0, height * width, frames
    for multiplier, spatial, temporal in zip(config.channel_multipliers, config.spatial_downsample,
                                             config.temporal_downsample):
        kept += 2 * CONV_KEPT * convs * config.base_channels * multiplier * pixels * length
        pixels, length = (pixels // 4 if spatial else pixels), (1 + (length - 1) // 2 if temporal else length)
    return TrainingEstimate(
        state=tree_bytes(params) * ADAM_COPIES // state_shards, activations=batch * kept * act // devices,
        request=f"data.batch_size={batch} x {frames}x{height}x{width} clips",
        fixes="use a smaller data.batch_size, smaller data.sizes or a data.crop, a smaller model, or more devices")
