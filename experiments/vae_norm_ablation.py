"""Ablation: per-frame GroupNorm vs per-pixel RMS norm in the tiny autoencoder.

    python experiments/vae_norm_ablation.py [--steps 600] [--groups 8 0]

Trains the tiny autoencoder (configs/vae_tiny.py) once per normalisation, same data
and seed, and prints held-out PSNR/SSIM of each, side by side, from one run. This is
the measurement behind `norm_groups=0` in the tiny config (docs/design.md).
"""

from __future__ import annotations

import argparse
import os
import tempfile

from sorajax.config_loading import load_config
from sorajax.logging_setup import quiet_library_logs
from sorajax.train.vae_trainer import train_vae


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=600)
    parser.add_argument("--groups", type=int, nargs="+", default=[8, 0], help="norm_groups values (0 = RMS)")
    parser.add_argument("--workdir", default=None, help="where the runs go (default: a temp folder)")
    args = parser.parse_args()
    quiet_library_logs()
    root = args.workdir or tempfile.mkdtemp(prefix="vae_norm_ablation_")
    results = {}
    for groups in args.groups:
        config = load_config("configs/vae_tiny.py", {
            "vae.norm_groups": groups, "train.steps": args.steps, "eval.every": args.steps,
            "train.save_every": args.steps, "train.noise_ramp_steps": args.steps // 2,
        })
        results[groups] = train_vae(config, os.path.join(root, f"groups{groups}"))
    print(f"\nheld-out reconstruction after {args.steps} steps (runs in {root}):")
    print(f"  {'norm':18s} {'PSNR dB':>8s} {'SSIM':>6s}")
    for groups, metrics in results.items():
        name = "RMS per pixel" if groups == 0 else f"GroupNorm({groups})"
        print(f"  {name:18s} {metrics['psnr']:8.2f} {metrics['ssim']:6.3f}")


if __name__ == "__main__":
    main()
