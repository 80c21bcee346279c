"""Peak host memory of `python -m sorajax.convert` against the checkpoint's total and shard size.

A synthetic Wan-shaped transformer (the 1.3B key list narrowed to width 1024, FFN 4096, 14 blocks:
about 0.95 GB in float32, 4 shards) beside the tiny pipeline fixture's VAE / UMT5 / tokenizer; the
converter runs in a child process whose peak RSS (getrusage of children) is reported.

    python benchmarks/convert_memory.py [--work /tmp/convert_memory]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
from safetensors.numpy import save_file

REPO = Path(__file__).resolve().parents[1]
FIXTURES = REPO / "tests" / "fixtures"
NARROW = {1536: 1024, 9216: 6144, 8960: 4096}  # width, 6 x width, FFN
DEPTH, SHARDS = 14, 4


def write_transformer(folder: Path) -> tuple[int, int]:
    """The narrowed Wan transformer in SHARDS files with an index; (total bytes, largest shard bytes)."""
    folder.mkdir(parents=True)
    shapes = {}
    for line in (FIXTURES / "wan_dit_1.3b_keys.txt").read_text().splitlines():
        key, dims = line.split("\t")
        if key.startswith("blocks.") and int(key.split(".")[1]) >= DEPTH:
            continue
        shapes[key] = tuple(NARROW.get(int(d), int(d)) for d in dims.split(","))
    config = {"_class_name": "WanTransformer3DModel", "patch_size": [1, 2, 2], "num_attention_heads": 8,
              "attention_head_dim": 128, "in_channels": 4, "out_channels": 4, "text_dim": 32, "freq_dim": 256,
              "ffn_dim": 4096, "num_layers": DEPTH, "cross_attn_norm": True, "qk_norm": "rms_norm_across_heads",
              "eps": 1e-6, "rope_max_seq_len": 1024}
    shapes = {k: tuple(4 if (k.startswith(("patch_embedding.weight",)) and i == 1) else d for i, d in enumerate(s))
              for k, s in shapes.items()}
    shapes["proj_out.weight"] = (16, 1024)
    shapes["proj_out.bias"] = (16,)
    shapes["condition_embedder.text_embedder.linear_1.weight"] = (1024, 32)
    (folder / "config.json").write_text(json.dumps(config))
    rng = np.random.default_rng(0)
    names = sorted(shapes)
    parts = [names[i::SHARDS] for i in range(SHARDS)]
    files = [f"diffusion_pytorch_model-{i + 1:05d}-of-{SHARDS:05d}.safetensors" for i in range(SHARDS)]
    for part, name in zip(parts, files):
        save_file({k: rng.standard_normal(shapes[k], dtype=np.float32) for k in part}, str(folder / name))
    index = {"weight_map": {k: name for part, name in zip(parts, files) for k in part}}
    (folder / "diffusion_pytorch_model.safetensors.index.json").write_text(json.dumps(index))
    sizes = [(folder / name).stat().st_size for name in files]
    return sum(sizes), max(sizes)


def write_rest(root: Path) -> None:
    """The tiny Wan2.1 pipeline fixture's VAE (4 latent channels), UMT5 (32 wide) and tokenizer."""
    for part in ("vae", "text_encoder", "tokenizer"):
        shutil.copytree(FIXTURES / "wan21_t2v_tiny" / part, root / part)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--work", default="/tmp/convert_memory")
    parser.add_argument("--dtype", default="float32")
    args = parser.parse_args()
    work = Path(args.work)
    shutil.rmtree(work, ignore_errors=True)
    src = work / "src"
    total, shard = write_transformer(src / "transformer")
    write_rest(src)
    baseline = subprocess.run([sys.executable, "-c", "import sorajax.convert"], env={**os.environ,
                              "PYTHONPATH": str(REPO)}, check=True)
    imports_kb = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    subprocess.run([sys.executable, "-m", "sorajax.convert", f"--src={src}", f"--out={work / 'run'}",
                    f"--dtype={args.dtype}"], env={**os.environ, "PYTHONPATH": str(REPO)}, check=True)
    peak_kb = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    gb = 1e9 / 1024
    print(f"transformer {total / 1e9:.3f} GB in {SHARDS} shards (largest {shard / 1e9:.3f} GB); "
          f"peak RSS of the converter {peak_kb / gb:.3f} GB (imports alone {imports_kb / gb:.3f} GB); "
          f"peak - imports = {(peak_kb - imports_kb) / gb:.3f} GB = {(peak_kb - imports_kb) * 1024 / total:.2f}x total, "
          f"{(peak_kb - imports_kb) * 1024 / shard:.2f}x a shard")
    del baseline


if __name__ == "__main__":
    main()
