"""Conditioning masks: every mode's mask, pixel -> latent conversion, checks, and training masks in batches."""

import jax
import numpy as np
import pytest

from sorajax.conditioning import (
    MaskRates,
    align_to_tokens,
    first_and_last_mask,
    first_frames_mask,
    frames_mask,
    last_frames_mask,
    latent_frame_spans,
    pixel_frames_for_latents,
    pixel_mask_to_latent,
    region_mask,
    sample_training_mask,
    token_mask,
    validate_mask,
)
from sorajax.data.latent_cache import LatentClipSet
from sorajax.data.iterators import batch_dataset
from sorajax.data.packed_batches import PackedBatchMaker
from sorajax.diffusion.timesteps import TrainingTimeConfig, training_t
from sorajax.patches import Sample, pack
from sorajax.train.dit_step import conditioning_mask

RATES = MaskRates(image_to_video=0.12, extend_forward=0.06, extend_backward=0.06, connect=0.05,
                  random_frames=0.03, inpaint=0.03)


def test_frame_masks_of_each_mode():
    np.testing.assert_array_equal(first_frames_mask(4, 1), [True, False, False, False])
    np.testing.assert_array_equal(first_frames_mask(4, 2), [True, True, False, False])
    np.testing.assert_array_equal(last_frames_mask(4, 2), [False, False, True, True])
    np.testing.assert_array_equal(first_and_last_mask(5, 1, 2), [True, False, False, True, True])
    np.testing.assert_array_equal(frames_mask(5, [0, 2, -1]), [True, False, True, False, True])
    with pytest.raises(ValueError, match="outside a latent of 5 frames"):
        frames_mask(5, [7])


def test_causal_frame_arithmetic():
    assert [pixel_frames_for_latents(k, 4) for k in (1, 2, 3)] == [1, 5, 9]
    assert latent_frame_spans(3, 4) == [(0, 1), (1, 5), (5, 9)]


def test_region_masks_inpaint_and_outpaint():
    inpaint = region_mask((2, 4, 6), (1, 2, 3, 4), frames=[1])
    assert inpaint.shape == (2, 4, 6)
    assert inpaint[0].all() and (~inpaint[1]).sum() == 2 * 2 and not inpaint[1, 1:3, 2:4].any()
    outpaint = region_mask((2, 4, 6), (0, 0, 2, 2), inpaint=False)
    assert outpaint.sum() == 2 * 4 and outpaint[:, :2, :2].all()
    with pytest.raises(ValueError, match="inside the latent 4x6"):
        region_mask((2, 4, 6), (0, 0, 5, 2))


def test_pixel_mask_to_latent_keeps_a_position_only_if_every_covered_pixel_is_given():
    given = np.ones((9, 16, 16), bool)
    given[3, 0, 0] = False  # pixel frame 3 belongs to latent frame 1; pixel (0, 0) to latent (0, 0)
    latent = pixel_mask_to_latent(given, spatial_factor=8, temporal_factor=4)
    assert latent.shape == (3, 2, 2)
    assert latent.sum() == 11 and not latent[1, 0, 0]
    with pytest.raises(ValueError, match="1 \\+ 4k frames"):
        pixel_mask_to_latent(np.ones((8, 16, 16), bool), 8, 4)


def test_token_alignment_and_nothing_to_generate():
    mask = np.ones((2, 4, 4), bool)
    mask[1, 0, 0] = False  # one latent position spoils the whole (1, 2, 2) token
    aligned = align_to_tokens(mask, (2, 4, 4), (1, 2, 2))
    assert aligned.sum() == 32 - 4 and not aligned[1, :2, :2].any()
    assert token_mask(mask, (2, 4, 4), (1, 2, 2)).sum() == 7
    np.testing.assert_array_equal(validate_mask(mask, (2, 4, 4, 8), (1, 2, 2)), aligned)
    with pytest.raises(ValueError, match="nothing is left to generate"):
        validate_mask(np.ones(2, bool), (2, 4, 4, 8), (1, 2, 2))
    with pytest.raises(ValueError, match="needs \\(3,\\) \\(frames\\)"):
        validate_mask(np.ones(2, bool), (3, 4, 4, 8), (1, 2, 2))


def test_mask_rates_are_checked():
    assert MaskRates().total == 0.0 and RATES.total == pytest.approx(0.35)
    with pytest.raises(ValueError, match="sum to 1.200"):
        MaskRates(image_to_video=0.6, connect=0.6)
    with pytest.raises(ValueError, match="must be in \\[0, 1\\]"):
        MaskRates(inpaint=-0.1)
    with pytest.raises(ValueError, match="unknown key 'image2video' in config 'conditioning'; known keys: "):
        MaskRates.from_mapping({"image2video": 0.1})


def test_training_masks_leave_something_to_generate_at_the_configured_rate():
    rng = np.random.default_rng(0)
    untouched = np.random.default_rng(0)
    assert sample_training_mask(rng, (3, 4, 4, 8), MaskRates()) is None
    assert rng.random() == untouched.random()  # zero rates draw nothing: the data stream is unchanged
    masks = [sample_training_mask(rng, (3, 4, 4, 8), RATES) for _ in range(2000)]
    masked = [m for m in masks if m is not None]
    assert 0.30 < len(masked) / len(masks) < 0.40  # connect needs 3 frames: every mode applies here
    for m in masked:
        assert m.shape == (3, 4, 4) and m.any() and not token_mask(m, (3, 4, 4)).all()
        np.testing.assert_array_equal(m, align_to_tokens(m, (3, 4, 4)))
    first_only = sum(bool(m[0].all() and not m[1:].any()) for m in masked)
    assert first_only > 0.3 * len(masked)  # image-to-video is the most common mode
    images = [sample_training_mask(rng, (1, 4, 4, 8), RATES) for _ in range(500)]
    image_masks = [m for m in images if m is not None]
    assert 0 < len(image_masks) < 0.1 * len(images)  # only the spatial mode applies to an image
    assert all(0 < m.sum() < 16 for m in image_masks)


def _clips(n=10, seed=0):
    rng = np.random.default_rng(seed)
    shapes = [(3, 4, 4, 8), (1, 4, 4, 8), (3, 4, 8, 8)]
    latents = [rng.normal(size=shapes[i % 3]).astype(np.float32) for i in range(n)]
    texts = [rng.normal(size=(3 + i % 4, 16)).astype(np.float32) for i in range(n)]
    return LatentClipSet(latents, texts, [""] * n, [str(i) for i in range(n)], key="test")


def test_default_batches_are_exactly_the_unmasked_ones():
    clips = _clips()
    maker = PackedBatchMaker(clips, rows=2, seq_len=48, text_len=24, patch=(1, 2, 2), seed=3)
    for j in range(3):
        chosen = maker.select(j)
        expected, _ = pack([Sample(clips.latents[i], clips.texts[i]) for i in chosen], 48, 24, (1, 2, 2), rows=2)
        got = maker(j)
        for name in ("tokens", "positions", "segment_ids", "t", "loss_mask", "text", "text_segment_ids"):
            np.testing.assert_array_equal(getattr(got, name), getattr(expected, name), err_msg=name)
        assert np.array_equal(got.loss_mask, got.segment_ids > 0)


def test_masked_tokens_are_clean_and_out_of_the_loss():
    clips = _clips()
    plain = batch_dataset(PackedBatchMaker(clips, 2, 48, 24, (1, 2, 2), seed=3), num_batches=40)
    masked = batch_dataset(PackedBatchMaker(clips, 2, 48, 24, (1, 2, 2), seed=3,
                                                   mask_rates=MaskRates(image_to_video=0.5, inpaint=0.3)), num_batches=40)
    given_tokens = 0
    for j in range(40):
        a, b = plain[j], masked[j]
        np.testing.assert_array_equal(a.tokens, b.tokens)  # same clips, same order: only the masks differ
        np.testing.assert_array_equal(a.segment_ids, b.segment_ids)
        cond = np.asarray(conditioning_mask(b))
        assert not (cond & ~a.loss_mask).any()  # only sample tokens can be given
        assert (b.t[cond] == 0).all()
        t = np.asarray(training_t(jax.random.PRNGKey(j), b.segment_ids, TrainingTimeConfig(), cond_mask=cond))
        assert (t[cond] == 0).all() and (t[b.loss_mask] > 0).all()
        given_tokens += int(cond.sum())
        for row in range(b.segment_ids.shape[0]):
            for s in np.unique(b.segment_ids[row][b.segment_ids[row] > 0]):
                assert b.loss_mask[row][b.segment_ids[row] == s].any()  # every sample keeps something to learn
    assert given_tokens > 0
