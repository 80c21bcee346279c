"""A fixed, balanced prompt set for the world probes, written by the world's own captioner.

Each prompt is the descriptive caption of a real world clip, so its wording is exactly what a
model trained on descriptive captions has seen. The clip is chosen to fit a balanced design:
prompt k asks for colour k mod 8, shape k mod 5 and direction k mod 9 (eight compass words and
"still"); 8, 5 and 9 share no factor, so every combination appears once in 360 prompts and any
prefix is balanced to within one prompt per value. Scenes are plain on purpose (one object, no
wall, no camera pan, drift or static motion) so each asked-for attribute stays visible all the
time and the image direction equals the direction the caption states. A few prompts are still
images (one frame), where direction is not checked.

To find a clip for a design cell, the world is restricted to that colour and shape and sampled at
successive indices until the drift goes the asked way; `ProbePrompt.reference_clip()` redraws it,
which gives a ground-truth video for the same prompt.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

from sorajax.data.world import Clip, generate_clip
from sorajax.data.world.options import (
    BACKGROUND_COLOURS,
    OBJECT_COLOURS,
    SHAPE_NOUNS,
    WorldOptions,
    allowed_object_colours,
)
from sorajax.data.world.facts import ClipFacts
from sorajax.data.world.render import SHAPE_EXTENTS
from sorajax.eval.probes import DIRECTIONS, ProbeExpectation

__all__ = ["DEFAULT_SIZES", "ProbePrompt", "chance_levels", "probe_prompt_set"]

DEFAULT_SIZES: tuple[tuple[int, int], ...] = ((64, 64), (48, 80), (80, 48))
_TRIES = 400  # world indices tried per prompt; a drift has a 1-in-8 chance of each direction
_INDEX_STRIDE = 1000  # prompt k searches indices [k * stride, k * stride + _TRIES)
# Reference clips keep the object this far (pixels) from every frame edge: an object grazing the
# edge within a pixel is neither clearly in frame nor clearly cut, to the probe or to a viewer.
_EDGE_MARGIN = 1.0


@dataclasses.dataclass(frozen=True)
class ProbePrompt:
    """One probe prompt: descriptive text (for sampling), terse text, what to check, clip size."""

    text: str
    terse: str
    expectation: ProbeExpectation
    size: tuple[int, int, int]  # (num_frames, height, width)
    seed: int
    index: int
    options: WorldOptions

    @property
    def is_image(self) -> bool:
        return self.size[0] == 1

    def reference_clip(self) -> Clip:
        """The world clip whose caption this prompt is: a ground-truth answer to the prompt."""
        return generate_clip(self.seed, *self.size, self.options, index=self.index)


def chance_levels() -> dict[str, float]:
    """Agreement a guess drawn uniformly from the vocabulary reaches on a balanced prompt set."""
    return {
        "colour": 1.0 / len(OBJECT_COLOURS),
        "shape": 1.0 / len(SHAPE_NOUNS),
        "direction": 1.0 / len(DIRECTIONS),
    }


def _options(colour: str, shape: str, still: bool) -> WorldOptions:
    backgrounds = tuple(b for b in BACKGROUND_COLOURS if colour in allowed_object_colours(b, (colour,)))
    return WorldOptions(
        min_objects=1,
        max_objects=1,
        occluder_prob=0.0,
        pan_prob=0.0,
        gravity_prob=0.0,
        static_prob=1.0 if still else 0.0,
        shapes=(shape,),
        colours=(colour,),
        backgrounds=backgrounds,
    )


def _edge_margin(facts: ClipFacts) -> float:
    """Smallest gap (pixels) between the main object and a frame edge over the clip."""
    obj = facts.main_object
    radius = obj.radius * facts.unit_pixels
    left, right, up, down = (e * radius for e in SHAPE_EXTENTS[obj.shape])
    x, y = obj.pixel_centres[:, 0] + 0.5, obj.pixel_centres[:, 1] + 0.5  # renderer coordinates
    gaps = (x - left, facts.width - x - right, y - up, facts.height - y - down)
    return float(min(gap.min() for gap in gaps))


def _prompt(
    seed: int, k: int, colour: str, shape: str, direction: str | None, size: tuple[int, int, int]
) -> ProbePrompt:
    """Search world indices for a clip of this design cell and caption it."""
    options = _options(colour, shape, still=direction in (None, "still"))
    for index in range(k * _INDEX_STRIDE, k * _INDEX_STRIDE + _TRIES):
        clip = generate_clip(seed, *size, options, index=index)
        main = clip.facts.main_object
        if _edge_margin(clip.facts) < _EDGE_MARGIN:
            continue
        if direction is not None and not (main.world_direction == main.direction == direction):
            continue
        return ProbePrompt(
            text=clip.caption,
            terse=clip.caption_terse,
            expectation=ProbeExpectation(colour=colour, shape=shape, direction=direction, in_frame=True),
            size=size,
            seed=seed,
            index=index,
            options=options,
        )
    raise ValueError(
        f"No world clip of {size[0]} frames at {size[1]}x{size[2]} shows a {colour} {shape} moving "
        f"{direction} within {_TRIES} tries; clips this short barely move, so use more frames (e.g. 16)."
    )


def probe_prompt_set(
    n: int,
    seed: int = 0,
    num_frames: int = 16,
    sizes: Sequence[tuple[int, int]] = DEFAULT_SIZES,
    image_share: float = 0.125,
) -> list[ProbePrompt]:
    """`n` deterministic probe prompts: videos first (balanced design), then still images.

    `sizes` are (height, width) pairs, cycled so each direction meets every size;
    `image_share` of the prompts (rounded, at least one when n >= 4) are one-frame images.
    """
    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        raise ValueError(f"n={n!r} must be a positive int; ask for e.g. 72 prompts.")
    if isinstance(num_frames, bool) or not isinstance(num_frames, int) or num_frames < 2:
        raise ValueError(
            f"num_frames={num_frames!r} must be an int >= 2 (video prompts need motion); "
            "image prompts are added separately through image_share."
        )
    if not 0.0 <= image_share < 1.0:
        raise ValueError(f"image_share={image_share} must be in [0, 1); use 0 for videos only.")
    sizes = [tuple(int(v) for v in s) for s in sizes]
    if not sizes or any(len(s) != 2 for s in sizes):
        raise ValueError(f"sizes must be a non-empty list of (height, width) pairs, got {sizes!r}.")
    num_images = max(1 if n >= 4 and image_share > 0 else 0, round(n * image_share))
    num_videos = n - num_images
    colours, shapes = tuple(OBJECT_COLOURS), tuple(SHAPE_NOUNS)
    prompts = []
    for k in range(num_videos):
        height, width = sizes[(k + k // len(DIRECTIONS)) % len(sizes)]
        cell = (colours[k % len(colours)], shapes[k % len(shapes)], DIRECTIONS[k % len(DIRECTIONS)])
        prompts.append(_prompt(seed, k, *cell, (num_frames, height, width)))
    for j in range(num_images):
        height, width = sizes[j % len(sizes)]
        colour, shape = colours[j % len(colours)], shapes[(j + 2) % len(shapes)]
        prompts.append(_prompt(seed, num_videos + j, colour, shape, None, (1, height, width)))
    return prompts
