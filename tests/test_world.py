"""Tests for the procedural world: determinism, sizes, physics, rendering agrees with facts."""

import dataclasses
import time

import ml_collections
import numpy as np
import pytest

from sorajax.data.world import generate_clip
from sorajax.data.world.facts import ClipFacts, direction_word
from sorajax.data.world.options import BACKGROUND_COLOURS, OBJECT_COLOURS, WorldOptions, colour_distance
from sorajax.data.world.render import SHAPE_EXTENTS

FLAT = dict(texture_strength=0.0)


def _colour_mask(frame: np.ndarray, rgb, tol: float = 40.0) -> np.ndarray:
    diff = frame.astype(np.float64) - np.asarray(rgb, np.float64)
    return np.sqrt((diff**2).sum(-1)) < tol


def test_same_seed_index_and_size_give_identical_clips():
    a = generate_clip(3, 9, 32, 48, index=11)
    b = generate_clip(3, 9, 32, 48, index=11)
    assert a.video.shape == (9, 32, 48, 3) and a.video.dtype == np.uint8
    np.testing.assert_array_equal(a.video, b.video)
    assert a.facts.to_dict() == b.facts.to_dict()
    assert a.caption == b.caption and a.caption_terse == b.caption_terse


def test_different_seeds_and_indices_differ():
    base = generate_clip(0, 5, 32, 32, index=0)
    other_seed = generate_clip(1, 5, 32, 32, index=0)
    other_index = generate_clip(0, 5, 32, 32, index=1)
    assert not np.array_equal(base.video, other_seed.video)
    assert not np.array_equal(base.video, other_index.video)
    assert base.facts.to_dict() != other_index.facts.to_dict()


def test_one_frame_clip_is_a_still_image():
    for index in range(6):
        clip = generate_clip(0, 1, 24, 40, index=index)
        assert clip.video.shape == (1, 24, 40, 3)
        assert clip.facts.is_image
        assert all(o.motion == "static" for o in clip.facts.objects)
        assert not clip.facts.camera.pans
        assert clip.caption.startswith("A still")
        assert clip.facts.main_object.positions.shape == (1, 2)


@pytest.mark.parametrize("size", [(5, 32, 64), (5, 64, 32), (5, 40, 40), (1, 16, 96)])
def test_landscape_portrait_and_square_sizes_keep_objects_in_frame(size):
    t, h, w = size
    for index in range(4):
        clip = generate_clip(2, t, h, w, index=index)
        assert clip.video.shape == (t, h, w, 3)
        for obj in clip.facts.objects:
            if obj.motion != "gravity":  # drift and static paths are planned to stay in frame
                assert obj.fully_in_frame.all()
                assert np.all((obj.positions >= 0) & (obj.positions <= 1))


def test_same_aspect_at_two_resolutions_is_the_same_scene():
    small = generate_clip(5, 7, 32, 48, index=3)
    large = generate_clip(5, 7, 64, 96, index=3)
    for a, b in zip(small.facts.objects, large.facts.objects):
        assert (a.shape, a.colour, a.size, a.motion) == (b.shape, b.colour, b.size, b.motion)
        np.testing.assert_allclose(a.positions, b.positions, atol=1e-6)
        # Pixel centres scale with resolution: (p + 0.5) doubles.
        np.testing.assert_allclose(b.pixel_centres + 0.5, 2 * (a.pixel_centres + 0.5), atol=1e-3)


def test_rendered_centroid_matches_facts_pixel_centre():
    checked = 0
    for shape in SHAPE_EXTENTS:
        options = WorldOptions(shapes=(shape,), sizes=("medium", "large"), occluder_prob=0.0, **FLAT)
        clip = generate_clip(7, 5, 48, 64, options, index=1)
        obj = clip.facts.main_object
        for t in range(5):
            if obj.visibility[t] == 1.0 and obj.fully_in_frame[t]:
                rows, cols = np.nonzero(_colour_mask(clip.video[t], obj.rgb))
                assert rows.size > 20
                centroid = np.array([cols.mean(), rows.mean()])
                np.testing.assert_allclose(centroid, obj.pixel_centres[t], atol=1.0, err_msg=shape)
                checked += 1
    assert checked >= 10


def test_occluded_frames_have_lower_visibility_and_fewer_object_pixels():
    options = WorldOptions(max_objects=1, occluder_prob=1.0, pan_prob=0.0, gravity_prob=0.0, static_prob=0.0,
                           sizes=("large",), **FLAT)
    found = 0
    for index in range(10):
        clip = generate_clip(1, 17, 64, 64, options, index=index)
        if clip.facts.occluder is None:
            continue
        obj = clip.facts.main_object
        assert obj.behind_occluder.max() >= 0.5
        clear = int(np.argmax(obj.visibility))
        hidden = int(np.argmin(obj.visibility))
        assert obj.visibility[clear] > 0.8 and obj.visibility[hidden] < 0.5
        counts = [_colour_mask(clip.video[t], obj.rgb).sum() for t in (clear, hidden)]
        assert counts[1] < counts[0]
        expected = obj.visibility[hidden] / obj.visibility[clear]
        assert abs(counts[1] / counts[0] - expected) < 0.12
        # The wall is painted above the object with its own colour.
        assert np.all(np.isclose(obj.visibility + obj.behind_occluder, 1.0, atol=0.02) | ~obj.fully_in_frame)
        found += 1
    assert found >= 4


def test_gravity_object_bounces_and_stays_inside_the_frame():
    options = WorldOptions(max_objects=1, gravity_prob=1.0, static_prob=0.0, pan_prob=0.0, occluder_prob=0.0)
    bounced = 0
    for index in range(6):
        clip = generate_clip(0, 40, 48, 48, options, index=index)
        obj = clip.facts.main_object
        assert obj.motion == "gravity" and obj.fully_in_frame.all()
        left, right, up, down = (e * obj.radius for e in SHAPE_EXTENTS[obj.shape])
        y = obj.world_positions[:, 1]
        assert y.max() <= 1.0 - down + 1e-6 and y.min() >= up - 1e-6
        vy = np.diff(y)
        flips = np.nonzero((vy[:-1] > 1e-4) & (vy[1:] < -1e-4))[0] + 1  # falling, then rising
        if obj.bounce_frames:
            assert len(flips) >= 1
            # Each bounce happens within a frame of a down-to-up turn of the track.
            assert min(abs(flips - obj.bounce_frames[0])) <= 1
            bounced += 1
    assert bounced >= 4


def test_drift_direction_words_match_displacement_and_pan_moves_static_objects():
    drift = WorldOptions(max_objects=1, gravity_prob=0.0, static_prob=0.0, pan_prob=0.0)
    for index in range(8):
        obj = generate_clip(4, 9, 32, 32, drift, index=index).facts.main_object
        net = obj.positions[-1] - obj.positions[0]
        assert obj.direction == direction_word(net[0], net[1]) != "still"
        assert obj.world_direction == obj.direction  # no pan: world and image agree
    panned = WorldOptions(max_objects=1, gravity_prob=0.0, static_prob=1.0, pan_prob=1.0, occluder_prob=0.0)
    facts = generate_clip(4, 9, 32, 32, panned, index=0).facts
    obj = facts.main_object
    assert facts.camera.pans and obj.world_direction == "still"
    # A still object seen by a camera panning right drifts left in the image, and vice versa.
    assert obj.direction == ("left" if facts.camera.direction == "right" else "right")
    np.testing.assert_allclose(obj.positions - obj.positions[0], -(facts.camera.offsets_normalised), atol=1e-5)


def test_colours_contrast_with_background_and_objects_are_distinct():
    for index in range(20):
        facts = generate_clip(9, 1, 16, 16, WorldOptions(max_objects=3), index=index).facts
        colours = [o.colour for o in facts.objects]
        assert len(set(colours)) == len(colours)
        for name in colours:
            assert colour_distance(OBJECT_COLOURS[name], BACKGROUND_COLOURS[facts.background]) >= 150


def test_facts_json_round_trip():
    clip = generate_clip(0, 6, 24, 32, WorldOptions(occluder_prob=1.0, pan_prob=1.0), index=2)
    back = ClipFacts.from_json(clip.facts.to_json())
    assert back.to_dict() == clip.facts.to_dict()
    assert back.main_object.positions.shape == (6, 2) and back.main_object.fully_in_frame.dtype == bool
    assert dataclasses.is_dataclass(back) and back.main_object.colour == clip.facts.main_object.colour


def test_world_options_from_config_and_bad_keys():
    cfg = ml_collections.ConfigDict(
        dict(max_objects=3, colours=["red", "blue", "green"], backgrounds=["black", "navy"], occluder_prob=0.5)
    )
    options = WorldOptions(**cfg)
    assert options.colours == ("red", "blue", "green") and options.max_objects == 3
    assert WorldOptions(**options.to_dict()) == options
    with pytest.raises(ValueError, match="unknown key 'max_object' in config 'world'; known keys: .*did you mean 'max_objects'"):
        WorldOptions(max_object=2)
    with pytest.raises(ValueError, match="probability"):
        WorldOptions(pan_prob=1.5)
    with pytest.raises(ValueError, match="unknown names"):
        WorldOptions(colours=("red", "mauve"))
    with pytest.raises(ValueError, match="exceeds 1"):
        WorldOptions(gravity_prob=0.7, static_prob=0.5)


@pytest.mark.parametrize(
    "args, match",
    [
        ((0, 16, 16), "num_frames=0"),
        ((4, 4, 16), "height=4"),
        ((4, 16, 7), "width=7"),
        ((4, 16.0, 16), "height must be an int"),
        ((True, 16, 16), "num_frames must be an int"),
    ],
)
def test_bad_sizes_raise_clear_errors(args, match):
    with pytest.raises(ValueError, match=match):
        generate_clip(0, *args)


def test_bad_seed_and_options_raise():
    with pytest.raises(ValueError, match="seed"):
        generate_clip(-1, 2, 16, 16)
    with pytest.raises(ValueError, match="WorldOptions"):
        generate_clip(0, 2, 16, 16, {"max_objects": 1})


def test_rendering_is_fast():
    generate_clip(0, 17, 64, 64, index=0)  # warm up
    start = time.perf_counter()
    for index in range(5):
        generate_clip(0, 17, 64, 64, index=index)
    per_clip = (time.perf_counter() - start) / 5
    assert per_clip < 0.1  # measured ~5 ms; loose bound for a busy shared CPU
