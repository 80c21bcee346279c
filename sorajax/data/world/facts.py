"""Ground-truth facts of a world clip: what is in it, where it is on every frame, how visible.

Facts are the single source of truth for captions and, later, for the world probes that check
generated videos. They serialise to plain JSON (`to_dict` / `from_dict`, `to_json` / `from_json`)
so a grain pipeline can carry them as a string.

Coordinate conventions (all y axes point DOWN, as in image arrays):
- units ("u"): lengths in multiples of the frame's short side, min(H, W) pixels. Physics runs here,
  so the same seed gives the same scene at every resolution of one aspect ratio.
- world: units, anchored to the scene. image = world - camera offset.
- positions: image coordinates normalised to [0, 1] across the width (x) and height (y).
- pixel_centres: (column, row) in array-index units, i.e. the centroid you get from
  `np.argwhere(mask)` on a mask of the object; pixel (r, c) has its centre at (c, r).
"""

from __future__ import annotations

import dataclasses
import json
import math
from typing import Any

import numpy as np

from sorajax.data.world.options import SHAPE_NOUNS

# Net displacements shorter than this (in short-side units) count as "still".
STILL_THRESHOLD = 0.03

_COMPASS = ("right", "up-right", "up", "up-left", "left", "down-left", "down", "down-right")


def direction_word(dx: float, dy: float, still_threshold: float = STILL_THRESHOLD) -> str:
    """Compass word for a displacement in isotropic units with y pointing down."""
    if math.hypot(dx, dy) < still_threshold:
        return "still"
    angle = math.degrees(math.atan2(-dy, dx))  # counter-clockwise from "right", up positive
    return _COMPASS[int(math.floor((angle + 22.5) / 45.0)) % 8]


def _array(value: Any, dtype: Any) -> np.ndarray:
    return np.asarray(value, dtype=dtype)


@dataclasses.dataclass(frozen=True, eq=False)
class ObjectFacts:
    """One object. Per-frame arrays have length T along their first axis."""

    shape: str  # "circle", "square", ... (captions say "ball" for circle)
    colour: str
    rgb: tuple[int, int, int]
    size: str  # "small" | "medium" | "large"
    radius: float  # short-side units; every shape is scaled by it
    motion: str  # "drift" | "gravity" | "static"
    velocity: tuple[float, float]  # initial world velocity, units per frame, y down
    speed: float  # mean world speed over the clip, units per frame
    world_direction: str  # direction word of the net WORLD displacement (what the object does)
    direction: str  # direction word of the net IMAGE displacement (what the viewer sees)
    world_positions: np.ndarray  # [T, 2] units
    positions: np.ndarray  # [T, 2] normalised image coordinates
    pixel_centres: np.ndarray  # [T, 2] (column, row)
    visibility: np.ndarray  # [T] visible share of the whole object (frame edges, wall, objects in front)
    in_frame_fraction: np.ndarray  # [T] fraction of the object inside the frame
    behind_occluder: np.ndarray  # [T] fraction of its in-frame part that the wall covers
    fully_in_frame: np.ndarray  # [T] bool
    bounce_frames: tuple[int, ...] = ()  # frames on which it hit the floor (gravity)
    wall_bounces: tuple[tuple[int, str], ...] = ()  # (frame, "left" | "right" | "ceiling")
    rest_frame: int = -1  # frame on which a falling object settled on the floor; -1 if never

    @property
    def noun(self) -> str:
        return SHAPE_NOUNS[self.shape]

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for field in dataclasses.fields(self):
            value = getattr(self, field.name)
            if isinstance(value, np.ndarray):
                value = value.tolist()
            elif isinstance(value, tuple):
                value = [list(v) if isinstance(v, tuple) else v for v in value]
            out[field.name] = value
        return out

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "ObjectFacts":
        return cls(
            shape=d["shape"],
            colour=d["colour"],
            rgb=tuple(int(v) for v in d["rgb"]),
            size=d["size"],
            radius=float(d["radius"]),
            motion=d["motion"],
            velocity=(float(d["velocity"][0]), float(d["velocity"][1])),
            speed=float(d["speed"]),
            world_direction=d["world_direction"],
            direction=d["direction"],
            world_positions=_array(d["world_positions"], np.float64).reshape(-1, 2),
            positions=_array(d["positions"], np.float64).reshape(-1, 2),
            pixel_centres=_array(d["pixel_centres"], np.float64).reshape(-1, 2),
            visibility=_array(d["visibility"], np.float64),
            in_frame_fraction=_array(d["in_frame_fraction"], np.float64),
            behind_occluder=_array(d["behind_occluder"], np.float64),
            fully_in_frame=_array(d["fully_in_frame"], bool),
            bounce_frames=tuple(int(v) for v in d["bounce_frames"]),
            wall_bounces=tuple((int(f), str(side)) for f, side in d["wall_bounces"]),
            rest_frame=int(d["rest_frame"]),
        )


@dataclasses.dataclass(frozen=True, eq=False)
class OccluderFacts:
    """An axis-aligned wall drawn above all objects."""

    colour: str
    rgb: tuple[int, int, int]
    orientation: str  # "vertical" (a pillar spanning the height) | "horizontal" (a bar)
    rect_world: tuple[float, float, float, float]  # (x0, y0, x1, y1) in world units
    rects: np.ndarray  # [T, 4] (x0, y0, x1, y1) normalised image coordinates per frame

    def to_dict(self) -> dict[str, Any]:
        return {
            "colour": self.colour,
            "rgb": list(self.rgb),
            "orientation": self.orientation,
            "rect_world": list(self.rect_world),
            "rects": self.rects.tolist(),
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "OccluderFacts":
        return cls(
            colour=d["colour"],
            rgb=tuple(int(v) for v in d["rgb"]),
            orientation=d["orientation"],
            rect_world=tuple(float(v) for v in d["rect_world"]),
            rects=_array(d["rects"], np.float64).reshape(-1, 4),
        )


@dataclasses.dataclass(frozen=True, eq=False)
class CameraFacts:
    """Camera pan: image = world - offset. Pans are horizontal; "left" means the view moves left."""

    pans: bool
    direction: str  # "left" | "right" | "none"
    offsets: np.ndarray  # [T, 2] world units
    offsets_normalised: np.ndarray  # [T, 2] the same offset in normalised image coordinates

    def to_dict(self) -> dict[str, Any]:
        return {
            "pans": bool(self.pans),
            "direction": self.direction,
            "offsets": self.offsets.tolist(),
            "offsets_normalised": self.offsets_normalised.tolist(),
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "CameraFacts":
        return cls(
            pans=bool(d["pans"]),
            direction=d["direction"],
            offsets=_array(d["offsets"], np.float64).reshape(-1, 2),
            offsets_normalised=_array(d["offsets_normalised"], np.float64).reshape(-1, 2),
        )


@dataclasses.dataclass(frozen=True, eq=False)
class ClipFacts:
    """Everything known about one clip. `objects[0]` is the main object (drawn in front)."""

    seed: int
    index: int
    num_frames: int
    height: int
    width: int
    background: str
    background_rgb: tuple[int, int, int]
    texture_strength: float
    objects: tuple[ObjectFacts, ...]
    occluder: OccluderFacts | None
    camera: CameraFacts

    @property
    def main_object(self) -> ObjectFacts:
        return self.objects[0]

    @property
    def is_image(self) -> bool:
        return self.num_frames == 1

    @property
    def unit_pixels(self) -> int:
        """Pixels per world unit: the short side."""
        return min(self.height, self.width)

    def to_dict(self) -> dict[str, Any]:
        return {
            "seed": self.seed,
            "index": self.index,
            "num_frames": self.num_frames,
            "height": self.height,
            "width": self.width,
            "background": self.background,
            "background_rgb": list(self.background_rgb),
            "texture_strength": self.texture_strength,
            "objects": [o.to_dict() for o in self.objects],
            "occluder": None if self.occluder is None else self.occluder.to_dict(),
            "camera": self.camera.to_dict(),
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "ClipFacts":
        return cls(
            seed=int(d["seed"]),
            index=int(d["index"]),
            num_frames=int(d["num_frames"]),
            height=int(d["height"]),
            width=int(d["width"]),
            background=d["background"],
            background_rgb=tuple(int(v) for v in d["background_rgb"]),
            texture_strength=float(d["texture_strength"]),
            objects=tuple(ObjectFacts.from_dict(o) for o in d["objects"]),
            occluder=None if d["occluder"] is None else OccluderFacts.from_dict(d["occluder"]),
            camera=CameraFacts.from_dict(d["camera"]),
        )

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), separators=(",", ":"))

    @classmethod
    def from_json(cls, text: str) -> "ClipFacts":
        return cls.from_dict(json.loads(text))
