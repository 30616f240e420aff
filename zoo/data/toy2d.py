"""2-D toy densities of the FFJORD paper (Grathwohl et al. 2019), defined by their generating
code (``lib/toy_data.py``) and on its scales: ``8gaussians``, ``checkerboard``, ``pinwheel``,
``2spirals``, ``moons``, ``circles``, ``rings`` and ``swissroll``. FFJORD draws the last three
and ``moons`` through scikit-learn's ``make_moons``/``make_circles``/``make_swiss_roll``; those
generators are written out here in numpy (same definitions and noise), so scikit-learn is not a
dependency, and every density is drawn from one seeded ``RandomState``.

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

__all__ = ["Toy2DDataModule", "sample_toy", "TOY_ENTROPY", "TOY_DENSITIES"]

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
    half = -(-n // 2)  # FFJORD draws n // 2 per spiral, the second the first's mirror image
    m = np.sqrt(rng.rand(half, 1)) * 540 * (2 * np.pi) / 360
    d1x = -np.cos(m) * m + rng.rand(half, 1) * 0.5
    d1y = np.sin(m) * m + rng.rand(half, 1) * 0.5
    x = np.vstack((np.hstack((d1x, d1y)), np.hstack((-d1x, -d1y)))) / 3
    x = x + rng.randn(*x.shape) * 0.1
    return x[rng.permutation(len(x))[:n]]  # shuffled: any prefix holds both spirals


def _pinwheel(rng: np.random.RandomState, n: int) -> np.ndarray:
    arms, per_arm = 5, -(-n // 5)  # FFJORD draws n // 5 per arm; round up, then cut to n
    feats = rng.randn(arms * per_arm, 2) * np.array([0.3, 0.1])  # radial, tangential std
    feats[:, 0] += 1.0
    arm = np.repeat(np.arange(arms), per_arm)
    ang = np.linspace(0, 2 * np.pi, arms, endpoint=False)[arm] + 0.25 * np.exp(feats[:, 0])
    rot = np.stack([np.cos(ang), -np.sin(ang), np.sin(ang), np.cos(ang)], 1).reshape(-1, 2, 2)
    return 2 * rng.permutation(np.einsum("ti,tij->tj", feats, rot))[:n]


def _moons(rng: np.random.RandomState, n: int) -> np.ndarray:
    n_out = n // 2  # scikit-learn's make_moons(noise=0.1), then FFJORD's x2 and shift
    a, b = np.linspace(0, np.pi, n_out), np.linspace(0, np.pi, n - n_out)
    x = np.concatenate(
        [np.stack([np.cos(a), np.sin(a)], 1), np.stack([1 - np.cos(b), 1 - np.sin(b) - 0.5], 1)]
    )
    x = x[rng.permutation(n)] + rng.randn(n, 2) * 0.1
    return x * 2 + np.array([-1, -0.2])


def _circles(rng: np.random.RandomState, n: int) -> np.ndarray:
    n_out = n // 2  # scikit-learn's make_circles(factor=0.5, noise=0.08), then FFJORD's x3
    a = np.linspace(0, 2 * np.pi, n_out, endpoint=False)
    b = np.linspace(0, 2 * np.pi, n - n_out, endpoint=False)
    x = np.concatenate(
        [np.stack([np.cos(a), np.sin(a)], 1), 0.5 * np.stack([np.cos(b), np.sin(b)], 1)]
    )
    x = x[rng.permutation(n)] + rng.randn(n, 2) * 0.08
    return x * 3


def _rings(rng: np.random.RandomState, n: int) -> np.ndarray:
    sizes = [n - 3 * (n // 4)] + [n // 4] * 3  # radii 0.25, 0.5, 0.75, 1 (x3), noise 0.08
    pts = []
    for r, k in zip((0.25, 0.5, 0.75, 1.0), sizes):
        a = np.linspace(0, 2 * np.pi, k, endpoint=False)
        pts.append(r * np.stack([np.cos(a), np.sin(a)], 1))
    x = np.concatenate(pts)[rng.permutation(n)] * 3.0
    return x + rng.normal(scale=0.08, size=x.shape)


def _swissroll(rng: np.random.RandomState, n: int) -> np.ndarray:
    t = 1.5 * np.pi * (1 + 2 * rng.rand(n))  # scikit-learn's make_swiss_roll(noise=1.0)
    x = np.stack([t * np.cos(t), 21 * rng.rand(n), t * np.sin(t)], 1) + rng.randn(n, 3)
    return x[:, [0, 2]] / 5  # FFJORD keeps the (x, z) plane, scaled by 1/5


_TOYS = {
    "8gaussians": _8gaussians,
    "checkerboard": _checkerboard,
    "pinwheel": _pinwheel,
    "2spirals": _2spirals,
    "moons": _moons,
    "circles": _circles,
    "rings": _rings,
    "swissroll": _swissroll,
}


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
        density: One of ``TOY_DENSITIES``: ``8gaussians``, ``checkerboard``, ``pinwheel``,
            ``2spirals``, ``moons``, ``circles``, ``rings``, ``swissroll``.
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


TOY_DENSITIES = tuple(_TOYS)
