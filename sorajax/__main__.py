"""`python -m sorajax`: the version, how this process runs, and the commands there are."""

import sorajax
from sorajax import host_memory

COMMANDS = ("main", "train_vae", "train_dit", "generate", "probe", "eval_vae", "convert", "merge_lora",
            "build_dataset", "recaption", "sweep", "compare", "aot_compile")

if __name__ == "__main__":
    print(f"sorajax {sorajax.__version__}")
    print(host_memory.describe())
    print("commands: " + ", ".join(f"python -m sorajax.{name}" for name in COMMANDS))
