"""Tiny text-to-video DiT on the built-in world: trains on a 2-core CPU in minutes.

It learns on latents of a trained autoencoder (`vae_workdir`, made by
`python -m sorajax.train_vae --config=configs/vae_tiny.py`), at native sizes:
images and videos, landscape, portrait and square, packed into rows.

Variants (`--config=configs/dit_tiny.py:VARIANT`):
  (none)  the README's main job.
  long    the same recipe for longer, for machines with time to spare: 10,000 steps (~1 h on the
          2-core CPU, 5x the main job) on 8,192 clips, since 2,048 clips are overfit past ~5,000 steps.
  mesh    the default, over a device mesh (all devices data-parallel; override e.g.
          --config.mesh.fsdp=4 --config.mesh.data=-1): sharded state, per-host batches.
  smoke   a few steps with a tiny random text encoder, for tests.
  lora    LoRA fine-tuning of the main job's DiT (runs/main/dit; override --config.train.init_from): rank-16
          adapters of every block's attention and MLP kernels train, the base stays frozen; the run saves
          only adapters. Sample it as any run, or export it with `python -m sorajax.merge_lora`.
"""

import ml_collections


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
    c = ml_collections.ConfigDict()
    c.seed = 0
    c.vae_workdir = "runs/main/vae"

    # sorajax.models.dit.DiTConfig fields on top of a preset; patch_dim/text_dim are filled in from the
    # autoencoder and text encoder.
    # modulation: 'per_block' (adaLN-Zero, a width -> 6 width projection in every block) or 'shared'
    # (adaLN-single: one projection for all blocks + a table per block; docs/results.md compares them).
    c.model = ml_collections.ConfigDict(dict(preset="tiny", width=128, depth=4, num_heads=4, dtype="float32",
                                             frame_position_every_block=False, modulation="per_block"))
    c.patch = (1, 2, 2)  # on the x4 autoencoder's 16x16 latents: 8x8 tokens per latent frame of a 64x64 clip
    c.prediction = "velocity"

    c.text_encoder = ml_collections.ConfigDict(dict(kind="minilm", max_length=96))

    # Clips for the DiT: one object, so captions map cleanly to what is drawn, and plain scenes (no
    # walls, no camera pans) so the tiny model's few minutes go to colour, shape and motion.
    c.world = ml_collections.ConfigDict(dict(max_objects=1, occluder_prob=0.0, pan_prob=0.0))
    c.data = ml_collections.ConfigDict()
    c.data.sizes = ((9, 64, 64), (9, 48, 80), (9, 80, 48), (1, 64, 64))
    c.data.num_clips = 2048
    # 4 rows x 2,000 steps rather than 8 x 1,000: the same clips seen in the same time, but held-out loss
    # 0.219 instead of 0.252 (EMA); 2 rows x 4,000 gave 0.223. At this size more updates beat bigger ones.
    c.data.rows = 4
    c.data.seq_len = 384  # two 9x64x64 clips (192 tokens each), or clips and images mixed
    c.data.text_len = 256
    # The report's ablations (experiments/sweeps/): 'square' centre-crops every clip to its largest square;
    # 'terse' captions name only the object ("red ball"), the descriptive ones its size, place and motion too.
    c.data.framing = "native"
    c.data.caption_style = "descriptive"

    # Noise levels for training (sorajax.diffusion.timesteps.TrainingTimeConfig).
    c.time = ml_collections.ConfigDict(dict(
        logit_mean=0.0, logit_std=1.0, base_tokens=16, base_shift=1.0, max_tokens=4096, max_shift=3.0,
    ))

    c.train = ml_collections.ConfigDict(dict(
        steps=2000,  # ~11 of the main job's ~20 minutes on the 2-core CPU (~3 steps/s)
        learning_rate=3e-3,  # held-out loss at 8 rows x 1,000 steps: 1e-3 0.298, 3e-3 0.246, 5e-3 0.236 (QK-norm keeps it stable)
        warmup_steps=100,
        end_lr_fraction=0.1,
        weight_decay=0.0,
        adam_b1=0.9,
        adam_b2=0.99,
        grad_clip_norm=1.0,
        ema_decay=0.995,
        caption_dropout=0.1,
        log_every=25,
        save_every=500,
        keep_checkpoints=3,
        async_checkpoints=True,
        max_seconds=0.0,  # > 0: also stop after this much wall time (the GPU check's budgeted runs)
        init_from="",  # fine-tune: another DiT run's weights ('dir' or 'dir:step'), same model config
        # LoRA (sorajax.models.lora.LoraConfig): rank > 0 trains low-rank adapters of init_from's kernels only.
        lora=ml_collections.ConfigDict(dict(
            rank=0, alpha=0.0, base_weights="ema_params",
            targets=(r"(self|cross)_attn/(query|key|value|out)/kernel$", r"mlp/fc[12]/kernel$"),
        )),
    ))
    c.eval = ml_collections.ConfigDict(dict(every=500, num_clips=64))

    # Sampling defaults (sorajax.diffusion.sampling.SampleConfig); every call and command can override them.
    # step_cache > 0 skips most DiT blocks at steps that change little (sorajax.models.dit_step_cache); 0 = off.
    c.sample = ml_collections.ConfigDict(dict(method="dpmpp_2m", steps=10, guidance=4.0, use_ema=True,
                                              frames=9, height=64, width=64, step_cache=0.0))

    # Prompting with images and videos (sorajax.conditioning.MaskRates): the share of training samples
    # given clean frames or regions, per mode (at most one per sample; ~35% in total). Images (one
    # latent frame) can only get the spatial (inpaint) mode; the frame modes need videos.
    c.conditioning = ml_collections.ConfigDict(dict(
        image_to_video=0.12, extend_forward=0.06, extend_backward=0.06, connect=0.05, random_frames=0.03,
        inpaint=0.03, max_given_fraction=0.5,
    ))

    if arg == "smoke":
        c.text_encoder = ml_collections.ConfigDict(dict(kind="tiny", max_length=48))
        c.model.width, c.model.depth, c.model.num_heads = 32, 1, 2
        c.data.sizes = ((5, 16, 16), (1, 16, 16), (5, 32, 16))
        c.data.num_clips = 12
        c.data.rows, c.data.seq_len, c.data.text_len = 2, 48, 96
        c.train.steps, c.train.warmup_steps, c.train.log_every, c.train.save_every = 4, 1, 1, 2
        c.eval.every, c.eval.num_clips = 2, 4
        c.sample.steps, c.sample.frames, c.sample.height, c.sample.width = 2, 5, 16, 16
    elif arg == "long":
        c.data.num_clips = 8192
        c.train.steps, c.train.save_every, c.train.keep_checkpoints = 10000, 2500, 4
        c.eval.every = 1000
    elif arg == "mesh":  # sorajax.parallel.mesh.MeshConfig fields; -1 fills with the devices left
        c.mesh = ml_collections.ConfigDict(dict(data=-1, fsdp=1, sequence=1, tensor=1))
        c.parallel = ml_collections.ConfigDict(dict(rules=None))  # None: the default logical axis rules
    elif arg == "lora":
        c.train.init_from = "runs/main/dit"
        c.train.lora.rank, c.train.lora.alpha = 16, 16.0
        c.train.steps, c.train.warmup_steps, c.train.learning_rate, c.train.save_every = 500, 20, 3e-3, 250
        c.eval.every = 250
    elif arg not in (None, ""):
        raise ValueError(f"unknown variant {arg!r} for configs/dit_tiny.py; use '', 'long', 'mesh', 'smoke' or 'lora'")
    return c
