"""UMT5's tokenizer from a checkpoint folder: `tokenizer.json` (tokenizers), else `spiece.model` (sentencepiece).

Why two formats: a downloaded tokenizer folder always has one of them (Wan's has both), and
both must give transformers' ids. transformers' T5 tokenizers append the end-of-sequence token
`</s>` to every text and, when truncating, keep it: a text longer than `max_length` keeps its first
`max_length - 1` pieces and then `</s>`; shorter ones are right-padded with `<pad>` (id 0).

The sentencepiece fallback is equal to transformers' conversion of the same model for ordinary
text (tests/test_umt5.py checks captions, accents, full-width letters, unknown characters and
raw whitespace); it does not split special-token strings such as a literal "</s>" out of the text,
and a vocabulary trained with byte fallback would give byte pieces where transformers gives <unk>.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from sorajax.models.pretrained import CheckpointError

EOS, PAD = "</s>", "<pad>"
TOKENIZER_FILES = ("tokenizer.json", "spiece.model")


def find_tokenizer_folder(model_folder: str | Path, tokenizer_folder: str | Path | None = None) -> Path:
    """The tokenizer's folder: the one given, else the model folder, else its sibling `tokenizer/`."""
    model_folder = Path(model_folder)
    candidates = [Path(tokenizer_folder)] if tokenizer_folder is not None else [model_folder,
                                                                                model_folder.parent / "tokenizer"]
    for folder in candidates:
        if any((folder / name).is_file() for name in TOKENIZER_FILES):
            return folder
    where = " or ".join(str(folder) for folder in candidates)
    raise CheckpointError(f"{where}: no {' or '.join(TOKENIZER_FILES)}: pass the tokenizer/ folder that came with "
                          "the checkpoint (tokenizer_folder=...)")


@dataclasses.dataclass(eq=False)
class UMT5Tokenizer:
    """Texts -> (ids int32 [B, L], mask bool [B, L]) as transformers' T5 tokenizers make them."""

    backend: Any  # tokenizers.Tokenizer or sentencepiece.SentencePieceProcessor
    source: str
    eos_id: int
    pad_id: int

    @classmethod
    def from_folder(cls, folder: str | Path) -> "UMT5Tokenizer":
        folder = Path(folder)
        if (folder / "tokenizer.json").is_file():
            import tokenizers

            backend = tokenizers.Tokenizer.from_file(str(folder / "tokenizer.json"))
            backend.no_truncation()
            backend.no_padding()
            ids = backend.token_to_id(EOS), backend.token_to_id(PAD)
            source = folder / "tokenizer.json"
        elif (folder / "spiece.model").is_file():
            import sentencepiece

            backend = sentencepiece.SentencePieceProcessor(model_file=str(folder / "spiece.model"))
            ids = backend.piece_to_id(EOS), backend.piece_to_id(PAD)
            ids = tuple(None if i == backend.unk_id() else i for i in ids)
            source = folder / "spiece.model"
        else:
            raise CheckpointError(f"{folder}: no {' or '.join(TOKENIZER_FILES)}: point at the checkpoint's "
                                  "tokenizer/ folder")
        if None in ids:
            raise CheckpointError(f"{source}: no {EOS!r} or {PAD!r} token: this is not a T5-family tokenizer; "
                                  "use the tokenizer that came with the checkpoint")
        return cls(backend, str(source), eos_id=int(ids[0]), pad_id=int(ids[1]))

    @property
    def vocab_size(self) -> int:
        if hasattr(self.backend, "get_vocab_size"):
            return int(self.backend.get_vocab_size())
        return int(self.backend.get_piece_size())

    def _pieces(self, texts: list[str]) -> list[list[int]]:
        """Each text's ids without `</s>` (the tokenizer.json post-processor's `</s>` is dropped here)."""
        if hasattr(self.backend, "encode_batch"):
            encodings = self.backend.encode_batch(texts, add_special_tokens=False)
            return [list(item.ids) for item in encodings]
        return [list(ids) for ids in self.backend.encode(texts)]

    def __call__(self, texts: Sequence[str], max_length: int) -> tuple[np.ndarray, np.ndarray]:
        if isinstance(texts, str) or not all(isinstance(text, str) for text in texts):
            raise ValueError("the tokenizer takes a list of strings; wrap a single caption as [caption]")
        if max_length < 1:
            raise ValueError(f"max_length={max_length} must leave room for {EOS}")
        ids = np.full((len(texts), max_length), self.pad_id, np.int32)
        mask = np.zeros((len(texts), max_length), bool)
        for row, pieces in enumerate(self._pieces(list(texts))):
            kept = pieces[: max_length - 1] + [self.eos_id]
            ids[row, : len(kept)], mask[row, : len(kept)] = kept, True
        return ids, mask
