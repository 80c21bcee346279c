"""Prompt expansion into the world's descriptive caption style; the pluggable LLM expander."""

import re

import pytest

from sorajax.data.world.captions import describe
from sorajax.prompt_expansion import (
    IdentityExpander,
    LanguageModelExpander,
    WorldPromptExpander,
    build_prompt_expander,
)
from sorajax.data.world import generate_clip
from sorajax.data.world.options import BACKGROUND_COLOURS, allowed_object_colours

EXPAND = WorldPromptExpander().expand


def test_short_prompt_becomes_a_descriptive_caption_that_keeps_what_it_says():
    text = EXPAND("a red ball moving left", seed=0)
    assert text.startswith("A video of a medium red ball on a ")
    assert text.endswith("The red ball starts at the right and moves to the left.")
    background = re.search(r"on a (.+?) background\.", text).group(1)
    assert background in BACKGROUND_COLOURS and "red" in allowed_object_colours(background, ("red",))


@pytest.mark.parametrize("prompt,expected", [
    ("a small blue square falls and bounces", "The blue square starts at the top and falls and bounces on the floor."),
    ("a still image of a big green triangle on a navy background",
     "A still image of a large green triangle on a navy background. The green triangle is in the centre."),
    ("a yellow diamond drifting slowly up and to the right",
     "The yellow diamond starts at the bottom left and moves slowly up and to the right."),
    ("a white cross passes behind a brown wall moving right, camera pans left",
     "A tall brown wall stands in the frame. The white cross starts at the left and moves to the right. "
     "It passes behind the brown wall and reappears. The camera pans to the left."),
])
def test_rules_cover_motion_images_background_walls_and_camera(prompt, expected):
    assert expected in EXPAND(prompt, seed=1)


def test_expansion_is_deterministic_by_seed_and_fills_gaps_differently():
    assert EXPAND("a ball", seed=3) == EXPAND("a ball", seed=3)
    variants = {EXPAND("a ball", seed=s) for s in range(8)}
    assert len(variants) > 1 and all(v.startswith("A video of a medium ") for v in variants)


def test_expanded_prompts_read_like_the_captioner_sentence_for_sentence():
    # The world captioner with vary=False for a drifting single object: same sentence pattern.
    clip = generate_clip(0, 9, 32, 32, index=2)
    caption = describe(clip.facts, vary=False)
    obj = clip.facts.objects[0]
    expanded = EXPAND(f"a {obj.size} {obj.colour} {obj.noun}")
    assert caption.split(" ")[:4] == expanded.split(" ")[:4] == ["A", "video", "of", "a"]
    assert f"a {obj.size} {obj.colour} {obj.noun} on a" in caption and f"a {obj.size} {obj.colour} {obj.noun} on a" in expanded
    assert expanded.count(".") >= 2 and f"The {obj.colour} {obj.noun} starts at the" in expanded


def test_language_model_expander_uses_few_shot_examples_and_falls_back():
    seen = []

    def fake_llm(instruction):
        seen.append(instruction)
        return " A video of a tiny red comet.\nShort: something else\nDetailed: ignored"

    expander = LanguageModelExpander(fake_llm)
    assert expander.expand("a red comet") == "A video of a tiny red comet."
    assert "Short: a red ball moving left\nDetailed: A video of a medium red ball" in seen[0]
    assert seen[0].endswith("Short: a red comet\nDetailed:")
    silent = LanguageModelExpander(lambda _: "")
    assert silent.expand("a red ball moving left") == EXPAND("a red ball moving left")


def test_switch_and_errors():
    assert build_prompt_expander("none").expand("a red ball") == "a red ball"
    assert isinstance(build_prompt_expander("none"), IdentityExpander)
    assert build_prompt_expander("world").expand_all(["a red ball", "a blue cube"])[1].startswith("A video of a medium blue square")
    with pytest.raises(ValueError, match="unknown prompt expander"):
        build_prompt_expander("gpt")
    with pytest.raises(ValueError, match="prompt is empty"):
        EXPAND("   ")
