"""World probes: on ground-truth world clips the pixels-only probes must agree with the facts."""

import collections
import math

import numpy as np
import pytest
from scipy import ndimage

from sorajax.data.world import generate_clip
from sorajax.data.world.options import OBJECT_COLOURS, SHAPE_NOUNS, WorldOptions
from sorajax.data.world.render import SHAPE_AREAS, SHAPE_EXTENTS, shape_distance
from sorajax.eval.probe_prompts import chance_levels, probe_prompt_set
from sorajax.eval.probe_shapes import classify_shape, shape_errors
from sorajax.eval.probes import (
    DIRECTIONS,
    ProbeExpectation,
    ProbeResult,
    agreement_rates,
    classify_colour,
    find_main_object,
    motion_direction,
    probe_video,
)
from sorajax.video_io import to_float

SIZES = ((64, 64), (48, 80), (80, 48))
NUM_FRAMES = 12
PLAIN = WorldOptions(min_objects=1, max_objects=1)  # world defaults: some walls, some pans
BUSY = WorldOptions(min_objects=1, max_objects=1, occluder_prob=1.0, pan_prob=0.5)


def _clips(count: int = 72):
    """One-object clips over three sizes, plain and busy scenes; every fourth triple is an image."""
    clips = []
    for i in range(count):
        height, width = SIZES[i % 3]
        frames = 1 if (i // 3) % 4 == 3 else NUM_FRAMES
        options = BUSY if (i // 12) % 2 else PLAIN
        clips.append(generate_clip(5, frames, height, width, options, index=i))
    return clips


@pytest.fixture(scope="module")
def clips():
    return _clips()


def _degrade(video: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    blurred = ndimage.gaussian_filter(video.astype(np.float64), sigma=(0, 0.7, 0.7, 0))
    return np.clip(np.round(blurred + rng.normal(0.0, 10.0, video.shape)), 0, 255).astype(np.uint8)


def _edge_margin(facts) -> float:
    """Smallest gap (pixels, negative when cut) between the visible object and a frame edge."""
    obj = facts.main_object
    radius = obj.radius * facts.unit_pixels
    left, right, up, down = (e * radius for e in SHAPE_EXTENTS[obj.shape])
    x, y = obj.pixel_centres[:, 0] + 0.5, obj.pixel_centres[:, 1] + 0.5
    gaps = np.stack([x - left, facts.width - x - right, y - up, facts.height - y - down], 1).min(1)
    return float(gaps[obj.visibility > 0.02].min())


def _expectation(facts) -> ProbeExpectation:
    """Check direction only where the object is in plain view at both ends (what a viewer can judge)."""
    obj = facts.main_object
    clear_ends = obj.visibility[0] > 0.9 and obj.visibility[-1] > 0.9
    direction = obj.direction if (facts.num_frames > 1 and clear_ends) else None
    return ProbeExpectation(colour=obj.colour, shape=obj.shape, direction=direction, in_frame=None)


def _rates(clips, videos):
    results = [probe_video(v, _expectation(c.facts)) for c, v in zip(clips, videos)]
    in_frame = []
    for clip, result in zip(clips, results):
        margin = _edge_margin(clip.facts)
        if result.found and abs(margin) >= 0.5:  # within half a pixel of the edge is ambiguous
            in_frame.append(result.fully_in_frame == (margin > 0))
    return agreement_rates(results), float(np.mean(in_frame)), len(in_frame)


def test_probes_agree_with_ground_truth_clips(clips):
    rates, in_frame, num_in_frame = _rates(clips, [c.video for c in clips])
    print("ground truth:", rates, "in-frame", in_frame, num_in_frame)
    assert rates["num_results"] == 72 and rates["num_colour"] == rates["num_found"] >= 70
    assert rates["num_direction"] >= 40
    assert rates["colour"] >= 0.97
    assert rates["direction"] >= 0.9
    assert rates["shape"] >= 0.9  # measured 0.99 on 360 clips
    assert num_in_frame >= 60 and in_frame >= 0.95  # measured 1.0


def test_probes_survive_noise_and_blur(clips):
    rng = np.random.default_rng(0)
    rates, in_frame, _ = _rates(clips, [_degrade(c.video, rng) for c in clips])
    print("noise 10/255 + blur 0.7:", rates, "in-frame", in_frame)
    assert rates["colour"] >= 0.9 and rates["direction"] >= 0.9
    assert rates["shape"] >= 0.85  # measured 0.99 on 360 clips
    assert rates["found"] >= 0.95


def test_track_matches_facts_frame_by_frame():
    options = WorldOptions(
        min_objects=1, max_objects=1, occluder_prob=0.0, pan_prob=0.0, gravity_prob=1.0, static_prob=0.0
    )
    clip = generate_clip(2, 10, 48, 80, options, index=3)
    obj = clip.facts.main_object
    track = find_main_object(clip.video)
    assert track.masks.shape == (10, 48, 80) and track.centroids.shape == (10, 2)
    assert track.found.all() and track.colour == obj.colour
    whole = obj.fully_in_frame & (obj.visibility > 0.999)
    np.testing.assert_allclose(track.centroids[whole], obj.pixel_centres[whole], atol=0.35)
    area = SHAPE_AREAS[obj.shape] * (obj.radius * 48) ** 2
    np.testing.assert_allclose(track.areas[whole], area, rtol=0.1)
    np.testing.assert_allclose(track.rgb, obj.rgb, atol=3)
    assert motion_direction(track) == obj.direction and track.fully_in_frame == bool(obj.fully_in_frame.all())


def test_float_input_reads_like_uint8(clips):
    video = clips[0].video
    a, b = find_main_object(video), find_main_object(to_float(video))
    assert a.colour == b.colour and np.array_equal(a.found, b.found)
    np.testing.assert_allclose(a.centroids, b.centroids, atol=0.05)


def test_wrong_colour_expectation_disagrees():
    options = WorldOptions(min_objects=1, max_objects=1, colours=("red",), occluder_prob=0.0)
    clip = generate_clip(0, NUM_FRAMES, 64, 64, options, index=1)
    result = probe_video(clip.video, ProbeExpectation(colour="blue", shape=clip.facts.main_object.shape))
    assert result.found and result.colour == "red" and result.colour_ok is False and result.shape_ok is True


def test_background_only_video_finds_nothing():
    rng = np.random.default_rng(1)
    noisy = np.full((6, 32, 48, 3), 50.0) + rng.normal(0, 8, (6, 32, 48, 3))
    video = np.clip(noisy, 0, 255).astype(np.uint8)
    result = probe_video(video, ProbeExpectation(colour="red", shape="square", direction="left"))
    assert not result.found and result.note == "no object found"
    checks = (result.colour_ok, result.shape_ok, result.direction_ok, result.in_frame_ok)
    assert checks == (False, False, False, False)
    assert (result.colour, result.shape, result.direction, result.fully_in_frame) == (None, None, None, None)
    rates = agreement_rates([result])
    assert rates["found"] == 0.0 and rates["colour"] == 0.0 and rates["num_direction"] == 1
    assert find_main_object(video).colour is None


def test_images_skip_direction():
    options = WorldOptions(min_objects=1, max_objects=1, occluder_prob=0.0)
    clip = generate_clip(0, 1, 48, 80, options, index=4)
    obj = clip.facts.main_object
    expectation = ProbeExpectation(colour=obj.colour, shape=obj.shape, direction="left")
    result = probe_video(clip.video[0], expectation)
    assert result.direction is None and result.direction_ok is None
    assert result.colour_ok and result.shape_ok and result.in_frame_ok
    rates = agreement_rates([result])
    assert rates["num_direction"] == 0 and math.isnan(rates["direction"]) and rates["colour"] == 1.0


def test_classify_colour_palette_and_drift():
    for name, rgb in OBJECT_COLOURS.items():
        assert classify_colour(rgb) == name
        dim = np.asarray(rgb) * 0.8
        washed = dim + 0.3 * (dim.mean() - dim)  # darker and less saturated, as samples drift
        assert classify_colour(washed) == name
    with pytest.raises(ValueError, match="3 finite numbers"):
        classify_colour([1.0, 2.0])


@pytest.mark.parametrize("shape", sorted(SHAPE_NOUNS))
def test_classify_shape_on_rendered_masks(shape):
    rng = np.random.default_rng(len(shape))
    rows, cols = np.indices((40, 40)) + 0.5
    for radius in (4.5, 7.0, 10.0):
        centre = 20.0 + rng.uniform(-0.5, 0.5, 2)
        mask = np.clip(0.5 - shape_distance(shape, cols - centre[0], rows - centre[1], radius), 0, 1)
        assert classify_shape(mask) == shape
        assert classify_shape(mask >= 0.5) == shape
    # A wall hiding the right 40% of a large object: the fit may look behind it.
    mask = np.clip(0.5 - shape_distance(shape, cols - 20.0, rows - 20.0, 10.0), 0, 1)
    wall = np.zeros_like(mask, bool)
    wall[:, 24:] = True
    errors = shape_errors(np.where(wall, 0.0, mask), ignore=wall)
    assert set(errors) == set(SHAPE_NOUNS) and min(errors, key=errors.get) == shape


def test_bad_inputs_name_the_fix():
    with pytest.raises(ValueError, match=r"\[T, H, W, 3\]"):
        find_main_object(np.zeros((2, 16, 16), np.uint8))
    with pytest.raises(ValueError, match="float in"):
        find_main_object(np.zeros((2, 16, 16, 3), np.int32))
    with pytest.raises(ValueError, match="'circle'"):
        ProbeExpectation(shape="ball")
    with pytest.raises(ValueError, match="Unknown direction"):
        ProbeExpectation(direction="north")
    with pytest.raises(ValueError, match="too few"):
        classify_shape(np.zeros((8, 8)))
    with pytest.raises(ValueError, match="ProbeResult"):
        agreement_rates([{"colour_ok": True}])


@pytest.fixture(scope="module")
def prompts():
    return probe_prompt_set(45, seed=3)


def test_prompt_set_is_deterministic_and_balanced(prompts):
    again = probe_prompt_set(45, seed=3)
    assert [(p.text, p.index, p.size) for p in prompts] == [(p.text, p.index, p.size) for p in again]
    assert [p.text for p in probe_prompt_set(45, seed=4)] != [p.text for p in prompts]
    videos = [p for p in prompts if not p.is_image]
    images = [p for p in prompts if p.is_image]
    assert len(prompts) == 45 and len(images) == 6 and all(p.size[0] == 16 for p in videos)
    for counts, values in (
        (collections.Counter(p.expectation.colour for p in videos), OBJECT_COLOURS),
        (collections.Counter(p.expectation.shape for p in videos), SHAPE_NOUNS),
        (collections.Counter(p.expectation.direction for p in videos), DIRECTIONS),
    ):
        assert set(counts) == set(values) and max(counts.values()) - min(counts.values()) <= 1
    assert {p.size[1:] for p in prompts} == set(SIZES)
    assert all(p.expectation.direction is None for p in images)


def test_prompts_read_like_descriptive_captions(prompts):
    for p in prompts:
        name = f"{p.expectation.colour} {SHAPE_NOUNS[p.expectation.shape]}"
        assert p.terse == name and name in p.text
        opening = ("A still image of", "A still picture of") if p.is_image else ("A video", "A clip of")
        assert p.text.startswith(opening) and "wall" not in p.text and "camera" not in p.text
    still = [p for p in prompts if p.expectation.direction == "still"]
    assert still and all(any(w in p.text for w in ("still", "does not move")) for p in still)


def test_reference_clips_pass_their_own_probes(prompts):
    results = [probe_video(p.reference_clip().video, p.expectation) for p in prompts[::2]]
    assert all(isinstance(r, ProbeResult) for r in results)
    rates = agreement_rates(results)
    assert rates["num_direction"] == sum(1 for p in prompts[::2] if not p.is_image)
    assert rates["colour"] == rates["shape"] == rates["direction"] == rates["in_frame"] == 1.0


def test_chance_levels():
    assert chance_levels() == {"colour": 1 / 8, "shape": 1 / 5, "direction": 1 / 9}
    assert len(DIRECTIONS) == 9 and DIRECTIONS[0] == "right" and DIRECTIONS[-1] == "still"


def test_report_gives_each_rate_a_95_percent_interval():
    from sorajax.eval.probe_report import format_report, wilson_interval
    low, high = wilson_interval(0.5, 48)
    assert abs(low - 0.364) < 1e-3 and abs(high - 0.636) < 1e-3  # 24 of 48
    assert wilson_interval(0.0, 42)[0] == 0.0 and 0.08 < wilson_interval(0.0, 42)[1] < 0.09
    assert wilson_interval(1.0, 48)[1] == pytest.approx(1.0)
    assert wilson_interval(0.3, 0) == (0.0, 1.0)
    report = {"rates": {"colour": 1.0, "num_colour": 48, "direction": 15 / 42, "num_direction": 42},
              "chance": {"colour": 0.125, "direction": 1 / 9},
              "sampler": {"method": "dpmpp_2m", "steps": 10, "guidance": 4.0}}
    text = format_report(report)
    assert "direction   35.7% of 42  [95%: 23%-51%]   (chance 0.11)" in text
    assert "colour     100.0% of 48  [95%: 93%-100%]" in text
