"""Write the UMT5 parity fixtures from the REFERENCE implementation (transformers + diffusers, PyTorch).

Why: `sorajax.models.umt5` re-implements transformers' `UMT5EncoderModel` and the text path of
diffusers' Wan pipeline. The check that they are right is a comparison with those libraries on the
same weights and tokenizer, which needs PyTorch, which the project must not need. So this script
runs once, by hand, in the separate reference environment, and its small outputs are committed:

- `tests/fixtures/umt5_tiny/`: a tiny tokenizer in both real formats (a sentencepiece unigram model
  `spiece.model` trained here on a few dozen sentences, and the `tokenizer.json` transformers
  converts from it), and a tiny random-weight `UMT5EncoderModel` saved by `save_pretrained`
  (config.json + model.safetensors): a folder laid out like a downloaded checkpoint.
- `tests/fixtures/umt5_tiny.npz`: reference token ids (from each tokenizer format), the encoder's
  last hidden state, and the Wan pipeline's zero-padded prompt embeddings at two lengths.
- `tests/fixtures/umt5_xxl_keys.txt`: every key and shape of google/umt5-xxl's encoder, from a model
  built without weights, so key coverage of the full size is tested without 11 GB of weights.

How to run (nothing is downloaded; transformers' sentencepiece conversion needs `protobuf` in that
environment: install it there, or expose an abi3 build of it on PYTHONPATH):

    /work/refenv/bin/python tools/make_umt5_fixture.py
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import tempfile
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

import accelerate  # noqa: E402
import diffusers  # noqa: E402
import numpy as np  # noqa: E402
import sentencepiece  # noqa: E402
import torch  # noqa: E402
import transformers  # noqa: E402
from diffusers.pipelines.wan.pipeline_wan import WanPipeline, prompt_clean  # noqa: E402

FIXTURES = Path(__file__).resolve().parents[1] / "tests" / "fixtures"

# Training text for the tiny tokenizer: captions in the style of the project's world, plus digits,
# punctuation and a few accented words so the normaliser has work to do. No byte fallback, as in
# mT5's vocabulary: characters outside it become <unk>.
CORPUS = [
    "A small red ball bounces on a dark blue background.",
    "A large green square drifts slowly to the left.",
    "The camera pans to the right across a grey wall.",
    "A yellow triangle falls and bounces twice on the floor.",
    "Two circles, one orange and one purple, move apart.",
    "A blue square hides behind a wall for three seconds, then comes back.",
    "The ball rolls from the top left corner to the bottom right corner.",
    "A tiny white dot moves in a circle around the centre of the frame.",
    "Un petit cercle rouge se déplace vers la droite.",
    "Ein großes grünes Quadrat bewegt sich nach links.",
    "It is 3:45 p.m. and the shapes keep moving at 12 pixels per frame.",
    "Nothing moves; the scene is still for 5 seconds.",
    "A purple ball and a cyan square collide and both stop.",
    "The camera zooms out slowly while a black square rotates.",
    "A red square appears from behind the grey occluder on the right.",
    "The green ball falls under gravity and bounces three times.",
    "Several shapes of different colours drift across a white background.",
    "A magenta triangle moves up, then down, then up again.",
    "The scene is a dark room with one bright yellow circle in the middle.",
    "A slow pan to the left reveals a second blue ball.",
    "Shapes: circle, square, triangle; colours: red, green, blue.",
    "Video of a bouncing ball, 24 frames, 256 by 256 pixels.",
    "A brown square slides to the bottom edge and stops there.",
    "An orange circle grows larger as the camera moves closer.",
    "The wall hides the ball for a while, and then the ball comes back out.",
    "A cat sits next to a red ball in a sunny garden.",
    "Rain falls on a quiet street at night, lights reflect in puddles.",
    "A person walks a dog along the beach at sunset.",
    "Two birds fly over a green field under a cloudy sky.",
    "A bright red car drives fast along a winding mountain road.",
    "Hello, world! Are you (really) sure? Yes -- quite sure.",
    "Café, naïve, façade, über, señor, Ærø.",
]
# The three captions encoded: a short one with an HTML entity and messy whitespace (Wan's prompt
# cleaning must fix both), a medium one, and one long enough to be truncated at MAX_LENGTH.
CAPTIONS = [
    "  A cat &amp;   a ball.  ",
    "A large green square drifts slowly to the left.",
    "The camera pans slowly to the left while a large green square drifts behind a grey wall, disappears "
    "for a few seconds, and then comes back out on the other side of the frame.",
]
# Text outside the tiny vocabulary and raw whitespace: how each tokenizer format handles the unusual.
PROBES = ["Tom & Jerry pay 5 euros", "\u20ac\u20ac and \U0001f642 unknown", "  spaces   and\ttabs\n here ",
          "FULLWIDTH \uff26\uff35\uff2c\uff2c and ligature \ufb01ne", "caf\u00e9 vs cafe\u0301"]
MAX_LENGTH = 24
LONG_LENGTH = 40  # a second padding length, longer than the encoder's input above
TINY = dict(d_model=32, d_kv=8, num_heads=4, d_ff=64, num_layers=3, relative_attention_num_buckets=32,
            relative_attention_max_distance=20)  # a small max distance so LONG_LENGTH reaches the clamp
XXL = dict(vocab_size=256384, d_model=4096, d_kv=64, num_heads=64, d_ff=10240, num_layers=24,
           relative_attention_num_buckets=32, relative_attention_max_distance=128)


def train_tokenizer(folder: Path) -> None:
    """spiece.model (T5 ids: pad 0, eos 1, unk 2, no bos) and the tokenizer.json converted from it."""
    with tempfile.TemporaryDirectory() as scratch:
        corpus = Path(scratch) / "corpus.txt"
        corpus.write_text("\n".join(CORPUS * 4) + "\n")
        sentencepiece.SentencePieceTrainer.train(
            input=str(corpus), model_prefix=str(Path(scratch) / "spiece"), model_type="unigram", vocab_size=400, minloglevel=2,
            pad_id=0, eos_id=1, unk_id=2, bos_id=-1, pad_piece="<pad>", eos_piece="</s>", unk_piece="<unk>",
            character_coverage=1.0, byte_fallback=False, hard_vocab_limit=False, num_threads=1, seed_sentencepiece_size=2000,
        )
        shutil.copy(Path(scratch) / "spiece.model", folder / "spiece.model")
    (folder / "tokenizer_config.json").write_text(json.dumps({"tokenizer_class": "T5Tokenizer", "extra_ids": 0}))
    # transformers converts spiece.model itself (this needs protobuf); saving writes its tokenizer.json.
    tokenizer = transformers.AutoTokenizer.from_pretrained(str(folder), local_files_only=True)
    assert len(tokenizer) == sentencepiece.SentencePieceProcessor(model_file=str(folder / "spiece.model")).get_piece_size()
    tokenizer.save_pretrained(str(folder))
    assert (folder / "tokenizer.json").is_file(), "transformers wrote no tokenizer.json"


def reference_ids(folder: Path, texts: list[str], max_length: int) -> tuple[np.ndarray, np.ndarray]:
    tokenizer = transformers.AutoTokenizer.from_pretrained(str(folder), local_files_only=True)
    batch = tokenizer(texts, padding="max_length", max_length=max_length, truncation=True,
                      add_special_tokens=True, return_attention_mask=True, return_tensors="np")
    return batch["input_ids"].astype(np.int32), batch["attention_mask"].astype(np.int32)


class _WanTextPath:
    """Just what `WanPipeline._get_t5_prompt_embeds` reads from its pipeline: tokenizer and encoder."""

    def __init__(self, tokenizer, text_encoder):
        self.tokenizer, self.text_encoder = tokenizer, text_encoder
        self._execution_device = torch.device("cpu")


def wan_embeddings(tokenizer, model, max_length: int) -> np.ndarray:
    with torch.no_grad():
        embeds = WanPipeline._get_t5_prompt_embeds(_WanTextPath(tokenizer, model), CAPTIONS, 1, max_length,
                                                   torch.device("cpu"), torch.float32)
    return embeds.numpy().astype(np.float32)


def write_xxl_keys(path: Path) -> int:
    config = transformers.UMT5Config(**XXL, feed_forward_proj="gated-gelu", layer_norm_epsilon=1e-6,
                                     tie_word_embeddings=False)
    with accelerate.init_empty_weights():
        model = transformers.UMT5EncoderModel(config)
    state = model.state_dict(keep_vars=True)
    path.write_text("".join(f"{k}\t{','.join(str(d) for d in v.shape)}\n" for k, v in state.items()))
    return len(state)


def xxl_buckets(length: int) -> np.ndarray:
    """The reference's bucket of every (query, key) pair at UMT5-XXL's 32 buckets / distance 128."""
    config = transformers.UMT5Config(**XXL, feed_forward_proj="gated-gelu")
    attention = transformers.models.umt5.modeling_umt5.UMT5Attention(config, has_relative_attention_bias=True)
    position = torch.arange(length)
    return attention._relative_position_bucket(position[None, :] - position[:, None]).numpy().astype(np.int32)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=FIXTURES)
    args = parser.parse_args()
    folder = args.out / "umt5_tiny"
    if folder.exists():
        shutil.rmtree(folder)
    folder.mkdir(parents=True)
    train_tokenizer(folder)

    only_spiece = Path(tempfile.mkdtemp()) / "spiece_only"
    only_spiece.mkdir()
    shutil.copy(folder / "spiece.model", only_spiece / "spiece.model")
    shutil.copy(folder / "tokenizer_config.json", only_spiece / "tokenizer_config.json")

    torch.manual_seed(0)
    tokenizer = transformers.AutoTokenizer.from_pretrained(str(folder), local_files_only=True)
    vocab = len(tokenizer)
    config = transformers.UMT5Config(vocab_size=vocab, **TINY, feed_forward_proj="gated-gelu",
                                     layer_norm_epsilon=1e-6, tie_word_embeddings=False, initializer_factor=1.0)
    model = transformers.UMT5EncoderModel(config).eval().to(torch.float32)
    with torch.no_grad():  # norms at 1 and a small bias would make those parts untested: randomise them
        for name, parameter in model.named_parameters():
            if "layer_norm" in name:
                parameter.copy_(1.0 + 0.2 * torch.randn_like(parameter))
            if "relative_attention_bias" in name:
                parameter.copy_(torch.randn_like(parameter))
    model.config._attn_implementation = "eager"
    model.save_pretrained(str(folder), safe_serialization=True)

    cleaned = [prompt_clean(text) for text in CAPTIONS]  # what the Wan pipeline tokenizes
    ids, mask = reference_ids(folder, cleaned, MAX_LENGTH)
    spiece_ids, spiece_mask = reference_ids(only_spiece, cleaned, MAX_LENGTH)
    raw_ids, _ = reference_ids(folder, CORPUS, 64)
    raw_spiece_ids, _ = reference_ids(only_spiece, CORPUS, 64)
    probe_ids, _ = reference_ids(folder, PROBES, 32)
    probe_spiece_ids, _ = reference_ids(only_spiece, PROBES, 32)
    with torch.no_grad():
        hidden = model(input_ids=torch.from_numpy(ids).long(), attention_mask=torch.from_numpy(mask).long())
    wan = wan_embeddings(tokenizer, model, MAX_LENGTH)
    wan_long = wan_embeddings(tokenizer, model, LONG_LENGTH)
    assert mask.sum(axis=1).tolist()[2] == MAX_LENGTH and mask.sum(axis=1).min() < MAX_LENGTH

    np.savez_compressed(
        args.out / "umt5_tiny.npz",
        captions=np.array(CAPTIONS), cleaned=np.array(cleaned), corpus=np.array(CORPUS),
        max_length=np.int32(MAX_LENGTH), long_length=np.int32(LONG_LENGTH),
        input_ids=ids, attention_mask=mask, spiece_input_ids=spiece_ids, spiece_attention_mask=spiece_mask,
        corpus_ids=raw_ids, corpus_spiece_ids=raw_spiece_ids,
        probes=np.array(PROBES), probe_ids=probe_ids, probe_spiece_ids=probe_spiece_ids,
        last_hidden_state=hidden.last_hidden_state.numpy().astype(np.float32),
        wan_embeds=wan, wan_embeds_long=wan_long, xxl_buckets_512=xxl_buckets(512),
        versions=np.array(f"torch {torch.__version__}, transformers {transformers.__version__}, "
                          f"diffusers {diffusers.__version__}, sentencepiece {sentencepiece.__version__}"),
    )
    count = write_xxl_keys(args.out / "umt5_xxl_keys.txt")
    sizes = {p.name: p.stat().st_size for p in sorted(folder.iterdir())}
    print(json.dumps({"vocab": vocab, "tiny_folder": sizes, "npz": (args.out / "umt5_tiny.npz").stat().st_size,
                      "xxl_keys": count, "spiece_equals_json": bool((ids == spiece_ids).all()),
                      "corpus_equal": bool((raw_ids == raw_spiece_ids).all()),
                      "probes_equal": bool((probe_ids == probe_spiece_ids).all())}, indent=1))


if __name__ == "__main__":
    main()
