"""The mirror-caption test: word swaps, pairing (same clip, same noise) and bad input."""

import copy

import jax
import numpy as np
import pytest

from sorajax.eval.caption_layout import caption_layout_use, mirror_caption
from tests.tiny_pipeline import tiny_random_pipeline


@pytest.fixture(scope="module")
def pipeline():
    """Every weight jittered: at init the zero-initialised cross-attention output and gates ignore the text."""
    pipe = copy.copy(tiny_random_pipeline())
    leaves, tree = jax.tree.flatten(pipe.dit_params)
    keys = jax.random.split(jax.random.PRNGKey(7), len(leaves))
    pipe.dit_params = jax.tree.unflatten(tree, [x + 0.2 * jax.random.normal(k, x.shape, x.dtype)
                                                for x, k in zip(leaves, keys)])
    return pipe


@pytest.mark.parametrize("caption, mirrored", [
    ("The red ball starts at the top left and moves quickly to the right.",
     "The red ball starts at the bottom right and moves quickly to the left."),
    ("Left of centre, a cube drifts upward.", "Right of centre, a cube drifts downward."),
    ("A ball is tossed up and to the left, above a wall.", "A ball is tossed down and to the right, below a wall."),
    ("A ball bounces; the leftmost brightness is upright.", "A ball bounces; the leftmost brightness is upright."),
])
def test_mirror_swaps_whole_place_and_direction_words_only(caption, mirrored):
    assert mirror_caption(caption) == mirrored
    assert mirror_caption(mirror_caption(caption)) == caption


def _clips(count: int, seed: int = 0) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    return [rng.normal(size=(3, 4, 4, 4)).astype(np.float32) for _ in range(count)]


def test_paired_gap_flips_sign_exactly_when_the_captions_are_mirrored(pipeline):
    latents = _clips(3)
    captions = ["a blue square at the top moves left", "a red ball at the bottom moves up", "a cross on the right"]
    levels = (0.5, 0.95)
    forward = caption_layout_use(pipeline, latents, captions, levels=levels, noise_seeds=2)
    backward = caption_layout_use(pipeline, latents, [mirror_caption(c) for c in captions], levels=levels,
                                  noise_seeds=2)
    assert sorted(forward) == list(levels)
    for t in levels:
        assert forward[t]["count"] == 3
        # Same clips and noise with the roles swapped: the gap is exactly negated, the accuracy complemented.
        np.testing.assert_allclose(backward[t]["layout_gap"], -forward[t]["layout_gap"], rtol=1e-5, atol=1e-7)
        assert forward[t]["accuracy"] + backward[t]["accuracy"] == pytest.approx(1.0)
        assert forward[t]["layout_gap"] != 0.0  # random weights do read the text a little
        assert np.isfinite(forward[t]["caption_gain"])


def test_clips_without_layout_words_are_skipped_and_none_left_is_an_error(pipeline):
    latents = _clips(2, seed=1)
    report = caption_layout_use(pipeline, latents, ["a green ball at the left", "a green ball"], levels=(0.9,),
                                noise_seeds=1)
    assert report[0.9]["count"] == 1
    with pytest.raises(ValueError, match="no caption names a place or direction"):
        caption_layout_use(pipeline, latents, ["a green ball", "a red cross"])
    with pytest.raises(ValueError, match="one caption per clip"):
        caption_layout_use(pipeline, latents, ["a ball at the left"])
    with pytest.raises(ValueError, match=r"noise levels must lie in \(0, 1\]"):
        caption_layout_use(pipeline, latents, ["a ball at the left", "a ball at the top"], levels=(0.0,))
