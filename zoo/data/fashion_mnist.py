"""Fashion-MNIST (Xiao, Rasul, Vollgraf 2017) from its original IDX files.

Files: ``<data_dir>/fashion-mnist/{train,t10k}-{images-idx3,labels-idx1}-ubyte.gz``.
Where there is internet, ``download=True`` fetches them from the Zalando mirror.
"""

from __future__ import annotations

import gzip
import struct
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from ._common import data_root, missing
from ._image import InMemoryImageDataModule

__all__ = ["FashionMNISTDataModule", "read_idx", "FASHION_CLASSES"]

FASHION_CLASSES = (
    "T-shirt/top",
    "Trouser",
    "Pullover",
    "Dress",
    "Coat",
    "Sandal",
    "Shirt",
    "Sneaker",
    "Bag",
    "Ankle boot",
)
_URL = "http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/"
_FILES = {
    "train": ("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz"),
    "test": ("t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz"),
}


def read_idx(path: str | Path) -> np.ndarray:
    """Read an IDX file (optionally gzipped) into a numpy array."""
    path = Path(path)
    opener = gzip.open if path.suffix == ".gz" else open
    try:
        with opener(path, "rb") as f:
            data = f.read()
    except (EOFError, OSError, gzip.BadGzipFile) as e:
        raise ValueError(
            f"{path} is truncated or corrupt ({type(e).__name__}: {e}); download it again"
        ) from None
    if len(data) < 4:
        raise ValueError(f"{path} is truncated or corrupt ({len(data)} bytes); download it again")
    zero, dtype_code, ndim = struct.unpack(">HBB", data[:4])
    if zero != 0 or dtype_code != 0x08:
        raise ValueError(f"{path} is not a uint8 IDX file (magic {data[:4].hex()})")
    dims = struct.unpack(">" + "I" * ndim, data[4 : 4 + 4 * ndim])
    arr = np.frombuffer(data, dtype=np.uint8, offset=4 + 4 * ndim)
    if arr.size != int(np.prod(dims)):
        raise ValueError(f"{path} is truncated: {arr.size} bytes for shape {dims}")
    return arr.reshape(dims)


class FashionMNISTDataModule(InMemoryImageDataModule):
    """Fashion-MNIST, 28x28 grayscale, 10 classes.

    Args:
        download: Fetch the IDX files into a cache folder when missing (needs internet).
        **kwargs: See :class:`InMemoryImageDataModule`.

    Example:
        >>> from zoo.data import FashionMNISTDataModule
        >>> FashionMNISTDataModule(data_dir="/nonexistent").num_classes
        10
    """

    mean, std, name = (0.2860,), (0.3530,), "fashion_mnist"
    input_size = (1, 28, 28)
    pad = 2

    def __init__(self, *args, download: bool = False, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.download = download

    def _load(self, split: str) -> tuple[Tensor, Tensor]:
        root = data_root(self.data_dir) / "fashion-mnist"
        img, lab = (root / f for f in _FILES[split])
        if not img.is_file() or not lab.is_file():
            if self.download:
                root = self._download()
                img, lab = (root / f for f in _FILES[split])
            else:
                raise missing(
                    "Fashion-MNIST",
                    img,
                    "Set ZOO_DATA_DIR to the folder holding "
                    "fashion-mnist/ (../shared/data here); or, where there is internet, download it: "
                    "download=True in Python, --data.init_args.download true with zoo fit.",
                )
        x = torch.from_numpy(read_idx(img).copy()).unsqueeze(1)
        y = torch.from_numpy(read_idx(lab).astype(np.int64))
        return x, y

    def _download(self) -> Path:
        from torchvision.datasets.utils import download_url

        from ._common import cache_root

        root = cache_root() / "data" / "fashion-mnist"
        for files in _FILES.values():
            for f in files:
                if not (root / f).is_file():
                    download_url(_URL + f, str(root), f)
        return root
