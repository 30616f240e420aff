"""LightningDataModules, one file per dataset; all read ``ZOO_DATA_DIR`` or ``data_dir``."""

from ._common import MissingDataError, cache_root, data_root
from ._registry import build_datamodule, datamodule_class, list_datamodules, register_datamodule
from ._resumable import ResumableLoader
from .brown import BrownDataModule
from .cifar10 import CIFAR10DataModule, CIFAR10JPEGDataModule
from .fashion_mnist import FashionMNISTDataModule
from .imagenet import ImageNetDataModule
from .physionet import IrregularBatch, PhysioNet2012DataModule
from .shakespeare import ShakespeareCharDataModule
from .sotu import SOTUDataModule
from .trajectories import HopperDataModule, PeriodicDataModule
from .wikitext import PTBDataModule, WikiText103DataModule

for _cls in (
    BrownDataModule,
    CIFAR10DataModule,
    CIFAR10JPEGDataModule,
    FashionMNISTDataModule,
    HopperDataModule,
    ImageNetDataModule,
    PeriodicDataModule,
    PhysioNet2012DataModule,
    PTBDataModule,
    SOTUDataModule,
    ShakespeareCharDataModule,
    WikiText103DataModule,
):
    register_datamodule(_cls)

__all__ = [
    "BrownDataModule",
    "PTBDataModule",
    "PhysioNet2012DataModule",
    "HopperDataModule",
    "IrregularBatch",
    "PeriodicDataModule",
    "SOTUDataModule",
    "ShakespeareCharDataModule",
    "WikiText103DataModule",
    "CIFAR10DataModule",
    "CIFAR10JPEGDataModule",
    "FashionMNISTDataModule",
    "ImageNetDataModule",
    "MissingDataError",
    "ResumableLoader",
    "build_datamodule",
    "cache_root",
    "data_root",
    "datamodule_class",
    "list_datamodules",
    "register_datamodule",
]
