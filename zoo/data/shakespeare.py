"""Shakespeare's plays at the character level (``text/shakespeare.tar.gz``, 42 plays).

Deterministic split by play: the plays sorted by file name, every 10th (k % 10 == 8) for
validation and (k % 10 == 9) for test. The vocabulary is every character of the training
plays; anything else becomes ``<unk>``.
"""

from __future__ import annotations

from ._common import data_root, missing, open_tar
from ._text import LMDataModule

__all__ = ["ShakespeareCharDataModule"]


class ShakespeareCharDataModule(LMDataModule):
    """Character-level Shakespeare; ``vocab_size`` is ignored (all training characters).

    Example:
        >>> from zoo.data import ShakespeareCharDataModule
        >>> type(ShakespeareCharDataModule(data_dir="/nonexistent")).__name__
        'ShakespeareCharDataModule'
    """

    name = "shakespeare_char"
    source = "text/shakespeare.tar.gz"
    level = "char"

    def __init__(self, *args, vocab_size: int | None = None, **kwargs) -> None:
        super().__init__(*args, vocab_size=None, **kwargs)

    def _documents(self, split: str) -> list[list[str]]:
        tar = data_root(self.data_dir) / "text" / "shakespeare.tar.gz"
        if not tar.is_file():
            raise missing(
                "Shakespeare plays",
                tar,
                "Set ZOO_DATA_DIR to the folder holding text/shakespeare.tar.gz",
            )
        with open_tar(
            tar, "the Shakespeare archive", "replace it with a good copy (text/shakespeare.tar.gz)"
        ) as tf:
            plays = sorted(
                (m.name, m)
                for m in tf.getmembers()
                if m.isfile() and m.name.endswith(".txt") and "/texts/" in m.name
            )
            docs = []
            for k, (_, m) in enumerate(plays):
                r = k % 10
                s = "val" if r == 8 else "test" if r == 9 else "train"
                if s == split:
                    docs.append(list(tf.extractfile(m).read().decode("utf-8")))
        return docs
