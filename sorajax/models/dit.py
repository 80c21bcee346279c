"""The spacetime diffusion transformer (DiT) over packed patch tokens.

Input is the fields of a ``PackedBatch`` as arrays (this module does not import
``sorajax.patches``)::

    velocity = DiT(config).apply({"params": params}, tokens, positions, segment_ids, t,
                                 text, text_segment_ids, deterministic=True)

- ``tokens [B, L, P]`` float32 noisy (or clean conditioning) patches, ``P = pt*ph*pw*c``
- ``positions [B, L, 3]`` int32 patch-grid ``(t, h, w)`` of each token, per sample
- ``segment_ids [B, L]`` int32: 0 padding, 1..n the sample within the row
- ``t [B, L]`` float32 noise level of each token (0 = clean, 1 = noise)
- ``text [B, Lt, D_text]`` caption token embeddings, ``text_segment_ids [B, Lt]``
- returns ``[B, L, P]`` float32 predicted velocity; exactly 0 at initialisation
  (adaLN-Zero) and always 0 on padding tokens.

Sampling may pass a step cache (the ``step_cache`` collection, mutable; see ``dit_step_cache``) that
skips blocks 1..N-1 when block 0's residual barely changed since the last call.

Samples packed in one row never interact: self-attention is restricted to the
segment, cross-attention to the segment's own caption, the pooled caption is
pooled per segment, and everything else is per token.

Sizes follow DiT's S/B/L/XL (width/depth/heads); see :meth:`DiTConfig.preset`.
Parameter counts (patch_dim 64, text_dim 384, mlp_ratio 4; from
:func:`parameter_count`): tiny 1.68 M, S 40.2 M, B 160 M, L 561 M, XL 826 M. They are
larger than DiT's (S 33 M ... XL 675 M) by the cross-attention (4*width^2 per block)
and the text/caption projections.

Cost note: adaLN from each token's own ``t`` makes the modulation a per-token
``width -> 6*width`` matmul in every block (about 30% of a block's matmul FLOPs),
the price of one conditioning mechanism for every prompting mode. ``modulation='shared'``
(adaLN-single, as Wan) computes it once for all blocks: 23% faster at S, 3% higher held-out loss
at equal steps on the world DiT (docs/results.md), so per-block stays the default.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Mapping

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from sorajax.config_dataclasses import from_mapping
from sorajax.models.attention import CONTEXT_PARALLEL_IMPLEMENTATIONS, LOCAL_IMPLEMENTATIONS
from sorajax.models.caption_pooling import CAPTION_POOLS, CaptionAttentionPooler, CaptionPooler
from sorajax.models.dit_layers import (
    DiTBlock,
    FinalLayer,
    SharedModulation,
    TextProjection,
    TimestepEmbedder,
    constrain,
    dense,
    layer_norm,
)
from sorajax.models.frame_position import FramePositionEmbedder, frame_position_features
from sorajax.models.dit_presets import DIT_PRESETS
from sorajax.models.dit_step_cache import blocks_with_step_cache, has_step_cache
from sorajax.models.rope import rope_axis_dims
from sorajax.models.condition_slots import Conditioning, expand_rows, per_condition, unique_per_row

Array = jax.Array

_DTYPES = {"float32": jnp.float32, "bfloat16": jnp.bfloat16}

CONTEXT_PARALLEL = ("none", *CONTEXT_PARALLEL_IMPLEMENTATIONS)
MODULATIONS = ("per_block", "shared")
QK_NORM_AXES = ("head", "width")
FINAL_LAYERS = ("adaln", "table")

# Which activations a rematerialised block keeps for the backward pass.
REMAT_POLICIES: dict[str, Any] = {
    "none": None,  # no remat: every activation is stored (fastest, most memory)
    "full": jax.checkpoint_policies.nothing_saveable,  # keep only each block's input
    "save_dots_without_batch": jax.checkpoint_policies.dots_with_no_batch_dims_saveable,  # keep matmul outputs
    # ...in host RAM. On CPU that is the same memory: the lowered program has no copies and keeps the
    # matmul outputs like 'save_dots_without_batch' (tests/test_parallel_model_options.py checks the numbers).
    "offload": jax.checkpoint_policies.offload_dot_with_no_batch_dims("device", "pinned_host"),
}

_PRESETS = DIT_PRESETS


@dataclasses.dataclass(frozen=True)
class DiTConfig:
    """Shape and numerics of the DiT. Frozen (hashable), so it can be a linen module attribute.

    patch_dim: P, features of one token (pt*ph*pw*latent_channels); default 1*2*2*16.
    text_dim: features of the frozen text encoder's token embeddings (MiniLM: 384).
    rope_axis_weights: how the head dim is shared between the (t, h, w) rotary axes,
      in proportion to these weights (default 2:3:3 = 1/4 time, 3/8 height, 3/8 width,
      each rounded to an even size; see ``sorajax.models.rope``).
    dtype: compute dtype of activations and matmuls; parameters are always float32
      and the output is float32.
    attention_impl: 'xla', 'cudnn' or 'auto' (cuDNN on GPU when it supports the
      dtype/head dim, XLA otherwise).
    dropout_rate: residual dropout after attention and MLP (active when deterministic=False).
    context_parallel: 'none', or 'ring' / 'ulysses' to split self-attention over the
      ``sequence`` mesh axis (each device then runs ``attention_impl`` locally).
    remat_policy: one of :data:`REMAT_POLICIES`: what each block keeps for backward.
    caption_pool: how the caption becomes one vector added to the adaLN conditioning: 'mean' over its
      tokens, or 'attention' with ``caption_pool_heads`` learned queries (``sorajax.models.caption_pooling``;
      starts equal to the mean and learns to pick out short phrases such as the motion direction).
    frame_position: add an absolute embedding of each token's place in its own frame (fractions of
      the sample's patch grid) and its latent frame index (``sorajax.models.frame_position``), so
      captions that name a place ("starts at the left") have something to attach to.
    frame_position_every_block: also add a learned per-block projection of those place features before
      every block (needs ``frame_position``). At high noise a token's own content is noise, so the one
      embedding at the input is soon swamped; re-adding it lets every block's cross-attention ask
      "is my place the caption's place". Measured on the main job's DiT at 1,000 steps: held-out loss
      (EMA) 0.252 -> 0.226 and the layout-word gap at t = 0.85 0.0001 -> 0.0007 (``sorajax.eval.caption_layout``);
      off by default until a full main-job run confirms its samples.
    modulation: 'per_block' (each block projects the conditioning, width -> 6 width, adaLN-Zero as in
      DiT) or 'shared' (adaLN-single as in PixArt-alpha and Wan: one projection for all blocks plus a
      learned [6, width] table per block; per-token t is kept).
    qk_norm_axis: 'head' (RMS norm of each head's queries/keys) or 'width' (over all heads, before the
      split: Wan's form).
    text_norm: a LayerNorm on the text embeddings before the text projection (Wan has none).
    final_layer: 'adaln' (shift/scale projected from the conditioning) or 'table' (Wan's head: a learned
      [2, width] table plus the conditioning, no projection).
    mlp_hidden_dim: the MLP's hidden width; 0 takes ``width * mlp_ratio`` (Wan's sizes are explicit).
    condition_slots: how many distinct conditionings (noise level, and sample when a caption pool is on)
      per row the timestep MLP, the caption pool's output and every adaLN projection run on, instead of on
      every token; a row with more runs per token. Same results, far fewer FLOPs
      (``sorajax.models.condition_slots``); 0 runs per token always.
    scan_layers: run the blocks with ``nn.scan`` (one compiled block instead of
      ``depth``: much faster compiles). Parameters are then stacked under
      ``blocks/block`` with a leading ``layers`` axis instead of ``block_0..``.
    """

    patch_dim: int = 64
    text_dim: int = 384
    width: int = 384
    depth: int = 12
    num_heads: int = 6
    mlp_ratio: float = 4.0
    qk_norm: bool = True
    rope_axis_weights: tuple[int, int, int] = (2, 3, 3)
    rope_theta: float = 10_000.0
    dtype: str = "float32"
    attention_impl: str = "auto"
    dropout_rate: float = 0.0
    context_parallel: str = "none"
    remat_policy: str = "none"
    scan_layers: bool = False
    frame_position: bool = True
    frame_position_every_block: bool = False
    caption_pool: str = "attention"
    caption_pool_heads: int = 4
    modulation: str = "per_block"
    qk_norm_axis: str = "head"
    text_norm: bool = True
    final_layer: str = "adaln"
    mlp_hidden_dim: int = 0
    condition_slots: int = 32

    def __post_init__(self) -> None:
        for name in ("patch_dim", "text_dim", "width", "depth", "num_heads"):
            if getattr(self, name) < 1:
                raise ValueError(f"DiTConfig.{name} must be >= 1, got {getattr(self, name)}")
        if self.width % self.num_heads:
            raise ValueError(
                f"width {self.width} is not divisible by num_heads {self.num_heads}: choose heads dividing width"
            )
        if self.head_dim % 2:
            raise ValueError(
                f"head dim width/num_heads = {self.head_dim} is odd; RoPE needs it even: change width or num_heads"
            )
        if self.dtype not in _DTYPES:
            raise ValueError(f"dtype {self.dtype!r} is not supported: use one of {sorted(_DTYPES)}")
        if self.attention_impl not in LOCAL_IMPLEMENTATIONS:
            hint = f" (set context_parallel={self.attention_impl!r} instead)" if self.attention_impl in CONTEXT_PARALLEL else ""
            raise ValueError(
                f"attention_impl {self.attention_impl!r} is unknown{hint}: use one of {LOCAL_IMPLEMENTATIONS}"
            )
        if self.context_parallel not in CONTEXT_PARALLEL:
            raise ValueError(f"context_parallel {self.context_parallel!r} is unknown: use one of {CONTEXT_PARALLEL}")
        if self.remat_policy not in REMAT_POLICIES:
            raise ValueError(f"remat_policy {self.remat_policy!r} is unknown: use one of {list(REMAT_POLICIES)}")
        if self.mlp_ratio <= 0:
            raise ValueError(f"mlp_ratio must be > 0, got {self.mlp_ratio}")
        if not 0.0 <= self.dropout_rate < 1.0:
            raise ValueError(f"dropout_rate must be in [0, 1), got {self.dropout_rate}")
        if self.caption_pool not in CAPTION_POOLS:
            raise ValueError(f"caption_pool {self.caption_pool!r} is unknown: use one of {CAPTION_POOLS}")
        if self.caption_pool == "attention" and (self.caption_pool_heads < 1 or self.width % self.caption_pool_heads):
            raise ValueError(
                f"caption_pool_heads={self.caption_pool_heads} must be >= 1 and divide width {self.width}"
            )
        choices = {"modulation": MODULATIONS, "qk_norm_axis": QK_NORM_AXES, "final_layer": FINAL_LAYERS}
        for name, allowed in choices.items():
            if getattr(self, name) not in allowed:
                raise ValueError(f"{name} {getattr(self, name)!r} is unknown: use one of {allowed}")
        if self.condition_slots < 0:
            raise ValueError(f"condition_slots must be >= 0 (0: per token), got {self.condition_slots}")
        if self.mlp_hidden_dim < 0:
            raise ValueError(f"mlp_hidden_dim must be >= 0 (0: width * mlp_ratio), got {self.mlp_hidden_dim}")
        if self.frame_position_every_block and not self.frame_position:
            raise ValueError("frame_position_every_block=True re-adds the frame-position features: "
                             "it needs frame_position=True")
        rope_axis_dims(self.head_dim, self.rope_axis_weights)  # validates the split

    @property
    def head_dim(self) -> int:
        return self.width // self.num_heads

    @property
    def mlp_hidden(self) -> int:
        return self.mlp_hidden_dim or int(round(self.width * self.mlp_ratio))

    @property
    def rope_axis_dims(self) -> tuple[int, int, int]:
        """Head-dim features rotated by the t, h and w positions."""
        return rope_axis_dims(self.head_dim, self.rope_axis_weights)

    @property
    def compute_dtype(self) -> Any:
        return _DTYPES[self.dtype]

    @classmethod
    def preset(cls, name: str, **overrides: Any) -> DiTConfig:
        """A named size ('tiny', 'S', 'B', 'L', 'XL', or a Wan model: see ``dit_presets``), any field overridden."""
        if name not in _PRESETS:
            raise ValueError(f"unknown DiT preset {name!r}: use one of {list(_PRESETS)}")
        return cls.from_dict({**_PRESETS[name], **overrides})

    @classmethod
    def from_dict(cls, d: Mapping[str, Any] | Any) -> DiTConfig:
        """Build from a dict or ml_collections ConfigDict; unknown keys are an error."""
        return from_mapping(cls, d, "model")

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


class DiT(nn.Module):
    """Diffusion transformer over packed spacetime patch tokens, conditioned on per-token t and text."""

    config: DiTConfig

    @nn.compact
    def __call__(
        self,
        tokens: Array,
        positions: Array,
        segment_ids: Array,
        t: Array,
        text: Array,
        text_segment_ids: Array,
        deterministic: bool = True,
    ) -> Array:
        cfg = self.config
        dtype = cfg.compute_dtype
        _check_inputs(cfg, tokens, positions, segment_ids, t, text, text_segment_ids)

        x = dense(cfg.width, ("patch", "embed"), dtype, "patch_embed")(tokens.astype(dtype))
        place = frame_position_features(positions, segment_ids) if cfg.frame_position else None
        if place is not None:
            x = x + FramePositionEmbedder(cfg.width, dtype, name="frame_position")(place)
        x = constrain(x, ("batch", "length", "embed"))

        text_normed = text.astype(dtype)
        if cfg.text_norm:
            text_normed = layer_norm(dtype, "text_norm", affine=True, axis_name="text_embed")(text_normed)
        context = TextProjection(cfg.width, dtype, name="text_proj")(text_normed)
        cond = _conditioning(self, cfg, t, segment_ids, text_normed, text_segment_ids)
        block_cond = cond
        if cfg.modulation == "shared":  # the one projection every block shares, then each adds its table
            shared = per_condition(self, cond, lambda m, c: SharedModulation(cfg.width, dtype, name="modulation")(c))
            block_cond = Conditioning(tokens=constrain(shared, ("batch", "length", "modulation", "embed")))

        block_args = dict(
            num_heads=cfg.num_heads,
            mlp_hidden=cfg.mlp_hidden,
            qk_norm=cfg.qk_norm,
            rope_axis_dims=cfg.rope_axis_dims,
            rope_theta=cfg.rope_theta,
            implementation=cfg.attention_impl,
            dropout_rate=cfg.dropout_rate,
            dtype=dtype,
            context_parallel=cfg.context_parallel,
            modulation=cfg.modulation,
            qk_norm_axis=cfg.qk_norm_axis,
        )
        inputs = (block_cond, positions, segment_ids, context, text_segment_ids)
        place = place.astype(dtype) if cfg.frame_position_every_block else None
        cached = has_step_cache(self)
        if cfg.scan_layers:
            if cached:
                raise ValueError("the step cache runs blocks one by one: sample with scan_layers=False "
                                 "(per_block_params converts the scanned parameters)")
            scan_inputs = inputs if place is None else (*inputs, place)
            x, _ = _scanned_blocks(cfg)(block_args, deterministic, name="blocks")(x, *scan_inputs)
        else:
            block = _block_class(cfg.remat_policy)

            def run_blocks(x: Array, start: int, stop: int) -> Array:
                for i in range(start, stop):
                    if place is not None:
                        x = x + _place_projection(cfg.width, dtype, f"place_{i}")(place)
                    x = block(**block_args, name=f"block_{i}")(x, *inputs, deterministic)
                return x

            if cached:
                x = blocks_with_step_cache(self, x, lambda h: run_blocks(h, 0, 1),
                                           lambda h: run_blocks(h, 1, cfg.depth), segment_ids)
            else:
                x = run_blocks(x, 0, cfg.depth)

        out = FinalLayer(cfg.patch_dim, dtype, cfg.final_layer, name="final")(x, cond).astype(jnp.float32)
        # Padding tokens predict nothing: downstream losses and unpacking never see their values.
        return jnp.where((segment_ids > 0)[..., None], out, 0.0)


def _conditioning(dit: nn.Module, cfg: DiTConfig, t: Array, segment_ids: Array, text: Array,
                  text_segment_ids: Array) -> Conditioning:
    """Each token's conditioning vector (its t's embedding, plus its caption's pooled vector), and the
    same per distinct conditioning of each row when ``cfg.condition_slots`` allows.

    Rows with at most ``condition_slots`` distinct ``(segment, t)`` (nearly always) compute on those and
    gather onto the tokens; otherwise, decided at run time by ``nn.cond``, on every token.
    """
    dtype = cfg.compute_dtype

    def of(module: nn.Module, t: Array, segments: Array) -> Array:
        cond = TimestepEmbedder(cfg.width, dtype, name="t_embed")(t)
        if cfg.caption_pool == "attention":
            pool = CaptionAttentionPooler(cfg.width, cfg.caption_pool_heads, dtype, name="caption_attention_pool")
            cond = cond + pool(text, text_segment_ids, segments)
        elif cfg.caption_pool == "mean":
            cond = cond + CaptionPooler(cfg.width, dtype, name="caption_pool")(text, text_segment_ids, segments)
        return cond

    if not cfg.condition_slots or t.shape[1] <= cfg.condition_slots:
        return Conditioning(tokens=constrain(of(dit, t, segment_ids), ("batch", "length", "embed")))
    pooled = cfg.caption_pool != "none"
    values, index, fits = unique_per_row((segment_ids, t) if pooled else (t,), cfg.condition_slots)
    slot_t = values[-1]
    slot_segments = values[0] if pooled else jnp.zeros_like(slot_t, jnp.int32)

    def per_slot(module: nn.Module) -> tuple[Array, Array]:
        slots = of(module, slot_t, slot_segments)
        return expand_rows(slots, index), slots

    def per_token(module: nn.Module) -> tuple[Array, Array]:  # the slots too, from the same layers in one call
        both = of(module, jnp.concatenate([t, slot_t], axis=1), jnp.concatenate([segment_ids, slot_segments], axis=1))
        return both[:, : t.shape[1]], both[:, t.shape[1]:]

    tokens, slots = nn.cond(fits, per_slot, per_token, dit)
    return Conditioning(constrain(tokens, ("batch", "length", "embed")), slots, index, fits)


def _block_class(remat_policy: str) -> type[nn.Module]:
    """DiTBlock, rematerialised under the named policy (argument 7, ``deterministic``, counting self, is static)."""
    if remat_policy == "none":
        return DiTBlock
    return nn.remat(DiTBlock, policy=REMAT_POLICIES[remat_policy], static_argnums=(7,))


class _ScanStep(nn.Module):
    """One block as an ``nn.scan`` body: the residual stream is the carry, everything else is broadcast."""

    block_args: dict
    deterministic: bool
    remat_policy: str = "none"
    place_every_block: bool = False  # then the last input is the frame-position features

    @nn.compact
    def __call__(self, x: Array, *inputs: Array) -> tuple[Array, None]:
        if self.place_every_block:
            *inputs, place = inputs
            x = x + _place_projection(x.shape[-1], self.block_args["dtype"], "place")(place)
        block = _block_class(self.remat_policy)(**self.block_args, name="block")
        return block(x, *inputs, self.deterministic), None


def _scanned_blocks(cfg: DiTConfig):
    """``depth`` blocks as one scanned module; parameters get a leading 'layers' axis."""
    scanned = nn.scan(
        _ScanStep,
        variable_axes={"params": 0},
        split_rngs={"params": True, "dropout": True},
        in_axes=(nn.broadcast,) * (6 if cfg.frame_position_every_block else 5),
        length=cfg.depth,
        metadata_params={nn.PARTITION_NAME: "layers"},
    )
    return lambda block_args, deterministic, name: scanned(block_args, deterministic, cfg.remat_policy,
                                                           cfg.frame_position_every_block, name=name)


def _place_projection(width: int, dtype: Any, name: str) -> nn.Module:
    """Frame-position features -> the residual width, re-added before a block (frame_position_every_block)."""
    return dense(width, (None, "embed"), dtype, name)


def _check_inputs(
    cfg: DiTConfig, tokens: Array, positions: Array, segment_ids: Array, t: Array, text: Array, text_seg: Array
) -> None:
    """Shape errors that name the field at fault (they would otherwise surface deep inside a matmul)."""
    if tokens.ndim != 3 or tokens.shape[-1] != cfg.patch_dim:
        raise ValueError(f"tokens must be [B, L, patch_dim={cfg.patch_dim}], got {tokens.shape}: check patch_dim")
    batch_length = tokens.shape[:2]
    expected = {"positions": (positions, (*batch_length, 3)), "segment_ids": (segment_ids, batch_length),
                "t": (t, batch_length)}
    for name, (array, shape) in expected.items():
        if tuple(array.shape) != tuple(shape):
            raise ValueError(f"{name} must have shape {tuple(shape)} to match tokens {tokens.shape}, got {array.shape}")
    if text.ndim != 3 or text.shape[0] != tokens.shape[0] or text.shape[-1] != cfg.text_dim:
        raise ValueError(f"text must be [B={tokens.shape[0]}, Lt, text_dim={cfg.text_dim}], got {text.shape}")
    if tuple(text_seg.shape) != tuple(text.shape[:2]):
        raise ValueError(f"text_segment_ids must be {text.shape[:2]} to match text, got {text_seg.shape}")


def example_inputs(config: DiTConfig, batch: int = 1, length: int = 16, text_length: int = 8) -> tuple[Array, ...]:
    """Dummy (tokens, positions, segment_ids, t, text, text_segment_ids) for init and shape tracing."""
    return (
        jnp.zeros((batch, length, config.patch_dim), jnp.float32),
        jnp.zeros((batch, length, 3), jnp.int32),
        jnp.ones((batch, length), jnp.int32),
        jnp.zeros((batch, length), jnp.float32),
        jnp.zeros((batch, text_length, config.text_dim), jnp.float32),
        jnp.ones((batch, text_length), jnp.int32),
    )


def abstract_params(config: DiTConfig) -> Any:
    """Parameter shapes (boxed with logical names) without allocating them, via ``jax.eval_shape``."""
    model = DiT(config)
    return jax.eval_shape(lambda rng: model.init(rng, *example_inputs(config))["params"], jax.random.key(0))


def parameter_count(config: DiTConfig) -> int:
    """Number of parameters; works for any size since nothing is materialised."""
    leaves = jax.tree_util.tree_leaves(nn.meta.unbox(abstract_params(config)))
    return int(sum(np.prod(leaf.shape) for leaf in leaves))
