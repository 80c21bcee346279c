"""Real-data pipeline throughput and packing efficiency on a mixed-size TFDS dataset.

Why: native-size training is only worth it if the data path keeps up and packing wastes little.
This writes a folder of world clips as real files (mp4 videos of 9/17/33 frames and PNG images;
landscape, portrait and square; several resolutions), builds it with `sorajax.build_dataset`, then:

1. throughput of the grain pipeline (decode planned frames -> crop -> resize -> PixelBatch) with
   0 and N worker processes: batches/s, samples/s and latent tokens/s (tokens the autoencoder +
   patching will produce; encoding itself is the accelerator's job and is not timed here);
2. packing efficiency (share of token slots holding real tokens) of NaViT packing at native size
   versus fixed-size bucketing (every clip square-cropped to one size, rows filled with
   whole clips of one duration) and one clip per row; bucketing also loses the cropped pixels.

Run: `python benchmarks/data_pipeline.py [--clips 64] [--workers 2] [--batches 12]`.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np

from sorajax.data.clip_pipeline import (
    ClipPlanner,
    PackingConfig,
    PixelBatchMaker,
    caption_token_counts,
    packing_efficiency_of,
)
from sorajax.data.clip_sizing import SizingConfig, latent_token_count
from sorajax.data.iterators import batch_dataset, batch_iterator
from sorajax.data.tfds.builder import build_dataset
from sorajax.data.tfds.source import TfdsClipSource
from sorajax.data.world import generate_clip
from sorajax.host_memory import reexec_with_tunables
from sorajax.models.text_encoder import tiny_text_encoder
from sorajax.video_io import write_image, write_video

SIZES = [(96, 160), (160, 96), (128, 128), (64, 112), (112, 64), (80, 80), (144, 256), (256, 144)]
FRAMES = [1, 9, 17, 33]


def write_media(root: Path, count: int, seed: int) -> None:
    rng = np.random.default_rng(seed)
    for i in range(count):
        height, width = SIZES[rng.integers(len(SIZES))]
        frames = int(rng.choice(FRAMES))
        clip = generate_clip(seed, frames, height, width, index=i)
        if frames == 1:
            write_image(root / f"{i:04d}.png", clip.video[0])
        else:
            write_video(root / f"{i:04d}.mp4", clip.video, 8.0)
        (root / f"{i:04d}.txt").write_text(clip.caption, encoding="utf-8")


def bucketing_efficiency(makers_plans, packing: PackingConfig, side: int) -> tuple[float, float]:
    """(token efficiency, share of native pixels kept) when every clip is cropped to side x side."""
    used = slots = 0
    kept_pixels = []
    by_frames: dict[int, int] = {}
    for plan, (height, width) in makers_plans:
        by_frames[plan.num_frames] = by_frames.get(plan.num_frames, 0) + 1
        kept_pixels.append(min(height, width) ** 2 / (height * width))
    for frames, count in by_frames.items():
        t = 1 + (frames - 1) // packing.temporal_factor
        n = t * (side // packing.spatial_factor // packing.patch[1]) * (side // packing.spatial_factor // packing.patch[2])
        per_row = packing.seq_len // n
        rows = -(-count // per_row)
        used += count * n
        slots += rows * packing.seq_len
    return used / slots, float(np.mean(kept_pixels))


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--clips", type=int, default=64)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--batches", type=int, default=12)
    parser.add_argument("--pixel_budget", type=int, default=96 * 160)
    parser.add_argument("--rows", type=int, default=4)
    parser.add_argument("--seq_len", type=int, default=1024)
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as tmp:
        media, out = Path(tmp) / "media", Path(tmp) / "data"
        media.mkdir()
        start = time.perf_counter()
        write_media(media, args.clips, seed=0)
        dataset_dir, report = build_dataset(media, out)
        print(f"built {report.used} clips in {time.perf_counter() - start:.1f} s "
              f"({sum(f.stat().st_size for f in dataset_dir.glob('*array_record*')) / 2**20:.1f} MiB of shards)")

        source = TfdsClipSource(dataset_dir)
        text_encoder = tiny_text_encoder(max_length=128)
        records = np.arange(len(source))
        counts = caption_token_counts(text_encoder, [source.caption(int(r)) for r in records])
        packing = PackingConfig(rows=args.rows, seq_len=args.seq_len, text_len=1024)
        sizing = SizingConfig(pixel_budget=args.pixel_budget, size_multiple=packing.size_multiple, max_frames=33)
        planner = ClipPlanner(source, records, sizing, packing, seed=0)
        maker = PixelBatchMaker(planner, counts, seed=0)

        for workers in sorted({0, args.workers}):
            iterator = batch_iterator(batch_dataset(maker), worker_count=workers)
            next(iterator)  # start-up (worker processes, first decode) is not throughput
            start = time.perf_counter()
            samples = tokens = 0
            for _ in range(args.batches):
                batch = next(iterator)
                samples += len(batch.videos)
                tokens += sum(latent_token_count(planner.plans[int(np.flatnonzero(planner.records == r)[0])], 8, 4,
                                                 packing.patch) for r in batch.record_indices)
            seconds = time.perf_counter() - start
            print(f"workers={workers}: {args.batches / seconds:.2f} batches/s, {samples / seconds:.1f} samples/s, "
                  f"{tokens / seconds:.0f} tokens/s")

        packed = packing_efficiency_of(maker, 200)
        native = [(p, (source.info(p.index).height, source.info(p.index).width)) for p in planner.plans]
        one_per_row = float(np.mean(planner.token_counts / packing.seq_len))
        side = int(np.sqrt(args.pixel_budget)) // packing.size_multiple * packing.size_multiple
        bucket, kept = bucketing_efficiency(native, packing, side)
        print(f"packing efficiency (non-padding tokens), seq_len={args.seq_len}, {args.rows} rows:")
        print(f"  NaViT packing, native sizes:        {packed:.1%}")
        print(f"  fixed-size bucketing ({side}x{side} crops): {bucket:.1%}  (keeps {kept:.0%} of native pixels)")
        print(f"  one clip per row:                   {one_per_row:.1%}")


if __name__ == "__main__":
    reexec_with_tunables()  # time sorajax as its commands run it: malloc tuned for XLA (sorajax.host_memory)
    main()
