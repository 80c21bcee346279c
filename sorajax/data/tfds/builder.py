"""A TFDS builder: a folder or manifest of videos and images -> array_record shards, no TensorFlow.

Why TFDS + array_record: random access by record index (what grain's samplers, shuffling and
exact resumption need), sharded files a pod's hosts read in parallel, and a standard on-disk
format with a schema (`features.json`) and statistics (`dataset_info.json`). Only
`tfds.features.Tensor` / `Text` / `Scalar` are used: they encode and decode with numpy alone.

Each record keeps the clip at its native size, frame rate and duration: frames are stored
encoded one by one (see `media_files.encode_frames`), with the caption, where it came from,
and any manifest metadata as JSON. Files that cannot be used are skipped with a reason
(`build_report.json` lists them; each is logged). After building, `clip_index.json` records
every record's size, fps and caption by record index, so a pipeline can plan packing without
reading any frames.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import shutil
from pathlib import Path
from typing import Any, Callable, Iterator

import numpy as np
import tensorflow_datasets as tfds

from sorajax.data.tfds.media_files import (
    MediaEntry,
    MediaLimits,
    MediaRejected,
    SkipReport,
    encode_frames,
    find_media,
    load_media,
)

log = logging.getLogger(__name__)

DATASET_NAME = "media_clips"
SPLIT = "train"
CLIP_INDEX_FILE = "clip_index.json"
BUILD_REPORT_FILE = "build_report.json"

# (frames uint8 [T,H,W,3], fps, entry) -> caption; see sorajax.data.tfds.captioner.
CaptionFn = Callable[[np.ndarray, float, MediaEntry], str]


def _features() -> tfds.features.FeaturesDict:
    scalar = tfds.features.Scalar
    return tfds.features.FeaturesDict({
        "key": tfds.features.Text(),
        "caption": tfds.features.Text(),
        "caption_source": tfds.features.Text(),  # 'source' (file/manifest), a captioner's name, or 'none'
        "kind": tfds.features.Text(),  # 'video' or 'image'
        "frame_format": tfds.features.Text(),
        "frames": tfds.features.Tensor(shape=(None,), dtype=np.uint8),
        "frame_offsets": tfds.features.Tensor(shape=(None,), dtype=np.int64),
        "num_frames": scalar(dtype=np.int32),
        "height": scalar(dtype=np.int32),
        "width": scalar(dtype=np.int32),
        "fps": scalar(dtype=np.float32),  # 0 for images
        "duration": scalar(dtype=np.float32),  # seconds, 0 for images
        "metadata": tfds.features.Text(),  # JSON object of the manifest's other fields
    })


@dataclasses.dataclass(frozen=True)
class BuildOptions:
    frame_format: str = "png"
    jpeg_quality: int = 95
    num_shards: int | None = None  # None: TFDS picks from the size
    limits: MediaLimits = MediaLimits()
    caption_missing_only: bool = True  # with a captioner: keep captions the source already has


class MediaClips(tfds.core.GeneratorBasedBuilder):
    """Videos and images with captions at native size; see the module docstring."""

    name = DATASET_NAME
    VERSION = tfds.core.Version("1.0.0")
    RELEASE_NOTES = {"1.0.0": "Per-frame encoded clips at native size, fps and duration."}

    def __init__(self, *, entries: list[MediaEntry] | None = None, options: BuildOptions = BuildOptions(),
                 captioner: tuple[str, CaptionFn] | None = None, report: SkipReport | None = None, **kwargs: Any):
        self._entries = entries or []
        self._options = options
        self._captioner = captioner
        self.report = report if report is not None else SkipReport()
        super().__init__(**kwargs)

    @tfds.core.utils.classproperty
    @classmethod
    def code_path(cls) -> None:
        # TFDS derives this (for download checksums, which we never use) through importlib_resources,
        # which it only installs on Python < 3.9; a builder with no code path skips that.
        return None

    def _info(self) -> tfds.core.DatasetInfo:
        return tfds.core.DatasetInfo(builder=self, features=_features(),
                                     description="User videos and images at native size (sorajax).")

    def _split_generators(self, dl_manager: Any) -> dict[str, Iterator]:
        return {SPLIT: self._generate_examples()}

    def _caption(self, entry: MediaEntry, frames: np.ndarray, fps: float) -> tuple[str, str]:
        if self._captioner is None or (entry.caption and self._options.caption_missing_only):
            return entry.caption, "source" if entry.caption else "none"
        name, caption_fn = self._captioner
        try:
            return caption_fn(frames, fps, entry), name
        except ValueError as why:  # this captioner cannot caption this clip: keep what the source had
            log.warning("%s: no %s caption (%s); keeping the source caption", entry.key, name, why)
            return entry.caption, "source" if entry.caption else "none"

    def _generate_examples(self) -> Iterator[tuple[str, dict[str, Any]]]:
        opts = self._options
        for entry in self._entries:
            try:
                media = load_media(entry, opts.limits)
                caption, caption_source = self._caption(entry, media.frames, media.fps)
            except MediaRejected as rejected:
                self.report.skip(entry.key, rejected.reason, rejected.detail)
                continue
            data, offsets = encode_frames(media.frames, opts.frame_format, opts.jpeg_quality)
            num_frames, height, width, _ = media.frames.shape
            self.report.used += 1
            yield entry.key, {
                "key": entry.key, "caption": caption, "caption_source": caption_source,
                "kind": "image" if entry.is_image else "video", "frame_format": opts.frame_format,
                "frames": data, "frame_offsets": offsets, "num_frames": num_frames, "height": height,
                "width": width, "fps": media.fps, "duration": num_frames / media.fps if media.fps else 0.0,
                "metadata": json.dumps(entry.metadata, sort_keys=True, default=str),
            }


def _text(value: Any) -> str:
    return value.decode("utf-8") if isinstance(value, bytes) else str(value)


def write_clip_index(dataset_dir: Path) -> dict[str, list]:
    """Reads every record once and stores its key, size, fps and caption by record index."""
    source = tfds.builder_from_directory(str(dataset_dir)).as_data_source(SPLIT)
    index: dict[str, list] = {"key": [], "num_frames": [], "height": [], "width": [], "fps": [], "caption": []}
    for i in range(len(source)):
        record = source[i]
        for field in ("num_frames", "height", "width"):
            index[field].append(int(record[field]))
        index["fps"].append(float(record["fps"]))
        index["key"].append(_text(record["key"]))
        index["caption"].append(_text(record["caption"]))
    (dataset_dir / CLIP_INDEX_FILE).write_text(json.dumps(index), encoding="utf-8")
    return index


def build_dataset(src: str | Path, out: str | Path, options: BuildOptions = BuildOptions(),
                  captioner: tuple[str, CaptionFn] | None = None) -> tuple[Path, SkipReport]:
    """Builds `out/media_clips/1.0.0` from `src` (folder or manifest); returns that folder and the skip report.

    Raises ValueError when no file is usable (the half-built folder is removed). Rebuilding into
    an existing `out` replaces the previous build.
    """
    report = SkipReport()
    entries = find_media(src, report)
    out = Path(out)
    version_dir = out / DATASET_NAME / str(MediaClips.VERSION)
    if version_dir.exists():
        shutil.rmtree(version_dir)
    builder = MediaClips(entries=entries, options=options, captioner=captioner, report=report,
                         data_dir=str(out), file_format="array_record")
    tfds.disable_progress_bar()
    config = tfds.download.DownloadConfig(num_shards=options.num_shards) if options.num_shards else None
    try:
        if entries:
            builder.download_and_prepare(download_config=config)
    except AssertionError:  # TFDS refuses a split with no examples; we explain why below
        if report.used:
            raise
    log.info("built %s: %s", version_dir, report.summary())
    if report.used == 0:
        shutil.rmtree(version_dir, ignore_errors=True)
        raise ValueError(
            f"no usable video or image in {src} ({report.summary()}): add .mp4/.png/.jpg/... files that "
            f"ffmpeg or PIL can decode, or fix the files listed above"
        )
    (version_dir / BUILD_REPORT_FILE).write_text(json.dumps(report.to_json(), indent=1), encoding="utf-8")
    write_clip_index(version_dir)
    return version_dir, report


def find_dataset_dir(data_dir: str | Path) -> Path:
    """The built version folder, given it, its dataset folder, or the `--out` folder of the build."""
    data_dir = Path(data_dir)
    for candidate in (data_dir, data_dir / DATASET_NAME):
        if (candidate / "dataset_info.json").is_file():
            return candidate
        versions = sorted(p for p in candidate.glob("*/") if (p / "dataset_info.json").is_file()) if candidate.is_dir() else []
        if versions:
            return versions[-1]
    raise FileNotFoundError(
        f"no built dataset under {data_dir}; build one with `python -m sorajax.build_dataset --src DIR --out {data_dir}`"
    )
