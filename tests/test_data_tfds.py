"""Real data end to end: a folder of mp4s and PNGs -> TFDS -> grain -> packed batches -> one DiT step.

The folder is made here from world clips: landscape, portrait and square videos, a one-frame
image, a corrupt mp4 and an empty PNG. Checks: bad files are counted, logged and skipped; records
keep native size and fps and decode to the exact stored frames; packing and resumption are exact;
hosts read disjoint shards; the native/square framing switch; clear errors.
"""

import dataclasses
import json
import logging
import shutil
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from sorajax.config_loading import load_config
from sorajax.data.clip_pipeline import (
    BatchEncoder,
    ClipPlanner,
    PackingConfig,
    PixelBatchMaker,
    caption_token_counts,
    host_shard,
    packing_efficiency_of,
)
from sorajax.data.clip_source import ClipInfo
from sorajax.data.clip_sizing import SizingConfig, latent_token_count
from sorajax.data.iterators import batch_dataset, batch_iterator
from sorajax.data.latent_cache import make_latent_encoder
from sorajax.data.tfds.builder import BuildOptions, build_dataset
from sorajax.data.tfds.media_files import MediaLimits
from sorajax.data.tfds.source import TfdsClipSource
from sorajax.data.world import WorldSource, generate_clip
from sorajax.diffusion.sampling import packed_denoiser
from sorajax.diffusion.timesteps import TrainingTimeConfig
from sorajax.models.build import build_dit
from sorajax.models.text_encoder import tiny_text_encoder
from sorajax.models.vae import CausalVAE, VAEConfig
from sorajax.parallel.context import MeshContext
from sorajax.parallel.rules import DIT_RULES
from sorajax.runs.checkpoints import Checkpointer
from sorajax.train.config import DiTTrainConfig
from sorajax.train.dit_step import init_state, make_train_step
from sorajax.train.optim import make_optimizer
from sorajax.video_io import read_video, write_image, write_video

GOOD = {  # file -> (frames, height, width)
    "wide.mp4": (9, 32, 48),
    "tall.mp4": (9, 48, 32),
    "square.mp4": (5, 32, 32),
    "still.png": (1, 32, 48),
}
FPS = 8.0


@pytest.fixture(scope="module")
def media_dir(tmp_path_factory):
    root = tmp_path_factory.mktemp("media")
    for i, (name, (frames, height, width)) in enumerate(GOOD.items()):
        clip = generate_clip(3, frames, height, width, index=i)
        if name.endswith(".png"):
            write_image(root / name, clip.video[0])
        else:
            write_video(root / name, clip.video, FPS)
        (root / name).with_suffix(".txt").write_text(clip.caption, encoding="utf-8")
    (root / "broken.mp4").write_bytes(b"\x00\x00\x00\x18ftypmp42 this is not a video" * 20)
    (root / "empty.png").write_bytes(b"")
    return root


@pytest.fixture(scope="module")
def built(media_dir, tmp_path_factory):
    out = tmp_path_factory.mktemp("data")
    dataset_dir, report = build_dataset(media_dir, out, BuildOptions(num_shards=2))
    return out, dataset_dir, report


@pytest.fixture(scope="module")
def text_encoder():
    return tiny_text_encoder(seed=0, max_length=48)


PACKING = PackingConfig(rows=2, seq_len=48, text_len=96, patch=(1, 2, 2), spatial_factor=8, temporal_factor=4)


def _maker(source, text_encoder, sizing=None, seed=0, records=None, stream=0, packing=PACKING, whole_clips=False):
    records = np.arange(len(source)) if records is None else records
    counts = caption_token_counts(text_encoder, [source.caption(int(r)) for r in records])
    sizing = None if whole_clips else sizing or SizingConfig(pixel_budget=32 * 48, size_multiple=16, max_frames=9)
    return PixelBatchMaker(ClipPlanner(source, records, sizing, packing, seed), counts, seed, stream=stream)


def test_bad_files_are_counted_logged_and_skipped(media_dir, tmp_path, caplog):
    with caplog.at_level(logging.WARNING):
        dataset_dir, report = build_dataset(media_dir, tmp_path)
    assert report.used == 4
    assert report.counts == {"corrupt": 1, "empty": 1}
    assert sorted(k for k, _, _ in report.skipped) == ["broken.mp4", "empty.png"]
    assert "skipping broken.mp4 (corrupt)" in caplog.text and "skipping empty.png (empty)" in caplog.text
    saved = json.loads((dataset_dir / "build_report.json").read_text())
    assert saved["used"] == 4 and saved["skipped_counts"] == {"corrupt": 1, "empty": 1}


def test_records_keep_native_size_fps_caption_and_exact_frames(media_dir, built):
    _, dataset_dir, _ = built
    source = TfdsClipSource(dataset_dir)
    assert len(source) == 4
    by_key = {source.info(i).key: i for i in range(len(source))}
    assert sorted(by_key) == sorted(GOOD)
    for name, (frames, height, width) in GOOD.items():
        info = source.info(by_key[name])
        assert (info.num_frames, info.height, info.width) == (frames, height, width)
        assert info.fps == (0.0 if frames == 1 else pytest.approx(FPS))
        assert source.caption(by_key[name]) == (media_dir / name).with_suffix(".txt").read_text()
        record = source.record(by_key[name])
        assert record["kind"].decode() == ("image" if frames == 1 else "video")
        if frames > 1:  # PNG frames are lossless: exactly what ffmpeg decodes from the mp4
            np.testing.assert_array_equal(source.frames(by_key[name], [0, frames - 1]),
                                          read_video(media_dir / name).frames[[0, frames - 1]])


def test_too_large_files_are_skipped_and_no_usable_file_is_a_clear_error(media_dir, tmp_path):
    _, report = build_dataset(media_dir, tmp_path / "a", BuildOptions(limits=MediaLimits(max_side=40)))
    assert report.used == 1 and report.counts["too large"] == 3  # only the 32x32 square fits a 40-pixel side
    assert sorted(k for k, r, _ in report.skipped if r == "too large") == ["still.png", "tall.mp4", "wide.mp4"]
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "empty.mp4").write_bytes(b"")
    (bad / "junk.png").write_bytes(b"not a png")
    with pytest.raises(ValueError, match="no usable video or image"):
        build_dataset(bad, tmp_path / "b")
    with pytest.raises(FileNotFoundError, match="does not exist"):
        build_dataset(tmp_path / "nowhere", tmp_path / "c")


def test_end_to_end_packed_batches_and_one_train_step(built, text_encoder):
    _, dataset_dir, _ = built
    source = TfdsClipSource(dataset_dir)
    maker = _maker(source, text_encoder)
    pixel_batch = batch_dataset(maker)[0]
    assert len(pixel_batch.videos) >= 2
    for video, record in zip(pixel_batch.videos, pixel_batch.record_indices):
        info = source.info(int(record))
        assert video.dtype == np.uint8 and video.shape[0] == info.num_frames  # 1, 5 or 9 frames: all 1 + 4k
        assert video.shape[1:3] == (info.height, info.width)  # within budget already: native size kept
    vae = CausalVAE(VAEConfig.from_dict(load_config("configs/vae_tiny.py:smoke").vae.to_dict()))
    variables = vae.init(jax.random.key(0), jnp.zeros((1, 1, 16, 16, 3)))
    batch = BatchEncoder(make_latent_encoder(vae, variables), text_encoder, PACKING)(pixel_batch)
    latent_channels = vae.config.latent_channels
    assert batch.tokens.shape == (2, 48, 4 * latent_channels) and batch.text.shape == (2, 96, text_encoder.dim)
    planned = sum(int(maker.planner.token_counts[i]) for i in maker.select(0))
    assert int(np.count_nonzero(batch.segment_ids)) == planned
    assert np.all(batch.text_segment_ids.max(axis=1) == batch.segment_ids.max(axis=1))

    config = load_config("configs/dit_tiny.py:smoke")
    dit = build_dit(config.model, PACKING.patch, latent_channels, text_encoder.dim)
    optimizer = make_optimizer(DiTTrainConfig.from_mapping(config.train))
    state, _ = MeshContext.create(None, DIT_RULES).init(lambda: init_state(dit, optimizer, batch, seed=0))
    step = jax.jit(make_train_step(packed_denoiser(dit), optimizer, TrainingTimeConfig.from_mapping(config.time),
                                   0.1, 0.99))
    state, metrics = step(state, batch)
    assert int(state.step) == 1 and np.isfinite(float(metrics["loss"])) and float(metrics["loss_tokens"]) > 0


def test_resume_from_a_checkpoint_sees_the_same_batches(built, text_encoder, tmp_path):
    source = TfdsClipSource(built[1])
    dataset = batch_dataset(_maker(source, text_encoder, seed=5))
    straight = batch_iterator(dataset)
    reference = [next(straight) for _ in range(6)]

    interrupted = batch_iterator(dataset)
    for _ in range(3):
        next(interrupted)
    ckpt = Checkpointer(str(tmp_path / "ckpt"), async_save=False)
    ckpt.save(3, {"w": jnp.ones(2)}, data_iterator=interrupted)
    ckpt.close()
    resumed = batch_iterator(dataset)
    restored = Checkpointer(str(tmp_path / "ckpt"), async_save=False)
    restored.restore({"w": jnp.zeros(2)}, data_iterator=resumed)
    restored.close()
    for expected in reference[3:]:
        got = next(resumed)
        np.testing.assert_array_equal(got.record_indices, expected.record_indices)
        for a, b in zip(got.videos, expected.videos, strict=True):
            np.testing.assert_array_equal(a, b)
    assert any(not np.array_equal(reference[0].record_indices, r.record_indices) for r in reference[1:])


def test_hosts_read_disjoint_shards_and_streams():
    shards = [host_shard(11, p, 3, holdout=2) for p in range(3)]
    assert sorted(np.concatenate(shards).tolist()) == list(range(9))
    assert host_shard(11, 0, 1, holdout=2, split="eval").tolist() == [9, 10]
    with pytest.raises(ValueError, match="no train records"):
        host_shard(2, 2, 3)


def test_native_vs_square_framing_is_a_switch(built, text_encoder):
    source = TfdsClipSource(built[1])
    expected = {"native": {"wide.mp4": (32, 48), "tall.mp4": (48, 32), "square.mp4": (32, 32), "still.png": (32, 48)},
                "square": dict.fromkeys(GOOD, (32, 32))}
    makers = {}
    for framing, shapes in expected.items():
        sizing = SizingConfig(pixel_budget=32 * 48, size_multiple=16, framing=framing, max_frames=9)
        makers[framing] = _maker(source, text_encoder, sizing)
        assert {source.info(p.index).key: (p.height, p.width) for p in makers[framing].planner.plans} == shapes
    wide = next(i for i, p in enumerate(makers["native"].planner.plans) if source.info(p.index).key == "wide.mp4")
    native, square = makers["native"].planner.load(wide), makers["square"].planner.load(wide)
    np.testing.assert_array_equal(square, native[:, :, 8:40])  # the centre square, not a squashed frame


def test_world_source_through_the_same_pipeline_packs_densely(text_encoder):
    source = WorldSource([(9, 32, 48), (5, 48, 32), (1, 32, 32), (9, 16, 16)], length=40, seed=1)
    maker = _maker(source, text_encoder, packing=dataclasses.replace(PACKING, text_len=400), whole_clips=True)
    tokens = [latent_token_count(p, 8, 4, (1, 2, 2)) for p in maker.planner.plans]
    assert tokens == maker.planner.token_counts.tolist() and min(tokens) >= 1
    assert packing_efficiency_of(maker, 20) > 0.9
    batch = maker(0)
    record = int(batch.record_indices[0])
    assert batch.captions[0] == source.caption(record)
    np.testing.assert_array_equal(batch.videos[0], source.clip(record).video)  # whole clips, made at their size


def test_clips_too_big_for_a_row_name_the_fix(built, text_encoder):
    source = TfdsClipSource(built[1])
    with pytest.raises(ValueError, match="more than a row holds .*or use smaller clips"):
        _maker(source, text_encoder, SizingConfig(pixel_budget=96 * 96, size_multiple=16, max_frames=9, allow_upscale=True))


class _MetadataOnlySource:
    """Sizes and captions without pixels: packing plans need nothing else."""

    def __init__(self, count, seed):
        rng = np.random.default_rng(seed)
        sizes = [(96, 160), (160, 96), (128, 128), (64, 112), (112, 64), (80, 80), (144, 256), (256, 144)]
        self.items = [(int(rng.choice([1, 9, 17, 33])), *sizes[rng.integers(len(sizes))]) for _ in range(count)]

    def __len__(self):
        return len(self.items)

    def info(self, index):
        frames, height, width = self.items[index]
        return ClipInfo(frames, height, width, 8.0 if frames > 1 else 0.0, str(index))

    def caption(self, index):
        return f"clip {index}"


def test_packing_fills_at_least_95_percent_of_tokens_on_a_mixed_size_dataset(text_encoder):
    source = _MetadataOnlySource(300, seed=0)
    packing = PackingConfig(rows=4, seq_len=1024, text_len=1024)
    sizing = SizingConfig(pixel_budget=96 * 160, size_multiple=16, max_frames=33)
    maker = _maker(source, text_encoder, sizing, packing=packing)
    assert len(set(maker.planner.token_counts.tolist())) >= 8  # really mixed: many different token counts
    assert packing_efficiency_of(maker, 100) >= 0.95


def test_dit_clips_of_a_tfds_dataset_cached_and_streamed(built, text_encoder, tmp_path):
    from sorajax.data.config import DiTDataConfig
    from sorajax.data.dit_clips import cached_clip_set, dit_clip_planner
    from sorajax.data.packed_batches import PackedBatchMaker
    from sorajax.data.world import WorldOptions

    vae = CausalVAE(VAEConfig.from_dict(load_config("configs/vae_tiny.py:smoke").vae.to_dict()))
    encode = make_latent_encoder(vae, vae.init(jax.random.key(0), jnp.zeros((1, 1, 16, 16, 3))))
    config = load_config("configs/dit_tfds.py:smoke", {"data.tfds_dir": str(built[0])})
    data = DiTDataConfig.from_mapping(config.data)

    def clips(split):
        planner = dit_clip_planner(data, WorldOptions(), PACKING, 0, split, eval_clips=1)
        return cached_clip_set(planner, encode, text_encoder, {"step": 0}, tmp_path / f"latents_{split}.npz")

    train, held_out = clips("train"), clips("eval")
    assert (len(train), len(held_out)) == (3, 1) and not set(train.keys) & set(held_out.keys)
    assert {l.shape for l in train.latents} <= {(3, 4, 6, 4), (3, 6, 4, 4), (2, 4, 4, 4), (1, 4, 6, 4)}
    again = clips("train")  # from the cache file
    for a, b in zip(train.latents, again.latents, strict=True):
        np.testing.assert_array_equal(a, b)
    batch = PackedBatchMaker(train, 2, 48, 96, (1, 2, 2), seed=0)(0)
    assert batch.tokens.shape == (2, 48, 16) and np.count_nonzero(batch.segment_ids) > 0
    planner = dit_clip_planner(data, WorldOptions(), PACKING, 0, "train", eval_clips=1)
    counts = caption_token_counts(text_encoder, [planner.caption(i) for i in range(planner.records.size)])
    streamed = BatchEncoder(encode, text_encoder, PACKING)(PixelBatchMaker(planner, counts, seed=0)(0))
    assert streamed.tokens.shape == (2, 48, 16) and streamed.text.shape == (2, 96, text_encoder.dim)


def _damaged_copy(built, tmp_path, shard=0):
    """A copy of the built dataset whose first record of `shard` has 64 garbled bytes (its chunk's checksum fails)."""
    copy = tmp_path / "damaged"
    shutil.copytree(built[0], copy)
    path = sorted((copy / built[1].relative_to(built[0])).glob("*.array_record-*"))[shard]
    data = bytearray(path.read_bytes())
    data[200:264] = bytes(b ^ 0xFF for b in data[200:264])
    path.write_bytes(bytes(data))
    return copy, path.name


def test_a_damaged_record_is_skipped_logged_once_with_its_shard_and_counted(built, text_encoder, tmp_path, caplog):
    damaged, shard = _damaged_copy(built, tmp_path)
    source = TfdsClipSource(damaged)
    with pytest.raises(RuntimeError, match="Corrupted Riegeli"):  # the reader's own error, for record 0 only
        source.frames(0, [0])
    maker = _maker(source, text_encoder, records=np.arange(len(source)))
    with caplog.at_level(logging.WARNING):
        batches = [maker(i) for i in range(4)]
    assert all(0 not in b.record_indices and len(b.videos) == len(b.record_indices) > 0 for b in batches)
    assert any(b.skipped_records == (0,) for b in batches) and maker.planner.skipped == {0}
    warnings = [r.getMessage() for r in caplog.records if "skipping record" in r.getMessage()]
    assert len(warnings) == 1 and warnings[0].startswith("skipping record 0 (") and shard in warnings[0]
    clean = _maker(TfdsClipSource(built[0]), text_encoder)
    for batch in batches:  # the other records decode exactly as from the intact dataset
        for video, record in zip(batch.videos, batch.record_indices):
            np.testing.assert_array_equal(video, clean.planner.load(int(record)))
    with pytest.raises(ValueError, match="record 0 .* no longer decodes; rebuild the dataset"):
        maker.planner.load(0)  # a caller that needs this very clip is told


@pytest.mark.parametrize("cache_latents", [True, False])
def test_train_dit_command_trains_on_a_tfds_dataset(built, tmp_path, tmp_path_factory, cache_latents):
    """`python -m sorajax.train_dit --config=configs/dit_tfds.py` path: data.source='tfds' end to end,
    with the train set's latents cached once or each batch decoded and encoded in the loop. The cached
    run's dataset has a damaged record: it is left out, counted in the metrics, and the run goes on."""
    from sorajax.train.dit_trainer import train_dit
    from tests.tiny_runs import shared_vae

    vae_dir, dit_dir = str(shared_vae(tmp_path_factory)), str(tmp_path / "dit")
    data_dir = _damaged_copy(built, tmp_path)[0] if cache_latents else built[0]
    config = load_config("configs/dit_tfds.py:smoke", {"data.tfds_dir": str(data_dir), "vae_workdir": vae_dir,
                                                       "train.steps": 2, "data.cache_latents": cache_latents})
    metrics = train_dit(config, dit_dir)
    assert np.isfinite(metrics["val_loss"])
    cached = ["latents_eval.npz"] + (["latents_train.npz"] if cache_latents else [])
    assert sorted(p.name for p in (tmp_path / "dit").glob("latents_*.npz")) == cached
    logged = [json.loads(line) for line in open(tmp_path / "dit" / "metrics.jsonl") if '"loss"' in line]
    assert logged[-1]["step"] == 2
    assert [m["data_skipped_records"] for m in logged] == [1 if cache_latents else 0] * len(logged)
    if cache_latents:  # a run trained on your own videos samples, through the API and the command line
        from sorajax.pipeline import Pipeline

        pipeline = Pipeline.from_run(dit_dir)
        assert (pipeline.defaults.frames, pipeline.defaults.height, pipeline.defaults.width) == (5, 32, 32)
        video = pipeline.generate(["a small red ball"], steps=2)[0]
        assert video.shape == (5, 32, 32, 3) and video.dtype == np.uint8
        out = tmp_path / "samples"
        done = subprocess.run([sys.executable, "-m", "sorajax.generate", f"--run={dit_dir}", "--prompt=a red ball",
                               "--steps=2", "--width=48", f"--out={out}"], capture_output=True, text=True)
        assert done.returncode == 0, done.stderr[-2000:]
        written = read_video(out / "00_a_red_ball.mp4").frames
        assert written.shape == (5, 32, 48, 3) and (out / "contact_sheet.png").is_file()
