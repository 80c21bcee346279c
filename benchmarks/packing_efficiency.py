"""How much of each row is real tokens: NaViT packing vs one-sample-per-row vs square-crop bucketing.

Why: native-size training only pays off if mixing sizes wastes little compute. This draws a realistic
mix of clips (images and 17/33/65-frame videos at several aspect ratios and resolutions), maps them to
latent shapes the way the VAE does (causal 4x in time: T = 1 + 4k -> 1 + k frames; 8x in space), counts
patch tokens (patch (1, 2, 2) by default) and compares three ways of batching them:

- packed: `sorajax.patches.plan_rows` (first-fit decreasing) over the whole set, and as a streaming
  data pipeline would run it (read clips until they overflow B rows, plus K lookahead clips; emit the
  B fullest rows; carry the rest over).
- naive: one clip per row, padded to L.
- bucketing: every clip centre-cropped to a square and resized to one size, batched by duration, so no
  padding; what it loses is field of view (cropped area) and native resolution, printed as such.

Finally it times `pack` (patchify + copy into rows) on real arrays of one batch.
Run: `python benchmarks/packing_efficiency.py [--clips 2000] [--seq-len 10240 16384 32768]`.
"""

from __future__ import annotations

import argparse
import time

import numpy as np

from sorajax.patches import Sample, num_patches, pack, packing_efficiency, plan_rows

IMAGE_SIZES = [(256, 256), (512, 512), (384, 512), (512, 384), (432, 768), (768, 432), (1024, 1024), (576, 1024)]
VIDEO_SIZES = [(144, 256), (256, 144), (240, 320), (320, 240), (256, 256), (288, 512), (512, 288), (192, 336)]
VIDEO_FRAMES = [17, 33, 65]  # pixel frames; 1 + 4k -> 1 + k latent frames (5, 9, 17)
IMAGE_FRACTION = 0.35


def latent_shape(frames: int, height: int, width: int, channels: int, time_factor: int = 4, space_factor: int = 8):
    """Pixel clip size -> latent shape of the causal VAE (first frame on its own)."""
    return (1 + (frames - 1) // time_factor, height // space_factor, width // space_factor, channels)


def draw_clips(count: int, seed: int) -> list[tuple[int, int, int]]:
    """(frames, height, width) in pixels for a mix of images and videos."""
    rng = np.random.default_rng(seed)
    clips = []
    for _ in range(count):
        if rng.random() < IMAGE_FRACTION:
            clips.append((1, *IMAGE_SIZES[rng.integers(len(IMAGE_SIZES))]))
        else:
            clips.append((int(rng.choice(VIDEO_FRAMES)), *VIDEO_SIZES[rng.integers(len(VIDEO_SIZES))]))
    return clips


def efficiency(rows: list[list[int]], counts: list[int], seq_len: int) -> float:
    return sum(counts[i] for row in rows for i in row) / (len(rows) * seq_len)


def streaming_efficiency(counts, texts, seq_len, text_len, batch_rows, lookahead) -> tuple[float, float]:
    """A pipeline reads clips until they overflow `batch_rows` rows, reads `lookahead` more, plans them all,
    emits the fullest `batch_rows` rows and carries the rest over. The last partial batch is dropped.

    Returns (mean efficiency of the emitted batches, mean clips per batch).
    """
    pending: list[int] = []
    cursor, used, batches, clips = 0, 0, 0, 0

    def plan():
        return plan_rows([counts[i] for i in pending], [texts[i] for i in pending], seq_len, text_len)

    while True:
        while cursor < len(counts) and len(plan()) <= batch_rows:
            pending.append(cursor)
            cursor += 1
        extra = min(lookahead, len(counts) - cursor)
        pending.extend(range(cursor, cursor + extra))
        cursor += extra
        rows = plan()
        if len(rows) <= batch_rows:
            break  # input exhausted before a full batch overflowed
        fullness = [sum(counts[pending[i]] for i in row) for row in rows]
        chosen = sorted(range(len(rows)), key=lambda r: (-fullness[r], r))[:batch_rows]
        taken = {pending[i] for r in chosen for i in rows[r]}
        used += sum(fullness[r] for r in chosen)
        clips += len(taken)
        batches += 1
        pending = [i for i in pending if i not in taken]
    slots = batches * batch_rows * seq_len
    return (used / slots if slots else 0.0), (clips / batches if batches else 0.0)


def bucketing_report(clips, square: int, patch, channels: int) -> tuple[float, float, float]:
    """Square crops at one size: (token efficiency, mean field of view kept, mean tokens per clip)."""
    kept = [min(h, w) ** 2 / (h * w) for _, h, w in clips]
    tokens = [num_patches(latent_shape(f, square, square, channels), patch) for f, _, _ in clips]
    return 1.0, float(np.mean(kept)), float(np.mean(tokens))


def time_pack(clips, seq_len, text_len, patch, channels, text_dim, rows, seed) -> tuple[float, int, float]:
    """Seconds to pack one batch of `rows` rows from real float32 arrays, clips in it, its efficiency."""
    rng = np.random.default_rng(seed)
    counts = [num_patches(latent_shape(*c, channels), patch) for c in clips]
    chosen: list[int] = []
    for i in range(len(counts)):  # take clips in arrival order until they would need more rows
        if len(plan_rows([counts[j] for j in chosen + [i]], [32] * (len(chosen) + 1), seq_len, text_len)) > rows:
            break
        chosen.append(i)
    samples = [
        Sample(
            latent=rng.standard_normal(latent_shape(*clips[i], channels), dtype=np.float32),
            text=rng.standard_normal((32, text_dim), dtype=np.float32),
        )
        for i in chosen
    ]
    start = time.perf_counter()
    batch, layout = pack(samples, seq_len, text_len, patch, rows=rows)
    elapsed = time.perf_counter() - start
    return elapsed, len(samples), packing_efficiency(batch)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clips", type=int, default=2000)
    parser.add_argument("--seq-len", type=int, nargs="+", default=[10240, 16384, 32768])
    parser.add_argument("--text-len", type=int, default=None, help="text row length (default: seq_len // 32)")
    parser.add_argument("--patch", type=int, nargs=3, default=[1, 2, 2])
    parser.add_argument("--channels", type=int, default=16)
    parser.add_argument("--square", type=int, default=256, help="pixel size of the bucketing baseline's square crop")
    parser.add_argument("--batch-rows", type=int, default=8)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    patch = tuple(args.patch)

    clips = draw_clips(args.clips, args.seed)
    counts = [num_patches(latent_shape(*c, args.channels), patch) for c in clips]
    texts = [int(n) for n in np.random.default_rng(args.seed + 1).integers(8, 65, len(clips))]  # caption tokens
    images = sum(f == 1 for f, _, _ in clips)
    print(f"{len(clips)} clips ({images} images, {len(clips) - images} videos), patch {patch}, VAE 4x time / 8x space")
    print(f"tokens per clip: min {min(counts)}, median {int(np.median(counts))}, mean {np.mean(counts):.0f}, max {max(counts)}")

    print(f"\nstream(+K): batches of {args.batch_rows} rows, planned over the clips that overflow them plus K lookahead clips")
    print("L       text_len  packed(all)  text_fill  rows   naive   stream(+0)  stream(+8)  stream(+32)  clips/row")
    for seq_len in args.seq_len:
        if seq_len < max(counts):
            print(f"{seq_len:<7} skipped: the largest clip has {max(counts)} tokens")
            continue
        text_len = args.text_len or seq_len // 32
        start = time.perf_counter()
        plan = plan_rows(counts, texts, seq_len, text_len)
        plan_seconds = time.perf_counter() - start
        packed = efficiency(plan, counts, seq_len)
        naive = float(np.mean(counts)) / seq_len
        text_fill = sum(texts) / (len(plan) * text_len)
        stream = [streaming_efficiency(counts, texts, seq_len, text_len, args.batch_rows, k)[0] for k in (0, 8, 32)]
        print(
            f"{seq_len:<7} {text_len:<9} {packed:<12.3f} {text_fill:<10.3f} {len(plan):<6} {naive:<7.3f} "
            f"{stream[0]:<11.3f} {stream[1]:<11.3f} {stream[2]:<12.3f} {len(clips) / len(plan):.1f}"
            f"   (plan_rows {plan_seconds * 1e3:.0f} ms)"
        )

    token_eff, kept, mean_tokens = bucketing_report(clips, args.square, patch, args.channels)
    print(
        f"\nbucketing ({args.square}x{args.square} square crops, batched by duration): token efficiency {token_eff:.3f}, "
        f"but mean field of view kept {kept:.3f} and every clip resampled to {args.square}px "
        f"({mean_tokens:.0f} tokens/clip vs {np.mean(counts):.0f} native)"
    )

    seq_len = args.seq_len[len(args.seq_len) // 2]
    text_len = args.text_len or seq_len // 32
    seconds, packed_clips, eff = time_pack(clips, seq_len, text_len, patch, args.channels, 384, args.batch_rows, args.seed)
    print(
        f"\npack() of one batch [{args.batch_rows}, {seq_len}] from {packed_clips} real clips (c={args.channels}, D=384): "
        f"{seconds * 1e3:.0f} ms, efficiency {eff:.3f} (clips taken in arrival order, no buffer)"
    )


if __name__ == "__main__":
    main()
