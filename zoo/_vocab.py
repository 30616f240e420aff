"""Word and character vocabularies of the language models: ``word_tokenize`` and ``Vocab``.

Kept free of Lightning and the data modules, so that encoding and decoding text (``zoo.text``,
``zoo generate``) imports only what a model needs.
"""

from __future__ import annotations

import json
import re
from collections import Counter
from collections.abc import Iterable
from pathlib import Path

__all__ = ["Vocab", "word_tokenize"]

_WORD = re.compile(r"[A-Za-z]+(?:'[A-Za-z]+)?|\d+(?:[.,]\d+)*|[^\sA-Za-z\d]")


def word_tokenize(text: str, lower: bool = True) -> list[str]:
    """Words, numbers and single punctuation marks, e.g. ``"It's 1,000."`` ->
    ``["it's", "1,000", "."]``."""
    if lower:
        text = text.lower()
    return _WORD.findall(text)


class Vocab:
    """Token <-> id map built from the training split only; unknown tokens map to ``<unk>``.

    Args:
        tokens: Token list, ids in order. ``<unk>`` and ``<eos>`` are always present.
    """

    UNK, EOS = "<unk>", "<eos>"

    def __init__(self, tokens: list[str]) -> None:
        specials = [t for t in (self.UNK, self.EOS) if t not in tokens]
        self.itos = specials + list(tokens)
        self.stoi = {t: i for i, t in enumerate(self.itos)}
        self.unk = self.stoi[self.UNK]

    @classmethod
    def build(
        cls, docs: Iterable[list[str]], max_size: int | None = None, min_freq: int = 1
    ) -> Vocab:
        counts = Counter(t for d in docs for t in d)
        items = sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))
        toks = [t for t, c in items if c >= min_freq and t not in (cls.UNK, cls.EOS)]
        return cls(toks[: max_size - 2] if max_size else toks)

    def __len__(self) -> int:
        return len(self.itos)

    def encode(self, tokens: list[str]) -> list[int]:
        return [self.stoi.get(t, self.unk) for t in tokens]

    def decode(self, ids: Iterable[int], sep: str = " ") -> str:
        return sep.join(self.itos[int(i)] for i in ids)

    def save(self, path: str | Path) -> None:
        Path(path).write_text(json.dumps(self.itos))

    @classmethod
    def load(cls, path: str | Path) -> Vocab:
        return cls(json.loads(Path(path).read_text()))
