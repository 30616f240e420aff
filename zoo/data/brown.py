"""The Brown corpus (Francis & Kucera 1961), POS tags stripped, word level.

``text/brown.tar.gz`` holds 500 tagged files (``ca01`` ... ``cr09``, ``word/tag`` tokens). The
split is deterministic and stratified by genre: within each genre letter the files are sorted,
and file ``k`` (0-based) goes to validation when ``k % 10 == 8``, to test when ``k % 10 == 9``,
else to training (80/10/10).
"""

from __future__ import annotations

import re

from ._common import data_root, missing, open_tar
from ._text import LMDataModule, Vocab

__all__ = ["BrownDataModule", "brown_split"]

_FILE = re.compile(r"^c([a-r])(\d\d)$")


def brown_split(index_in_genre: int) -> str:
    r = index_in_genre % 10
    return "val" if r == 8 else "test" if r == 9 else "train"


class BrownDataModule(LMDataModule):
    """Brown corpus language modelling (tags stripped, lower-cased, one ``<eos>`` per sentence line).

    Example:
        >>> from zoo.data import BrownDataModule
        >>> BrownDataModule(data_dir="/nonexistent", vocab_size=5000).vocab_size
        5000
    """

    name = "brown"
    source = "text/brown.tar.gz"

    def _documents(self, split: str) -> list[list[str]]:
        tar = data_root(self.data_dir) / "text" / "brown.tar.gz"
        if not tar.is_file():
            raise missing(
                "Brown corpus", tar, "Set ZOO_DATA_DIR to the folder holding text/brown.tar.gz"
            )
        by_genre: dict[str, list[tuple[str, bytes]]] = {}
        with open_tar(
            tar, "the Brown corpus archive", "replace it with a good copy (text/brown.tar.gz)"
        ) as tf:
            for m in tf.getmembers():
                name = m.name.rsplit("/", 1)[-1]
                mm = _FILE.match(name)
                if m.isfile() and mm:
                    by_genre.setdefault(mm.group(1), []).append((name, tf.extractfile(m).read()))
        docs = []
        for genre in sorted(by_genre):
            for k, (_, raw) in enumerate(sorted(by_genre[genre])):
                if brown_split(k) != split:
                    continue
                toks: list[str] = []
                for line in raw.decode("utf-8", errors="replace").splitlines():
                    words = [w.rsplit("/", 1)[0].lower() for w in line.split() if "/" in w]
                    if words:
                        toks += words + [Vocab.EOS]
                docs.append(toks)
        return docs
