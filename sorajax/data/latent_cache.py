"""A cached set of clips as autoencoder latents with caption embeddings, kept in the run directory.

The frozen autoencoder and text encoder cost more per clip than a tiny DiT step on a CPU, so the
DiT trainer encodes a fixed set of clips once: normalised latents `[t, h, w, c]` at each clip's
training size, and its caption's token embeddings `[n, D]` (real tokens only). The set is saved
in the run (`latents_<split>.npz`), keyed by everything that shapes it (the autoencoder step and
config, the text encoder, the source and its records, the sizing), and rebuilt only when one of
them changes. Writes are atomic: a killed build never leaves a half-written cache under the real name.
"""

from __future__ import annotations

import dataclasses
import hashlib
import io
import json
from typing import Any, Callable

import jax
import numpy as np

from sorajax.models.vae import pixels_from_uint8
from sorajax.runs.paths import PathLike, run_path, write_bytes_atomic


@dataclasses.dataclass
class LatentClipSet:
    """Per clip: normalised latent, caption embeddings, caption, and the record's key in its source."""

    latents: list[np.ndarray]
    texts: list[np.ndarray]
    captions: list[str]
    keys: list[str]
    key: str  # what the set was made from (see `cache_key`)
    skipped: list[int] = dataclasses.field(default_factory=list)  # records left out: they no longer decoded

    def __len__(self) -> int:
        return len(self.latents)

    def save(self, path: PathLike) -> None:
        arrays = {f"latent_{i}": a for i, a in enumerate(self.latents)}
        arrays.update({f"text_{i}": a for i, a in enumerate(self.texts)})
        meta = json.dumps({"key": self.key, "captions": self.captions, "keys": self.keys, "skipped": self.skipped})
        buffer = io.BytesIO()
        np.savez(buffer, meta=np.array(meta), **arrays)
        write_bytes_atomic(run_path(path), buffer.getvalue())

    @classmethod
    def load(cls, path: PathLike) -> "LatentClipSet":
        with np.load(io.BytesIO(run_path(path).read_bytes())) as data:
            meta = json.loads(str(data["meta"]))
            n = len(meta["captions"])
            return cls(latents=[data[f"latent_{i}"] for i in range(n)], texts=[data[f"text_{i}"] for i in range(n)],
                       captions=meta["captions"], keys=meta.get("keys", [""] * n), key=meta["key"],
                       skipped=meta.get("skipped", []))


def cache_key(**parts: Any) -> str:
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()[:16]


def make_latent_encoder(vae: Any, variables: Any) -> Callable[[np.ndarray], np.ndarray]:
    """uint8 video batch [B, T, H, W, 3] -> normalised posterior-mean latents, jitted once per clip size."""

    @jax.jit
    def encode(video_uint8: jax.Array) -> jax.Array:
        return vae.apply(variables, pixels_from_uint8(video_uint8), method="encode_normalized")

    return lambda video: np.asarray(jax.device_get(encode(video)))


def load_or_build(path: PathLike, key: str, build: Callable[[], LatentClipSet]) -> LatentClipSet:
    """Reuses the cache at `path` when its key matches, else builds and saves a new one."""
    path = run_path(path)
    if path.exists():
        try:
            cached = LatentClipSet.load(path)
        except (OSError, ValueError, KeyError) as error:
            print(f"latent cache {path} is unreadable ({type(error).__name__}: {error}): rebuilding")
        else:
            if cached.key == key:
                return cached
            print(f"latent cache {path} is stale (autoencoder, text encoder, data or sizing changed): rebuilding")
    built = build()
    built.save(path)
    return built
