"""Tests for sorajax.patches: patchify/unpatchify, pack/unpack into PackedBatch, row planning, errors."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from sorajax.patches import (
    PackedBatch,
    Sample,
    num_patches,
    pack,
    packing_efficiency,
    patchify,
    per_segment_to_tokens,
    plan_rows,
    segment_positions,
    segment_sizes,
    unpack,
    unpack_text,
    unpatchify,
)

PATCHES = [(1, 2, 2), (2, 2, 2), (1, 1, 1)]
TEXT_DIM = 5


def random_latent(rng, patch, channels=3, max_frames=5):
    pt, ph, pw = patch
    frames = int(rng.integers(1, max_frames + 1))  # not always a multiple of pt: exercises time padding
    height = ph * int(rng.integers(1, 5))
    width = pw * int(rng.integers(1, 5))
    return rng.standard_normal((frames, height, width, channels)).astype(np.float32)


def random_sample(rng, patch, **kwargs):
    latent = random_latent(rng, patch)
    full = int(rng.integers(1, 7))
    text = rng.standard_normal((full, TEXT_DIM)).astype(np.float32)
    mask = np.arange(full) < int(rng.integers(0, full + 1))
    return Sample(latent=latent, text=text, text_mask=mask, **kwargs)


@pytest.mark.parametrize("patch", PATCHES)
def test_patchify_round_trip_random_shapes(patch):
    rng = np.random.default_rng(0)
    for _ in range(20):
        latent = random_latent(rng, patch)
        tokens, positions = patchify(latent, patch)
        n = num_patches(latent.shape, patch)
        assert tokens.shape == (n, np.prod(patch) * latent.shape[-1])
        assert positions.shape == (n, 3) and positions.dtype == np.int32
        np.testing.assert_array_equal(unpatchify(tokens, latent.shape, patch), latent)


def test_token_values_match_their_latent_patch_and_position():
    rng = np.random.default_rng(1)
    latent = rng.standard_normal((4, 6, 8, 3)).astype(np.float32)
    patch = (2, 2, 2)
    tokens, positions = patchify(latent, patch)
    gt, gh, gw = 2, 3, 4
    # t-major, then h, then w
    expected_positions = np.array([(a, b, c) for a in range(gt) for b in range(gh) for c in range(gw)])
    np.testing.assert_array_equal(positions, expected_positions)
    index = 1 * gh * gw + 2 * gw + 3  # grid (1, 2, 3)
    np.testing.assert_array_equal(positions[index], [1, 2, 3])
    block = latent[2:4, 4:6, 6:8, :]  # (pt ph pw c) flattening, channel last
    np.testing.assert_array_equal(tokens[index], block.reshape(-1))
    np.testing.assert_array_equal(tokens[index, :3], latent[2, 4, 6])
    np.testing.assert_array_equal(tokens[index, 3:6], latent[2, 4, 7])


def test_image_with_temporal_patch_repeats_last_frame_and_crops_back():
    latent = np.arange(1 * 2 * 2 * 2, dtype=np.float32).reshape(1, 2, 2, 2)
    tokens, positions = patchify(latent, (2, 2, 2))
    assert tokens.shape == (1, 16)
    np.testing.assert_array_equal(tokens[0, :8], tokens[0, 8:])  # padded frame = copy of the real one
    np.testing.assert_array_equal(positions, [[0, 0, 0]])
    restored = unpatchify(tokens, latent.shape, (2, 2, 2))
    assert restored.shape == (1, 2, 2, 2)
    np.testing.assert_array_equal(restored, latent)


def test_patchify_works_on_jax_arrays_under_jit():
    latent = jnp.arange(3 * 4 * 4 * 2, dtype=jnp.float32).reshape(3, 4, 4, 2)
    tokens = jax.jit(lambda x: patchify(x, (2, 2, 2))[0])(latent)
    np.testing.assert_array_equal(np.asarray(tokens), patchify(np.asarray(latent), (2, 2, 2))[0])


def test_non_divisible_shape_names_the_fix():
    with pytest.raises(ValueError, match=r"width 7 is not a multiple of the patch width 2.*e\.g\. 6"):
        patchify(np.zeros((1, 4, 7, 3), np.float32), (1, 2, 2))
    with pytest.raises(ValueError, match="height 3"):
        num_patches((2, 3, 4, 1), (1, 2, 2))
    with pytest.raises(ValueError, match="three positive ints"):
        patchify(np.zeros((1, 4, 4, 3), np.float32), (0, 2, 2))


@pytest.mark.parametrize("patch", PATCHES)
def test_pack_unpack_round_trip_random_mixes(patch):
    rng = np.random.default_rng(2)
    seq_len, text_len = 80, 16  # the largest random latent (5 frames of 4x4 patches) has 80 tokens
    multi_segment_rows = 0
    for _ in range(17):
        samples = [random_sample(rng, patch) for _ in range(int(rng.integers(1, 9)))]
        batch, layout = pack(samples, seq_len, text_len, patch)
        restored = unpack(batch.tokens, layout)
        assert len(restored) == len(samples)
        for sample, latent in zip(samples, restored):
            assert latent.shape == sample.latent.shape
            np.testing.assert_array_equal(latent, sample.latent)
        for sample, text in zip(samples, unpack_text(batch.text, layout)):
            np.testing.assert_array_equal(text, sample.text[sample.text_mask])
        check_row_structure(batch, samples, layout, patch)
        multi_segment_rows += sum(len(layout.row_segments(r)) > 1 for r in range(layout.num_rows))
    assert multi_segment_rows > 5  # the trials really share rows between samples


def check_row_structure(batch, samples, layout, patch):
    """Segments contiguous from the row start, 1..n; padding zero everywhere; positions = sample grid."""
    for row in range(layout.num_rows):
        segments = layout.row_segments(row)
        ids = batch.segment_ids[row]
        text_ids = batch.text_segment_ids[row]
        expected = np.concatenate([np.full(s.num_tokens, s.segment_id) for s in segments] + [np.zeros(0)])
        used = len(expected)
        np.testing.assert_array_equal(ids[:used], expected)
        assert not ids[used:].any() and not batch.tokens[row, used:].any() and not batch.loss_mask[row, used:].any()
        assert not batch.t[row, used:].any() and not batch.positions[row, used:].any()
        assert [s.segment_id for s in segments] == list(range(1, len(segments) + 1))
        text_expected = np.concatenate([np.full(s.num_text, s.segment_id) for s in segments] + [np.zeros(0)])
        np.testing.assert_array_equal(text_ids[: len(text_expected)], text_expected)
        assert not text_ids[len(text_expected) :].any() and not batch.text[row, len(text_expected) :].any()
        for s in segments:
            span = slice(s.token_start, s.token_start + s.num_tokens)
            _, positions = patchify(samples[s.sample_index].latent, patch)
            np.testing.assert_array_equal(batch.positions[row, span], positions)


def test_packed_batch_dtypes_and_shapes_and_pytree():
    rng = np.random.default_rng(3)
    samples = [random_sample(rng, (1, 2, 2)) for _ in range(4)]
    batch, layout = pack(samples, 48, 12, (1, 2, 2), rows=3)
    assert batch.tokens.shape == (3, 48, 12) and batch.tokens.dtype == np.float32
    assert batch.positions.shape == (3, 48, 3) and batch.positions.dtype == np.int32
    assert batch.segment_ids.dtype == np.int32 and batch.text_segment_ids.dtype == np.int32
    assert batch.t.dtype == np.float32 and batch.loss_mask.dtype == bool
    assert batch.text.shape == (3, 12, TEXT_DIM)
    assert len(jax.tree_util.tree_leaves(batch)) == 7
    on_device = jax.device_put(batch)
    assert isinstance(on_device, PackedBatch) and isinstance(on_device.tokens, jax.Array)
    assert layout.num_rows == 3


def test_conditioning_tokens_are_clean_and_unmasked():
    latent = np.ones((3, 4, 4, 2), np.float32)
    cond = np.zeros((3, 4, 4), bool)
    cond[0] = True  # first frame given (image-to-video)
    cond[2, :2, :3] = True  # partial patch in frame 2: patch (0, 0) fully given, patch (0, 1) only half
    text = np.ones((2, TEXT_DIM), np.float32)
    batch, layout = pack([Sample(latent, text, cond_mask=cond)], 64, 4, (1, 2, 2))
    segment = layout.segments[0]
    assert segment.num_tokens == 12
    expected_cond = np.zeros(12, bool)
    expected_cond[:4] = True  # frame 0: all four patches
    expected_cond[8] = True  # frame 2, grid (0, 0)
    np.testing.assert_array_equal(batch.loss_mask[0, :12], ~expected_cond)
    np.testing.assert_array_equal(batch.t[0, :12], np.where(expected_cond, 0.0, 1.0))
    # frame masks broadcast over space; an explicit t is kept on generated tokens only
    batch, _ = pack([Sample(latent, text, cond_mask=np.array([False, False, True]), t=0.3)], 64, 4, (1, 2, 2))
    np.testing.assert_allclose(batch.t[0, :12], [0.3] * 8 + [0.0] * 4)
    np.testing.assert_array_equal(batch.loss_mask[0, :12], [True] * 8 + [False] * 4)


def test_per_token_noise_levels_and_temporal_padding_of_cond_mask():
    latent = np.ones((3, 2, 2, 1), np.float32)
    text = np.ones((1, TEXT_DIM), np.float32)
    # pt=2: frames (0,1) and (2, pad=copy of 2); frame 2 given -> the second token is conditioning
    sample = Sample(latent, text, cond_mask=np.array([False, False, True]), t=np.array([0.25, 0.75]))
    batch, _ = pack([sample], 4, 2, (2, 2, 2))
    np.testing.assert_allclose(batch.t[0], [0.25, 0.0, 0.0, 0.0])
    np.testing.assert_array_equal(batch.loss_mask[0], [True, False, False, False])
    with pytest.raises(ValueError, match=r"one value per token, shape \(2,\)"):
        pack([Sample(latent, text, t=np.zeros(3))], 4, 2, (2, 2, 2))
    with pytest.raises(ValueError, match="cond_mask has shape"):
        pack([Sample(latent, text, cond_mask=np.zeros((3, 2), bool))], 4, 2, (2, 2, 2))


def test_first_fit_decreasing_plan():
    # sizes 5,4,3,3,2,2,1 into rows of 8: FFD gives [5,3], [4,3,1], [2,2]
    plan = plan_rows([5, 4, 3, 3, 2, 2, 1], [0] * 7, seq_len=8, text_len=0)
    assert plan == [[0, 2], [1, 3, 6], [4, 5]]
    # text fullness also closes a row
    assert plan_rows([1, 1, 1], [3, 3, 3], seq_len=8, text_len=4) == [[0], [1], [2]]
    assert plan_rows([2], [1], 4, 4, rows=3) == [[0], [], []]


def test_errors_name_the_problem_and_the_fix():
    rng = np.random.default_rng(4)
    big = Sample(np.zeros((2, 8, 8, 1), np.float32), np.zeros((2, TEXT_DIM), np.float32))  # 32 tokens
    with pytest.raises(ValueError, match=r"sample 0 .* has 32 tokens but seq_len is 16: raise seq_len to at least 32"):
        pack([big], 16, 4)
    with pytest.raises(ValueError, match=r"2 text tokens but text_len is 1: raise text_len"):
        pack([big], 32, 1)
    with pytest.raises(ValueError, match=r"need 2 rows .* but rows=1: raise seq_len or rows, or lower the resolution"):
        pack([big, big], 32, 4, rows=1)
    with pytest.raises(ValueError, match="sample 1: latent width 5"):
        pack([big, Sample(np.zeros((1, 4, 5, 1), np.float32), np.zeros((1, TEXT_DIM), np.float32))], 32, 4)
    with pytest.raises(ValueError, match="token widths"):
        pack([big, Sample(np.zeros((1, 4, 4, 2), np.float32), np.zeros((1, TEXT_DIM), np.float32))], 64, 4)
    with pytest.raises(ValueError, match="at least one sample"):
        pack([], 16, 4)
    batch, layout = pack([random_sample(rng, (1, 2, 2))], 64, 8)
    with pytest.raises(ValueError, match="do not match the layout"):
        unpack(batch.tokens[:, :32], layout)


def test_pack_is_deterministic():
    rng = np.random.default_rng(5)
    samples = [random_sample(rng, (1, 2, 2)) for _ in range(12)]
    first, layout_a = pack(samples, 40, 16)
    second, layout_b = pack(samples, 40, 16)
    assert layout_a == layout_b
    for a, b in zip(jax.tree_util.tree_leaves(first), jax.tree_util.tree_leaves(second)):
        np.testing.assert_array_equal(a, b)


def test_packing_efficiency_from_batch_and_layout():
    samples = [
        Sample(np.zeros((1, 4, 4, 1), np.float32), np.zeros((1, TEXT_DIM), np.float32)),  # 4 tokens
        Sample(np.zeros((2, 4, 4, 1), np.float32), np.zeros((1, TEXT_DIM), np.float32)),  # 8 tokens
    ]
    batch, layout = pack(samples, 10, 2, rows=2)
    assert packing_efficiency(batch) == pytest.approx(12 / 20)
    assert packing_efficiency(layout) == pytest.approx(12 / 20)
    assert layout.max_segments == 1


def test_segment_helpers_on_device():
    segment_ids = jnp.array([[1, 1, 1, 2, 2, 0, 0], [1, 2, 2, 2, 3, 3, 0]], jnp.int32)
    positions = jax.jit(segment_positions)(segment_ids)
    np.testing.assert_array_equal(positions, [[0, 1, 2, 0, 1, 0, 1], [0, 0, 1, 2, 0, 1, 0]])
    sizes = segment_sizes(segment_ids, 3)
    np.testing.assert_array_equal(sizes, [[3, 2, 0], [1, 3, 2]])
    spread = per_segment_to_tokens(jnp.array([[0.1, 0.2, 0.9], [0.4, 0.5, 0.6]]), segment_ids)
    np.testing.assert_allclose(spread, [[0.1, 0.1, 0.1, 0.2, 0.2, 0, 0], [0.4, 0.5, 0.5, 0.5, 0.6, 0.6, 0]])
