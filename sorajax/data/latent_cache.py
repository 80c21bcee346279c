"""A cached set of world clips as autoencoder latents with caption embeddings.

The frozen autoencoder and the frozen text encoder cost more per clip than a
tiny DiT step on a CPU, so the DiT trainer encodes a fixed set of clips once:
normalised latents `[t, h, w, c]` at each clip's native size, its descriptive
caption's token embeddings `[n, D]` (real tokens only), and its facts. The set is
saved next to the run (`latents.npz`), keyed by the autoencoder checkpoint step,
the text encoder and the world settings, and rebuilt only when one of them changes.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
from typing import Any, Callable, Sequence

import jax
import jax.numpy as jnp
import numpy as np
from tqdm.auto import tqdm

from sorajax.data.world import WorldOptions, generate_clip
from sorajax.data.world_batches import SPLIT_SEED_OFFSETS
from sorajax.models.text_encoder import TextEmbeddingCache, TextEncoder


@dataclasses.dataclass
class LatentClipSet:
    """Per clip: normalised latent, caption embeddings, caption, terse caption, facts JSON."""

    latents: list[np.ndarray]
    texts: list[np.ndarray]
    captions: list[str]
    terse_captions: list[str]
    facts: list[str]
    key: str

    def __len__(self) -> int:
        return len(self.latents)

    def save(self, path: str) -> None:
        arrays = {f"latent_{i}": a for i, a in enumerate(self.latents)}
        arrays.update({f"text_{i}": a for i, a in enumerate(self.texts)})
        meta = json.dumps({"key": self.key, "captions": self.captions, "terse": self.terse_captions, "facts": self.facts})
        tmp = path + ".tmp.npz"
        np.savez(tmp, meta=np.array(meta), **arrays)
        os.replace(tmp, path)  # never leave a half-written cache under the real name.

    @classmethod
    def load(cls, path: str) -> "LatentClipSet":
        with np.load(path) as data:
            meta = json.loads(str(data["meta"]))
            n = len(meta["captions"])
            return cls(
                latents=[data[f"latent_{i}"] for i in range(n)],
                texts=[data[f"text_{i}"] for i in range(n)],
                captions=meta["captions"], terse_captions=meta["terse"], facts=meta["facts"], key=meta["key"],
            )


def cache_key(**parts: Any) -> str:
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()[:16]


def clip_sizes(sizes: Sequence[Sequence[int]], count: int, seed: int) -> list[tuple[int, int, int]]:
    """The (frames, height, width) of clip i, drawn uniformly from `sizes`, deterministic in seed."""
    rng = np.random.default_rng([seed, 17])
    picks = rng.integers(len(sizes), size=count)
    return [tuple(int(v) for v in sizes[k]) for k in picks]


def encode_world_clips(
    encode_video: Callable[[np.ndarray], np.ndarray],
    text_encoder: TextEncoder,
    sizes: Sequence[Sequence[int]],
    count: int,
    seed: int,
    options: WorldOptions,
    split: str = "train",
    batch_size: int = 16,
    key: str = "",
) -> LatentClipSet:
    """Renders `count` world clips and encodes them; `encode_video(uint8 [B,T,H,W,3]) -> [B,t,h,w,c]`."""
    seed = seed + SPLIT_SEED_OFFSETS[split]
    per_clip = clip_sizes(sizes, count, seed)
    latents: list[np.ndarray | None] = [None] * count
    # Only the descriptions are kept per clip, not the rendered pixels (~0.1 MB each at 9x64x64).
    captions, terse, facts = [""] * count, [""] * count, [""] * count
    by_size: dict[tuple[int, int, int], list[int]] = {}
    for i, size in enumerate(per_clip):
        by_size.setdefault(size, []).append(i)
    with tqdm(total=count, desc="encoding clips", dynamic_ncols=True) as bar:
        for (frames, height, width), indices in sorted(by_size.items()):
            for start in range(0, len(indices), batch_size):
                chunk = indices[start : start + batch_size]
                rendered = [generate_clip(seed, frames, height, width, options, index=i) for i in chunk]
                encoded = np.asarray(encode_video(np.stack([c.video for c in rendered])), np.float32)
                for i, clip, latent in zip(chunk, rendered, encoded):
                    latents[i] = latent
                    captions[i], terse[i], facts[i] = clip.caption, clip.caption_terse, clip.facts.to_json()
                bar.update(len(chunk))
    embeddings, masks = TextEmbeddingCache(text_encoder).encode(captions)
    texts = [np.asarray(e[m], np.float32) for e, m in zip(embeddings, masks)]
    return LatentClipSet(
        latents=latents, texts=texts, captions=captions, terse_captions=terse, facts=facts, key=key,
    )


def make_latent_encoder(vae: Any, variables: Any) -> Callable[[np.ndarray], np.ndarray]:
    """uint8 video batch -> normalised posterior-mean latents, jitted once per clip size."""

    @jax.jit
    def encode(video_uint8: jax.Array) -> jax.Array:
        video = video_uint8.astype(jnp.float32) / 127.5 - 1.0
        return vae.apply(variables, video, method="encode_normalized")

    return lambda video: np.asarray(jax.device_get(encode(video)))


def load_or_build(path: str, key: str, build: Callable[[], LatentClipSet]) -> LatentClipSet:
    """Reuses the cache at `path` when its key matches, else builds and saves a new one."""
    if os.path.exists(path):
        cached = LatentClipSet.load(path)
        if cached.key == key:
            return cached
        print(f"latent cache {path} is stale (autoencoder, text encoder or world changed): rebuilding")
    built = build()
    built.save(path)
    return built
