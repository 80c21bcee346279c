"""Fine-tune a converted Wan run (`python -m sorajax.convert`) with LoRA, on the built-in world or TFDS data.

    python -m sorajax.train_dit --config=configs/wan_finetune.py:runs/wan1.3b --workdir=runs/wan1.3b_lora
    # full fine-tuning instead of LoRA:     --config.train.lora.rank=0
    # your own videos (sorajax.build_dataset): --config.data.source=tfds --config.data.tfds_dir=...

The network, patch size, prediction, text path (the run's own UMT5, all 512 positions per caption),
Wan's noise-level shift and sampling defaults are read from the converted run, so the fine-tune
is the same model (the trainer refuses another). The data, packing and per-token-t masks are
sorajax's: clips at their native sizes (sides in multiples of the family's 16 or 32 pixels,
1 + 4k frames) packed into rows, some given clean frames or regions (image to video — Wan2.2-TI2V's
own task — extend, connect, inpaint) so the adapters learn the prompting modes too.

The defaults are sized for a 2-core CPU and the tiny test checkpoints; for a real 1.3B / 5B / 14B run
on an accelerator raise data.rows, data.seq_len (81 frames at 480p is 32,760 tokens for 1.3B) and the
sizes, and see configs/wan_scale.py and docs/wan.md for the meshes that fit.
"""

import json
import os

import ml_collections

from sorajax.config_loading import load_config

# Clip sizes (frames, height, width) per family: multiples of the VAE factor x patch (16 for 2.1, 32 for 2.2).
SIZES = {
    "wan2.1-t2v": ((9, 64, 64), (9, 48, 80), (9, 80, 48), (1, 64, 64)),
    "wan2.2-ti2v": ((9, 64, 64), (9, 64, 96), (9, 96, 64), (1, 64, 64)),
}


def get_config(run: str | None = None) -> ml_collections.ConfigDict:
    if not run:
        raise ValueError("configs/wan_finetune.py needs the converted run: --config=configs/wan_finetune.py:RUN "
                         "(made by python -m sorajax.convert --src DIR --out RUN)")
    run = os.path.abspath(os.path.expanduser(run))
    path = os.path.join(run, "config.json")
    if not os.path.isfile(path):
        raise ValueError(f"{path} does not exist: point configs/wan_finetune.py at a run written by sorajax.convert")
    saved = json.loads(open(path).read())
    family = saved.get("source", {}).get("family")
    if family not in SIZES:
        raise ValueError(f"{run} is not a converted Wan run (source.family {family!r}); convert one with "
                         "python -m sorajax.convert")
    c = load_config("configs/dit_tiny.py")  # world, data, train, eval, conditioning sections to start from
    for section in ("model", "patch", "prediction", "time", "sample"):
        c[section] = saved[section] if not isinstance(saved[section], dict) else ml_collections.ConfigDict(saved[section])
    text = dict(saved["text_encoder"])
    for key in ("path", "tokenizer_path"):  # the run's own UMT5 and tokenizer, wherever training runs
        if text.get(key) and not os.path.isabs(text[key]):
            text[key] = os.path.join(run, text[key])
    c.text_encoder = ml_collections.ConfigDict(text)
    c.vae_workdir = os.path.join(run, saved.get("vae_workdir", "autoencoder"))
    c.data.sizes = SIZES[family]
    c.data.num_clips = 256
    c.data.rows, c.data.seq_len = 2, 96  # two 9-frame clips a row (48 tokens each on Wan2.1's x8 VAE)
    c.data.text_len = 2 * saved["text_encoder"].get("max_length", 512)  # every caption is 512 positions
    c.train.init_from = run
    c.train.lora.rank, c.train.lora.alpha, c.train.lora.base_weights = 16, 16.0, "params"
    c.train.steps, c.train.warmup_steps, c.train.learning_rate = 200, 10, 1e-3
    c.train.save_every, c.train.log_every, c.eval.every, c.eval.num_clips = 100, 10, 100, 16
    c.train.caption_dropout = 0.0  # Wan's unconditional branch is its negative prompt, not a null caption
    return c
