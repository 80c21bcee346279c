"""Wan's text path on the UMT5 encoder, behind the same interface as `text_encoder.TextEncoder`.

Why: Wan2.1 / Wan2.2's DiT is conditioned on UMT5-XXL embeddings made one particular way
(diffusers' `WanPipeline._get_t5_prompt_embeds`): clean the prompt (HTML entities unescaped twice,
runs of whitespace collapsed), tokenize to 512 with `</s>`, encode WITH the attention mask, keep
each caption's first `length` embeddings and zero the rest back to 512 positions. The DiT then
gets no mask and attends to those zeros, so the zeros are part of the model's input.
`UMT5TextEncoder.encode` returns exactly those zero-padded embeddings, with the mask that
sorajax's packing and the caption-embedding cache use to keep only real tokens.

diffusers also runs `ftfy.fix_text` first when ftfy is installed; sorajax does not depend on
ftfy, so mojibake in a prompt is left as it is (ordinary text is unchanged by ftfy).
"""

from __future__ import annotations

import dataclasses
import hashlib
import html
import json
import re
from pathlib import Path
from typing import Any, Sequence

import jax
import jax.numpy as jnp
import numpy as np
from flax import traverse_util

from sorajax.models.umt5 import UMT5Config, UMT5Encoder
from sorajax.models.umt5_tokenizer import UMT5Tokenizer
from sorajax.models.umt5_weights import load_umt5

WAN_MAX_LENGTH = 512
ENCODE_CHUNK = 16  # captions per forward: XXL attention scores are 64 heads x 512 x 512 floats per caption

Params = dict[str, Any]


def clean_prompt(text: str) -> str:
    """Wan's prompt cleaning (without ftfy): unescape HTML twice, collapse whitespace, strip."""
    text = html.unescape(html.unescape(text)).strip()
    return re.sub(r"\s+", " ", text).strip()


@dataclasses.dataclass(eq=False)
class UMT5TextEncoder:
    """Tokenizer plus frozen UMT5 parameters; `encode` gives Wan's zero-padded caption embeddings."""

    config: UMT5Config
    params: Params
    tokenizer: UMT5Tokenizer
    max_length: int = WAN_MAX_LENGTH
    name: str = "umt5"
    chunk: int = ENCODE_CHUNK
    # Wan's DiT reads all max_length positions, the zeros after each caption included (`caption_arrays`).
    padded_context: bool = True

    def __post_init__(self) -> None:
        if self.max_length < 2:
            raise ValueError(f"max_length={self.max_length} must be >= 2 (a token and </s>); Wan uses 512")
        if self.tokenizer.vocab_size > self.config.vocab_size:
            raise ValueError(f"{self.tokenizer.source} has {self.tokenizer.vocab_size} tokens but the encoder's table "
                             f"has {self.config.vocab_size}: use the tokenizer that came with the checkpoint")
        self._model = UMT5Encoder(self.config)
        # Parameters are an argument, not a closure, so they are not baked into the compiled program.
        self._forward = jax.jit(lambda params, ids, mask: self.encode_tokens(ids, mask, params))
        self._fingerprint: str | None = None

    @property
    def dim(self) -> int:
        return self.config.d_model

    @property
    def fingerprint(self) -> str:
        """Hash of architecture, tokenizer, max_length and every weight: what a cache was made with."""
        if self._fingerprint is None:
            digest = hashlib.sha256(json.dumps(dataclasses.asdict(self.config), sort_keys=True).encode())
            digest.update(f"umt5 max_length={self.max_length} tokenizer={Path(self.tokenizer.source).name}".encode())
            for path, leaf in sorted(traverse_util.flatten_dict(self.params).items()):
                digest.update("/".join(path).encode())
                digest.update(memoryview(np.ascontiguousarray(np.asarray(leaf, np.float32))).cast("B"))
            self._fingerprint = digest.hexdigest()[:16]
        return self._fingerprint

    def tokenize(self, texts: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
        """Captions -> (ids int32 [B, L], mask bool [B, L]) after Wan's cleaning; L = max_length."""
        if isinstance(texts, str) or not all(isinstance(text, str) for text in texts):
            raise ValueError("encode/tokenize take a list of strings; wrap a single caption as [caption].")
        return self.tokenizer([clean_prompt(text) for text in texts], self.max_length)

    def encode_tokens(self, input_ids: jax.Array, mask: jax.Array, params: Params | None = None) -> jax.Array:
        """Traceable: [B, L] ids and mask -> [B, L, D] float32, zero beyond each caption's length."""
        frozen = jax.lax.stop_gradient(self.params if params is None else params)
        hidden = self._model.apply({"params": frozen}, input_ids, mask)
        return jnp.where(mask[..., None], hidden, 0.0).astype(jnp.float32)

    def encode(self, texts: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
        """Captions -> (Wan's embeddings float32 [B, L, D], zero-padded; mask bool [B, L]) on the host.

        Chunks of at most `chunk` captions, each padded to a power of two, bound memory and the
        number of compiled shapes.
        """
        ids, mask = self.tokenize(texts)
        count = len(ids)
        embeddings = np.zeros((count, self.max_length, self.dim), np.float32)
        for start in range(0, count, self.chunk):
            stop = min(start + self.chunk, count)
            bucket = 1 << (stop - start - 1).bit_length()
            padded_ids = np.zeros((bucket, self.max_length), np.int32)
            padded_mask = np.zeros((bucket, self.max_length), bool)
            padded_ids[: stop - start], padded_mask[: stop - start] = ids[start:stop], mask[start:stop]
            embeddings[start:stop] = np.asarray(self._forward(self.params, padded_ids, padded_mask))[: stop - start]
        return embeddings, mask


def load_umt5_text_encoder(folder: str | Path, tokenizer_folder: str | Path | None = None,
                           max_length: int = WAN_MAX_LENGTH, dtype: str = "float32") -> UMT5TextEncoder:
    """A Wan text path from a transformers UMT5 folder (e.g. a Wan checkpoint's text_encoder/)."""
    config, params, tokenizer = load_umt5(folder, tokenizer_folder, dtype=dtype)
    params = jax.tree_util.tree_map(jnp.asarray, params)
    return UMT5TextEncoder(config, params, tokenizer, max_length=max_length, name=str(Path(folder)))


def text_dim(folder: str | Path) -> int:
    """The embedding width from config.json alone (no weights read)."""
    path = Path(folder) / "config.json"
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no config.json: point text_encoder.path at the UMT5 text_encoder/ folder")
    return int(json.loads(path.read_text())["d_model"])
