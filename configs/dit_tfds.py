"""DiT on your own videos and images (a TFDS dataset built by `python -m sorajax.build_dataset`).

    python -m sorajax.build_dataset --src my_videos/ --out data/my_videos
    python -m sorajax.train_dit --config=configs/dit_tfds.py --config.data.tfds_dir=data/my_videos \
        --config.vae_workdir=runs/main/vae --workdir=runs/tfds/dit

Clips are trained at native aspect ratio within a pixel budget (data.framing='square' is the
report's centre-crop ablation), 1 + 4k frames at data.target_fps, packed into rows.

Variants (`--config=configs/dit_tfds.py:VARIANT`):
  (none)  a small run on a CPU-sized pixel budget.
  square  the same with square centre crops (framing ablation).
  smoke   tiny sizes and a random tiny text encoder, for tests.
"""

import ml_collections


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
    c = ml_collections.ConfigDict()
    c.seed = 0
    c.vae_workdir = "runs/main/vae"
    # The main job's model (configs/dit_tiny.py), key for key: `train.init_from=runs/main/dit` needs the same config.
    c.model = ml_collections.ConfigDict(dict(preset="tiny", width=128, depth=4, num_heads=4, dtype="float32",
                                             frame_position_every_block=False, modulation="per_block"))
    c.patch = (1, 2, 2)
    c.prediction = "velocity"
    c.text_encoder = ml_collections.ConfigDict(dict(kind="minilm", max_length=96))

    c.data = ml_collections.ConfigDict()
    c.data.source = "tfds"
    c.data.tfds_dir = ml_collections.config_dict.placeholder(str)
    c.data.pixel_budget = 64 * 64
    c.data.framing = "native"  # or 'square'
    c.data.allow_upscale = False
    c.data.max_frames = 9
    c.data.frame_counts = ()
    c.data.target_fps = ml_collections.config_dict.placeholder(float)  # None: native rate
    c.data.eval_count = 16  # records held out (the last ones) for validation
    c.data.cache_latents = True  # False: decode in workers and encode every step (datasets too big to cache)
    c.data.worker_count = 0
    c.data.rows = 8
    c.data.seq_len = 256
    c.data.text_len = 256

    c.time = ml_collections.ConfigDict(dict(
        logit_mean=0.0, logit_std=1.0, base_tokens=16, base_shift=1.0, max_tokens=4096, max_shift=3.0,
    ))
    c.train = ml_collections.ConfigDict(dict(
        steps=1500, learning_rate=1e-3, warmup_steps=100, end_lr_fraction=0.1, weight_decay=0.0,
        adam_b1=0.9, adam_b2=0.99, grad_clip_norm=1.0, ema_decay=0.995, caption_dropout=0.1,
        log_every=25, save_every=500, keep_checkpoints=3, async_checkpoints=True,
        init_from="",  # e.g. the world-trained runs/main/dit, to fine-tune it on your videos (same model config)
    ))
    c.eval = ml_collections.ConfigDict(dict(every=500, num_clips=16))
    # Sampling defaults: a square clip at the pixel budget, max_frames long (any size can be asked for).
    c.sample = ml_collections.ConfigDict(dict(method="dpmpp_2m", steps=10, guidance=4.0, use_ema=True,
                                              frames=9, height=64, width=64))

    if arg == "square":
        c.data.framing = "square"
    elif arg == "smoke":
        c.text_encoder = ml_collections.ConfigDict(dict(kind="tiny", max_length=48))
        c.model.width, c.model.depth, c.model.num_heads = 32, 1, 2
        c.data.pixel_budget, c.data.max_frames, c.data.eval_count = 32 * 48, 9, 1
        c.data.rows, c.data.seq_len, c.data.text_len = 2, 48, 96
        c.train.steps, c.train.warmup_steps, c.train.log_every, c.train.save_every = 4, 1, 1, 2
        c.eval.every, c.eval.num_clips = 2, 1
        c.sample.steps, c.sample.frames, c.sample.height, c.sample.width = 2, 5, 32, 32
    elif arg not in (None, ""):
        raise ValueError(f"unknown variant {arg!r} for configs/dit_tfds.py; use '', 'square' or 'smoke'")
    return c
