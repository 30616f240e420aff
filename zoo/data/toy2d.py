"""2-D toy densities of the FFJORD paper (Grathwohl et al. 2019), defined by their generating
code: ``8gaussians``, ``checkerboard`` and ``2spirals``, on FFJORD's scales.

Train and test points are drawn once from fixed seeds (different for each split), so every run
and every evaluation sees the same points. The true differential entropy is known for two of
them: 8gaussians about 2.831 nats, checkerboard (uniform on 8 squares of side 2) log 32 = 3.466
nats; no model's expected test NLL can be below it.
"""

from __future__ import annotations

import math

import lightning.pytorch as pl
import numpy as np
import torch
from torch import Tensor
from torch.utils.data import DataLoader, TensorDataset

from ._common import check_positive
from ._registry import register_datamodule
from ._resumable import ResumableLoader

__all__ = ["Toy2DDataModule", "sample_toy", "TOY_ENTROPY"]

TOY_ENTROPY = {"checkerboard": math.log(32.0)}  # nats; 8gaussians' is estimated, see the card


def _8gaussians(rng: np.random.RandomState, n: int) -> np.ndarray:
    s = 1.0 / math.sqrt(2.0)
    centers = 4.0 * np.array(
        [(1, 0), (-1, 0), (0, 1), (0, -1), (s, s), (s, -s), (-s, s), (-s, -s)], dtype=np.float64
    )
    pts = rng.randn(n, 2) * 0.5 + centers[rng.randint(0, 8, n)]
    return pts / 1.414


def _checkerboard(rng: np.random.RandomState, n: int) -> np.ndarray:
    x1 = rng.rand(n) * 4 - 2
    x2 = rng.rand(n) - rng.randint(0, 2, n) * 2 + np.floor(x1) % 2
    return np.stack([x1, x2], 1) * 2


def _2spirals(rng: np.random.RandomState, n: int) -> np.ndarray:
    m = np.sqrt(rng.rand(n // 2, 1)) * 540 * (2 * np.pi) / 360
    d1x = -np.cos(m) * m + rng.rand(n // 2, 1) * 0.5
    d1y = np.sin(m) * m + rng.rand(n // 2, 1) * 0.5
    x = np.vstack((np.hstack((d1x, d1y)), np.hstack((-d1x, -d1y)))) / 3
    return x + rng.randn(*x.shape) * 0.1


_TOYS = {"8gaussians": _8gaussians, "checkerboard": _checkerboard, "2spirals": _2spirals}


def sample_toy(name: str, n: int, seed: int) -> Tensor:
    """``n`` points ``(n, 2)`` of toy ``name`` (float32), reproducible from ``seed``."""
    if name not in _TOYS:
        raise ValueError(f"unknown toy density {name!r}; valid: {', '.join(sorted(_TOYS))}")
    check_positive("sample_toy", n=n)
    return torch.from_numpy(_TOYS[name](np.random.RandomState(seed), n).astype(np.float32))


@register_datamodule
class Toy2DDataModule(pl.LightningDataModule):
    """A 2-D toy density as a data module (no files: the points are generated).

    Args:
        density: ``8gaussians``, ``checkerboard`` or ``2spirals``.
        n_train: Training points (drawn once, seed ``seed``).
        n_test: Test points (seed ``seed + 1``); validation uses the first 10,000 of them.
        batch_size: Points per training batch.
        eval_batch_size: Points per evaluation batch.
        seed: Seed of the training points.
    """

    name = "toy2d"

    def __init__(
        self,
        density: str = "8gaussians",
        n_train: int = 100_000,
        n_test: int = 100_000,
        batch_size: int = 512,
        eval_batch_size: int = 10_000,
        seed: int = 0,
    ) -> None:
        super().__init__()
        if density not in _TOYS:
            raise ValueError(f"unknown toy density {density!r}; valid: {', '.join(sorted(_TOYS))}")
        check_positive(
            type(self).__name__, n_train=n_train, n_test=n_test, batch_size=batch_size,
            eval_batch_size=eval_batch_size,
        )  # fmt: skip
        self.save_hyperparameters()
        self.density, self.n_train, self.n_test, self.seed = density, n_train, n_test, seed
        self.batch_size, self.eval_batch_size = batch_size, eval_batch_size

    eval_splits = ("test", "train")

    def eval_split(self, split: str) -> Tensor:
        """The points ``(N, 2)`` of ``test`` or ``train``."""
        if split not in self.eval_splits:
            raise ValueError(f"unknown split {split!r} for toy2d: use test or train")
        if split == "train":
            return sample_toy(self.density, self.n_train, self.seed)
        return sample_toy(self.density, self.n_test, self.seed + 1)

    def train_dataloader(self) -> ResumableLoader:
        return ResumableLoader(
            TensorDataset(self.eval_split("train")), self.batch_size, seed=self.seed, owner=self
        )

    def val_dataloader(self) -> DataLoader:
        x = self.eval_split("test")[:10_000]
        return DataLoader(TensorDataset(x), batch_size=self.eval_batch_size)

    test_dataloader = val_dataloader
