"""CIFAR-10 (Krizhevsky 2009) in torchvision's format, and the JPEG-tree copy.

* ``cifar10``: torchvision's ``cifar-10-batches-py`` pickles (downloaded where there is
  internet, with torchvision's checksummed downloader).
* ``cifar10_jpeg``: ``cifar10-jpeg/cifar10-jpeg.tar.gz`` holding ``train/<class>/*.jpg`` and
  ``test/<class>/*.jpg`` (a lossy JPEG re-encoding of the originals: numbers measured on it
  are labelled as such). Decoded once into a uint8 cache under :func:`cache_root`.
"""

from __future__ import annotations

import io
import pickle

import numpy as np
import torch
from torch import Tensor

from ._common import CorruptDataError, cache_root, cached_file, data_root, missing, open_tar
from ._image import InMemoryImageDataModule

__all__ = ["CIFAR10DataModule", "CIFAR10JPEGDataModule", "CIFAR10_CLASSES"]

CIFAR10_CLASSES = (
    "airplane",
    "automobile",
    "bird",
    "cat",
    "deer",
    "dog",
    "frog",
    "horse",
    "ship",
    "truck",
)
CIFAR10_MEAN = (0.4914, 0.4822, 0.4465)
CIFAR10_STD = (0.2470, 0.2435, 0.2616)


class CIFAR10DataModule(InMemoryImageDataModule):
    """CIFAR-10 from torchvision's python-pickle format (``<data_dir>/cifar10``).

    Args:
        download: Download with torchvision when the files are missing (needs internet).
        **kwargs: See :class:`InMemoryImageDataModule`.

    Example:
        >>> from zoo.data import CIFAR10DataModule
        >>> CIFAR10DataModule(data_dir="/nonexistent").num_classes
        10
    """

    mean, std, name = CIFAR10_MEAN, CIFAR10_STD, "cifar10"

    def __init__(self, *args, download: bool = False, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.download = download

    def _load(self, split: str) -> tuple[Tensor, Tensor]:
        root = data_root(self.data_dir) / "cifar10"
        base = root / "cifar-10-batches-py"
        names = [f"data_batch_{i}" for i in range(1, 6)] if split == "train" else ["test_batch"]
        if not all((base / n).is_file() for n in names):
            if not self.download:
                raise missing(
                    "CIFAR-10 (python format)",
                    base,
                    "Where there is internet, download it (download=True in Python, "
                    "--data.init_args.download true with zoo fit), or use cifar10_jpeg with "
                    "the JPEG copy.",
                )
            from torchvision.datasets import CIFAR10

            root = cache_root() / "data" / "cifar10"
            CIFAR10(str(root), train=split == "train", download=True)  # checksummed download
            base = root / "cifar-10-batches-py"
        xs, ys = [], []
        for n in names:
            with open(base / n, "rb") as f:
                d = pickle.load(f, encoding="latin1")  # the dataset's own format (trusted file)
            xs.append(np.asarray(d["data"], dtype=np.uint8).reshape(-1, 3, 32, 32))
            ys.extend(d["labels"])
        return torch.from_numpy(np.concatenate(xs)), torch.tensor(ys, dtype=torch.long)


class CIFAR10JPEGDataModule(InMemoryImageDataModule):
    """CIFAR-10 from the JPEG tree ``<data_dir>/cifar10-jpeg/cifar10-jpeg.tar.gz``.

    Example:
        >>> dm = CIFAR10JPEGDataModule(data_dir="../shared/data")  # doctest: +SKIP
    """

    mean, std, name = CIFAR10_MEAN, CIFAR10_STD, "cifar10_jpeg"

    def _load(self, split: str) -> tuple[Tensor, Tensor]:
        return load_cifar10_jpeg(self.data_dir, split)


def load_cifar10_jpeg(data_dir, split: str) -> tuple[Tensor, Tensor]:
    """Decode (once, then cached) one split of the JPEG tree to uint8 NCHW + labels."""
    src = data_root(data_dir) / "cifar10-jpeg"
    tar = src / "cifar10-jpeg.tar.gz"
    source = tar if tar.is_file() or not (src / split).is_dir() else src / split
    cache = cached_file(
        cache_root() / "cifar10_jpeg",
        split,
        ".npz",
        [source],
        "CIFAR-10 JPEG copy",
        "Set ZOO_DATA_DIR (or data_dir) to the folder holding cifar10-jpeg/; on the project "
        "machines that is ../shared/data.",
    )
    if cache.is_file():
        with np.load(cache) as d:
            return torch.from_numpy(d["x"]), torch.from_numpy(d["y"])
    x, y = _decode_tar(tar, split) if source == tar else _decode_tree(source)
    cache.parent.mkdir(parents=True, exist_ok=True)
    tmp = cache.with_suffix(".tmp.npz")
    np.savez(tmp, x=x, y=y)
    tmp.replace(cache)
    return torch.from_numpy(x), torch.from_numpy(y)


def _decode(data: bytes, name: str = "an image") -> np.ndarray:
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(io.BytesIO(data)) as im:
            return np.asarray(im.convert("RGB"), dtype=np.uint8)
    except (UnidentifiedImageError, OSError, SyntaxError) as e:
        raise CorruptDataError(
            f"{name} is not a readable image ({e}): remove or replace that file"
        ) from None


def _collect(items) -> tuple[np.ndarray, np.ndarray]:
    from tqdm import tqdm

    items = sorted(items, key=lambda t: t[0])
    xs, ys = [], []
    for name, label, data in tqdm(items, desc="decoding JPEGs", unit="img", mininterval=2):
        xs.append(_decode(data, name))
        ys.append(label)
    x = np.stack(xs).transpose(0, 3, 1, 2).copy()
    return x, np.asarray(ys, dtype=np.int64)


def _decode_tar(tar_path, split: str):
    items = []
    how = "replace it with a good copy of the CIFAR-10 JPEG archive"
    with open_tar(tar_path, "the CIFAR-10 JPEG archive", how) as tf:
        for m in tf:
            if not m.isfile() or not m.name.lower().endswith((".jpg", ".jpeg", ".png")):
                continue
            parts = m.name.split("/")
            if len(parts) < 3 or parts[-3] != split or parts[-2] not in CIFAR10_CLASSES:
                continue
            items.append((m.name, CIFAR10_CLASSES.index(parts[-2]), tf.extractfile(m).read()))
    if not items:
        raise missing(
            f"split {split!r} in the CIFAR-10 JPEG archive",
            tar_path,
            "The archive must hold <split>/<class>/*.jpg",
        )
    return _collect(items)


def _decode_tree(root):
    items = []
    for ci, cls in enumerate(CIFAR10_CLASSES):
        files = sorted(f for f in (root / cls).glob("*") if f.is_file())
        if not files:
            raise CorruptDataError(
                f"the class folder {root / cls} holds no images: every CIFAR-10 class needs its "
                "<split>/<class>/*.jpg files"
            )
        for f in files:
            items.append((str(f), ci, f.read_bytes()))
    return _collect(items)
