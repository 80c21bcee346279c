"""Loading a transformers UMT5 checkpoint folder into `UMT5Encoder`'s parameters, through `pretrained`.

Why a key map: transformers stores `nn.Linear` weights as [out, in] with heads flattened, while
sorajax keeps kernels as [in, ...out] with heads as their own (shardable) axis. The map below
names, for every checkpoint key, the parameter it fills and that re-layout; `sorajax.models.pretrained`
does the reading and the one-line refusals. `shared.weight` and `encoder.embed_tokens.weight` are
one tied table: a checkpoint may hold either or both, so both are optional, and a folder holding
neither is refused before any tensor is read.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import einops
import numpy as np

from sorajax.models import pretrained
from sorajax.models.pretrained import CheckpointError, KeyMap, Target
from sorajax.models.umt5 import UMT5Config, abstract_params
from sorajax.models.umt5_tokenizer import UMT5Tokenizer, find_tokenizer_folder

MODEL = "UMT5 encoder"
# Encoder-only folders load as they are; a whole encoder-decoder folder loads its encoder half.
FAMILIES = ("UMT5EncoderModel", "UMT5Model", "UMT5ForConditionalGeneration")
EMBEDDING_KEYS = ("shared.weight", "encoder.embed_tokens.weight")
DECODER_PREFIXES = ("decoder.", "lm_head.")


def _transposed(x: Any) -> Any:
    return einops.rearrange(x, "o i -> i o")


def key_map(config: UMT5Config) -> KeyMap:
    """Every transformers key of the encoder -> (sorajax parameter path, re-layout)."""
    heads = config.num_heads
    table: dict[str, Target] = {key: Target(("token_embedding",), optional=True) for key in EMBEDDING_KEYS}
    table["encoder.final_layer_norm.weight"] = Target(("final_norm", "scale"))
    for i in range(config.num_layers):
        block, ours = f"encoder.block.{i}.layer", f"layer_{i}"
        attention = f"{block}.0.SelfAttention"
        # (Parameter names avoid "value": `pretrained` reads that name as a Partitioned box's field.)
        for name in ("q", "k", "v"):
            table[f"{attention}.{name}.weight"] = Target(
                (ours, "attention", name), lambda x: einops.rearrange(x, "(n k) d -> d n k", n=heads))
        table[f"{attention}.o.weight"] = Target(
            (ours, "attention", "o"), lambda x: einops.rearrange(x, "d (n k) -> n k d", n=heads))
        table[f"{attention}.relative_attention_bias.weight"] = Target((ours, "attention", "relative_bias"))
        table[f"{block}.0.layer_norm.weight"] = Target((ours, "attention_norm", "scale"))
        for source, name in (("wi_0", "gate"), ("wi_1", "up"), ("wo", "down")):
            table[f"{block}.1.DenseReluDense.{source}.weight"] = Target((ours, "mlp", name), _transposed)
        table[f"{block}.1.layer_norm.weight"] = Target((ours, "mlp_norm", "scale"))
    return table


def _encoder_tensors(files: list[Path]):
    """The checkpoint's tensors without a decoder or LM head (present in encoder-decoder folders)."""
    for source, key, array in pretrained.read_tensors(files):
        if not key.startswith(DECODER_PREFIXES):
            yield source, key, array


def _check_embedding_present(folder: Path, files: list[Path]) -> None:
    from safetensors import safe_open

    for path in files:
        with safe_open(str(path), framework="numpy") as handle:
            if any(key in EMBEDDING_KEYS for key in handle.keys()):
                return
    raise CheckpointError(f"{folder}: no token embedding ({' or '.join(EMBEDDING_KEYS)}) in any shard: the folder "
                          "is incomplete or not a UMT5 checkpoint; download the text_encoder/ folder again")


def load_umt5(folder: str | Path, tokenizer_folder: str | Path | None = None,
              dtype: str = "float32") -> tuple[UMT5Config, dict[str, Any], UMT5Tokenizer]:
    """(config, float32 params, tokenizer) from a transformers UMT5 folder (e.g. Wan's text_encoder/).

    The tokenizer is read from `tokenizer_folder`, else the folder itself, else its sibling
    `tokenizer/` (diffusers' layout). `dtype` is the compute dtype recorded in the config.
    """
    folder = Path(folder)
    hf_config = pretrained.folder_config(folder, FAMILIES, MODEL)
    try:
        config = UMT5Config.from_hf_dict(hf_config, dtype=dtype)
    except (KeyError, ValueError) as error:
        raise CheckpointError(f"{folder / 'config.json'}: {error}: use the config.json saved with the checkpoint") \
            from error
    tokenizer = UMT5Tokenizer.from_folder(find_tokenizer_folder(folder, tokenizer_folder))
    files = pretrained.checkpoint_files(folder)
    _check_embedding_present(folder, files)
    params = pretrained.fill_params(_encoder_tensors(files), key_map(config), abstract_params(config), MODEL,
                                    dtype=np.float32)
    return config, params, tokenizer
