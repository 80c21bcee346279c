"""Captioners: world facts at build time, re-captioning a built dataset, the local VLM slot."""

import json

import numpy as np
import pytest

from sorajax.data.tfds.captioner import (
    CaptionUnavailable,
    VisionLanguageCaptioner,
    WorldFactsCaptioner,
    load_function,
    recaption_dataset,
)
from sorajax.data.world.captions import describe
from sorajax.data.tfds.source import TfdsClipSource
from sorajax.data.tfds.builder import build_dataset
from sorajax.data.world import generate_clip
from sorajax.video_io import write_image, write_video

SIZES = [(5, 16, 32), (1, 32, 16), (5, 16, 16)]


@pytest.fixture(scope="module")
def world_manifest(tmp_path_factory):
    """A manifest of world clips: facts as metadata, no captions, plus one real-looking clip without facts."""
    root = tmp_path_factory.mktemp("manifest")
    rows, clips = [], {}
    for i, (frames, height, width) in enumerate(SIZES):
        clip = generate_clip(7, frames, height, width, index=i)
        name = f"clip{i}.png" if frames == 1 else f"clip{i}.mp4"
        write_image(root / name, clip.video[0]) if frames == 1 else write_video(root / name, clip.video, 8.0)
        rows.append({"path": name, "facts": clip.facts.to_json(), "source": "world"})
        clips[name] = clip
    write_image(root / "photo.png", np.full((16, 16, 3), 200, np.uint8))
    rows.append({"path": "photo.png", "caption": "a grey card", "license": "cc0"})
    (root / "manifest.jsonl").write_text("\n".join(json.dumps(r) for r in rows), encoding="utf-8")
    return root, clips


def _by_key(source):
    return {source.info(i).key: i for i in range(len(source))}


def test_build_time_world_captions_match_the_facts_and_keep_metadata(world_manifest, tmp_path):
    root, clips = world_manifest
    dataset_dir, report = build_dataset(root, tmp_path, captioner=WorldFactsCaptioner().as_build_fn())
    assert report.used == 4 and not report.skipped
    source = TfdsClipSource(dataset_dir)
    keys = _by_key(source)
    for name, clip in clips.items():
        assert source.caption(keys[name]) == describe(clip.facts, "descriptive") == clip.caption
        record = source.record(keys[name])
        assert record["caption_source"].decode() == "world-descriptive"
        assert json.loads(record["metadata"].decode())["source"] == "world"
    photo = source.record(keys["photo.png"])
    assert photo["caption"].decode() == "a grey card" and photo["caption_source"].decode() == "source"
    assert json.loads(photo["metadata"].decode()) == {"license": "cc0"}


def test_recaption_writes_captions_back_and_keeps_what_it_cannot_caption(world_manifest, tmp_path):
    root, clips = world_manifest
    dataset_dir, _ = build_dataset(root, tmp_path)
    counts = recaption_dataset(tmp_path, WorldFactsCaptioner(style="terse"))
    assert counts == {"recaptioned": 3, "kept": 1}
    source = TfdsClipSource(dataset_dir)  # a fresh reader sees the new captions
    keys = _by_key(source)
    for name, clip in clips.items():
        assert source.caption(keys[name]) == clip.caption_terse
        assert source.record(keys[name])["caption"].decode() == ""  # the record keeps its original
    assert source.caption(keys["photo.png"]) == "a grey card"
    log = json.loads((dataset_dir / "recaptions.json").read_text())
    assert log == {name: "world-terse" for name in clips}


def _fake_vlm_loader(model_dir):
    scale = float((model_dir / "weights.txt").read_text())

    def model(frames, instruction):
        assert "Describe" in instruction
        return f"  {len(frames)} frames,\n mean {scale * frames.mean():.1f} "
    return model


def test_vision_language_captioner_loads_local_weights_and_samples_frames(world_manifest, tmp_path):
    with pytest.raises(FileNotFoundError, match="no model weights"):
        VisionLanguageCaptioner(tmp_path / "missing", _fake_vlm_loader)
    (tmp_path / "vlm").mkdir()
    (tmp_path / "vlm" / "weights.txt").write_text("2")
    vlm = VisionLanguageCaptioner(tmp_path / "vlm", _fake_vlm_loader, num_frames=3)
    assert vlm.frames_needed(9) == [0, 4, 8] and vlm.frames_needed(2) == [0, 1]
    frames = np.full((3, 4, 4, 3), 10, np.uint8)
    assert vlm.caption(frames, 8.0, {}) == "3 frames, mean 20.0"  # whitespace normalised
    silent = VisionLanguageCaptioner(tmp_path / "vlm", lambda d: (lambda f, i: "  "))
    with pytest.raises(CaptionUnavailable, match="empty caption"):
        silent.caption(frames, 8.0, {})

    root, _ = world_manifest
    build_dataset(root, tmp_path / "data")
    assert recaption_dataset(tmp_path / "data", vlm) == {"recaptioned": 4, "kept": 0}
    source = TfdsClipSource(tmp_path / "data")
    frames_seen = sorted(int(source.caption(i).split()[0]) for i in range(len(source)))
    assert frames_seen == [1, 1, 3, 3]  # images give 1 frame, 5-frame clips 3 evenly spaced frames


def test_world_captioner_without_facts_and_bad_loader_specs_name_the_fix():
    with pytest.raises(CaptionUnavailable, match="no world facts"):
        WorldFactsCaptioner().caption(np.zeros((1, 4, 4, 3), np.uint8), 0.0, {})
    with pytest.raises(ValueError, match="style"):
        WorldFactsCaptioner(style="poetic")
    with pytest.raises(ValueError, match="module:function"):
        load_function("no_colon_here")
    with pytest.raises(ValueError, match="cannot import"):
        load_function("sorajax.data.tfds.captioner:does_not_exist")
    assert load_function("sorajax.data.tfds.captioner:recaption_dataset") is recaption_dataset
