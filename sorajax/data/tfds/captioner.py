"""Re-captioning: turn a clip (frames + metadata) into a descriptive caption, and write it back.

The report trains on descriptive captions written by a captioner rather than on the terse
alt-text datasets come with. Two implementations share the `Captioner` interface:
- `WorldFactsCaptioner`: the built-in world's exact captioner, reading the clip's ground-truth
  facts (the `facts` JSON a world-made dataset carries in its metadata).
- `VisionLanguageCaptioner`: a slot for a real vision-language model, loaded from LOCAL weights
  only (nothing is downloaded). The model is any callable `(frames, instruction) -> text`
  made by a loader function `load(model_dir)` that the user names as `module:function`.

`recaption_dataset` captions every record of a built dataset and writes the captions into its
`clip_index.json` (the captions the pipeline trains on; the original caption stays in each
record as provenance), with `recaptions.json` saying which captioner wrote which caption.
Run it as `python -m sorajax.recaption --data DATA_DIR --captioner world`.
"""

from __future__ import annotations

import abc
import importlib
import json
import logging
from pathlib import Path
from typing import Any, Callable, Mapping

import numpy as np

from sorajax.data.tfds.builder import CLIP_INDEX_FILE
from sorajax.data.tfds.media_files import MediaEntry, decode_frames
from sorajax.data.tfds.source import TfdsClipSource
from sorajax.data.world.captions import describe
from sorajax.data.world.facts import ClipFacts

log = logging.getLogger(__name__)

DEFAULT_INSTRUCTION = (
    "Describe this video in detail: every object with its colour, shape and size, the background, "
    "where each object starts, how it moves, and what the camera does."
)


class CaptionUnavailable(ValueError):
    """This captioner cannot caption this clip (e.g. no facts); the old caption is kept."""


class Captioner(abc.ABC):
    """Frames uint8 [T, H, W, 3] (+ fps, metadata) -> one descriptive caption."""

    name: str = "captioner"

    @abc.abstractmethod
    def caption(self, frames: np.ndarray, fps: float, metadata: Mapping[str, Any]) -> str: ...

    def frames_needed(self, num_frames: int) -> list[int] | None:
        """Which frames to decode for `caption` (None: all of them)."""
        return None

    def as_build_fn(self) -> tuple[str, Callable[[np.ndarray, float, MediaEntry], str]]:
        """The form `tfds_builder.build_dataset(captioner=...)` takes."""
        return self.name, lambda frames, fps, entry: self.caption(frames, fps, entry.metadata)


class WorldFactsCaptioner(Captioner):
    """Captions built-in world clips exactly from their facts (metadata['facts'], JSON or dict)."""

    def __init__(self, style: str = "descriptive", vary: bool = True):
        describe_check = ("descriptive", "terse")
        if style not in describe_check:
            raise ValueError(f"style {style!r} is unknown; use one of {describe_check}")
        self.style, self.vary = style, vary
        self.name = f"world-{style}"

    def caption(self, frames: np.ndarray, fps: float, metadata: Mapping[str, Any]) -> str:
        facts = metadata.get("facts")
        if not facts:
            raise CaptionUnavailable("the clip has no world facts in its metadata; use a vision-language captioner")
        facts = ClipFacts.from_json(facts) if isinstance(facts, str) else ClipFacts.from_dict(facts)
        return describe(facts, self.style, self.vary)

    def frames_needed(self, num_frames: int) -> list[int] | None:
        return []  # facts only: no pixels to decode


class VisionLanguageCaptioner(Captioner):
    """A local vision-language model; `load(model_dir)` returns `model(frames, instruction) -> str`."""

    def __init__(self, model_dir: str | Path, load: Callable[[Path], Callable[[np.ndarray, str], str]],
                 instruction: str = DEFAULT_INSTRUCTION, num_frames: int = 8, name: str = "vlm"):
        model_dir = Path(model_dir)
        if not model_dir.is_dir() or not any(model_dir.iterdir()):
            raise FileNotFoundError(
                f"no model weights in {model_dir}: put a vision-language model's files there (sorajax never "
                "downloads weights), or use --captioner world for world-made datasets"
            )
        if num_frames < 1:
            raise ValueError(f"num_frames must be >= 1, got {num_frames}")
        self.model = load(model_dir)
        self.instruction, self.num_frames, self.name = instruction, num_frames, name

    def frames_needed(self, num_frames: int) -> list[int] | None:
        count = min(num_frames, self.num_frames)
        return sorted({int(i) for i in np.linspace(0, num_frames - 1, count).round()})

    def caption(self, frames: np.ndarray, fps: float, metadata: Mapping[str, Any]) -> str:
        text = str(self.model(frames, self.instruction)).strip()
        if not text:
            raise CaptionUnavailable("the vision-language model returned an empty caption")
        return " ".join(text.split())


def load_function(spec: str) -> Callable:
    """'package.module:function' -> the function (how a user plugs in a model loader)."""
    module_name, _, attr = spec.partition(":")
    if not module_name or not attr:
        raise ValueError(f"{spec!r} is not 'module:function'; e.g. my_models.vlm:load")
    try:
        return getattr(importlib.import_module(module_name), attr)
    except (ImportError, AttributeError) as error:
        raise ValueError(f"cannot import {spec!r} ({error}); check the module is installed and names the function") from None


def recaption_dataset(data_dir: str | Path, captioner: Captioner, only_missing: bool = False) -> dict[str, int]:
    """Captions every record and writes the captions into the dataset's `clip_index.json`.

    Returns counts: 'recaptioned', 'kept' (captioner unavailable for that clip, or only_missing).
    """
    source = TfdsClipSource(data_dir)
    index_path = source.dataset_dir / CLIP_INDEX_FILE
    index = json.loads(index_path.read_text(encoding="utf-8"))
    log_path = source.dataset_dir / "recaptions.json"
    written = json.loads(log_path.read_text(encoding="utf-8")) if log_path.is_file() else {}
    counts = {"recaptioned": 0, "kept": 0}
    for i in range(len(source)):
        if only_missing and index["caption"][i]:
            counts["kept"] += 1
            continue
        record = source.record(i)
        metadata = json.loads(record["metadata"].decode() if isinstance(record["metadata"], bytes) else record["metadata"])
        wanted = captioner.frames_needed(int(record["num_frames"]))
        frames = decode_frames(record["frames"], record["frame_offsets"], wanted) if wanted != [] else np.zeros((0, 1, 1, 3), np.uint8)
        try:
            caption = captioner.caption(frames, float(record["fps"]), metadata)
        except CaptionUnavailable as why:
            log.warning("keeping the caption of %s: %s", index["key"][i], why)
            counts["kept"] += 1
            continue
        index["caption"][i] = caption
        written[index["key"][i]] = captioner.name
        counts["recaptioned"] += 1
    tmp = index_path.with_suffix(".tmp")
    tmp.write_text(json.dumps(index), encoding="utf-8")
    tmp.replace(index_path)
    log_path.write_text(json.dumps(written, indent=1, sort_keys=True), encoding="utf-8")
    return counts
