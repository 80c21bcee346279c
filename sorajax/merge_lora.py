"""Export a LoRA run as an ordinary DiT run: its base with the adapters merged into params and ema_params.

    python -m sorajax.merge_lora --run=runs/lora --out=runs/lora_merged [--step=N]

The result samples with `Pipeline.from_run` and fine-tunes with `train.init_from` like any DiT run,
without the base run beside it. It holds the weights only (no optimizer state), the LoRA run's
config with `train.lora.rank=0`, the same autoencoder link, and where it was merged from.
"""

from __future__ import annotations

import copy
from typing import Sequence

from etils import epath

from sorajax import cli
from sorajax.logging_setup import quiet_library_logs
from sorajax.runs.checkpoints import CHECKPOINTS, Checkpointer, open_run, read_run_meta
from sorajax.runs.loaders import LORA_BASE_KEY, LORA_KEY, TRAIN_DIT, WEIGHTS, find_linked_run, load_weights
from sorajax.runs.paths import PathLike, RunLink, run_path
from sorajax.runs.records import record_run_config
from sorajax.runs.writer_lock import hold_run


def merge_lora_run(run: PathLike, out: PathLike, step: int | None = None) -> epath.Path:
    """Writes `out`: `run`'s base with its adapters merged (raw and EMA), as a DiT run of the same step."""
    run, out = run_path(run), run_path(out)
    with hold_run(out, flag="--out"):  # one writer: a second merge or a trainer on `out` is refused first
        return _merge_into(run, out, step)


def _merge_into(run: epath.Path, out: epath.Path, step: int | None) -> epath.Path:
    meta = read_run_meta(run, step, TRAIN_DIT)
    if LORA_KEY not in meta:
        raise ValueError(f"{run} is not a LoRA run (its checkpoint has no {LORA_KEY!r} entry): it is an ordinary "
                         "DiT run already, usable as it is")
    if (out / CHECKPOINTS).is_dir() and Checkpointer(out / CHECKPOINTS, async_save=False).all_steps():
        raise ValueError(f"{out} already holds checkpoints: pass a new --out directory")
    step = int(meta["step"])
    base = meta[LORA_BASE_KEY]
    base_run = find_linked_run(RunLink.from_json(base["run"]), run, "LoRA base")
    reader = open_run(base_run, int(base["step"]), TRAIN_DIT)
    try:  # the base checkpoint's own tree is the params' structure: no model or autoencoder needs building
        abstract = reader.saved_shapes(meta[LORA_KEY]["base_weights"], int(base["step"]))
    finally:
        reader.close()
    state = {name: load_weights(run, step, abstract, name) for name in WEIGHTS}

    config = copy.deepcopy(meta["config"])
    config["train"]["lora"] = {**config["train"]["lora"], "rank": 0, "alpha": 0.0}
    autoencoder = find_linked_run(RunLink.from_json(meta["autoencoder"]), run, "autoencoder")
    exported = {key: value for key, value in meta.items() if key not in (LORA_KEY, LORA_BASE_KEY)}
    exported.update(config=config, model_fingerprint=base["fingerprint"],
                    autoencoder=RunLink.between(autoencoder, out).to_json(),
                    merged_from={"run": RunLink.between(run, out).to_json(), "step": step, LORA_KEY: meta[LORA_KEY],
                                 LORA_BASE_KEY: {**base, "run": RunLink.between(base_run, out).to_json()}})
    writer = Checkpointer(out / CHECKPOINTS, async_save=False)
    try:
        writer.save(step, state, meta=exported)
    finally:
        writer.close()
    record_run_config(out, config, None)
    print(f"merged {run} step {step} (LoRA rank {meta[LORA_KEY]['rank']}) into {base_run} step {base['step']}: "
          f"wrote {out}")
    return out


def main(argv: Sequence[str] | None = None) -> None:
    # argparse, not absl flags: importing this module must not define flags that clash with other commands'.
    parser = cli.ArgumentParser(description="Export a LoRA run as an ordinary DiT run with the adapters merged in.")
    parser.add_argument("--run", required=True, help="the LoRA run directory (trained with train.lora.rank > 0)")
    parser.add_argument("--out", required=True, help="the new run directory to write (must hold no checkpoint)")
    parser.add_argument("--step", type=int, default=None, help="the LoRA run's step to export (default: its newest)")
    parser.add_argument("--debug", action="store_true", help="on an error, show the Python traceback")
    args = parser.parse_args(argv)
    quiet_library_logs()
    merge_lora_run(args.run, args.out, args.step)


if __name__ == "__main__":
    cli.run_argparse(main)
