"""The procedural video world: sample a scene from (seed, index), simulate it, render it, describe it.

Coordinates (documented once, used everywhere): physics runs in "units" of the frame's short side
(1 unit = min(H, W) pixels), x to the right, y DOWN; the frame at time 0 spans [0, W/s] x [0, H/s]
units with s = min(H, W). Because nothing depends on the pixel count, one (seed, index) gives the
same normalised facts at every resolution of one aspect ratio (e.g. 32x48 and 64x96), so a clip can
be re-rendered larger. Across aspect ratios the same random draws are mapped into the other frame:
same objects, colours, motions and directions, positions rescaled, gravity bounces re-simulated.

Motions: "drift" moves at constant velocity in one of eight compass directions and is planned so it
stays fully in frame; "gravity" falls and bounces off the floor and side walls with restitution;
"static" stays put. A 1-frame clip (an image) is always static. Camera pans are horizontal and
linear: image = world - offset(t). Gravity walls bound the union of all views of the pan, so they
are never visible inside the frame. An occluder ("wall") is placed across the main object's path
so it is hidden for part of the clip, and placements that would hide any object all the time are
rejected.
"""

from __future__ import annotations

import dataclasses
import math
import numbers

import numpy as np

from sorajax.data.world import facts as wf
from sorajax.data.world.captions import describe
from sorajax.data.world.options import (
    BACKGROUND_COLOURS,
    OBJECT_COLOURS,
    OCCLUDER_COLOURS,
    SIZE_RADII,
    WorldOptions,
    allowed_object_colours,
    allowed_occluder_colours,
)
from sorajax.data.world.render import SHAPE_AREAS, SHAPE_EXTENTS, RenderObject, RenderOccluder, render

MIN_SIDE = 8
_PHYSICS_SUBSTEPS = 4
_REST_FRICTION = 0.97  # per frame, horizontal speed kept by an object resting on the floor


@dataclasses.dataclass(frozen=True, eq=False)
class Clip:
    """A rendered clip: uint8 frames [T, H, W, 3], its facts and its two captions."""

    video: np.ndarray
    facts: wf.ClipFacts
    caption: str
    caption_terse: str


@dataclasses.dataclass(frozen=True)
class _Plan:
    """One object as sampled, before simulation."""

    shape: str
    colour: str
    size: str
    motion: str
    start: tuple[float, float]  # world units at frame 0 (= image units, the camera starts at 0)
    velocity: tuple[float, float]  # world units per frame

    @property
    def radius(self) -> float:
        return SIZE_RADII[self.size]

    @property
    def extents(self) -> tuple[float, float, float, float]:
        return tuple(e * self.radius for e in SHAPE_EXTENTS[self.shape])  # type: ignore[return-value]


@dataclasses.dataclass(frozen=True)
class _GravityEvents:
    bounce_frames: tuple[int, ...] = ()  # floor hits that sent the object back up
    wall_bounces: tuple[tuple[int, str], ...] = ()
    rest_frame: int = -1  # frame on which it settled on the floor, -1 if it never did


def _check_int(name: str, value: object, minimum: int, fix: str) -> int:
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise ValueError(f"{name} must be an int, got {value!r} ({type(value).__name__}); {fix}")
    if int(value) < minimum:
        raise ValueError(f"{name}={value} is below the minimum {minimum}; {fix}")
    return int(value)


def check_clip_size(num_frames: object, height: object, width: object) -> tuple[int, int, int]:
    """Validate a clip size, returning plain ints."""
    return (_check_int("num_frames", num_frames, 1, "use 1 for an image or more frames for a video."),
            _check_int("height", height, MIN_SIDE, f"use a height of at least {MIN_SIDE} pixels."),
            _check_int("width", width, MIN_SIDE, f"use a width of at least {MIN_SIDE} pixels."))


def _fit_path(u: float, lo: float, hi: float, shift: float) -> float:
    """Start coordinate in [lo, hi] from a uniform draw u, so start + shift stays in [lo, hi] too."""
    first, last = lo + max(0.0, -shift), hi - max(0.0, shift)
    return first + u * max(0.0, last - first)


def _sample_linear(
    rng: np.random.Generator,
    shape: str,
    size: str,
    motion: str,
    num_frames: int,
    frame: tuple[float, float],
    pan: float,
    options: WorldOptions,
    long_path: bool = False,
) -> _Plan:
    """Drift or static: choose the world displacement, then a start that keeps the image path in frame.

    `long_path` favours long drifts, so an object can pass fully behind a wall and out again.
    """
    left, right, up, down = (e * SIZE_RADII[size] for e in SHAPE_EXTENTS[shape])
    compass, jitter, magnitude, ux, uy = rng.random(5)
    disp = np.zeros(2)
    if motion == "drift":
        angle = math.radians(45.0 * int(compass * 8) + (jitter - 0.5) * 16.0)
        shortest = 0.6 if long_path else 0.3
        length = min(shortest + 0.4 * magnitude, options.max_speed * (num_frames - 1))
        disp = length * np.array([math.cos(angle), -math.sin(angle)])
    room = np.array([frame[0] - left - right, frame[1] - up - down])
    for _ in range(40):  # shrink until the image-space path (world path minus pan) fits the frame
        image_disp = disp - np.array([pan, 0.0])
        if np.all(np.abs(image_disp) <= room):
            break
        disp *= 0.85
    else:
        disp = np.zeros(2)
    image_disp = disp - np.array([pan, 0.0])
    start = (
        _fit_path(ux, left, frame[0] - right, image_disp[0]),
        _fit_path(uy, up, frame[1] - down, image_disp[1]),
    )
    velocity = tuple(float(v) for v in disp / max(1, num_frames - 1))
    return _Plan(shape, "", size, motion, start, velocity)  # type: ignore[arg-type]


def _sample_gravity(
    rng: np.random.Generator, shape: str, size: str, frame: tuple[float, float]
) -> _Plan:
    left, right, up, down = (e * SIZE_RADII[size] for e in SHAPE_EXTENTS[shape])
    ux, uy, uvx, uvy = rng.random(4)
    top = up + 0.05
    x = left + ux * max(0.0, frame[0] - left - right)
    y = top + uy * max(0.0, 0.5 * frame[1] - top)
    velocity = (0.06 * uvx - 0.03, 0.025 * uvy - 0.02)
    return _Plan(shape, "", size, "gravity", (x, y), velocity)


def _simulate_gravity(
    plan: _Plan, num_frames: int, walls: tuple[float, float], floor_y: float, options: WorldOptions
) -> tuple[np.ndarray, "_GravityEvents"]:
    """Semi-implicit Euler with substeps; reflect off floor, walls and ceiling with restitution."""
    left, right, up, down = plan.extents
    x_min, x_max = walls[0] + left, walls[1] - right
    y_min, y_max = up, floor_y - down
    x, y = plan.start
    vx, vy = plan.velocity
    g, e, h = options.gravity, options.restitution, 1.0 / _PHYSICS_SUBSTEPS
    rest_speed = math.sqrt(2.0 * g * 0.01)  # a bounce lower than 0.01 units ends in rest
    resting, rest_frame = False, -1
    track = np.empty((num_frames, 2))
    track[0] = (x, y)
    floor_hits: list[int] = []
    wall_hits: list[tuple[int, str]] = []
    for frame in range(1, num_frames):
        for _ in range(_PHYSICS_SUBSTEPS):
            if not resting:
                vy += g * h
            x += vx * h
            y += vy * h
            if y > y_max:
                if abs(vy) * e < rest_speed:  # too slow to leave the floor again: it lands
                    y, vy, resting = y_max, 0.0, True
                    rest_frame = frame if rest_frame < 0 else rest_frame
                else:
                    y, vy = y_max - (y - y_max) * e, -vy * e
                    if not floor_hits or floor_hits[-1] != frame:
                        floor_hits.append(frame)
            elif y < y_min:
                y, vy = y_min + (y_min - y) * e, -vy * e
                wall_hits.append((frame, "ceiling"))
            if x < x_min or x > x_max:
                side = "left" if x < x_min else "right"
                bound = x_min if side == "left" else x_max
                x, vx = bound - (x - bound) * e, -vx * e
                if not wall_hits or wall_hits[-1] != (frame, side):
                    wall_hits.append((frame, side))
        if resting:
            vx *= _REST_FRICTION
        track[frame] = (x, y)
    return track, _GravityEvents(tuple(floor_hits), tuple(wall_hits), rest_frame)


def _pick_count(rng: np.random.Generator, options: WorldOptions) -> int:
    counts = np.arange(options.min_objects, options.max_objects + 1)
    weights = 0.5 ** (counts - options.min_objects)
    return int(rng.choice(counts, p=weights / weights.sum()))


def _sample_scene(
    rng: np.random.Generator, num_frames: int, frame: tuple[float, float], options: WorldOptions
) -> tuple[str, list[_Plan], float, np.ndarray, bool]:
    """Background, objects (planned), total pan (units, + = right), texture waves, wants a wall."""
    background = options.backgrounds[int(rng.integers(len(options.backgrounds)))]
    wants_wall = bool(rng.random() < options.occluder_prob)
    count = _pick_count(rng, options)
    palette = list(allowed_object_colours(background, options.colours))
    colours = [palette[i] for i in rng.permutation(len(palette))[:count]]
    pan_draw, pan_sign, pan_size = rng.random(3)
    pan = 0.0
    if num_frames > 1 and pan_draw < options.pan_prob:
        pan = (1.0 if pan_sign < 0.5 else -1.0) * min(0.2 + 0.3 * pan_size, options.max_speed * (num_frames - 1))
    plans: list[_Plan] = []
    for colour in colours:
        shape = options.shapes[int(rng.integers(len(options.shapes)))]
        size = options.sizes[int(rng.integers(len(options.sizes)))]
        motion_draw = rng.random()
        motion = "static"
        if num_frames > 1:
            if motion_draw < options.gravity_prob:
                motion = "gravity"
            elif motion_draw >= options.gravity_prob + options.static_prob:
                motion = "drift"
        for _attempt in range(20):  # keep objects apart at the first frame
            if motion == "gravity":
                plan = _sample_gravity(rng, shape, size, frame)
            else:
                long_path = wants_wall and not plans
                plan = _sample_linear(rng, shape, size, motion, num_frames, frame, pan, options, long_path)
            if all(
                math.dist(plan.start, other.start) >= 1.1 * (plan.radius + other.radius) for other in plans
            ):
                break
        plans.append(dataclasses.replace(plan, colour=colour))
    angles = rng.uniform(0.0, 2.0 * math.pi, 3)
    wavenumbers = 2.0 * math.pi / rng.uniform(0.3, 0.8, 3)
    waves = np.stack(
        [wavenumbers * np.cos(angles), wavenumbers * np.sin(angles), rng.uniform(0.0, 2.0 * math.pi, 3)], 1
    )
    return background, plans, pan, waves, wants_wall


def _behind_fraction(plan: _Plan, image: np.ndarray, rects: np.ndarray) -> np.ndarray:
    """[T] share of the object's bounding box inside the wall: a cheap test for placing walls."""
    left, right, up, down = plan.extents
    ox = np.minimum(image[:, 0] + right, rects[:, 2]) - np.maximum(image[:, 0] - left, rects[:, 0])
    oy = np.minimum(image[:, 1] + down, rects[:, 3]) - np.maximum(image[:, 1] - up, rects[:, 1])
    return np.clip(ox, 0, None) * np.clip(oy, 0, None) / ((left + right) * (up + down))


def _place_occluder(
    rng: np.random.Generator,
    plans: list[_Plan],
    world: list[np.ndarray],
    camera: np.ndarray,
    frame: tuple[float, float],
    background: str,
) -> tuple[str, str, tuple[float, float, float, float]] | None:
    """A wall across the main object's path: (colour, orientation, world rect), or None.

    The first tries insist the object is clear of the wall at both ends of the clip (it passes
    behind and reappears); later tries accept a clip that starts or ends behind the wall.
    """
    colours = allowed_occluder_colours(background)
    colour = colours[int(rng.integers(len(colours)))]
    num_frames = camera.shape[0]
    main, track = plans[0], world[0]
    left, right, up, down = main.extents
    span_x = (min(0.0, camera[-1, 0]) - 1.0, frame[0] + max(0.0, camera[-1, 0]) + 1.0)
    travel = np.abs(np.diff(track, axis=0)).sum(axis=0) if num_frames > 1 else np.zeros(2)
    for attempt in range(6):
        when, offset, width_draw, side, orient_draw = rng.random(5)
        vertical = travel[0] >= travel[1] if num_frames > 1 else orient_draw < 0.5
        t = int(round((0.4 + 0.2 * when) * (num_frames - 1)))
        half = max(left, right) if vertical else max(up, down)
        centre = track[t, 0] if vertical else track[t, 1]
        if num_frames == 1:  # an image: the wall's edge cuts through the object
            sign = 1.0 if side < 0.5 else -1.0
            thickness = (1.0 + width_draw) * half
            edge = centre + sign * (offset - 0.5) * 0.8 * half
            lo, hi = (edge, edge + thickness) if sign > 0 else (edge - thickness, edge)
        else:
            thickness = (2.1 + 0.5 * width_draw) * half
            lo, hi = centre - thickness / 2, centre + thickness / 2
        rect = (lo, -1.0, hi, frame[1] + 1.0) if vertical else (span_x[0], lo, span_x[1], hi)
        rects = np.asarray(rect)[None] - np.concatenate([camera, camera], axis=1)
        fractions = [_behind_fraction(p, w - camera, rects) for p, w in zip(plans, world)]
        if num_frames == 1:
            ok = 0.3 <= fractions[0][0] <= 0.8
        else:
            ok = fractions[0].max() >= 0.6 and fractions[0].min() <= 0.15
            if attempt < 3:
                ok = ok and max(fractions[0][0], fractions[0][-1]) <= 0.15
        if ok and all(f.min() <= 0.5 for f in fractions[1:]):
            return colour, "vertical" if vertical else "horizontal", tuple(float(v) for v in rect)
    return None


def _object_facts(
    plan: _Plan,
    world: np.ndarray,
    camera: np.ndarray,
    frame: tuple[float, float],
    size_px: tuple[int, int],
    sums: tuple[np.ndarray, np.ndarray, np.ndarray],
    events: _GravityEvents,
) -> wf.ObjectFacts:
    height, width = size_px
    unit = min(height, width)
    image = world - camera
    left, right, up, down = plan.extents
    coverage, visible, hidden = sums
    eps = 1e-9
    fully = (
        (image[:, 0] - left >= -eps)
        & (image[:, 0] + right <= frame[0] + eps)
        & (image[:, 1] - up >= -eps)
        & (image[:, 1] + down <= frame[1] + eps)
    )
    area = SHAPE_AREAS[plan.shape] * (plan.radius * unit) ** 2
    in_frame = np.where(fully, 1.0, np.minimum(1.0, coverage / area))
    safe = np.maximum(coverage, 1e-12)
    visibility = np.where(coverage > 0, in_frame * visible / safe, 0.0)
    behind = np.where(coverage > 0, hidden / safe, 0.0)
    net_world, net_image = world[-1] - world[0], image[-1] - image[0]
    steps = np.linalg.norm(np.diff(world, axis=0), axis=1)
    return wf.ObjectFacts(
        shape=plan.shape,
        colour=plan.colour,
        rgb=OBJECT_COLOURS[plan.colour],
        size=plan.size,
        radius=plan.radius,
        motion=plan.motion,
        velocity=(round(plan.velocity[0], 6), round(plan.velocity[1], 6)),
        speed=round(float(steps.mean()) if steps.size else 0.0, 6),
        world_direction=wf.direction_word(*net_world),
        direction=wf.direction_word(*net_image),
        world_positions=np.round(world, 6),
        positions=np.round(image * unit / np.array([width, height]), 6),
        pixel_centres=np.round(image * unit - 0.5, 4),
        visibility=np.round(np.clip(visibility, 0.0, 1.0), 4),
        in_frame_fraction=np.round(in_frame, 4),
        behind_occluder=np.round(np.clip(behind, 0.0, 1.0), 4),
        fully_in_frame=fully,
        bounce_frames=events.bounce_frames,
        wall_bounces=events.wall_bounces,
        rest_frame=events.rest_frame,
    )


def generate_clip(
    seed: int,
    num_frames: int,
    height: int,
    width: int,
    options: WorldOptions | None = None,
    *,
    index: int = 0,
) -> Clip:
    """Sample, simulate and render clip `index` of world `seed` at the given size.

    Deterministic in (seed, index, num_frames, aspect ratio, options); the pixel size only sets
    the rendering. Returns uint8 frames [T, H, W, 3] with facts and captions.
    """
    num_frames, height, width = check_clip_size(num_frames, height, width)
    seed = _check_int("seed", seed, 0, "use a non-negative integer seed.")
    index = _check_int("index", index, 0, "use a non-negative record index.")
    options = WorldOptions() if options is None else options
    if not isinstance(options, WorldOptions):
        raise ValueError(
            f"options must be a WorldOptions, got {type(options).__name__}; build one with WorldOptions(**cfg)."
        )
    unit = min(height, width)
    frame = (width / unit, height / unit)
    scene_rng, occluder_rng = (np.random.default_rng(s) for s in np.random.SeedSequence([seed, index]).spawn(2))
    background, plans, pan, waves, wants_wall = _sample_scene(scene_rng, num_frames, frame, options)
    times = np.arange(num_frames) / max(1, num_frames - 1)
    camera = np.stack([pan * times, np.zeros(num_frames)], axis=1)
    walls = (min(0.0, pan), frame[0] + max(0.0, pan))
    world, events = [], []
    for plan in plans:
        if plan.motion == "gravity":
            track, happened = _simulate_gravity(plan, num_frames, walls, frame[1], options)
        else:
            steps = np.arange(num_frames)[:, None] * np.asarray(plan.velocity)[None]
            track, happened = np.asarray(plan.start)[None] + steps, _GravityEvents()
        world.append(track)
        events.append(happened)
    wall = _place_occluder(occluder_rng, plans, world, camera, frame, background) if wants_wall else None
    wall_rects = None
    if wall is not None:
        wall_rects = np.asarray(wall[2])[None] - np.concatenate([camera, camera], axis=1)
    rendered = render(
        height,
        width,
        BACKGROUND_COLOURS[background],
        [RenderObject(p.shape, p.radius, OBJECT_COLOURS[p.colour], w - camera) for p, w in zip(plans, world)],
        None if wall is None else RenderOccluder(OCCLUDER_COLOURS[wall[0]], wall_rects),
        camera[:, 0],
        options.texture_strength,
        waves,
    )
    objects = tuple(
        _object_facts(
            p, w, camera, frame, (height, width),
            (rendered.coverage[k], rendered.visible[k], rendered.behind_occluder[k]), events[k],
        )
        for k, (p, w) in enumerate(zip(plans, world))
    )
    scale = np.array([unit / width, unit / height])
    occluder = None
    if wall is not None:
        occluder = wf.OccluderFacts(
            colour=wall[0],
            rgb=OCCLUDER_COLOURS[wall[0]],
            orientation=wall[1],
            rect_world=tuple(round(v, 6) for v in wall[2]),
            rects=np.round(wall_rects * np.concatenate([scale, scale]), 6),
        )
    facts = wf.ClipFacts(
        seed=seed,
        index=index,
        num_frames=num_frames,
        height=height,
        width=width,
        background=background,
        background_rgb=BACKGROUND_COLOURS[background],
        texture_strength=float(options.texture_strength),
        objects=objects,
        occluder=occluder,
        camera=wf.CameraFacts(
            pans=bool(pan != 0.0),
            direction="none" if pan == 0.0 else ("right" if pan > 0 else "left"),
            offsets=np.round(camera, 6),
            offsets_normalised=np.round(camera * scale, 6),
        ),
    )
    return Clip(
        video=rendered.frames,
        facts=facts,
        caption=describe(facts, "descriptive"),
        caption_terse=describe(facts, "terse"),
    )
