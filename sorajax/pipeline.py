"""Prompt -> video: the sampling pipeline shared by `sorajax.generate`, the probes and notebooks.

    prompts --text encoder--> caption tokens
    noise latents [t, h, w, c] --patchify + pack--> PackedBatch (one sample per row)
    --the one sampling loop (sorajax.diffusion.sampling): prediction -> velocity, CFG, ODE solver--> clean tokens
    --unpack + unpatchify--> latents --autoencoder decode--> uint8 frames [T, H, W, 3]

Any width x height x frames the autoencoder and patch size allow (landscape, portrait, square, a
single frame for an image) comes from the same weights. The step count, sampler and guidance are
per call (defaults: the run's `sample` config); the noise-level shift follows the sample's token
count exactly as in training, and the network's output is read as the kind it was trained to
predict (`config.prediction`). `step_cache` > 0 (per call, or the run's `sample.step_cache`) turns
on the DiT's step cache (`sorajax.models.dit_step_cache`); `last_step_cache` then says what it skipped.

`Pipeline.from_run` loads only what sampling needs: the DiT's EMA (or raw) weights and the
autoencoder's weights and latent statistics (`sorajax.runs.loaders`), never an optimizer state.
The autoencoder is found through the link the DiT run stored (relative to the run first, so a
run directory moved with its autoencoder, or loaded from another working directory, still samples).

Prompting with images and videos uses one mechanism (`sorajax.conditioning`): a `Conditioning`
per prompt names latent positions given clean; they are packed as tokens with t = 0 and held at
their values at every sampler step. SDEdit (`edit`, `strength`) starts the sampler from the input
latents noised to t = strength. The modes built on this live in `sorajax.prompting` and
`sorajax.long_video`.
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Any, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from sorajax.conditioning import Conditioning
from sorajax.diffusion.samplers import sdedit_start
from sorajax.diffusion.sampling import (SCHEDULES, SampleRequest, initial_noise, packed_carried_denoiser,
                                       packed_denoiser, sample_packed_carrying, start_level, stateless)
from sorajax.diffusion.unipc import wan_network_times, wan_sigmas
from sorajax.diffusion.timesteps import TrainingTimeConfig, sampling_timesteps, shift_for_num_tokens
from sorajax.memory_estimate import SizeCeiling, check_sampling_request
from sorajax.models.build import build_text_encoder
from sorajax.models.dit import DiT, abstract_params
from sorajax.models.dit_step_cache import STEP_CACHE, StepCacheStats, init_step_cache, per_block_params
from sorajax.models.text_encoder import TextEmbeddingCache, caption_arrays
from sorajax.models.vae_chunked import ChunkedCodec
from sorajax.patches import PackedBatch, PackLayout, Sample, pack, patch_grid, unpack
from sorajax.runs.dit_spec import DiTSpec
from sorajax.runs.checkpoints import read_run_meta
from sorajax.runs.loaders import TRAIN_DIT, check_run_kind, find_linked_run, load_autoencoder, load_weights
from sorajax.runs.paths import PathLike, RunLink, run_path
from sorajax.video_io import to_float, to_uint8

TEXT_LEN_STEP = 16

__all__ = ["Pipeline", "SampleRequest", "SamplingInputs"]


@dataclasses.dataclass(frozen=True)
class SamplingInputs:
    """Everything one sampler run needs, built on the host (see `Pipeline.sampling_inputs`)."""

    batch: PackedBatch  # positions, segments, captions; tokens = the given tokens' clean values (0 elsewhere)
    layout: PackLayout
    x_init: np.ndarray  # [B, L, P] where the generated tokens start: noise, or the SDEdit start
    uncond: tuple[np.ndarray, np.ndarray] | None  # a negative prompt's caption tokens (None: the null caption)
    timesteps: jax.Array  # decreasing from 1 (or the SDEdit strength) to 0
    network_times: np.ndarray | None = None  # what the network is shown at each level (Wan's schedule)


class Pipeline:
    """A trained autoencoder + DiT + text encoder, ready to turn prompts into videos."""

    def __init__(self, vae: Any, vae_variables: Any, dit: Any, dit_params: Any, text_encoder: Any,
                 patch: Sequence[int], time_config: TrainingTimeConfig, defaults: SampleRequest | None = None,
                 prediction: str = "velocity", schedule: str = "sorajax", negative_prompt: str = "",
                 weights_dtype: str | None = None):
        self.vae, self.vae_variables = vae, vae_variables
        self.dit = dit
        # bfloat16 weights halve the sampler's weight memory; the DiT computes in its config's dtype.
        self.dit_params = dit_params if weights_dtype is None else jax.tree.map(
            lambda p: jnp.asarray(p, jnp.dtype(weights_dtype)), dit_params)
        self.text_encoder, self.patch, self.time_config = text_encoder, tuple(patch), time_config
        self.defaults = defaults or SampleRequest(frames=9, height=64, width=64)
        if schedule not in SCHEDULES:
            raise ValueError(f"unknown schedule {schedule!r}: use one of {SCHEDULES}")
        if schedule == "wan" and not self.defaults.shift:
            raise ValueError("the 'wan' schedule needs a constant shift: give defaults with shift > 0 (Wan uses 3-12)")
        self.prediction, self.schedule, self.negative_prompt = prediction, schedule, negative_prompt
        # Each distinct prompt (and negative prompt) is encoded once per pipeline: UMT5-XXL costs more than a step.
        self.captions = TextEmbeddingCache(text_encoder)
        self.run = self.autoencoder_run = None  # where from_run found the weights
        self.denoise = packed_denoiser(dit)
        self._decode = jax.jit(functools.partial(vae.apply, method="decode_normalized"))
        self._sample = jax.jit(functools.partial(sample_packed_carrying, stateless(self.denoise)),
                               static_argnames=("method", "prediction"))
        self._cached_sampler: tuple[Any, Any, Any] | None = None  # (DiT, params, jitted sampler), built on first use
        self.last_step_cache: StepCacheStats | None = None  # what the step cache skipped in the last sampling run
        # Chunked codec: memory bounded by the chunk, not the clip (long videos, conditioning inputs).
        self.codec = ChunkedCodec(vae, vae_variables, chunk_latents=2)
        # Spatial tiling (latent pixels, None: whole frames) for every encode / decode unless a call says otherwise.
        self.tile: int | None = None
        self.tile_overlap: int | None = None
        # An empty or blank prompt is refused (a typo, not a request) unless the caller asks for the empty caption.
        self.allow_empty_prompts = False

    @classmethod
    def from_run(cls, run: PathLike, step: int | None = None, use_ema: bool | None = None,
                 autoencoder_run: PathLike | None = None, weights_dtype: str | None = None) -> "Pipeline":
        """The DiT saved in `run` (newest checkpoint unless `step`) and the autoencoder it was trained on.

        `use_ema` None follows the run's `sample.use_ema`; `autoencoder_run` overrides where the
        autoencoder is looked for (its step is still the one the DiT learned on).
        """
        run = run_path(run)
        meta = read_run_meta(run, step, TRAIN_DIT)
        check_run_kind(meta, "DiT", run)
        spec = DiTSpec.from_config(meta["config"]).located(run)
        link = RunLink.from_json(meta.get("autoencoder", meta["config"]["vae_workdir"]))
        vae_run = run_path(autoencoder_run) if autoencoder_run is not None else find_linked_run(link, run, "autoencoder")
        autoencoder = load_autoencoder(vae_run, meta.get("vae_step"))
        text_encoder = build_text_encoder(spec.text_encoder)
        dit = DiT(spec.dit_config(autoencoder.vae.config.latent_channels, text_encoder.dim))
        weights = "ema_params" if (spec.sample.use_ema if use_ema is None else use_ema) else "params"
        params = load_weights(run, step, nn.meta.unbox(abstract_params(dit.config)), weights)  # older if damaged
        pipeline = cls(autoencoder.vae, autoencoder.variables, dit, params, text_encoder, spec.patch, spec.time,
                       SampleRequest.defaults(spec.sample), spec.prediction, spec.sample.schedule,
                       spec.sample.negative_prompt, weights_dtype)
        pipeline.run, pipeline.autoencoder_run = run, autoencoder.run
        pipeline.tile = spec.sample.tile  # the run's spatial tiling (None: whole frames); --tile overrides it
        return pipeline

    # ---- checks ---------------------------------------------------------------------------
    def latent_shape(self, frames: int, height: int, width: int) -> tuple[int, int, int, int]:
        """Latent [t, h, w, c] for a pixel size, or a ValueError naming sizes that work."""
        cfg = self.vae.config
        steps = (cfg.spatial_factor * self.patch[1], cfg.spatial_factor * self.patch[2])
        for name, value, step in (("height", height, steps[0]), ("width", width, steps[1])):
            if value < step or value % step:
                raise ValueError(
                    f"{name} {value} does not fit the autoencoder (x{cfg.spatial_factor}) and patch size {self.patch}: "
                    f"use a multiple of {step} pixels, e.g. {_nearest(value, step)}"
                )
        cfg.validate_video_shape(frames, height, width)
        shape = cfg.latent_shape(frames, height, width)
        patch_grid(shape, self.patch)
        return shape

    def check_prompts(self, prompts: Sequence[str]) -> None:
        """A non-empty list of prompts, none blank unless `allow_empty_prompts` (sampling the empty caption)."""
        if isinstance(prompts, str) or not prompts or not all(isinstance(p, str) for p in prompts):
            raise ValueError("prompts must be a non-empty list of strings, e.g. ['a red ball moves to the left']")
        blank = [i for i, p in enumerate(prompts) if not p.strip()]
        if blank and not self.allow_empty_prompts:
            raise ValueError(f"prompt {blank[0]} is empty: write a prompt, or set pipeline.allow_empty_prompts = True "
                             "(generate --unconditional) to sample with the empty caption")

    def check_request(self, prompts: Sequence[str], request: SampleRequest, negative: Sequence[str] | None) -> None:
        self.check_prompts(prompts)
        if negative is not None and len(negative) != len(prompts):
            raise ValueError(f"got {len(negative)} negative prompts for {len(prompts)} prompts: give one per prompt "
                             "(or a single string for all)")
        request.check()

    def check_memory(self, latent_shape: Sequence[int], count: int, guided: bool, tile: int | None = None) -> None:
        """Refuse, in one line, sampling `count` latents of `latent_shape` (and decoding them at `tile`) when the
        estimate exceeds this device's memory. `sample_latents` always asks; modes that encode inputs first ask
        before encoding."""
        check_sampling_request(self, latent_shape, count, guided, self._tile(tile))

    # ---- pixels <-> latents ----------------------------------------------------------------
    @property
    def temporal_factor(self) -> int:
        return self.vae.config.temporal_factor

    @property
    def spatial_factor(self) -> int:
        return self.vae.config.spatial_factor

    def _tile(self, tile: int | None) -> int | None:
        """A call's tile, or the pipeline's (None: whole frames)."""
        return self.tile if tile is None else tile

    def _tiled_codec(self, tile: int | None) -> ChunkedCodec:
        return ChunkedCodec(self.vae, self.vae_variables, chunk_latents=2, tile=tile, tile_overlap=self.tile_overlap)

    def encode(self, video: np.ndarray, tile: int | None = None) -> np.ndarray:
        """uint8 or [-1, 1] float pixels [T, H, W, 3] (T = 1 + 4k) -> normalised latent [t, h, w, c].

        Chunked with a carried cache, so memory does not grow with the clip's length.
        """
        video = to_float(video)
        if video.ndim != 4 or video.shape[-1] != 3:
            raise ValueError(f"a video to encode must be [T, H, W, 3], got shape {video.shape}; an image is [1, H, W, 3]")
        self.latent_shape(*video.shape[:3])  # a clear error if the size does not fit
        tile = self._tile(tile)
        codec = self.codec if tile is None else self._tiled_codec(tile)
        return np.asarray(codec.encode_normalized(jnp.asarray(video)[None]))[0]

    def decode(self, latent: np.ndarray, chunked: bool = False, tile: int | None = None) -> np.ndarray:
        """Normalised latent [t, h, w, c] -> uint8 pixels [1 + 4(t - 1), H, W, 3] (chunked or tiled: bounded memory)."""
        z = jnp.asarray(latent, jnp.float32)[None]
        tile = self._tile(tile)
        if tile is not None:
            pixels = self._tiled_codec(tile).decode_normalized(z)
        else:
            pixels = self.codec.decode_normalized(z) if chunked else self._decode(self.vae_variables, z)
        # The decoder is unbounded; samples of a small model can overshoot [-1, 1].
        return to_uint8(np.clip(np.asarray(pixels)[0], -1, 1))

    # ---- sampling ---------------------------------------------------------------------------
    def generate(self, prompts: Sequence[str], request: SampleRequest | None = None,
                 negative_prompt: str | Sequence[str] | None = None,
                 conditions: Sequence[Conditioning | None] | None = None,
                 edit: Sequence[np.ndarray] | None = None, strength: float = 1.0, tile: int | None = None,
                 noise: Sequence[np.ndarray] | None = None, **overrides: Any) -> list[np.ndarray]:
        """uint8 videos [T, H, W, 3], one per prompt. `overrides` set SampleRequest fields.

        `conditions`: per prompt, latents given clean (or None); `edit`: per prompt, latents to start
        from at t = `strength` (SDEdit); `noise`: per prompt, the initial noise instead of the seed's.
        All must have the latent shape of the requested size. `tile`: decode in spatial tiles of this many
        latent pixels (None: `self.tile`). A request that cannot fit is refused first.
        """
        request = dataclasses.replace(request or self.defaults, **overrides)
        negative = [negative_prompt] * len(prompts) if isinstance(negative_prompt, str) else negative_prompt
        self.check_request(prompts, request, negative)
        tile = self._tile(tile)
        ceiling = SizeCeiling.current()  # typos, before any estimate
        ceiling.check(request.frames, request.height, request.width)
        ceiling.limit("videos per call", len(prompts), "max_count", "generate fewer prompts per call")
        latent_shape = self.latent_shape(request.frames, request.height, request.width)
        latents = self.sample_latents(prompts, latent_shape, request, negative, conditions, edit, strength, noise,
                                      tile=tile)
        return [self.decode(z, tile=tile) for z in latents]

    def sample_latents(self, prompts: Sequence[str], latent_shape: Sequence[int], request: SampleRequest,
                       negative: Sequence[str] | None = None, conditions: Sequence[Conditioning | None] | None = None,
                       edit: Sequence[np.ndarray] | None = None, strength: float = 1.0,
                       noise: Sequence[np.ndarray] | None = None, tile: int | None = None) -> list[np.ndarray]:
        """Normalised latents [t, h, w, c], one per prompt, by the one sampling loop over the DiT.

        Every sampling path (generate, the prompting modes, each window of a long video) comes through here, so
        a request that cannot fit this device (its decode at `tile` included) is refused here, before any allocation.
        """
        self.check_prompts(prompts)
        self.check_memory(latent_shape, len(prompts), request.guidance != 1.0, tile)
        inputs = self.sampling_inputs(prompts, latent_shape, request, negative, conditions, edit, strength, noise)
        guidance = None if request.guidance == 1.0 else jnp.float32(request.guidance)
        sampler, params, carry = self._sample, self.dit_params, ()
        if request.step_cache > 0:
            dit, params, sampler = self._step_cached_sampler()
            rows, length = inputs.x_init.shape[:2]
            carry = init_step_cache(rows * (1 if guidance is None else 2), length, dit.config.width,
                                    dit.config.compute_dtype, request.step_cache)
        tokens, carry = sampler(params, inputs.batch, inputs.x_init, inputs.timesteps, carry, method=request.method,
                                prediction=self.prediction, guidance=guidance, uncond=inputs.uncond,
                                network_times=inputs.network_times)
        self.last_step_cache = StepCacheStats.of(carry, self.dit.config.depth) if carry else None
        return unpack(np.asarray(tokens), inputs.layout)

    def _step_cached_sampler(self) -> tuple[Any, Any, Any]:
        """(DiT, params, jitted sampler) carrying the DiT's step cache; a scanned DiT is unrolled for it once."""
        if self._cached_sampler is None:
            dit, params = self.dit, self.dit_params
            if dit.config.scan_layers:
                dit = DiT(dataclasses.replace(dit.config, scan_layers=False))
                params = per_block_params(params, dit.config.depth)
            sampler = jax.jit(functools.partial(sample_packed_carrying, packed_carried_denoiser(dit, STEP_CACHE)),
                              static_argnames=("method", "prediction"))
            self._cached_sampler = (dit, params, sampler)
        return self._cached_sampler

    def sampling_inputs(self, prompts: Sequence[str], latent_shape: Sequence[int], request: SampleRequest,
                        negative: Sequence[str] | None = None, conditions: Sequence[Conditioning | None] | None = None,
                        edit: Sequence[np.ndarray] | None = None, strength: float = 1.0,
                        noise: Sequence[np.ndarray] | None = None) -> SamplingInputs:
        """Packs the given tokens, the captions and the starting point (noise or the SDEdit start) of one run."""
        latent_shape = tuple(int(s) for s in latent_shape)
        count = len(prompts)
        if negative is None and self.negative_prompt and request.guidance != 1.0:
            negative = [self.negative_prompt] * count  # the run's default unconditional caption (Wan ships one)
        conditions = self._checked_conditions(conditions, count, latent_shape)
        texts = self.caption_tokens(prompts)
        negative_texts = self.caption_tokens(negative) if negative else []
        if noise is None:
            keys = jax.random.split(jax.random.PRNGKey(request.seed), count)
            noise = [initial_noise(k, latent_shape) for k in keys]
        else:
            noise = self._checked_latents(noise, count, latent_shape, "initial noise")
        num_tokens = int(np.prod(patch_grid(latent_shape, self.patch)))
        # Rounded up so prompts of similar length share one compiled sampler (padding text is masked out).
        text_len = -(-max(t.shape[0] for t in texts + negative_texts) // TEXT_LEN_STEP) * TEXT_LEN_STEP
        masks = [None if c is None else c.mask for c in conditions]

        def packed(latents: Sequence[np.ndarray], captions: Sequence[np.ndarray]) -> tuple[PackedBatch, PackLayout]:
            samples = [Sample(latent=z, text=t, cond_mask=m) for z, t, m in zip(latents, captions, masks)]
            return pack(samples, num_tokens, text_len, self.patch, rows=count)

        given = [np.zeros(latent_shape, np.float32) if c is None else c.latent for c in conditions]
        batch, layout = packed(given, texts)
        x_init = packed(noise, texts)[0].tokens
        uncond = None  # training's dropped caption: zero embeddings over the same text positions
        if negative:
            neg_batch = packed(noise, negative_texts)[0]
            uncond = (neg_batch.text, neg_batch.text_segment_ids)
        timesteps, network_times = self.noise_levels(request, num_tokens, strength if edit is not None else 1.0)
        if edit is not None:
            start_tokens = packed(self._checked_latents(edit, count, latent_shape, "video to edit"), texts)[0].tokens
            x_init = np.asarray(sdedit_start(start_tokens, x_init, float(timesteps[0])))
        return SamplingInputs(batch, layout, x_init, uncond, timesteps, network_times)

    def noise_levels(self, request: SampleRequest, num_tokens: int,
                     strength: float = 1.0) -> tuple[jax.Array, np.ndarray | None]:
        """(levels the solver steps through, what the network is shown at them or None) for one run.

        'sorajax': N + 1 levels from the start (1, or the SDEdit strength) to 0, shifted by the token count as
        in training (or by `request.shift`). 'wan': Wan's flow grid at the constant shift; SDEdit keeps its
        last `strength` share of the steps, as diffusers' video-to-video does.
        """
        strength = self._check_strength(strength)
        if self.schedule == "wan":
            shift = request.shift or self.defaults.shift
            levels, shown = wan_sigmas(request.steps, shift), wan_network_times(request.steps, shift)
            first = request.steps - max(1, int(request.steps * strength)) if strength < 1.0 else 0
            return jnp.asarray(levels[first:]), shown[first:]
        shift = request.shift or shift_for_num_tokens(num_tokens, self.time_config.base_tokens,
                                                      self.time_config.base_shift, self.time_config.max_tokens,
                                                      self.time_config.max_shift)
        return sampling_timesteps(request.steps, shift, start=start_level(self.prediction, strength)), None

    def _checked_conditions(self, conditions: Sequence[Conditioning | None] | None, count: int,
                            latent_shape: tuple[int, ...]) -> list[Conditioning | None]:
        if conditions is None:
            return [None] * count
        if len(conditions) != count:
            raise ValueError(f"got {len(conditions)} conditionings for {count} prompts: give one per prompt (None: none)")
        return [None if c is None else c.checked(latent_shape, self.patch) for c in conditions]

    @staticmethod
    def _checked_latents(latents: Sequence[np.ndarray], count: int, latent_shape: tuple[int, ...],
                         what: str) -> list[np.ndarray]:
        if len(latents) != count:
            raise ValueError(f"got {len(latents)} latents of {what} for {count} prompts: give one per prompt")
        for z in latents:
            if np.shape(z) != latent_shape:
                raise ValueError(f"the latent of {what} has shape {np.shape(z)} but the request is {latent_shape}: "
                                 "ask for the input video's frames, height and width")
        return [np.asarray(z, np.float32) for z in latents]

    @staticmethod
    def _check_strength(strength: float) -> float:
        if not (np.isfinite(strength) and 0.0 <= strength <= 1.0):
            raise ValueError(f"SDEdit strength must be in [0, 1], got {strength}: 0 keeps the input, 1 ignores it, "
                             "0.5-0.8 is typical")
        return float(strength)

    def caption_tokens(self, prompts: Sequence[str]) -> list[np.ndarray]:
        """Each prompt's caption tokens `[n_i, D]` as the DiT was trained to read them (what `pack` takes)."""
        return caption_arrays(self.text_encoder, *self.captions.encode(list(prompts)))


def _nearest(value: int, step: int) -> int:
    return max(step, int(round(value / step)) * step)
