"""Frame-position embedding: per-segment grid extents, fractions of the frame, and what it changes."""

import jax
import jax.numpy as jnp
import numpy as np

from sorajax.models.frame_position import frame_position_features, segment_extents
from sorajax.patches import grid_positions


def _packed(grids: list[tuple[int, int, int]], length: int) -> tuple[np.ndarray, np.ndarray]:
    """One row holding each grid's positions in turn, then padding with junk positions."""
    positions = np.full((1, length, 3), 7, np.int32)
    segment_ids = np.zeros((1, length), np.int32)
    start = 0
    for segment, grid in enumerate(grids, start=1):
        pos = grid_positions(grid)
        positions[0, start:start + len(pos)] = pos
        segment_ids[0, start:start + len(pos)] = segment
        start += len(pos)
    return positions, segment_ids


def test_segment_extents_are_each_samples_own_grid():
    positions, segment_ids = _packed([(3, 2, 4), (1, 4, 2)], length=40)  # 24 + 8 tokens, 8 padding
    extents = np.asarray(segment_extents(jnp.asarray(positions), jnp.asarray(segment_ids)))
    np.testing.assert_array_equal(extents[0, :24], np.tile([3, 2, 4], (24, 1)))
    np.testing.assert_array_equal(extents[0, 24:32], np.tile([1, 4, 2], (8, 1)))
    np.testing.assert_array_equal(extents[0, 32:], 1)  # padding: junk positions ignored


def test_place_is_the_patch_centre_as_a_fraction_of_its_own_frame_wherever_it_is_packed():
    alone, seg_alone = _packed([(1, 4, 8)], length=32)
    packed, seg_packed = _packed([(1, 3, 3), (1, 4, 8)], length=48)  # same grid after a 9-token sample
    f_alone = np.asarray(frame_position_features(jnp.asarray(alone), jnp.asarray(seg_alone)))[0]
    f_packed = np.asarray(frame_position_features(jnp.asarray(packed), jnp.asarray(seg_packed)))[0, 9:41]
    np.testing.assert_allclose(f_packed, f_alone, atol=1e-6)
    k = np.arange(1, 9)
    for h, w in [(0, 0), (2, 6), (3, 7)]:
        place = (0.5 + np.array([h, w])) / np.array([4, 8])
        np.testing.assert_allclose(f_alone[h * 8 + w, :16].reshape(2, 8), np.sin(np.pi * place[:, None] * k), atol=1e-5)
        np.testing.assert_allclose(f_alone[h * 8 + w, 24:40].reshape(2, 8), np.cos(np.pi * place[:, None] * k), atol=1e-5)


def test_time_features_are_the_frame_index_not_a_fraction():
    short, seg_short = _packed([(2, 1, 1)], length=2)
    long, seg_long = _packed([(6, 1, 1)], length=6)
    f_short = np.asarray(frame_position_features(jnp.asarray(short), jnp.asarray(seg_short)))[0]
    f_long = np.asarray(frame_position_features(jnp.asarray(long), jnp.asarray(seg_long)))[0]
    np.testing.assert_allclose(f_short, f_long[:2], atol=1e-6)  # frames 0 and 1 look alike in any clip
    assert not np.allclose(f_long[0], f_long[1])


def test_features_are_finite_and_jit_under_padding_only_rows():
    positions = jnp.zeros((2, 5, 3), jnp.int32)
    segment_ids = jnp.zeros((2, 5), jnp.int32)
    features = jax.jit(frame_position_features)(positions, segment_ids)
    assert features.shape == (2, 5, 48) and bool(jnp.all(jnp.isfinite(features)))
