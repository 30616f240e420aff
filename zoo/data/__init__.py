"""LightningDataModules, one file per dataset; all read ``ZOO_DATA_DIR`` or ``data_dir``."""

from ._common import MissingDataError, cache_root, data_root
from .cifar10 import CIFAR10DataModule, CIFAR10JPEGDataModule
from .fashion_mnist import FashionMNISTDataModule
from .imagenet import ImageNetDataModule

__all__ = [
    "CIFAR10DataModule",
    "CIFAR10JPEGDataModule",
    "FashionMNISTDataModule",
    "ImageNetDataModule",
    "MissingDataError",
    "cache_root",
    "data_root",
]
