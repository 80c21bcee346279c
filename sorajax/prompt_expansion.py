"""Prompt expansion: a short user prompt -> a detailed caption in the style the model trained on.

The report trains on long descriptive captions, so at sampling time a terse prompt ("a red
ball moving left") is out of distribution; expanding it into the training style helps. The
`PromptExpander` interface has two implementations:
- `WorldPromptExpander`: offline rules for the built-in world. It reads what the prompt says
  (objects with colour / shape / size, motion direction and speed, falling, background, a wall,
  a camera pan, image or video) using the world's vocabulary tables, fills in what it leaves
  open with choices seeded by (seed, prompt), and writes sentences in the descriptive
  captioner's pattern. It never contradicts the prompt.
- `LanguageModelExpander`: any text generator `generate(instruction) -> text` (a local LLM the
  user plugs in), given few-shot examples written by the rule expander; an empty answer falls
  back to another expander.
"""

from __future__ import annotations

import abc
import dataclasses
import re
import zlib
from typing import Callable, Sequence

import numpy as np

from sorajax.data.world.options import (
    BACKGROUND_COLOURS,
    OBJECT_COLOURS,
    OCCLUDER_COLOURS,
    SHAPE_NOUNS,
    SIZE_RADII,
    allowed_object_colours,
)

DIRECTIONS = {  # canonical direction -> the captioner's phrase
    "left": "to the left", "right": "to the right", "up": "upward", "down": "downward",
    "up-left": "up and to the left", "up-right": "up and to the right",
    "down-left": "down and to the left", "down-right": "down and to the right",
}
_OPPOSITE_START = {"left": "right", "right": "left", "up": "bottom", "down": "top", "up-left": "bottom right",
                   "up-right": "bottom left", "down-left": "top right", "down-right": "top left"}
_SHAPE_WORDS = {**{noun: noun for noun in SHAPE_NOUNS.values()}, **{k: v for k, v in SHAPE_NOUNS.items()},
                "balls": "ball", "sphere": "ball", "dot": "ball", "box": "square", "cube": "square", "plus": "cross"}
_SIZE_WORDS = {**{s: s for s in SIZE_RADII}, "big": "large", "huge": "large", "tiny": "small", "little": "small"}
_IMAGE_WORDS = ("image", "picture", "photo", "still of")
_FAST, _SLOW = ("quickly", "fast", "rapidly", "speeding"), ("slowly", "slow", "gently")


class PromptExpander(abc.ABC):
    @abc.abstractmethod
    def expand(self, prompt: str, seed: int = 0) -> str: ...

    def expand_all(self, prompts: Sequence[str], seed: int = 0) -> list[str]:
        return [self.expand(p, seed) for p in prompts]


class IdentityExpander(PromptExpander):
    """Expansion off: the prompt as given."""

    def expand(self, prompt: str, seed: int = 0) -> str:
        return prompt


@dataclasses.dataclass
class _Thing:
    colour: str | None
    noun: str
    size: str | None


@dataclasses.dataclass
class _Request:
    things: list[_Thing]
    is_image: bool
    direction: str | None
    speed: str  # '', 'slowly ', 'quickly '
    falls: bool
    bounces: bool
    still: bool
    behind: bool
    background: str | None
    wall: str | None
    pan: str | None


def _direction(text: str) -> str | None:
    vertical = "up" if re.search(r"\b(up|upward|upwards|rises|rising)\b", text) else (
        "down" if re.search(r"\b(down|downward|downwards|sinks|sinking)\b", text) else "")
    horizontal = "left" if re.search(r"\bleft(ward|wards)?\b", text) else ("right" if re.search(r"\bright(ward|wards)?\b", text) else "")
    key = "-".join(p for p in (vertical, horizontal) if p)
    return key or None


def _parse(prompt: str) -> _Request:
    text = " " + re.sub(r"[^a-z ]+", " ", prompt.lower()) + " "
    background = next((b for b in sorted(BACKGROUND_COLOURS, key=len, reverse=True)
                       if re.search(rf"\b{b}\s+(background|backdrop)", text)), None)
    if background:
        text = re.sub(rf"\b{background}\s+(background|backdrop)", " ", text)
    wall = None
    wall_match = re.search(r"\b(?:(\w+)\s+)?(wall|occluder|pillar)\b", text)
    if wall_match:
        wall = wall_match.group(1) if wall_match.group(1) in OCCLUDER_COLOURS else "grey"
        text = text[: wall_match.start()] + " " + text[wall_match.end():]
    pan_match = re.search(r"\bcamera\s+pans?\s+(?:to\s+the\s+)?(left|right|up|down)\b", text)
    pan = pan_match.group(1) if pan_match else None
    if pan_match:
        text = text[: pan_match.start()] + " " + text[pan_match.end():]
    words = text.split()
    things = []
    for i, word in enumerate(words):
        if word in _SHAPE_WORDS:
            before = words[max(0, i - 3): i]
            colour = next((w for w in reversed(before) if w in OBJECT_COLOURS), None)
            size = next((_SIZE_WORDS[w] for w in reversed(before) if w in _SIZE_WORDS), None)
            things.append(_Thing(colour, _SHAPE_WORDS[word], size))
    if not things:  # a colour with no shape ("something red") still names an object
        colour = next((w for w in words if w in OBJECT_COLOURS), None)
        things.append(_Thing(colour, "", None))
    return _Request(
        things=things,
        is_image=any(re.search(rf"\b{w}\b", text) for w in _IMAGE_WORDS),
        direction=_direction(text),
        speed="quickly " if any(w in words for w in _FAST) else ("slowly " if any(w in words for w in _SLOW) else ""),
        falls=bool(re.search(r"\b(falls?|falling|drops?|dropping|bounces?|bouncing)\b", text)),
        bounces=bool(re.search(r"\b(bounces?|bouncing)\b", text)),
        still=bool(re.search(r"\b(still|static|stationary|motionless|resting)\b", text)) and "still of" not in text,
        behind=bool(re.search(r"\b(behind|hides?|hidden|occluded)\b", text)),
        background=background, wall=wall, pan=pan,
    )


def _join(items: list[str]) -> str:
    return items[0] if len(items) == 1 else ", ".join(items[:-1]) + " and " + items[-1]


class WorldPromptExpander(PromptExpander):
    """Rule/template expansion into the built-in world's descriptive caption style (offline)."""

    def expand(self, prompt: str, seed: int = 0) -> str:
        if not isinstance(prompt, str) or not prompt.strip():
            raise ValueError("the prompt is empty; give a short description such as 'a red ball moving left'")
        request = _parse(prompt)
        rng = np.random.default_rng([seed, zlib.crc32(prompt.encode("utf-8"))])
        things = self._fill_objects(request, rng)
        background = request.background or self._pick_background([t.colour for t in things], rng)
        listed = _join([f"a {t.size} {t.colour} {t.noun}" for t in things])
        opening = "A still image of" if request.is_image else "A video of"
        sentences = [f"{opening} {listed} on a {background} background."]
        if request.wall:
            sentences.append(f"A tall {request.wall} wall stands in the frame.")
        for k, thing in enumerate(things):
            sentences.append(self._object_sentence(thing, request, rng, main=k == 0))
        if request.pan and not request.is_image:
            sentences.append(f"The camera pans to the {request.pan}.")
        return " ".join(sentences)

    @staticmethod
    def _fill_objects(request: _Request, rng: np.random.Generator) -> list[_Thing]:
        nouns = sorted(set(SHAPE_NOUNS.values()))
        taken = {t.colour for t in request.things if t.colour}
        filled = []
        for thing in request.things:
            colour = thing.colour or str(rng.choice(sorted(set(OBJECT_COLOURS) - taken)))
            taken.add(colour)
            filled.append(_Thing(colour, thing.noun or str(rng.choice(nouns)), thing.size or "medium"))
        return filled

    @staticmethod
    def _pick_background(colours: list[str], rng: np.random.Generator) -> str:
        usable = [b for b in BACKGROUND_COLOURS if set(colours) <= set(allowed_object_colours(b, tuple(colours)))]
        return str(rng.choice(usable or sorted(BACKGROUND_COLOURS)))

    @staticmethod
    def _object_sentence(thing: _Thing, request: _Request, rng: np.random.Generator, main: bool) -> str:
        name = f"The {thing.colour} {thing.noun}"
        direction = request.direction
        if request.is_image:
            return f"{name} is in the centre." if main else f"{name} is at the {rng.choice(['left', 'right'])}."
        if request.falls and main:
            sideways = f" while moving {direction.split('-')[-1]}" if direction and direction.split("-")[-1] in ("left", "right") else ""
            bounce = " and bounces on the floor" if request.bounces else ""
            return f"{name} starts at the top and falls{sideways}{bounce}."
        if request.still:
            return f"{name} starts in the centre and stays still."
        direction = direction or str(rng.choice(sorted(DIRECTIONS)))
        start = _OPPOSITE_START[direction]
        sentence = f"{name} starts at the {start} and moves {request.speed}{DIRECTIONS[direction]}."
        if request.wall and request.behind and main:
            sentence += f" It passes behind the {request.wall} wall and reappears."
        return sentence


class LanguageModelExpander(PromptExpander):
    """A pluggable text generator writes the expansion; few-shot examples come from `examples_from`."""

    EXAMPLE_PROMPTS = ("a red ball moving left", "a small blue square falls", "a still image of a green triangle")

    def __init__(self, generate: Callable[[str], str], fallback: PromptExpander | None = None,
                 examples_from: PromptExpander | None = None):
        self.generate = generate
        self.fallback = fallback if fallback is not None else WorldPromptExpander()
        teacher = examples_from if examples_from is not None else WorldPromptExpander()
        self.examples = [(p, teacher.expand(p)) for p in self.EXAMPLE_PROMPTS]

    def instruction(self, prompt: str) -> str:
        shots = "\n\n".join(f"Short: {p}\nDetailed: {e}" for p, e in self.examples)
        return ("Rewrite the short video prompt as a detailed caption in the same style. Keep everything it says; "
                f"add only consistent detail.\n\n{shots}\n\nShort: {prompt.strip()}\nDetailed:")

    def expand(self, prompt: str, seed: int = 0) -> str:
        answer = " ".join(str(self.generate(self.instruction(prompt)) or "").split())
        answer = answer.split(" Short:")[0].strip()  # a model that keeps writing examples: keep the first
        return answer or self.fallback.expand(prompt, seed)


EXPANDERS = ("none", "world")


def build_prompt_expander(kind: str) -> PromptExpander:
    """'none' (off) or 'world' (offline rules). Wrap a local LLM in `LanguageModelExpander` yourself."""
    if kind == "none":
        return IdentityExpander()
    if kind == "world":
        return WorldPromptExpander()
    raise ValueError(f"unknown prompt expander {kind!r}; use one of {EXPANDERS}")
