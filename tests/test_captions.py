"""Tests for the captioner: every caption is read off the facts, and says what they say."""

import dataclasses

import numpy as np
import pytest

from sorajax.data.world.captions import describe, region_word
from sorajax.data.world import generate_clip
from sorajax.data.world.options import WorldOptions


def _with_main(facts, **changes):
    """Facts with the main object's fields replaced (to drive one phrase at a time)."""
    main = dataclasses.replace(facts.main_object, **changes)
    return dataclasses.replace(facts, objects=(main,) + facts.objects[1:])


def test_captions_name_every_object_colour_shape_size_and_background():
    for index in range(15):
        clip = generate_clip(0, 9, 32, 32, WorldOptions(max_objects=3), index=index)
        for obj in clip.facts.objects:
            assert f"{obj.colour} {obj.noun}" in clip.caption_terse
            assert f"a {obj.size} {obj.colour} {obj.noun}" in clip.caption
        assert f"a {clip.facts.background} background" in clip.caption
        assert clip.caption == describe(clip.facts, "descriptive")
        assert clip.caption_terse == describe(clip.facts, style="terse")


def test_terse_caption_forms():
    facts = generate_clip(0, 5, 32, 32, WorldOptions(min_objects=2, max_objects=2), index=0).facts
    a, b = facts.objects
    assert describe(facts, "terse") == f"{'an' if a.colour[0] in 'aeiou' else 'a'} {a.colour} {a.noun} and " \
        f"{'an' if b.colour[0] in 'aeiou' else 'a'} {b.colour} {b.noun}"
    single = dataclasses.replace(facts, objects=(a,))
    assert describe(single, "terse") == f"{a.colour} {a.noun}"


def test_images_and_videos_are_introduced_differently():
    image = generate_clip(0, 1, 32, 32, index=4)
    video = generate_clip(0, 9, 32, 32, index=4)
    assert image.caption.startswith(("A still image of", "A still picture of"))
    assert video.caption.startswith(("A video of", "A clip of", "A video showing"))
    assert "starts" not in image.caption and " is " in image.caption


def test_captions_mention_occlusion_when_visibility_dips():
    options = WorldOptions(max_objects=1, occluder_prob=1.0, pan_prob=0.0, gravity_prob=0.0, static_prob=0.0)
    mentioned = 0
    for index in range(8):
        clip = generate_clip(2, 17, 48, 48, options, index=index)
        obj = clip.facts.main_object
        if clip.facts.occluder is None:
            assert "wall" not in clip.caption
            continue
        wall = f"{clip.facts.occluder.colour} wall"
        assert wall in clip.caption
        if obj.visibility.min() < 0.05 and obj.visibility[0] > 0.9 and obj.visibility[-1] > 0.9:
            assert f"passes behind the {wall} and reappears" in clip.caption
            mentioned += 1
    assert mentioned >= 3


def test_occlusion_phrases_follow_the_hidden_fraction():
    options = WorldOptions(max_objects=1, occluder_prob=1.0, static_prob=0.0)
    facts = next(
        f for f in (generate_clip(2, 6, 32, 32, options, index=i).facts for i in range(20)) if f.occluder is not None
    )
    wall = f"{facts.occluder.colour} wall"
    cases = {
        (0.0, 0.5, 1.0, 1.0, 0.4, 0.0): f"passes behind the {wall} and reappears",
        (0.0, 1.0, 0.0, 0.0, 1.0, 0.0): f"passes behind the {wall} twice, reappearing each time",
        (0.0, 0.3, 0.6, 0.3, 0.0, 0.0): f"passes partly behind the {wall}",
        (0.0, 0.0, 0.3, 0.7, 1.0, 1.0): f"disappears behind the {wall}",
        (1.0, 1.0, 0.6, 0.2, 0.0, 0.0): f"emerges from behind the {wall}",
        (0.0, 0.1, 0.2, 0.1, 0.0, 0.0): None,
    }
    for behind, phrase in cases.items():
        caption = describe(_with_main(facts, behind_occluder=np.array(behind)))
        if phrase is None:
            assert "behind" not in caption
        else:
            assert phrase in caption


def test_motion_phrases_follow_the_facts():
    facts = generate_clip(0, 9, 32, 32, WorldOptions(max_objects=1, occluder_prob=0.0, pan_prob=0.0), index=0).facts
    drift = _with_main(facts, motion="drift", world_direction="up-left", speed=0.02)
    assert "moves up and to the left" in describe(drift, vary=False)
    assert "moves slowly to the right" in describe(
        _with_main(facts, motion="drift", world_direction="right", speed=0.005), vary=False
    )
    assert "stays still" in describe(_with_main(facts, motion="static"), vary=False)
    gravity = _with_main(facts, motion="gravity", velocity=(0.0, 0.0), bounce_frames=(3, 7), rest_frame=8)
    assert "falls, bounces on the floor twice and comes to rest on the floor" in describe(gravity, vary=False)


def test_gravity_clips_say_they_bounce():
    options = WorldOptions(max_objects=1, gravity_prob=1.0, static_prob=0.0, pan_prob=0.0, occluder_prob=0.0)
    for index in range(5):
        clip = generate_clip(0, 33, 32, 32, options, index=index)
        bounces = len(clip.facts.main_object.bounce_frames)
        assert ("bounces on the floor" in clip.caption) == (bounces > 0)


def test_camera_pan_is_described():
    options = WorldOptions(max_objects=1, pan_prob=1.0, occluder_prob=0.0)
    clip = generate_clip(0, 9, 32, 32, options, index=0)
    assert f"The camera pans to the {clip.facts.camera.direction}." in clip.caption
    still = generate_clip(0, 9, 32, 32, WorldOptions(pan_prob=0.0), index=0)
    assert "camera" not in still.caption


def test_phrasing_varies_across_clips_but_not_within_one():
    captions = {generate_clip(0, 9, 32, 32, index=i).caption.split(" a ")[0] for i in range(20)}
    assert len(captions) >= 2  # openings differ between clips
    facts = generate_clip(0, 9, 32, 32, index=3).facts
    assert describe(facts) == describe(facts)
    assert describe(facts, vary=False).startswith("A video of")


def test_region_words_and_bad_style():
    assert region_word(0.1, 0.1) == "top left"
    assert region_word(0.5, 0.5) == "centre"
    assert region_word(0.9, 0.5) == "right"
    assert region_word(0.5, 0.9) == "bottom"
    facts = generate_clip(0, 1, 16, 16).facts
    with pytest.raises(ValueError, match="terse"):
        describe(facts, style="long")


def test_image_captions_say_when_the_wall_hides_part_of_the_object():
    walls = 0
    for index in range(6):
        clip = generate_clip(0, 1, 32, 48, WorldOptions(occluder_prob=1.0), index=index)
        if clip.facts.occluder is None:
            continue
        obj = clip.facts.main_object
        assert 0.1 <= obj.behind_occluder[0] <= 0.9 and obj.visibility[0] < 0.9
        assert f"{obj.colour} {obj.noun} is" in clip.caption
        assert f"partly hidden behind the {clip.facts.occluder.colour} wall" in clip.caption
        walls += 1
    assert walls >= 3
