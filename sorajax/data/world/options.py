"""Vocabulary and knobs of the procedural world: palette, shapes, sizes, and `WorldOptions`.

Everything a caption can name lives here, so the renderer, the captioner and later the world
probes agree on one table. Object colours are saturated and each background keeps a minimum RGB
distance from every object colour it may carry, so a probe can find an object by colour alone.

Units: lengths are in "units" of the frame's SHORT side (1 unit = min(H, W) pixels), so a ball of
radius 0.1 is round and equally big in landscape, portrait and square frames.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any

from sorajax.config_dataclasses import unknown_key

# Saturated object colours (RGB, uint8). Names are the words captions use.
OBJECT_COLOURS: dict[str, tuple[int, int, int]] = {
    "red": (230, 30, 30),
    "green": (30, 200, 50),
    "blue": (40, 80, 255),
    "yellow": (250, 220, 20),
    "orange": (255, 130, 0),
    "purple": (150, 50, 220),
    "cyan": (0, 210, 230),
    "white": (245, 245, 245),
}

# Backgrounds: dark or muted, plus two light ones that rule out the bright object colours.
BACKGROUND_COLOURS: dict[str, tuple[int, int, int]] = {
    "black": (12, 12, 12),
    "dark grey": (50, 50, 50),
    "navy": (18, 24, 70),
    "dark green": (16, 56, 28),
    "light grey": (190, 190, 190),
    "cream": (240, 232, 210),
}

# Occluders ("walls"): neutral colours that are never an object colour.
OCCLUDER_COLOURS: dict[str, tuple[int, int, int]] = {
    "grey": (128, 128, 128),
    "brown": (120, 72, 36),
}

# An object colour is allowed on a background only if their RGB distance is at least this.
MIN_OBJECT_CONTRAST = 150.0
# A wall colour is allowed on a background only if their RGB distance is at least this.
MIN_OCCLUDER_CONTRAST = 90.0

# Shape name -> caption noun.
SHAPE_NOUNS: dict[str, str] = {
    "circle": "ball",
    "square": "square",
    "triangle": "triangle",
    "diamond": "diamond",
    "cross": "cross",
}

# Size name -> radius in units of the short side. Every shape is scaled by this radius.
SIZE_RADII: dict[str, float] = {"small": 0.07, "medium": 0.11, "large": 0.16}

MOTIONS = ("drift", "gravity", "static")


def colour_distance(a: tuple[int, int, int], b: tuple[int, int, int]) -> float:
    """Euclidean RGB distance, the contrast measure used for every colour rule."""
    return float(sum((x - y) ** 2 for x, y in zip(a, b)) ** 0.5)


def allowed_object_colours(background: str, colours: tuple[str, ...]) -> tuple[str, ...]:
    """Object colours from `colours` that contrast enough with `background`."""
    bg = BACKGROUND_COLOURS[background]
    return tuple(c for c in colours if colour_distance(OBJECT_COLOURS[c], bg) >= MIN_OBJECT_CONTRAST)


def allowed_occluder_colours(background: str) -> tuple[str, ...]:
    """Wall colours that contrast enough with `background`."""
    bg = BACKGROUND_COLOURS[background]
    return tuple(
        c for c, rgb in OCCLUDER_COLOURS.items() if colour_distance(rgb, bg) >= MIN_OCCLUDER_CONTRAST
    )


def _check_names(field: str, values: tuple[str, ...], table: Mapping[str, Any]) -> None:
    if not values:
        raise ValueError(f"WorldOptions.{field} is empty; give at least one of {sorted(table)}.")
    unknown = [v for v in values if v not in table]
    if unknown:
        raise ValueError(
            f"WorldOptions.{field} has unknown names {unknown}; choose from {sorted(table)}."
        )


def _check_probability(field: str, value: float) -> None:
    if not 0.0 <= float(value) <= 1.0:
        raise ValueError(f"WorldOptions.{field}={value} is not a probability; use a value in [0, 1].")


@dataclasses.dataclass(frozen=True)
class WorldOptions:
    """What kind of scenes the world samples. Fill from a config with `WorldOptions(**cfg)`.

    Motion mix: each object is `gravity` with `gravity_prob`, `static` with `static_prob`, and
    `drift` otherwise. The object count n in [min_objects, max_objects] is drawn with weight
    2**-(n - min_objects), so small scenes dominate (1 object twice as often as 2, ...).
    `texture_strength` is the amplitude (in [0, 1] colour units) of a faint world-anchored
    pattern on the background; it is what makes a camera pan visible. 0 gives flat backgrounds.
    Speeds are in short-side units per frame; `gravity` in units per frame squared.
    """

    min_objects: int = 1
    max_objects: int = 2
    occluder_prob: float = 0.3
    pan_prob: float = 0.2
    gravity_prob: float = 0.3
    static_prob: float = 0.1
    shapes: tuple[str, ...] = tuple(SHAPE_NOUNS)
    colours: tuple[str, ...] = tuple(OBJECT_COLOURS)
    backgrounds: tuple[str, ...] = tuple(BACKGROUND_COLOURS)
    sizes: tuple[str, ...] = tuple(SIZE_RADII)
    texture_strength: float = 0.04
    max_speed: float = 0.05
    gravity: float = 0.006
    restitution: float = 0.75

    def __post_init__(self) -> None:
        # Configs hand over lists; store tuples so options stay hashable and immutable.
        for name in ("shapes", "colours", "backgrounds", "sizes"):
            value = getattr(self, name)
            if isinstance(value, str):
                raise ValueError(f"WorldOptions.{name} must be a list of names, not the string {value!r}.")
            object.__setattr__(self, name, tuple(value))
        _check_names("shapes", self.shapes, SHAPE_NOUNS)
        _check_names("colours", self.colours, OBJECT_COLOURS)
        _check_names("backgrounds", self.backgrounds, BACKGROUND_COLOURS)
        _check_names("sizes", self.sizes, SIZE_RADII)
        for name in ("min_objects", "max_objects"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int):
                raise ValueError(f"WorldOptions.{name}={value!r} must be an int.")
        if not 1 <= self.min_objects <= self.max_objects:
            raise ValueError(
                f"WorldOptions needs 1 <= min_objects <= max_objects, got {self.min_objects} and "
                f"{self.max_objects}; raise max_objects or lower min_objects."
            )
        for name in ("occluder_prob", "pan_prob", "gravity_prob", "static_prob"):
            _check_probability(name, getattr(self, name))
        if self.gravity_prob + self.static_prob > 1.0 + 1e-9:
            raise ValueError(
                f"gravity_prob + static_prob = {self.gravity_prob + self.static_prob} exceeds 1; "
                "lower one of them (drift takes whatever is left)."
            )
        for background in self.backgrounds:
            usable = allowed_object_colours(background, self.colours)
            if len(usable) < self.max_objects:
                raise ValueError(
                    f"Background {background!r} contrasts with only {list(usable)} of the allowed "
                    f"colours, too few for max_objects={self.max_objects} distinct objects; allow "
                    "more colours, drop that background, or lower max_objects."
                )
        for name in ("texture_strength", "max_speed", "gravity"):
            if not float(getattr(self, name)) >= 0.0:
                raise ValueError(f"WorldOptions.{name}={getattr(self, name)} must be >= 0.")
        if self.max_speed <= 0.0:
            raise ValueError("WorldOptions.max_speed must be > 0 (short-side units per frame).")
        if not 0.0 < float(self.restitution) <= 1.0:
            raise ValueError(f"WorldOptions.restitution={self.restitution} must be in (0, 1].")

    def to_dict(self) -> dict[str, Any]:
        """JSON-able form (tuples become lists); `WorldOptions(**d)` reads it back."""
        return {k: list(v) if isinstance(v, tuple) else v for k, v in dataclasses.asdict(self).items()}


def _init_naming_unknown_keys(dataclass_init):
    """Wrap the generated __init__ so `WorldOptions(**cfg)` with a typo says which keys exist."""
    known = {f.name for f in dataclasses.fields(WorldOptions)}

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        unknown = sorted(set(kwargs) - known)
        if unknown:
            raise ValueError(unknown_key(unknown[0], "world", known))
        dataclass_init(self, *args, **kwargs)

    __init__.__wrapped__ = dataclass_init  # keeps inspect.signature informative
    __init__.__doc__ = dataclass_init.__doc__
    return __init__


WorldOptions.__init__ = _init_naming_unknown_keys(WorldOptions.__init__)  # type: ignore[method-assign]
