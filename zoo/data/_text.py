"""Shared machinery of the language-modelling data modules.

Corpora become one stream of token ids per split; the training stream is cut into
``batch_size`` parallel rows and served as consecutive ``(batch, bptt)`` segments, so that
segment ``i + 1`` of a row continues segment ``i`` (what segment memory and warm starts need).
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import lightning.pytorch as pl
import torch
from torch import Tensor
from torch.utils.data import DataLoader, Dataset

from .._vocab import Vocab, word_tokenize
from ._common import cache_root, cached_file, check_positive, data_root
from ._resumable import ResumableLoader

__all__ = ["Vocab", "word_tokenize", "StreamSegments", "LMDataModule"]


class StreamSegments(Dataset):
    """Consecutive ``(x, y)`` segments of a stream split into ``batch_size`` rows.

    Item ``i`` is a whole batch: ``x = rows[:, i*T:(i+1)*T]``, ``y`` shifted by one token.
    """

    def __init__(self, stream: Tensor, batch_size: int, bptt: int) -> None:
        n = (stream.numel() - 1) // batch_size
        if n < 2:
            raise ValueError(
                f"a stream of {stream.numel()} tokens is too short for batch size {batch_size}"
            )
        self.x = stream[: n * batch_size].view(batch_size, n)
        self.y = stream[1 : n * batch_size + 1].view(batch_size, n)
        self.bptt = bptt
        self.n = n

    def __len__(self) -> int:
        return (self.n + self.bptt - 1) // self.bptt

    def __getitem__(self, i: int) -> tuple[Tensor, Tensor]:
        if not 0 <= i < len(self):
            raise IndexError(i)
        s = slice(i * self.bptt, min((i + 1) * self.bptt, self.n))
        return self.x[:, s], self.y[:, s]


class LMDataModule(pl.LightningDataModule):
    """Base of the text data modules: subclasses implement ``_documents(split)``.

    Args:
        data_dir: Dataset root (default ``$ZOO_DATA_DIR``).
        batch_size: Parallel streams in training.
        eval_batch_size: Parallel streams in evaluation.
        bptt: Segment length in tokens.
        vocab_size: Largest vocabulary (most frequent training tokens); ``None`` keeps all.
        limit_tokens: Truncate every split to this many tokens (smoke tests).
    """

    name = "text"
    level = "word"

    def __init__(
        self,
        data_dir: str | None = None,
        batch_size: int = 16,
        eval_batch_size: int = 10,
        bptt: int = 128,
        vocab_size: int | None = 10000,
        limit_tokens: int | None = None,
    ) -> None:
        super().__init__()
        check_positive(
            type(self).__name__, batch_size=batch_size, eval_batch_size=eval_batch_size, bptt=bptt
        )
        self.save_hyperparameters()
        self.data_dir = data_dir
        self.batch_size = batch_size
        self.eval_batch_size = eval_batch_size
        self.bptt = bptt
        self.vocab_size = vocab_size
        self.limit_tokens = limit_tokens
        self.vocab: Vocab | None = None
        self.streams: dict[str, Tensor] = {}

    # subclasses -------------------------------------------------------------------------------
    def _documents(self, split: str) -> list[list[str]]:  # pragma: no cover - abstract
        """The split's documents, each a list of tokens (``<eos>`` between lines where wanted)."""
        raise NotImplementedError

    eval_splits = ("test", "val", "train")

    def eval_split(self, split: str) -> list[str]:
        """The raw tokens of ``split`` (``test``, ``val`` or ``train``), documents concatenated;
        a model encodes them with its own vocabulary.

        Raises:
            ValueError: for another split.
        """
        if split not in self.eval_splits:
            raise ValueError(f"unknown split {split!r} for {self.name}: use test, val or train")
        return [t for doc in self._documents(split) for t in doc]

    source: str | None = None  # the raw file under the data root, e.g. "text/sotu.tar.gz"

    def _sources(self) -> list[Path]:
        """The raw files the streams are built from (the cache is keyed to them)."""
        return [data_root(self.data_dir) / self.source] if self.source else []

    def _cache_dir(self) -> Path:
        """The processed streams' folder, keyed to the source files (path, size, mtime): a
        cache written from other data is never read, and a missing source is an error."""
        sources = self._sources()
        stem = f"{self.name}-{self.level}-v{self.vocab_size}"
        how = f"Set ZOO_DATA_DIR (or data_dir) to the folder holding {self.source or 'the data'}."
        return cached_file(cache_root() / "text", stem, "", sources, f"{self.name} data", how)

    # lightning --------------------------------------------------------------------------------
    def prepare_data(self) -> None:
        self._build()

    def setup(self, stage: str | None = None) -> None:
        self._build()

    def _build(self) -> None:
        if self.streams:
            return
        cache = self._cache_dir()
        if (cache / "vocab.json").is_file() and all(
            (cache / f"{s}.pt").is_file() for s in ("train", "val", "test")
        ):
            self.vocab = Vocab.load(cache / "vocab.json")
            self.streams = {
                s: torch.load(cache / f"{s}.pt", weights_only=True)
                for s in ("train", "val", "test")
            }
        else:
            docs = {s: self._documents(s) for s in ("train", "val", "test")}
            self.vocab = Vocab.build(docs["train"], max_size=self.vocab_size)
            self.streams = {
                s: torch.tensor([i for d in ds for i in self.vocab.encode(d)], dtype=torch.long)
                for s, ds in docs.items()
            }
            # write beside the cache and rename, so runs sharing it never read a partial file
            tmp = cache.with_name(f"{cache.name}.tmp{os.getpid()}")
            tmp.mkdir(parents=True, exist_ok=True)
            self.vocab.save(tmp / "vocab.json")
            for s, t in self.streams.items():
                torch.save(t, tmp / f"{s}.pt")
            try:
                tmp.rename(cache)
            except OSError:  # another run got there first: theirs is identical
                shutil.rmtree(tmp, ignore_errors=True)
        if self.limit_tokens:
            self.streams = {s: t[: self.limit_tokens] for s, t in self.streams.items()}

    def stats(self) -> dict:
        """Token counts, vocabulary size and out-of-vocabulary rates per split."""
        self._build()
        return {
            "vocab_size": len(self.vocab),
            **{f"{s}_tokens": int(t.numel()) for s, t in self.streams.items()},
            **{
                f"{s}_unk_rate": round(float((t == self.vocab.unk).float().mean()), 4)
                for s, t in self.streams.items()
            },
        }

    def _loader(self, split: str, bs: int) -> DataLoader:
        return DataLoader(
            StreamSegments(self.streams[split], bs, self.bptt), batch_size=None, shuffle=False
        )

    def train_dataloader(self) -> ResumableLoader:
        # consecutive segments in order, resumable mid-epoch (the position is in the checkpoint)
        segs = StreamSegments(self.streams["train"], self.batch_size, self.bptt)
        return ResumableLoader(segs, None, owner=self, shuffle=False)

    def val_dataloader(self) -> DataLoader:
        return self._loader("val", self.eval_batch_size)

    def test_dataloader(self) -> DataLoader:
        return self._loader("test", self.eval_batch_size)
