"""Convert downloaded Wan weights into a sorajax run: `python -m sorajax.convert --src DIR --out RUN`.

    python -m sorajax.convert --src Wan2.1-T2V-1.3B-Diffusers --out runs/wan1.3b [--dtype bfloat16]

Reads a diffusers-format folder (transformer/, vae/, text_encoder/, tokenizer/; sharded safetensors
with their index json) or Wan's original release layout (`sorajax.runs.wan_original`: WanModel
safetensors, the VAE and UMT5 as `.pth` pickles read without PyTorch), and writes a
run that `Pipeline.from_run`, `python -m sorajax.generate --run` and `train_dit
--config.train.init_from` accept:

    RUN/config.json                 the DiT run config (model preset + overrides, UMT5 text path, Wan's
                                    sampling defaults, `source`: family, layout, where from, dtype)
    RUN/checkpoints/0/              Orbax: {params} of the DiT (no EMA: loaders use params) + metadata
    RUN/autoencoder/checkpoints/0/  Orbax: the Wan VAE's {params, latent_stats}
    RUN/text_encoder/, RUN/tokenizer/  UMT5 in transformers' layout (cast to --dtype), its tokenizer

Why this way: everything is checked before anything is written (every part present, the family, key
coverage and shapes from the safetensors headers and `.pth` pickles), so a partial or mismatched folder is refused in
one line naming the file and key. Tensors stream one at a time into memory-mapped files that Orbax
then writes a few tensors at a time (`save_bound`), and UMT5 is copied shard by shard, so host
memory stays about one shard (not the model) even for 14B. The run is built in a hidden folder and
renamed at the end: a failed conversion leaves nothing half-written.
"""

from __future__ import annotations

import dataclasses
import datetime
import json
import shutil
from pathlib import Path
from typing import Any, Sequence

import jax
import numpy as np

from sorajax import cli
from sorajax.models import pretrained
from sorajax.models.dit import DiTConfig, abstract_params
from sorajax.models.pretrained import CheckpointError
from sorajax.models.wan_dit_weights import wan_dit_key_map
from sorajax.models.wan_vae import abstract_wan_variables, config_stats
from sorajax.models.wan_vae_keys import wan_vae_key_map
from sorajax.runs.checkpoints import Checkpointer
from sorajax.runs.dit_spec import DiTSpec
from sorajax.runs.paths import RunLink
from sorajax.runs.records import as_json_tree
from sorajax.runs.wan_original import is_original_layout, original_source
from sorajax.runs.wan_sources import WanSource, diffusers_source
from sorajax.runs.writer_lock import LOCK_FILE, hold_run
from sorajax.wan import FAMILIES, PRESETS, check_family, family_of_vae, scheduler_shift, wan_time_config

DTYPES = ("float32", "bfloat16")
SAVE_LEAVES_IN_FLIGHT = 4  # parallel enough to keep the disk busy; see `save_bound`
TOKENIZER_FILES = ("tokenizer.json", "spiece.model", "tokenizer_config.json", "special_tokens_map.json")
TEXT_ENCODER_SHARD_BYTES = 2 * 2**30  # UMT5-XXL (11 GB in bf16) is written in shards of about this size


def _dtype(name: str) -> Any:
    import ml_dtypes  # numpy's bfloat16

    return np.dtype(np.float32) if name == "float32" else np.dtype(ml_dtypes.bfloat16)


def inspect_source(src: str | Path, family: str | None = None) -> tuple[WanSource, str]:
    """(source, family) after every check that needs no tensor data; raises CheckpointError."""
    root = Path(src)
    if not root.is_dir():
        raise CheckpointError(f"{root}: no such folder: pass --src the downloaded Wan checkpoint's folder")
    source = original_source(root) if is_original_layout(root) else diffusers_source(root)
    found = check_family(family_of_vae(source.vae.version), family, str(root))
    _check_keys(source)
    return source, found.name


def _check_keys(source: WanSource) -> None:
    """Key coverage and shapes of all three models, from headers / pickles (a missing shard is named here)."""
    from sorajax.models.umt5 import UMT5Config, abstract_params as umt5_abstract
    from sorajax.models.umt5_weights import key_map as umt5_key_map

    shapes, files = source.transformer.shapes()
    pretrained.check_coverage(shapes, wan_dit_key_map(source.dit), abstract_params(source.dit),
                              source.transformer.model, files)
    shapes, files = source.vae_tensors.shapes()
    abstract = abstract_wan_variables(source.vae)["params"]
    pretrained.check_coverage(shapes, wan_vae_key_map(source.vae, abstract), abstract, source.vae_tensors.model, files)
    umt5 = UMT5Config.from_hf_dict(source.umt5)  # checked when the source was read
    if umt5.d_model != source.dit.text_dim:
        raise CheckpointError(f"{source.text_encoder.files[0]}: the text encoder is {umt5.d_model} wide but the "
                              f"transformer reads {source.dit.text_dim}-wide text: the parts are of different models")
    shapes, files = source.text_encoder.shapes()
    pretrained.check_coverage(shapes, umt5_key_map(umt5), umt5_abstract(umt5), source.text_encoder.model, files)


class MemmapStore:
    """Receives tensors one at a time into memory-mapped files under `folder` (so RAM holds ~one tensor)."""

    def __init__(self, folder: Path, dtype: Any):
        self.folder, self.dtype = folder, dtype
        folder.mkdir(parents=True, exist_ok=True)

    def __call__(self, path: tuple[str, ...], value: np.ndarray) -> np.ndarray:
        array = np.lib.format.open_memmap(self.folder / (".".join(path) + ".npy"), mode="w+",
                                          dtype=self.dtype, shape=value.shape)
        array[...] = value.astype(self.dtype)
        array.flush()
        return array


def _preset_model(family: str, config: DiTConfig, dtype: str) -> dict[str, Any]:
    """The run's `model` section: the nearest released preset plus every field that differs from it."""
    preset = PRESETS.get((family, config.width)) or next(p for (f, _), p in PRESETS.items() if f == family)
    base = dataclasses.asdict(DiTConfig.preset(preset, patch_dim=config.patch_dim, text_dim=config.text_dim))
    fields = {**dataclasses.asdict(config), "dtype": dtype}
    model = {"preset": preset}
    model.update({k: v for k, v in fields.items() if k not in ("patch_dim", "text_dim") and base[k] != v})
    return as_json_tree(model)


def run_config(source: WanSource, family_name: str, dtype: str, patch: Sequence[int]) -> dict[str, Any]:
    """The DiT run config a converted run records (what `DiTSpec.from_config` and fine-tuning read)."""
    family = FAMILIES[family_name]
    sample = dataclasses.replace(family.sample, shift=scheduler_shift(source.root, family.sample.shift))
    return as_json_tree({
        "seed": 0,
        "vae_workdir": "autoencoder",
        "model": _preset_model(family_name, source.dit, dtype),
        "patch": list(patch),
        "prediction": "velocity",
        "text_encoder": {"kind": "umt5", "max_length": 512, "path": "text_encoder", "tokenizer_path": "tokenizer",
                         "bfloat16": dtype == "bfloat16"},
        "time": dataclasses.asdict(wan_time_config(sample.shift)),
        "sample": dataclasses.asdict(sample),
        "source": {"family": family_name, "layout": source.layout, "src": str(source.root.resolve()), "dtype": dtype,
                   "converted_at": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")},
    })


def _write_models(source: WanSource, family: str, tmp: Path, dtype: str) -> dict[str, Any]:
    """The DiT and VAE as Orbax checkpoints of streamed memmaps; returns the run config."""
    from sorajax.wan import dit_config_patch

    scratch = tmp / ".scratch"
    dit_tree = pretrained.stream_params(
        source.transformer.tensors(), wan_dit_key_map(source.dit), abstract_params(source.dit),
        source.transformer.model, MemmapStore(scratch / "dit", _dtype(dtype)))
    config = run_config(source, family, dtype, dit_config_patch(source.dit, source.vae.latent_channels))
    spec = DiTSpec.from_config(config)
    meta = {"config": config, "model_fingerprint": spec.fingerprint, "step": 0, "vae_step": 0,
            "autoencoder": RunLink.between(tmp / "autoencoder", tmp).to_json(), "weight_trees": ["params"],
            "source": config["source"], "text_encoder": None}
    _save(tmp, {"params": dit_tree}, meta)
    vae_abstract = abstract_wan_variables(source.vae)["params"]
    vae_tree = pretrained.stream_params(
        source.vae_tensors.tensors(), wan_vae_key_map(source.vae, vae_abstract), vae_abstract, source.vae_tensors.model,
        MemmapStore(scratch / "vae", np.float32))  # the VAE stays float32: its decode is precision-sensitive
    vae_config = {"vae": {"kind": "wan", **as_json_tree(dataclasses.asdict(source.vae))}, "source": config["source"]}
    stats = {k: np.asarray(v) for k, v in config_stats(source.vae).items()}
    _save(tmp / "autoencoder", {"params": vae_tree, "latent_stats": stats}, {"config": vae_config, "step": 0})
    shutil.rmtree(scratch)
    return config


def save_bound(state: dict[str, Any]) -> int:
    """Bytes Orbax may write at once: SAVE_LEAVES_IN_FLIGHT of the largest leaf (the memmaps are not copied
    into memory, so this bounds the save's host memory at a few tensors, not the model)."""
    return SAVE_LEAVES_IN_FLIGHT * max(leaf.nbytes for leaf in jax.tree.leaves(state)) + 1  # Orbax: a leaf < bound


def _save(run: Path, state: dict[str, Any], meta: dict[str, Any]) -> None:
    ckpt = Checkpointer(run / "checkpoints", async_save=False, save_concurrent_bytes=save_bound(state))
    try:
        ckpt.save(0, state, meta=meta)
    finally:
        ckpt.close()
    (run / "config.json").write_text(json.dumps(meta["config"], indent=2))


def _copy_text_encoder(source: WanSource, tmp: Path, dtype: str) -> None:
    """UMT5 in transformers' layout (cast to `dtype`; shards of ~2 GB, one tensor read at a time) and its tokenizer."""
    from safetensors.numpy import save_file

    out = tmp / "text_encoder"
    out.mkdir(parents=True)
    (out / "config.json").write_text(json.dumps(source.umt5, indent=2))
    shards: list[list[str]] = []
    batch: dict[str, np.ndarray] = {}
    for _, key, array in source.text_encoder.tensors():
        value = np.asarray(array).astype(_dtype(dtype))
        if batch and sum(v.nbytes for v in batch.values()) + value.nbytes > TEXT_ENCODER_SHARD_BYTES:
            save_file(batch, str(out / f"part-{len(shards)}"))
            shards.append(list(batch))
            batch = {}
        batch[key] = value
    save_file(batch, str(out / f"part-{len(shards)}"))
    shards.append(list(batch))
    weight_map = {}
    for i, keys in enumerate(shards):
        name = f"model-{i + 1:05d}-of-{len(shards):05d}.safetensors"
        (out / f"part-{i}").rename(out / name)
        weight_map.update({key: name for key in keys})
    (out / "model.safetensors.index.json").write_text(json.dumps({"metadata": {}, "weight_map": weight_map}, indent=1))
    tokenizer = tmp / "tokenizer"
    tokenizer.mkdir()
    for name in TOKENIZER_FILES:
        if (source.tokenizer / name).is_file():
            shutil.copy(source.tokenizer / name, tokenizer / name)


def convert(src: str | Path, out: str | Path, dtype: str = "float32", family: str | None = None,
            overwrite: bool = False) -> Path:
    """Checks `src`, then writes the run `out` (see the module docstring); returns its path."""
    if dtype not in DTYPES:
        raise ValueError(f"--dtype {dtype!r} is not supported: use one of {list(DTYPES)}")
    out = Path(out).resolve()
    _refuse_existing(out, overwrite)
    source, found = inspect_source(src, family)  # every check before anything is written
    existed = out.exists()
    # One writer: a live trainer on `out` (--overwrite would delete its run) or a second convert is refused here.
    with hold_run(out, flag="--out"):
        _refuse_existing(out, overwrite)  # again, now that no other writer can fill it
        tmp = out.parent / f".{out.name}.partial"
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
        try:
            _write_models(source, found, tmp, dtype)
            _copy_text_encoder(source, tmp, dtype)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            if not existed:
                shutil.rmtree(out, ignore_errors=True)  # only the lock was there
            raise
        shutil.rmtree(out)  # the old run (with --overwrite) or just the lock file
        tmp.rename(out)
    return out


def _refuse_existing(out: Path, overwrite: bool) -> None:
    if out.exists() and any(p.name != LOCK_FILE for p in out.iterdir()) and not overwrite:
        raise FileExistsError(f"{out} already exists and is not empty: pass another --out, or --overwrite to replace it")


def main(argv: Sequence[str] | None = None) -> None:
    parser = cli.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--src", required=True, help="the downloaded Wan checkpoint folder (diffusers or original)")
    parser.add_argument("--out", required=True, help="the sorajax run directory to write")
    parser.add_argument("--dtype", default="float32", choices=DTYPES, help="weight dtype of DiT and UMT5")
    parser.add_argument("--family", default="auto", help=f"auto, or one of {sorted(FAMILIES)} (checked)")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing --out")
    parser.add_argument("--debug", action="store_true", help="on an error, show the Python traceback")
    args = parser.parse_args(argv)
    run = convert(args.src, args.out, args.dtype, args.family, args.overwrite)
    print(f"wrote {run}: sample it with python -m sorajax.generate --run={run} --prompt='...', fine-tune it with "
          f"--config.train.init_from={run}")


if __name__ == "__main__":
    cli.run_argparse(main)
