"""Tests for WorldSource: grain protocol, determinism by index, pickling, pipelines."""

import pickle

import grain
import numpy as np
import pytest

from sorajax.data.world.facts import ClipFacts
from sorajax.data.world.options import WorldOptions
from sorajax.data.world.source import UNLIMITED_LENGTH, WorldSource

SIZES = [(5, 16, 24), (1, 24, 16), (9, 16, 16)]


def test_records_are_deterministic_by_index_and_carry_all_fields():
    source = WorldSource(sizes=SIZES, seed=3)
    assert len(source) == UNLIMITED_LENGTH
    assert isinstance(source, grain.sources.RandomAccessDataSource)
    a, b, other = source[7], source[7], source[8]
    np.testing.assert_array_equal(a["video"], b["video"])
    assert a["caption"] == b["caption"] and a["facts"] == b["facts"]
    assert a["facts"] != other["facts"]
    assert a["video"].dtype == np.uint8
    assert a["video"].shape == (a["num_frames"], a["height"], a["width"], 3)
    assert (a["num_frames"], a["height"], a["width"]) in SIZES and a["index"] == 7
    facts = ClipFacts.from_json(a["facts"])
    assert facts.index == 7 and facts.seed == 3 and facts.num_frames == a["num_frames"]
    assert a["caption_terse"].split()[-1] in {"ball", "square", "triangle", "diamond", "cross"}


def test_every_size_is_used_and_weights_steer_the_choice():
    source = WorldSource(sizes=SIZES, seed=0)
    assert {source.size_of(i) for i in range(60)} == set(SIZES)
    only_last = WorldSource(sizes=SIZES, seed=0, size_weights=[0, 0, 1])
    assert {only_last.size_of(i) for i in range(20)} == {SIZES[2]}
    assert WorldSource(sizes=(17, 64, 64)).sizes == ((17, 64, 64),)


def test_source_pickles_and_reproduces_records():
    source = WorldSource(sizes=SIZES, seed=1, options=WorldOptions(max_objects=1))
    clone = pickle.loads(pickle.dumps(source))
    np.testing.assert_array_equal(clone[5]["video"], source[5]["video"])
    assert repr(clone) == repr(source)


def test_grain_map_dataset_pipeline():
    source = WorldSource(sizes=[(5, 16, 16)], seed=0, options=WorldOptions(max_objects=1))
    dataset = (
        grain.MapDataset.source(source)
        .map(lambda r: {"video": r["video"].astype(np.float32) / 127.5 - 1.0, "index": r["index"]})
        .batch(2)
    )
    batch = dataset[0]
    assert batch["video"].shape == (2, 5, 16, 16, 3)
    assert batch["video"].min() >= -1.0 and batch["video"].max() <= 1.0
    np.testing.assert_array_equal(batch["index"], [0, 1])
    np.testing.assert_allclose(batch["video"][1], source[1]["video"] / 127.5 - 1.0, atol=1e-6)


def test_grain_data_loader_with_index_sampler():
    source = WorldSource(sizes=[(3, 16, 16)], seed=2, options=WorldOptions(max_objects=1))
    sampler = grain.samplers.IndexSampler(
        num_records=len(source), shard_options=grain.sharding.NoSharding(), shuffle=True, num_epochs=1, seed=0
    )
    loader = grain.DataLoader(data_source=source, sampler=sampler, worker_count=0)
    iterator = iter(loader)
    records = [next(iterator) for _ in range(3)]
    for record in records:
        np.testing.assert_array_equal(record["video"], source[record["index"]]["video"])
    assert len({r["index"] for r in records}) == 3


def test_bad_arguments_raise_clear_errors():
    with pytest.raises(ValueError, match="num_frames"):
        WorldSource(sizes=[(0, 16, 16)])
    with pytest.raises(ValueError, match="triple"):
        WorldSource(sizes=[(16, 16)])
    with pytest.raises(ValueError, match="empty"):
        WorldSource(sizes=[])
    with pytest.raises(ValueError, match="size_weights"):
        WorldSource(sizes=SIZES, size_weights=[1, 1])
    with pytest.raises(ValueError, match="WorldOptions"):
        WorldSource(sizes=SIZES, options={"max_objects": 1})
    source = WorldSource(sizes=SIZES, length=10)
    with pytest.raises(IndexError):
        source[10]


def test_splits_draw_disjoint_clips_and_the_clip_source_view_matches_the_records():
    train, held_out = WorldSource(sizes=SIZES, seed=3), WorldSource(sizes=SIZES, seed=3, split="eval")
    assert train.fingerprint != held_out.fingerprint
    assert not np.array_equal(train.clip(0, (5, 16, 16)).video, held_out.clip(0, (5, 16, 16)).video)
    record = held_out[4]
    info = held_out.info(4)
    assert (info.num_frames, info.height, info.width) == (record["num_frames"], record["height"], record["width"])
    assert info.key == "world/eval/4" and held_out.caption(4) == record["caption"]
    np.testing.assert_array_equal(held_out.frames(4, [0]), record["video"][:1])
    # Another size renders the same scene: the facts are normalised to the frame, the pixels differ.
    small, large = train.clip(2, (5, 16, 16)), train.clip(2, (5, 32, 32))
    assert small.caption == large.caption and large.video.shape == (5, 32, 32, 3)
    with pytest.raises(ValueError, match="unknown world split 'test'"):
        WorldSource(sizes=SIZES, split="test")


def test_hosts_render_their_share_of_the_same_global_autoencoder_batch():
    from sorajax.data.video_batches import VideoBatchMaker

    source = WorldSource(sizes=[(5, 16, 16), (1, 16, 24)], seed=1, options=WorldOptions(max_objects=1))
    whole = VideoBatchMaker(source, 4, crop=(5, 8, 8))(3)["video"]
    shares = [VideoBatchMaker(source, 4, crop=(5, 8, 8), host=h, num_hosts=2)(3)["video"] for h in range(2)]
    assert whole.shape[0] == 4 and [s.shape[0] for s in shares] == [2, 2]
    np.testing.assert_array_equal(np.concatenate(shares), whole)
    with pytest.raises(ValueError, match="make data.batch_size a multiple of 3"):
        VideoBatchMaker(source, 4, num_hosts=3)


def test_dit_world_clips_switch_framing_and_caption_style_in_the_one_data_path():
    """The report's two ablations on the world: square centre crops against native sizes, terse captions
    against descriptive ones; the defaults leave the source's fingerprint (and old latent caches) as they were."""
    from sorajax.data.clip_pipeline import PackingConfig
    from sorajax.data.config import DiTDataConfig
    from sorajax.data.dit_clips import dit_clip_planner

    packing = PackingConfig(rows=2, seq_len=48, text_len=96, patch=(1, 2, 2), spatial_factor=8, temporal_factor=4)
    sizes = ((5, 16, 32), (5, 32, 16), (1, 16, 16))

    def planner(**data):
        config = DiTDataConfig.from_mapping({"sizes": sizes, "num_clips": 6, **data})
        return dit_clip_planner(config, WorldOptions(max_objects=1), packing, 0, "train", eval_clips=2)

    native, square, terse = planner(), planner(framing="square"), planner(caption_style="terse")
    assert [(p.height, p.width) for p in native.plans] == [native.source.size_of(i)[1:] for i in range(6)]
    assert {(p.height, p.width) for p in native.plans} > {(16, 16)}  # landscape and portrait clips are kept
    assert {(p.height, p.width) for p in square.plans} == {(16, 16)}
    assert [p.num_frames for p in square.plans] == [p.num_frames for p in native.plans]
    tall = next(i for i, p in enumerate(native.plans) if (p.height, p.width) == (32, 16))
    np.testing.assert_array_equal(square.load(tall), native.load(tall)[:, 8:24])  # the centre, not rescaled
    assert repr(native.source) == repr(WorldSource(sizes, 0, WorldOptions(max_objects=1), length=6))
    clip = native.source.clip(0)
    assert native.caption(0) == clip.caption and terse.caption(0) == clip.caption_terse != clip.caption
    assert "caption_style='terse'" in repr(terse.source)
    with pytest.raises(ValueError, match="data.caption_style 'short' is unknown: use one of"):
        DiTDataConfig.from_mapping({"caption_style": "short"})
    with pytest.raises(ValueError, match="data.framing 'letterbox' is unknown"):
        DiTDataConfig.from_mapping({"framing": "letterbox"})
    with pytest.raises(ValueError, match="python -m sorajax.recaption --data=d --style=terse"):
        DiTDataConfig.from_mapping({"source": "tfds", "tfds_dir": "d", "caption_style": "terse"})
