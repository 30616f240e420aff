"""Shared machinery of the in-memory image data modules (CIFAR-10, Fashion-MNIST).

Images are held as uint8 tensors; augmentation (random crop with padding, horizontal flip)
and normalization run on whole batches after transfer, which on a 2-core CPU costs far less
than per-sample PIL transforms.
"""

from __future__ import annotations

import lightning.pytorch as pl
import torch
from lightning.pytorch.utilities import rank_zero_warn
from torch import Tensor
from torch.utils.data import DataLoader, TensorDataset

from ._resumable import ResumableLoader

__all__ = ["InMemoryImageDataModule", "batch_augment", "normalize_images"]


def normalize_images(x: Tensor, mean, std) -> Tensor:
    """uint8-range pixels (0-255) ``(B, C, H, W)`` to floats normalized per channel."""
    m = torch.tensor(mean, device=x.device).view(1, -1, 1, 1)
    s = torch.tensor(std, device=x.device).view(1, -1, 1, 1)
    return (x.float() / 255.0 - m) / s


def batch_augment(x: Tensor, pad: int = 4, flip: bool = True) -> Tensor:
    """Random crop (zero padding ``pad``) and horizontal flip, per sample, on a float batch."""
    b, _, h, w = x.shape
    if pad > 0:
        xp = torch.nn.functional.pad(x, (pad, pad, pad, pad))
        dy = torch.randint(0, 2 * pad + 1, (b,), device=x.device)
        dx = torch.randint(0, 2 * pad + 1, (b,), device=x.device)
        rows = dy[:, None] + torch.arange(h, device=x.device)[None]  # (b, h)
        cols = dx[:, None] + torch.arange(w, device=x.device)[None]  # (b, w)
        idx_b = torch.arange(b, device=x.device)[:, None, None]
        x = xp.permute(0, 2, 3, 1)[idx_b, rows[:, :, None], cols[:, None, :]].permute(0, 3, 1, 2)
    if flip:
        m = torch.rand(b, device=x.device) < 0.5
        x = torch.where(m[:, None, None, None], x.flip(3), x)
    return x.contiguous()


class InMemoryImageDataModule(pl.LightningDataModule):
    """Base: subclasses implement ``_load(split) -> (uint8 images NCHW, int64 labels)``.

    Args:
        data_dir: Dataset root (default ``$ZOO_DATA_DIR``).
        batch_size: Training batch size.
        eval_batch_size: Validation/test batch size.
        val_size: Images held out from the training split for validation (seeded). With 0
            the whole training split is trained on and validation runs on the test split (the
            papers' protocol; a warning says so): watch it, select nothing on it, or switch
            validation off with the Trainer's ``limit_val_batches=0``.
        augment: Random crop + flip on training batches.
        pad: Zero padding of the random crop, in pixels (default: the dataset's ``pad``, 4 for
            CIFAR-10, 2 for Fashion-MNIST); 0 leaves only the horizontal flip.
        num_workers: DataLoader workers (0 is fastest for in-memory tensors).
        seed: Seed of the train/val split.
        limit_train: Use only the first N training images (smoke tests).
        pixels: Hand the model raw pixels (uint8 0-255, no normalization, no augmentation):
            for density models, which dequantize and transform pixels themselves.
    """

    mean: tuple[float, ...] = (0.5,)
    std: tuple[float, ...] = (0.5,)
    num_classes = 10
    input_size: tuple[int, int, int] = (3, 32, 32)
    name = "images"
    pad = 4  # random-crop padding of the training augmentation

    def __init__(
        self,
        data_dir: str | None = None,
        batch_size: int = 64,
        eval_batch_size: int = 256,
        val_size: int = 5000,
        augment: bool = True,
        pad: int | None = None,
        num_workers: int = 0,
        seed: int = 0,
        limit_train: int | None = None,
        pixels: bool = False,
    ) -> None:
        super().__init__()
        from ._common import check_positive

        check_positive(type(self).__name__, batch_size=batch_size, eval_batch_size=eval_batch_size)
        check_positive(type(self).__name__, 0, val_size=val_size, num_workers=num_workers)
        self.save_hyperparameters()
        self.data_dir = data_dir
        self.batch_size = batch_size
        self.eval_batch_size = eval_batch_size
        self.val_size = val_size
        self.augment = augment
        if pad is not None:
            if pad < 0:
                raise ValueError(
                    f"pad={pad}: the random-crop padding must be 0 (flip only) or more"
                )
            self.pad = pad
        self.num_workers = num_workers
        self.seed = seed
        self.limit_train = limit_train
        self.pixels = pixels
        self._splits: dict[str, TensorDataset] = {}

    def _load(self, split: str) -> tuple[Tensor, Tensor]:  # pragma: no cover - abstract
        raise NotImplementedError

    def prepare_data(self) -> None:
        self._load("train")
        self._load("test")

    def setup(self, stage: str | None = None) -> None:
        if self._splits:
            return
        x, y = self._load("train")
        g = torch.Generator().manual_seed(self.seed)
        perm = torch.randperm(len(y), generator=g)
        val_idx, tr_idx = perm[: self.val_size], perm[self.val_size :]
        if self.limit_train:
            tr_idx = tr_idx[: self.limit_train]
        self._splits["train"] = TensorDataset(x[tr_idx], y[tr_idx])
        if self.val_size:
            self._splits["val"] = TensorDataset(x[val_idx], y[val_idx])
        xt, yt = self._load("test")
        self._splits["test"] = TensorDataset(xt, yt)

    eval_splits = ("test", "val", "train")

    def eval_split(self, split: str) -> tuple[Tensor, Tensor]:
        """``(uint8 images NCHW, labels)`` of ``test``, ``val`` (the ``val_size`` training images
        held out, seeded) or ``train`` (the rest).

        Raises:
            ValueError: for another split, or an empty one.
        """
        if split not in self.eval_splits:
            raise ValueError(
                f"unknown split {split!r} for {self.name}: use test, val (the training images "
                "held out for validation) or train (the rest)"
            )
        if split == "test":
            return self._load("test")
        self.setup()
        ds = self._splits.get(split)
        if ds is None or len(ds) == 0:
            raise ValueError(
                f"split {split!r} of {self.name} is empty (val_size={self.val_size}): the "
                "training set has no images held out for it"
            )
        return ds.tensors

    def _loader(self, split: str, shuffle: bool, bs: int) -> DataLoader:
        if shuffle:  # training: resumable mid-epoch (Lightning saves and restores its state)
            return ResumableLoader(self._splits[split], bs, seed=self.seed, owner=self)
        return DataLoader(
            self._splits[split],
            batch_size=bs,
            shuffle=shuffle,
            num_workers=self.num_workers,
            drop_last=shuffle,
        )

    def train_dataloader(self) -> DataLoader:
        return self._loader("train", True, self.batch_size)

    def val_dataloader(self) -> DataLoader:
        if "val" in self._splits:
            return self._loader("val", False, self.eval_batch_size)
        if self.trainer is None or self.trainer.limit_val_batches != 0:
            rank_zero_warn(
                "val_size=0: validation runs on the test split. Select nothing on it (no early "
                "stopping, no best-checkpoint choice), or set trainer.limit_val_batches=0."
            )
        return self._loader("test", False, self.eval_batch_size)

    def test_dataloader(self) -> DataLoader:
        return self._loader("test", False, self.eval_batch_size)

    def normalize(self, x: Tensor) -> Tensor:
        """uint8-range pixels (0-255) to normalized floats."""
        return normalize_images(x, self.mean, self.std)

    def on_after_batch_transfer(self, batch, dataloader_idx: int):
        x, y = batch
        if self.pixels:
            return x, y
        if self.trainer is not None and self.trainer.training and self.augment:
            # augment in pixel space, so the padding is black (0), as at test time
            x = batch_augment(x.float(), pad=self.pad)
        return self.normalize(x), y

    def dataset_info(self) -> dict:
        return {
            "dataset": self.name,
            "mean": list(self.mean),
            "std": list(self.std),
            "input_size": list(self.input_size),
            "num_classes": self.num_classes,
        }
