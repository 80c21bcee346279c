"""The captioner: terse and descriptive captions written exactly from a clip's facts.

This is the report's re-captioning step with a perfect captioner: every statement is read off
`ClipFacts` (colours, shapes, sizes, world motion, bounces, occlusion, camera pan), so captions
never claim what the clip does not show. `vary=True` picks synonyms ("moves" / "drifts" ...) with a
generator seeded by the clip's (seed, index): the wording varies across clips but is reproducible.
"""

from __future__ import annotations

import numpy as np

from sorajax.data.world.facts import ClipFacts, ObjectFacts

_DIRECTION_PHRASES = {
    "left": "to the left",
    "right": "to the right",
    "up": "upward",
    "down": "downward",
    "up-left": "up and to the left",
    "up-right": "up and to the right",
    "down-left": "down and to the left",
    "down-right": "down and to the right",
}
_COUNT_WORDS = {1: "once", 2: "twice", 3: "three times", 4: "four times"}

# Thresholds on facts, in one place so probes can mirror them.
SLOW_SPEED = 0.012  # short-side units per frame
FAST_SPEED = 0.03
HIDDEN = 0.95  # behind_occluder at or above this: the object is hidden
MOSTLY_HIDDEN = 0.5
NOTICEABLY_HIDDEN = 0.25
PARTLY_HIDDEN_IN_IMAGE = 0.1  # a still image can show a small cut-off that a moving clip would not


class _Words:
    """Synonym choices; the first option of each list when not varying."""

    def __init__(self, facts: ClipFacts, vary: bool):
        self._rng = np.random.default_rng([facts.seed, facts.index, 7]) if vary else None

    def pick(self, *options: str) -> str:
        return options[0] if self._rng is None else options[int(self._rng.integers(len(options)))]


def _count(n: int) -> str:
    return _COUNT_WORDS.get(n, f"{n} times")


def _join(items: list[str]) -> str:
    if len(items) <= 1:
        return "".join(items)
    return ", ".join(items[:-1]) + " and " + items[-1]


def _article(word: str) -> str:
    return "an" if word[0] in "aeiou" else "a"


def _name(obj: ObjectFacts) -> str:
    return f"{obj.colour} {obj.noun}"


def region_word(x: float, y: float) -> str:
    """Where a normalised image position lies on a 3x3 grid: "top left", "centre", ..."""
    row = "top" if y < 1 / 3 else ("bottom" if y > 2 / 3 else "")
    col = "left" if x < 1 / 3 else ("right" if x > 2 / 3 else "")
    return " ".join(w for w in (row, col) if w) or "centre"


def _runs(mask: np.ndarray) -> int:
    """Number of separate runs of True."""
    return int(np.sum(mask[1:] & ~mask[:-1]) + (1 if mask.size and mask[0] else 0))


def _motion_phrase(obj: ObjectFacts, words: _Words, camera_pans: bool) -> str:
    if obj.motion == "static":
        return words.pick("stays still", "does not move", "sits still")
    if obj.motion == "drift":
        if obj.world_direction == "still":
            return "barely moves"
        verb = words.pick("moves", "drifts", "slides", "glides")
        adverb = "slowly " if obj.speed < SLOW_SPEED else ("quickly " if obj.speed > FAST_SPEED else "")
        return f"{verb} {adverb}{_DIRECTION_PHRASES[obj.world_direction]}"
    rise = obj.world_positions[-1, 1] < obj.world_positions[0, 1] and not obj.bounce_frames
    parts = ["is tossed upward" if rise else "falls"]
    if abs(obj.velocity[0]) >= 0.01:
        parts[0] += f" while moving {'right' if obj.velocity[0] > 0 else 'left'}"
    if obj.bounce_frames:
        parts.append(f"bounces on the floor {_count(len(obj.bounce_frames))}")
    if not camera_pans:
        sides = [s for s in ("left", "right") if any(side == s for _, side in obj.wall_bounces)]
        parts += [f"bounces off the {side} edge" for side in sides]
    if obj.rest_frame >= 0:
        parts.append("comes to rest on the floor" if obj.bounce_frames else "lands on the floor")
    return _join(parts)


def _occlusion_phrase(obj: ObjectFacts, wall: str) -> str:
    behind = obj.behind_occluder
    if behind.max() < NOTICEABLY_HIDDEN:
        return ""
    starts_hidden, ends_hidden = behind[0] >= MOSTLY_HIDDEN, behind[-1] >= MOSTLY_HIDDEN
    if starts_hidden and ends_hidden and behind.min() >= MOSTLY_HIDDEN:
        return f"stays behind the {wall}"
    if starts_hidden and not ends_hidden:
        return f"emerges from behind the {wall}"
    if ends_hidden and not starts_hidden:
        if behind.max() < HIDDEN:
            return f"moves partly behind the {wall}"
        if behind[-1] >= HIDDEN:
            return f"disappears behind the {wall}"
        return f"disappears behind the {wall} and starts to come out again"
    if starts_hidden and ends_hidden:
        return f"is behind the {wall} at the start and again at the end"
    hidden_runs = _runs(behind >= HIDDEN)
    if hidden_runs == 1:
        return f"passes behind the {wall} and reappears"
    if hidden_runs > 1:
        return f"passes behind the {wall} {_count(hidden_runs)}, reappearing each time"
    return f"passes partly behind the {wall}"


def _frame_phrase(obj: ObjectFacts) -> str:
    inside = obj.in_frame_fraction >= 0.5
    if inside[0] and not inside[-1]:
        return "leaves the frame"
    if inside[-1] and not inside[0]:
        return "enters the frame"
    return ""


def _object_sentence_video(obj: ObjectFacts, facts: ClipFacts, words: _Words, wall: str) -> str:
    start = region_word(*obj.positions[0])
    where = "in the centre" if start == "centre" else f"at the {start}"
    sentence = f"The {_name(obj)} starts {where} and {_motion_phrase(obj, words, facts.camera.pans)}."
    extras = [p for p in (_occlusion_phrase(obj, wall) if wall else "", _frame_phrase(obj)) if p]
    return " ".join([sentence] + [f"It {extra}." for extra in extras])


def _object_sentence_image(obj: ObjectFacts, wall: str) -> str:
    place = region_word(*obj.positions[0])
    where = "in the centre" if place == "centre" else f"at the {place}"
    sentence = f"The {_name(obj)} is {where}"
    covered = float(obj.behind_occluder[0])
    if wall and covered >= HIDDEN:
        sentence += f", hidden behind the {wall}"
    elif wall and covered >= PARTLY_HIDDEN_IN_IMAGE:
        sentence += f", partly hidden behind the {wall}"
    if obj.in_frame_fraction[0] < 1.0:
        sentence += ", partly out of the frame"
    return sentence + "."


def terse_caption(facts: ClipFacts) -> str:
    """"red ball" for one object, "a blue square and a green triangle" for several."""
    names = [_name(o) for o in facts.objects]
    if len(names) == 1:
        return names[0]
    return _join([f"{_article(n)} {n}" for n in names])


def descriptive_caption(facts: ClipFacts, vary: bool = True) -> str:
    words = _Words(facts, vary)
    listed = _join([f"a {o.size} {o.colour} {o.noun}" for o in facts.objects])
    on = words.pick("on", "against")
    if facts.is_image:
        opening = words.pick("A still image of", "A still picture of")
    else:
        opening = words.pick("A video of", "A clip of", "A video showing")
    sentences = [f"{opening} {listed} {on} a {facts.background} background."]
    wall = ""
    if facts.occluder is not None:
        wall = f"{facts.occluder.colour} wall"
        if facts.occluder.orientation == "vertical":
            sentences.append(f"A tall {wall} stands in the frame.")
        else:
            sentences.append(f"A wide {wall} runs across the frame.")
    for obj in facts.objects:
        if facts.is_image:
            sentences.append(_object_sentence_image(obj, wall))
        else:
            sentences.append(_object_sentence_video(obj, facts, words, wall))
    if facts.camera.pans:
        sentences.append(f"The camera pans to the {facts.camera.direction}.")
    return " ".join(sentences)


def describe(facts: ClipFacts, style: str = "descriptive", vary: bool = True) -> str:
    """Caption a clip from its facts. style: "terse" | "descriptive"."""
    if style == "terse":
        return terse_caption(facts)
    if style == "descriptive":
        return descriptive_caption(facts, vary)
    raise ValueError(f"Unknown caption style {style!r}; use 'terse' or 'descriptive'.")
