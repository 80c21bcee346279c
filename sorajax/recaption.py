"""Re-caption a built dataset: the report's descriptive captions, written into the dataset's clip index.

    python -m sorajax.recaption --data DATA_DIR --captioner world            # exact, from world facts
    python -m sorajax.recaption --data DATA_DIR --captioner vlm --vlm_dir DIR --vlm_loader module:function

See `sorajax.data.tfds.captioner` for what each captioner reads.
"""

from __future__ import annotations

import logging

from sorajax import cli
from sorajax.data.tfds.captioner import (Captioner, VisionLanguageCaptioner, WorldFactsCaptioner, load_function,
                                         recaption_dataset)


def main(argv: list[str] | None = None) -> None:
    parser = cli.ArgumentParser(description="Re-caption a built dataset (python -m sorajax.build_dataset).")
    parser.add_argument("--data", required=True, help="the --out folder of sorajax.build_dataset")
    parser.add_argument("--captioner", choices=("world", "vlm"), default="world")
    parser.add_argument("--style", choices=("descriptive", "terse"), default="descriptive")
    parser.add_argument("--vlm_dir", help="folder with a local vision-language model's weights")
    parser.add_argument("--vlm_loader", help="module:function that loads it, returning model(frames, instruction) -> str")
    parser.add_argument("--only_missing", action="store_true", help="caption only records without a caption")
    parser.add_argument("--debug", action="store_true", help="on an error, show the Python traceback")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    if args.captioner == "world":
        captioner: Captioner = WorldFactsCaptioner(args.style)
    else:
        if not (args.vlm_dir and args.vlm_loader):
            parser.error("--captioner vlm needs --vlm_dir and --vlm_loader")
        captioner = VisionLanguageCaptioner(args.vlm_dir, load_function(args.vlm_loader))
    print(recaption_dataset(args.data, captioner, args.only_missing))


if __name__ == "__main__":
    cli.run_argparse(main)
