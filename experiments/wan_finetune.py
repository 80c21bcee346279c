"""A converted Wan checkpoint fine-tuned on the built-in world: held-out loss before and after, LoRA and full.

    python experiments/wan_finetune.py --workdir=/tmp/wan_ft [--src=tests/fixtures/wan21_t2v_tiny] [--steps=200]

Converts `--src` (a diffusers-layout Wan folder) with `python -m sorajax.convert`, then trains with
configs/wan_finetune.py three ways from the same base, the same clips and the same held-out batches:
a LoRA run at learning rate 1e-12 (its held-out loss is the base's: the adapters start at zero and barely move), a LoRA
run and a full fine-tune. Prints one JSON table; then samples the LoRA run to show it loads and generates.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def train(run: str, workdir: str, steps: int, overrides: list[str]) -> dict[str, float]:
    command = [sys.executable, "-m", "sorajax.train_dit", f"--config={REPO}/configs/wan_finetune.py:{run}",
               f"--workdir={workdir}", f"--config.train.steps={steps}", f"--config.eval.every={steps}",
               f"--config.train.save_every={steps}", *overrides]
    subprocess.run(command, check=True, cwd=REPO)
    last = {}
    with open(os.path.join(workdir, "metrics.jsonl")) as f:
        for line in f:
            record = json.loads(line)
            if "eval/val_loss" in record:
                last = record
    return {"val_loss": last["eval/val_loss"], "step": last["step"]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workdir", required=True)
    parser.add_argument("--src", default=os.path.join(REPO, "tests", "fixtures", "wan21_t2v_tiny"))
    parser.add_argument("--steps", type=int, default=200)
    args = parser.parse_args()
    run = os.path.join(args.workdir, "converted")
    if not os.path.isdir(run):
        subprocess.run([sys.executable, "-m", "sorajax.convert", f"--src={args.src}", f"--out={run}"], check=True)
    table = {
        "base (LoRA at lr 1e-12)": train(run, os.path.join(args.workdir, "base"), 2, ["--config.train.learning_rate=1e-12"]),
        "LoRA rank 16": train(run, os.path.join(args.workdir, "lora"), args.steps, []),
        "full fine-tune": train(run, os.path.join(args.workdir, "full"), args.steps,
                                ["--config.train.lora.rank=0", "--config.train.lora.alpha=0",
                                 "--config.train.learning_rate=3e-4"]),
    }
    print(json.dumps(table, indent=1))
    from sorajax.pipeline import Pipeline

    video = Pipeline.from_run(os.path.join(args.workdir, "lora")).generate(
        ["a red ball moves to the left"], frames=9, height=64, width=64, steps=10)[0]
    print("LoRA run sampled:", video.shape, video.dtype)


if __name__ == "__main__":
    main()
