"""UMT5 (Wan's text encoder): tokenizer, encoder and Wan's padded embeddings against transformers/diffusers.

References: tests/fixtures/umt5_tiny/ (a tiny tokenizer in both formats and a random-weight
UMT5EncoderModel saved by transformers), tests/fixtures/umt5_tiny.npz (ids, hidden states, Wan
embeddings) and tests/fixtures/umt5_xxl_keys.txt, all written by tools/make_umt5_fixture.py with
PyTorch outside this environment. Nothing here imports torch.
"""

from __future__ import annotations

import dataclasses
import json
import shutil
from pathlib import Path

import flax.linen as nn
import jax
import numpy as np
import pytest
import safetensors.numpy

from sorajax.data.clip_pipeline import _caption_embeddings, caption_token_counts
from sorajax.models import pretrained
from sorajax.models.build import TextEncoderConfig, build_text_encoder
from sorajax.models.pretrained import CheckpointError
from sorajax.models.text_encoder import TextEmbeddingCache
from sorajax.models.umt5 import UMT5Config, UMT5Encoder, abstract_params, relative_buckets
from sorajax.models.umt5_text import UMT5TextEncoder, clean_prompt
from sorajax.models.umt5_tokenizer import UMT5Tokenizer
from sorajax.models.umt5_weights import key_map, load_umt5

FIXTURES = Path(__file__).parent / "fixtures"
TINY = FIXTURES / "umt5_tiny"
EOS, PAD = 1, 0


@pytest.fixture(scope="module")
def ref() -> dict[str, np.ndarray]:
    with np.load(FIXTURES / "umt5_tiny.npz") as data:
        return {key: data[key] for key in data.files}


@pytest.fixture(scope="module")
def loaded():
    return load_umt5(TINY)


@pytest.fixture(scope="module")
def wan(ref) -> UMT5TextEncoder:
    return build_text_encoder(TextEncoderConfig(kind="umt5", path=str(TINY), max_length=int(ref["max_length"])))


@pytest.fixture(scope="module")
def weights() -> dict[str, np.ndarray]:
    return safetensors.numpy.load_file(str(TINY / "model.safetensors"))


@pytest.mark.parametrize("kept", ["tokenizer.json", "spiece.model"])
def test_tokenizer_matches_transformers(ref, tmp_path, kept):
    shutil.copy(TINY / kept, tmp_path / kept)
    tokenizer = UMT5Tokenizer.from_folder(tmp_path)
    assert tokenizer.source.endswith(kept) and (tokenizer.eos_id, tokenizer.pad_id) == (EOS, PAD)
    ids, mask = tokenizer(list(ref["cleaned"]), int(ref["max_length"]))
    np.testing.assert_array_equal(ids, ref["input_ids"])
    np.testing.assert_array_equal(mask, ref["attention_mask"].astype(bool))
    assert mask.sum(axis=1).tolist() == [9, 13, 24]
    assert ids[2, -1] == EOS and ids[0, 8] == EOS and (ids[0, 9:] == PAD).all()  # truncation keeps </s>
    np.testing.assert_array_equal(tokenizer(list(ref["corpus"]), 64)[0], ref["corpus_ids"])
    np.testing.assert_array_equal(tokenizer(list(ref["probes"]), 32)[0], ref["probe_ids"])
    # transformers gives the same ids from either file (so either reference would do).
    np.testing.assert_array_equal(ref["spiece_input_ids"], ref["input_ids"])
    np.testing.assert_array_equal(ref["probe_spiece_ids"], ref["probe_ids"])


def test_relative_buckets_match_reference_at_xxl_size(ref):
    buckets = relative_buckets(512, 32, 128)
    np.testing.assert_array_equal(buckets, ref["xxl_buckets_512"])
    assert buckets[0, 1] == 17 and buckets[1, 0] == 1 and buckets[0, 511] == 31 and buckets[511, 0] == 15


def test_encoder_matches_transformers(ref, loaded):
    config, params, _ = loaded
    assert (config.d_model, config.num_layers, config.num_heads, config.max_distance) == (32, 3, 4, 20)
    hidden = np.asarray(UMT5Encoder(config).apply({"params": params}, ref["input_ids"], ref["attention_mask"]))
    error = np.abs(hidden - ref["last_hidden_state"])
    print(f"UMT5 float32 max error {error.max():.2e} (padded rows and positions included)")
    assert error.max() < 1e-4 and np.abs(ref["last_hidden_state"]).max() > 1.0
    bf16 = dataclasses.replace(config, dtype="bfloat16")
    hidden16 = np.asarray(UMT5Encoder(bf16).apply({"params": params}, ref["input_ids"], ref["attention_mask"]))
    assert hidden16.dtype == np.float32 and 1e-4 < np.abs(hidden16 - ref["last_hidden_state"]).max() < 0.1


def test_wan_padded_embeddings_match_diffusers(ref, wan):
    embeddings, mask = wan.encode(list(ref["captions"]))  # raw captions: the text path cleans them
    assert embeddings.shape == (3, 24, 32) and wan.dim == 32
    error = np.abs(embeddings - ref["wan_embeds"]).max()
    assert error < 1e-4, error
    lengths = mask.sum(axis=1)
    for row, length in enumerate(lengths):
        assert (embeddings[row, length:] == 0).all() and (ref["wan_embeds"][row, length:] == 0).all()
        assert np.abs(embeddings[row, :length]).min(axis=-1).max() > 0
    np.testing.assert_array_equal(wan.tokenize(list(ref["captions"]))[0], ref["input_ids"])
    assert clean_prompt("  A cat &amp;amp;\n\t a ball.  ") == "A cat & a ball."


def test_padding_length_is_a_parameter(ref, loaded):
    config, params, tokenizer = loaded
    longer = UMT5TextEncoder(config, params, tokenizer, max_length=int(ref["long_length"]))
    embeddings, mask = longer.encode(list(ref["captions"]))
    assert embeddings.shape == (3, 40, 32) and mask.sum(axis=1).tolist() == [9, 13, 40]
    assert np.abs(embeddings - ref["wan_embeds_long"]).max() < 1e-4
    with pytest.raises(ValueError, match="max_length=1 must be >= 2"):
        UMT5TextEncoder(config, params, tokenizer, max_length=1)


def test_caption_cache_and_packing_inputs_with_umt5_kind(ref, wan, tmp_path):
    captions = [str(c) for c in ref["captions"]]
    cache = TextEmbeddingCache(wan)
    texts = _caption_embeddings(cache, captions + captions[:1])
    # Wan's DiT reads every position, the zeros after each caption's 9 / 13 / 24 tokens included.
    length = ref["wan_embeds"].shape[1]
    assert [t.shape for t in texts] == [(length, 32)] * 4
    assert cache.misses == 3 and cache.hits == 1 and cache.encoder_calls == 1
    np.testing.assert_allclose(texts[1], ref["wan_embeds"][1], atol=1e-4)
    assert np.all(texts[1][13:] == 0) and np.all(np.abs(texts[1][:13]).sum(-1) > 0)
    assert caption_token_counts(wan, captions).tolist() == [length] * 3
    cache.save(tmp_path / "captions.safetensors")
    again = TextEmbeddingCache.load(tmp_path / "captions.safetensors", wan)
    embeddings, _ = again.encode(captions)
    assert again.encoder_calls == 0 and np.abs(embeddings - ref["wan_embeds"]).max() < 1e-4


def test_xxl_keys_cover_every_parameter():
    shapes = pretrained.read_key_shapes(FIXTURES / "umt5_xxl_keys.txt")
    config = UMT5Config.preset("umt5-xxl")
    abstract = abstract_params(config)
    assert len(shapes) == 243
    pretrained.check_coverage(shapes, key_map(config), abstract, "UMT5-XXL")
    unique = sum(int(np.prod(s)) for k, s in shapes.items() if k != "encoder.embed_tokens.weight")
    params = sum(int(np.prod(leaf.value.shape)) for leaf in jax.tree_util.tree_leaves(
        abstract, is_leaf=lambda x: isinstance(x, nn.Partitioned)))
    assert unique == params and 5.6e9 < params < 5.8e9
    # The tied table: either name alone fills it; neither leaves it unfilled.
    for dropped in ("encoder.embed_tokens.weight", "shared.weight"):
        pretrained.check_coverage({k: v for k, v in shapes.items() if k != dropped}, key_map(config), abstract, "x")
    untied = {k: v for k, v in shapes.items() if k not in ("shared.weight", "encoder.embed_tokens.weight")}
    with pytest.raises(CheckpointError, match="parameter token_embedding is filled by no checkpoint key"):
        pretrained.check_coverage(untied, key_map(config), abstract, "UMT5-XXL")
    wrong = {**shapes, "encoder.block.3.layer.1.DenseReluDense.wi_1.weight": (10240, 4095)}
    with pytest.raises(CheckpointError, match=r"'encoder.block.3.layer.1.DenseReluDense.wi_1.weight' has shape"):
        pretrained.check_coverage(wrong, key_map(config), abstract, "UMT5-XXL")


def test_parameters_carry_logical_axes():
    specs = nn.get_partition_spec(abstract_params(UMT5Config.preset("umt5-xxl", num_layers=1)))
    layer = specs["layer_0"]
    assert tuple(specs["token_embedding"]) == ("vocab", "embed")
    assert tuple(layer["attention"]["q"]) == ("embed", "heads", "kv")
    assert tuple(layer["attention"]["o"]) == ("heads", "kv", "embed")
    assert tuple(layer["attention"]["relative_bias"]) == ("relpos_buckets", "heads")
    assert tuple(layer["mlp"]["gate"]) == ("embed", "mlp") and tuple(layer["mlp"]["down"]) == ("mlp", "embed")
    assert tuple(layer["mlp_norm"]["scale"]) == ("embed",)


def test_config_validation():
    assert UMT5Config.preset("umt5-xxl").d_ff == 10240
    with pytest.raises(ValueError, match="unknown UMT5 preset 'umt5-xl'"):
        UMT5Config.preset("umt5-xl")
    with pytest.raises(ValueError, match="num_heads=0 must be a positive integer"):
        UMT5Config.preset("umt5-xxl", num_heads=0)
    with pytest.raises(ValueError, match="dtype='float16'"):
        UMT5Config.preset("umt5-xxl", dtype="float16")
    with pytest.raises(ValueError, match="needs text_encoder.path"):
        TextEncoderConfig(kind="umt5")
    with pytest.raises(ValueError, match="apply to kind='umt5' only"):
        TextEncoderConfig(kind="minilm", bfloat16=True)
    assert TextEncoderConfig(kind="umt5", path=str(TINY)).dim == 32


def _write_folder(folder: Path, tensors: dict[str, np.ndarray], architecture: str = "UMT5EncoderModel",
                  tokenizer: bool = True) -> Path:
    folder.mkdir(parents=True)
    config = json.loads((TINY / "config.json").read_text())
    (folder / "config.json").write_text(json.dumps({**config, "architectures": [architecture]}))
    safetensors.numpy.save_file(tensors, str(folder / "model.safetensors"))
    if tokenizer:
        shutil.copy(TINY / "tokenizer.json", folder / "tokenizer.json")
    return folder


def test_loads_encoder_half_of_a_whole_model_and_sibling_tokenizer(ref, weights, loaded, tmp_path):
    whole = {**weights, "encoder.embed_tokens.weight": weights["shared.weight"],
             "decoder.final_layer_norm.weight": np.ones(32, np.float32), "lm_head.weight": weights["shared.weight"]}
    folder = _write_folder(tmp_path / "text_encoder", whole, "UMT5ForConditionalGeneration", tokenizer=False)
    (tmp_path / "tokenizer").mkdir()
    shutil.copy(TINY / "spiece.model", tmp_path / "tokenizer" / "spiece.model")
    config, params, tokenizer = load_umt5(folder)
    assert tokenizer.source == str(tmp_path / "tokenizer" / "spiece.model")
    assert jax.tree_util.tree_all(jax.tree_util.tree_map(np.array_equal, params, loaded[1]))


def test_bad_folders_are_refused_in_one_line(weights, tmp_path):
    def refused(folder: Path, pattern: str) -> str:
        with pytest.raises(CheckpointError, match=pattern) as error:
            load_umt5(folder)
        assert "\n" not in str(error.value)
        return str(error.value)

    other = _write_folder(tmp_path / "other", weights, "MT5EncoderModel")
    refused(other, r"other/config.json: this folder holds MT5EncoderModel, not UMT5 encoder .*point at the matching")

    sharded = tmp_path / "sharded"
    _write_folder(sharded, {k: v for k, v in weights.items() if "block.2" not in k})
    (sharded / "model.safetensors").rename(sharded / "model-00001-of-00002.safetensors")
    index = {k: "model-00001-of-00002.safetensors" for k in weights if "block.2" not in k}
    index.update({k: "model-00002-of-00002.safetensors" for k in weights if "block.2" in k})
    (sharded / "model.safetensors.index.json").write_text(json.dumps({"weight_map": index}))
    refused(sharded, r"model-00002-of-00002.safetensors: shard listed in model.safetensors.index.json .*download")

    key = "encoder.block.1.layer.1.DenseReluDense.wi_0.weight"
    bad_shape = _write_folder(tmp_path / "shape", {**weights, key: np.zeros((65, 32), np.float32)})
    refused(bad_shape, rf"shape/model.safetensors: key '{key}' has shape \(65, 32\).*use the config stored")

    unknown = _write_folder(tmp_path / "unknown", {**weights, "encoder.block.0.layer.0.SelfAttention.gate.weight":
                                                   np.zeros((32, 32), np.float32)})
    refused(unknown, r"unknown/model.safetensors: key 'encoder.block.0.layer.0.SelfAttention.gate.weight' is not part")

    no_embedding = _write_folder(tmp_path / "noemb", {k: v for k, v in weights.items() if k != "shared.weight"})
    refused(no_embedding, r"noemb: no token embedding \(shared.weight or encoder.embed_tokens.weight\)")

    untokenized = _write_folder(tmp_path / "untokenized", weights, tokenizer=False)
    message = refused(untokenized, r"untokenized or .*/tokenizer: no tokenizer.json or spiece.model")
    assert "tokenizer_folder=" in message

    missing = tmp_path / "missing"
    missing.mkdir()
    refused(missing, r"missing/config.json: no config.json")
