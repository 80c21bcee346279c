"""The `data` section of a run's config, one validated structure per trainer.

Built once where a command starts (see `sorajax.config_dataclasses.from_mapping`), so a bad value is
refused before any clip is rendered or encoded, and library functions receive these objects, not
the whole ConfigDict.
"""

from __future__ import annotations

import dataclasses
from typing import Any

from sorajax.config_dataclasses import from_mapping
from sorajax.data.clip_sizing import FRAMINGS, SizingConfig
from sorajax.data.world.scene import check_clip_size
from sorajax.data.world.source import CAPTION_STYLES
from sorajax.size_ceiling import SizeCeiling

Size = tuple[int, int, int]
SOURCES = ("world", "tfds")


def check_sizes(sizes: Any, what: str) -> tuple[Size, ...]:
    if not sizes:
        raise ValueError(f"{what} is empty: give at least one (frames, height, width) triple")
    out = []
    for size in sizes:
        if not isinstance(size, tuple) or len(size) != 3:
            raise ValueError(f"{what} entries are (frames, height, width); got {size!r}")
        frames, height, width = check_clip_size(*size)
        try:
            SizeCeiling.current().check(frames, height, width)
        except ValueError as error:
            raise ValueError(f"{what} {size}: {error}") from None
        out.append((frames, height, width))
    return tuple(out)


def _check_positive(what: str, **values: int) -> None:
    for name, value in values.items():
        if value < 1:
            raise ValueError(f"{what}.{name} must be >= 1, got {value}")


@dataclasses.dataclass(frozen=True)
class DiTDataConfig:
    """Clips for the DiT: the built-in world (`sizes`, `num_clips`) or a TFDS dataset (`tfds_dir`, sizing).

    Both are packed into `rows` rows of `seq_len` tokens and `text_len` caption tokens. `framing` applies
    to both ('square': each clip centre-cropped to its largest square, the report's baseline against native
    aspect ratios); `caption_style` picks the world's captions (a dataset's are chosen when it is captioned).
    """

    source: str = "world"
    rows: int = 4
    seq_len: int = 384
    text_len: int = 256
    worker_count: int = 0
    # the built-in world
    sizes: tuple[Size, ...] = ((9, 64, 64),)
    num_clips: int = 2048
    # a dataset built by `python -m sorajax.build_dataset`
    tfds_dir: str | None = None
    pixel_budget: int = 64 * 64
    framing: str = "native"
    caption_style: str = "descriptive"
    allow_upscale: bool = False
    max_frames: int = 17
    frame_counts: tuple[int, ...] = ()
    target_fps: float | None = None
    eval_count: int = 16
    cache_latents: bool = True

    def __post_init__(self) -> None:
        if self.source not in SOURCES:
            raise ValueError(f"data.source {self.source!r} is unknown: use one of {SOURCES}")
        _check_positive("data", rows=self.rows, seq_len=self.seq_len, text_len=self.text_len)
        ceiling = SizeCeiling.current()
        ceiling.limit("data.rows", self.rows, "max_count", "pack fewer rows per step")
        ceiling.limit("data.seq_len", self.seq_len, "max_tokens", "use shorter rows")
        ceiling.limit("data.max_frames", self.max_frames, "max_frames", "train on shorter clips")
        if self.framing not in FRAMINGS:
            raise ValueError(f"data.framing {self.framing!r} is unknown: use one of {FRAMINGS}")
        if self.caption_style not in CAPTION_STYLES:
            raise ValueError(f"data.caption_style {self.caption_style!r} is unknown: use one of {CAPTION_STYLES}")
        if self.worker_count < 0:
            raise ValueError(f"data.worker_count must be >= 0, got {self.worker_count}")
        if self.source == "world":
            object.__setattr__(self, "sizes", check_sizes(self.sizes, "data.sizes"))
            _check_positive("data", num_clips=self.num_clips)
            if not self.cache_latents:
                raise ValueError("data.cache_latents=False streams a dataset too big to cache; the world is "
                                 "cached (set it back to True, or use data.source='tfds')")
        else:
            if not self.tfds_dir:
                raise ValueError("data.source='tfds' needs data.tfds_dir: the --out folder of "
                                 "`python -m sorajax.build_dataset`")
            if self.caption_style != "descriptive":
                raise ValueError(f"data.caption_style={self.caption_style!r} picks the world's captions; a dataset's "
                                 "captions are written when it is captioned: `python -m sorajax.recaption --data="
                                 f"{self.tfds_dir} --style={self.caption_style}`, and leave data.caption_style unset")
            if self.eval_count < 1:
                raise ValueError(f"data.eval_count must be >= 1 (records held out for validation), got {self.eval_count}")

    @classmethod
    def from_mapping(cls, values: Any) -> "DiTDataConfig":
        return from_mapping(cls, values, "data")

    def sizing(self, size_multiple: int, temporal_factor: int) -> SizingConfig:
        """How a dataset clip of native size becomes a training clip (sides snap to `size_multiple`)."""
        return SizingConfig(pixel_budget=self.pixel_budget, size_multiple=size_multiple, framing=self.framing,
                            allow_upscale=self.allow_upscale, max_frames=self.max_frames,
                            frame_counts=self.frame_counts, target_fps=self.target_fps,
                            temporal_factor=temporal_factor)


@dataclasses.dataclass(frozen=True)
class VideoDataConfig:
    """Clips for the autoencoder: batches of one size each, drawn from `sizes`, optionally cropped."""

    sizes: tuple[Size, ...] = ((9, 64, 64),)
    crop: Size | None = None
    batch_size: int = 8
    worker_count: int = 0

    def __post_init__(self) -> None:
        object.__setattr__(self, "sizes", check_sizes(self.sizes, "data.sizes"))
        _check_positive("data", batch_size=self.batch_size)
        SizeCeiling.current().limit("data.batch_size", self.batch_size, "max_count", "use a smaller batch")
        if self.worker_count < 0:
            raise ValueError(f"data.worker_count must be >= 0, got {self.worker_count}")
        if self.crop is not None:
            if len(self.crop) != 3 or min(self.crop) < 1:
                raise ValueError(f"data.crop is (frames, height, width) with positive sides, got {self.crop}")
            for size in self.sizes:
                if size[1] < self.crop[1] or size[2] < self.crop[2]:
                    raise ValueError(f"data.crop {self.crop} is larger than clip size {size}: lower the crop")

    @classmethod
    def from_mapping(cls, values: Any) -> "VideoDataConfig":
        return from_mapping(cls, values, "data")
