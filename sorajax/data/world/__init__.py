"""The built-in procedural world: scenes, physics, rendering, ground-truth facts and captions.

    options.py   what a world may contain (colours, shapes, motions, probabilities)
    scene.py     sample a scene from (seed, index), simulate it, render it, describe it
    render.py    antialiased shapes, walls and camera pans at any resolution
    facts.py     per-clip ground truth (objects, tracks, visibility, occluder, camera)
    captions.py  terse and descriptive captions from the facts (the report's re-captioning)
    source.py    the one clip source (grain random access, train / eval / stats splits)
"""

from sorajax.data.world.options import WorldOptions
from sorajax.data.world.scene import MIN_SIDE, Clip, check_clip_size, generate_clip
from sorajax.data.world.source import SPLIT_SEED_OFFSETS, WorldSource

__all__ = ["MIN_SIDE", "SPLIT_SEED_OFFSETS", "Clip", "WorldOptions", "WorldSource", "check_clip_size", "generate_clip"]
