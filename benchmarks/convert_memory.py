"""Peak host memory of `python -m sorajax.convert` against the checkpoint's total and shard size.

A synthetic Wan-shaped transformer (the 1.3B key list narrowed to width 1024, FFN 4096, 14 blocks:
about 0.95 GB in float32, 4 shards) and UMT5 encoder (width 1024, 8 blocks: 0.4 GB, 2 shards) beside
the tiny pipeline fixture's VAE and tokenizer. The converter runs in a child process that this
script samples every few milliseconds from outside (/proc/PID/status, so a child holding the GIL is
still seen). RSS is split into anonymous memory (what the converter really holds) and file-backed
pages (the memmaps' and safetensors' page cache, which count in RSS but the kernel reclaims at will),
per phase of the conversion: the child marks the phase it is in (inspect, DiT stream into memmaps,
DiT Orbax save, VAE ..., text encoder copy). "rise" is the anonymous memory a phase adds to what it
started with (memory freed earlier stays with the process, so a phase's peak includes it).

    python benchmarks/convert_memory.py [--work /tmp/convert_memory] [--dtype bfloat16]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
from safetensors.numpy import save_file

REPO = Path(__file__).resolve().parents[1]
FIXTURES = REPO / "tests" / "fixtures"
NARROW = {1536: 1024, 9216: 6144, 8960: 4096}  # width, 6 x width, FFN
DEPTH, SHARDS = 14, 4
TEXT_WIDTH = 1024  # the UMT5 encoder's width, which the transformer's text embedder reads


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
              "attention_head_dim": 128, "in_channels": 4, "out_channels": 4, "text_dim": TEXT_WIDTH, "freq_dim": 256,
              "ffn_dim": 4096, "num_layers": DEPTH, "cross_attn_norm": True, "qk_norm": "rms_norm_across_heads",
              "eps": 1e-6, "rope_max_seq_len": 1024}
    shapes = {k: tuple(4 if (k.startswith(("patch_embedding.weight",)) and i == 1) else d for i, d in enumerate(s))
              for k, s in shapes.items()}
    shapes["proj_out.weight"] = (16, 1024)
    shapes["proj_out.bias"] = (16,)
    shapes["condition_embedder.text_embedder.linear_1.weight"] = (1024, TEXT_WIDTH)
    (folder / "config.json").write_text(json.dumps(config))
    return _write_shards(folder, "diffusion_pytorch_model", shapes, SHARDS)


def write_text_encoder(folder: Path, width: int = TEXT_WIDTH, heads: int = 16, ffn: int = 2816, depth: int = 8,
                       shards: int = 2) -> tuple[int, int]:
    """A UMT5 encoder of UMT5-XXL's layout at width 1024 (about 0.4 GB) in `shards` files, with the tiny
    fixture's vocabulary (so its tokenizer fits); (total bytes, largest shard bytes)."""
    folder.mkdir(parents=True)
    config = json.loads((FIXTURES / "wan21_t2v_tiny" / "text_encoder" / "config.json").read_text())
    config.update(d_model=width, num_heads=heads, d_kv=width // heads, d_ff=ffn, num_layers=depth)
    (folder / "config.json").write_text(json.dumps(config))
    shapes = {"shared.weight": (config["vocab_size"], width), "encoder.final_layer_norm.weight": (width,)}
    for i in range(depth):
        block = f"encoder.block.{i}.layer"
        shapes.update({f"{block}.0.SelfAttention.{n}.weight": (width, width) for n in "qkvo"})
        shapes[f"{block}.0.SelfAttention.relative_attention_bias.weight"] = (config["relative_attention_num_buckets"],
                                                                            heads)
        shapes.update({f"{block}.{j}.layer_norm.weight": (width,) for j in (0, 1)})
        shapes.update({f"{block}.1.DenseReluDense.{n}.weight": (ffn, width) for n in ("wi_0", "wi_1")})
        shapes[f"{block}.1.DenseReluDense.wo.weight"] = (width, ffn)
    return _write_shards(folder, "model", shapes, shards)


def _write_shards(folder: Path, stem: str, shapes: dict[str, tuple[int, ...]], shards: int) -> tuple[int, int]:
    """Random float32 tensors of `shapes` in `shards` safetensors files + index; (total, largest file) bytes."""
    rng = np.random.default_rng(0)
    names = sorted(shapes)
    parts = [names[i::shards] for i in range(shards)]
    files = [f"{stem}-{i + 1:05d}-of-{shards:05d}.safetensors" for i in range(shards)]
    for part, name in zip(parts, files):
        save_file({k: rng.standard_normal(shapes[k], dtype=np.float32) for k in part}, str(folder / name))
    index = {"weight_map": {k: name for part, name in zip(parts, files) for k in part}}
    (folder / f"{stem}.safetensors.index.json").write_text(json.dumps(index))
    sizes = [(folder / name).stat().st_size for name in files]
    return sum(sizes), max(sizes)


def write_rest(root: Path) -> None:
    """The tiny Wan2.1 pipeline fixture's VAE (4 latent channels) and tokenizer."""
    for part in ("vae", "tokenizer"):
        shutil.copytree(FIXTURES / "wan21_t2v_tiny" / part, root / part)


FIELDS = ("VmRSS", "RssAnon", "RssFile", "RssShmem", "VmHWM")


def _child(phase_file: str, argv: list[str]) -> None:
    """Runs the converter, writing the name of each phase to `phase_file` as it starts (benchmark only)."""
    def mark(name: str) -> None:  # written whole then renamed: the sampler never reads a half-written name
        Path(phase_file + ".tmp").write_text(name)
        os.replace(phase_file + ".tmp", phase_file)

    mark("imports")
    import jax
    import orbax.checkpoint  # noqa: F401 - the fixed cost: the converter imports it anyway

    from sorajax import convert
    from sorajax.models import pretrained

    jax.devices("cpu")  # XLA's CPU client, which the converter starts anyway (part of the fixed overhead)

    models = iter(("dit", "vae"))
    current = {"model": "dit"}

    def phased(module, attribute, name):
        original = getattr(module, attribute, None)
        if original is None:  # the converter changed shape: that phase is simply not split out
            return

        def run(*args, **kwargs):
            label = name() if callable(name) else name
            mark(label)
            try:
                return original(*args, **kwargs)
            finally:
                mark(f"after {label}")
        setattr(module, attribute, run)

    def stream_label():
        current["model"] = next(models, "other")
        return f"{current['model']}: stream to memmaps"

    phased(convert, "inspect_source", "inspect (headers)")
    phased(pretrained, "stream_params", stream_label)
    phased(convert, "_save", lambda: f"{current['model']}: orbax save")
    phased(convert, "_copy_text_encoder", "text encoder copy")
    convert.main(argv)
    mark("exit")


def _read_status(pid: int) -> dict[str, int] | None:
    try:
        text = Path(f"/proc/{pid}/status").read_text()
    except (FileNotFoundError, ProcessLookupError):
        return None
    found = {}
    for line in text.splitlines():
        key, _, value = line.partition(":")
        if key in FIELDS:
            found[key] = int(value.split()[0]) * 1024
    return found


def sample(command: list[str], phase_file: Path, every_s: float = 0.002) -> tuple[dict[str, dict[str, float]], int]:
    """Runs `command`; per phase, the peak of each /proc status field and its duration; the peak VmHWM."""
    phase_file.write_text("start")  # the interpreter starting: before imports
    path = os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")]))  # this checkout first, the rest kept
    child = subprocess.Popen(command, env={**os.environ, "PYTHONPATH": path})
    peaks: dict[str, dict[str, int]] = {}
    hwm = 0
    while child.poll() is None:
        status = _read_status(child.pid)
        if status:
            phase = phase_file.read_text() or "?"
            row = peaks.setdefault(phase, {"start": time.monotonic(), "anon_at_start": status.get("RssAnon", 0)})
            row["seconds"] = time.monotonic() - row["start"]
            for key, value in status.items():
                row[key] = max(row.get(key, 0), value)
            hwm = max(hwm, status.get("VmHWM", 0))
        time.sleep(every_s)
    if child.returncode:
        raise SystemExit(f"the converter failed (exit {child.returncode})")
    return peaks, hwm


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--work", default="/tmp/convert_memory")
    parser.add_argument("--dtype", default="float32")
    parser.add_argument("--child", nargs=argparse.REMAINDER, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child is not None:
        _child(args.child[0], args.child[1:])
        return
    work = Path(args.work)
    shutil.rmtree(work, ignore_errors=True)
    src = work / "src"
    total, shard = write_transformer(src / "transformer")
    text_total, text_shard = write_text_encoder(src / "text_encoder")
    write_rest(src)
    command = [sys.executable, __file__, "--child", str(work / "phase"), f"--src={src}", f"--out={work / 'run'}",
               f"--dtype={args.dtype}"]
    peaks, hwm = sample(command, work / "phase")
    gb = 1e9
    print(f"transformer {total / gb:.3f} GB in {SHARDS} shards (largest {shard / gb:.3f} GB), UMT5 encoder "
          f"{text_total / gb:.3f} GB (largest shard {text_shard / gb:.3f} GB), --dtype {args.dtype}")
    print(f"{'phase':32s} {'anon GB':>8s} {'rise GB':>8s} {'file GB':>8s} {'RSS GB':>8s} {'s':>6s}")
    for phase, row in peaks.items():
        rise = row.get("RssAnon", 0) - row["anon_at_start"]  # anon grown within the phase (freed memory is kept)
        print(f"{phase:32s} {row.get('RssAnon', 0) / gb:8.3f} {rise / gb:8.3f} {row.get('RssFile', 0) / gb:8.3f} "
              f"{row.get('VmRSS', 0) / gb:8.3f} {row['seconds']:6.2f}")
    anon = max(row.get("RssAnon", 0) for row in peaks.values())
    file = max(row.get("RssFile", 0) for row in peaks.values())
    base = peaks.get("imports", {}).get("RssAnon", 0)
    extra, largest, model = anon - base, max(shard, text_shard), total + text_total
    print(f"peak anon {anon / gb:.3f} GB (imports {base / gb:.3f} GB; above them {extra / gb:.3f} GB = "
          f"{extra / largest:.2f}x the largest shard, {extra / model:.2f}x transformer + UMT5); peak file-backed "
          f"{file / gb:.3f} GB; peak RSS (VmHWM) {hwm / gb:.3f} GB")


if __name__ == "__main__":
    main()
