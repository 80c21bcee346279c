"""Build a TFDS dataset from your videos and images.

    python -m sorajax.build_dataset --src DIR --out DATA_DIR [--frame_format png|jpeg] [--captioner world]

`--src` is a folder (scanned recursively; `clip.txt` next to `clip.mp4` is its caption; a
`manifest.jsonl`/`manifest.csv` in it takes precedence) or a manifest file with a `path` column,
an optional `caption` column and any metadata columns. Unusable files are skipped and listed
in DATA_DIR/media_clips/1.0.0/build_report.json. Train on it with configs/dit_tfds.py.
"""

from __future__ import annotations

import argparse
import logging

from sorajax import cli
from sorajax.data.tfds.captioner import WorldFactsCaptioner
from sorajax.data.tfds.media_files import MediaLimits
from sorajax.data.tfds.builder import BuildOptions, build_dataset


def main(argv: list[str] | None = None) -> None:
    parser = cli.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--src", required=True, help="folder of videos/images, or a .jsonl/.csv manifest")
    parser.add_argument("--out", required=True, help="output folder (TFDS data_dir)")
    parser.add_argument("--frame_format", choices=("png", "jpeg"), default="png", help="per-frame coding")
    parser.add_argument("--jpeg_quality", type=int, default=95)
    parser.add_argument("--num_shards", type=int, default=None, help="array_record shards (default: by size)")
    parser.add_argument("--captioner", choices=("none", "world"), default="none",
                        help="caption clips without a caption at build time ('world' reads metadata facts)")
    parser.add_argument("--max_side", type=int, default=MediaLimits.max_side)
    parser.add_argument("--max_frames", type=int, default=MediaLimits.max_frames)
    parser.add_argument("--debug", action="store_true", help="on an error, show the Python traceback")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    limits = MediaLimits(max_side=args.max_side, max_frames=args.max_frames)
    options = BuildOptions(frame_format=args.frame_format, jpeg_quality=args.jpeg_quality,
                           num_shards=args.num_shards, limits=limits)
    captioner = WorldFactsCaptioner().as_build_fn() if args.captioner == "world" else None
    dataset_dir, report = build_dataset(args.src, args.out, options, captioner)
    print(f"{dataset_dir}: {report.summary()}")


if __name__ == "__main__":
    cli.run_argparse(main)
