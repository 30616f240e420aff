"""The five tabular density benchmarks of MAF (Papamakarios et al. 2017), used by FFJORD and most
flow papers: POWER (6 dims), GAS (8), HEPMASS (21), MINIBOONE (43) and BSDS300 (63).

Files: the MAF archive (``data.tar.gz`` on Zenodo, record 1161203), unpacked under
``<data_dir>/maf/``::

    maf/power/data.npy                 maf/gas/ethylene_CO.pickle (or the UCI ethylene_CO.txt)
    maf/hepmass/1000_train.csv         maf/hepmass/1000_test.csv
    maf/miniboone/data.npy             maf/BSDS300/BSDS300.hdf5

``download=True`` fetches the archive into the cache where there is internet. Each data set is
preprocessed exactly as MAF's ``datasets/*.py`` does (FFJORD ships the same files), then cached
as float32, keyed to the source files:

- POWER: shuffled with ``RandomState(42)``; columns 3 and 1 dropped; uniform noise added
  (0.001 to the gap column, 0.01 to voltage, [0, 1) to the three sub-meterings, none to time);
  last 10% test, last 10% of the rest validation; standardized by train+validation statistics.
- GAS: the time and the two concentration columns dropped; while any column correlates above
  0.98 with another, the first such column is dropped; standardized (sample std, as pandas);
  the same 10% / 10% split.
- HEPMASS: the positive class only, label column dropped (and the test file's extra last
  column); standardized by the training statistics (sample std); the features whose smallest
  value occurs more than 5 times removed (MAF's rule: it reads the count of the *smallest*
  value, not the most frequent; kept as is so the 21 dimensions match every paper); the last
  10% of the training rows are the validation set.
- MINIBOONE: the file is already cleaned; 10% / 10% split; train+validation statistics.
- BSDS300: the hdf5 file's ``train`` / ``validation`` / ``test`` arrays, as they are.

Reading GAS's ``.pickle`` runs code from the file (it is a pandas pickle): it is read only with
``trust_pickle=True`` (for the MAF archive from its source), and needs pandas. The UCI text file
``ethylene_CO.txt`` is read without either. HEPMASS's CSVs are read with numpy; BSDS300 needs
``h5py`` (``pip install implicit-zoo[tabular]``).
"""

from __future__ import annotations

from pathlib import Path

import lightning.pytorch as pl
import numpy as np
import torch
from torch import Tensor
from torch.utils.data import DataLoader, TensorDataset

from ._common import cache_root, cached_file, check_positive, data_root, missing
from ._registry import register_datamodule
from ._resumable import ResumableLoader

__all__ = [
    "TabularDataModule",
    "PowerDataModule",
    "GasDataModule",
    "HepmassDataModule",
    "MinibooneDataModule",
    "BSDS300DataModule",
    "MAF_URL",
]

MAF_URL = "https://zenodo.org/record/1161203/files/data.tar.gz"
_HOW = (
    "Set ZOO_DATA_DIR (or data_dir) to a folder holding maf/ (the MAF archive data.tar.gz from "
    "Zenodo record 1161203, unpacked and its data/ folder renamed maf/); or, where there is "
    "internet, download=True in Python, --data.init_args.download true with zoo fit."
)


def _split_tail(data: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """MAF's split: the last 10% is test, the last 10% of the rest validation."""
    n_test = int(0.1 * data.shape[0])
    test, rest = data[-n_test:], data[:-n_test]
    n_val = int(0.1 * rest.shape[0])
    return rest[:-n_val], rest[-n_val:], test


def _standardize(train, val, test, ddof: int = 0):
    both = np.vstack((train, val))
    mu, s = both.mean(0), both.std(0, ddof=ddof)
    return (train - mu) / s, (val - mu) / s, (test - mu) / s


class TabularDataModule(pl.LightningDataModule):
    """A MAF tabular data set as a data module (train / val / test splits of ``(N, D)`` points).

    Args:
        data_dir: Folder holding ``maf/`` (default ``$ZOO_DATA_DIR``).
        batch_size: Points per training batch.
        eval_batch_size: Points per evaluation batch.
        val_limit: Validation points used during training (the first ones; 0 = all).
        download: Fetch the MAF archive into the cache when the files are missing.
        seed: Shuffling seed of the training loader.
    """

    name = ""
    dim = 0
    files: tuple[str, ...] = ()
    eval_splits = ("test", "val", "train")

    def __init__(
        self,
        data_dir: str | None = None,
        batch_size: int = 1000,
        eval_batch_size: int = 10_000,
        val_limit: int = 0,
        download: bool = False,
        seed: int = 0,
    ) -> None:
        super().__init__()
        check_positive(type(self).__name__, batch_size=batch_size, eval_batch_size=eval_batch_size)
        check_positive(type(self).__name__, minimum=0, val_limit=val_limit)
        self.save_hyperparameters()
        self.data_dir, self.batch_size, self.eval_batch_size = data_dir, batch_size, eval_batch_size
        self.val_limit, self.download, self.seed = val_limit, download, seed
        self._cache: dict[str, Tensor] | None = None

    # -- files -------------------------------------------------------------------------------
    def _root(self) -> Path:
        root = data_root(self.data_dir) / "maf"
        if all((root / f).is_file() for f in self._needed(root)):
            return root
        if self.download:
            return self._download()
        first = next(root / f for f in self._needed(root) if not (root / f).is_file())
        raise missing(f"{self.name.upper()} (MAF tabular data)", first, _HOW)

    def _needed(self, root: Path) -> tuple[str, ...]:
        return self.files

    def _download(self) -> Path:
        from torchvision.datasets.utils import download_and_extract_archive

        dest = cache_root() / "data" / "maf-archive"
        if not (dest / "data").is_dir():
            download_and_extract_archive(MAF_URL, str(dest), filename="data.tar.gz")
        return dest / "data"

    def _read(self, root: Path) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        raise NotImplementedError

    # -- splits ------------------------------------------------------------------------------
    def _splits(self) -> dict[str, Tensor]:
        if self._cache is None:
            root = self._root()
            sources = [root / f for f in self._needed(root)]
            path = cached_file(
                cache_root() / "tabular", self.name, ".npz", sources, self.name.upper(), _HOW
            )
            if not path.is_file():
                train, val, test = self._read(root)
                path.parent.mkdir(parents=True, exist_ok=True)
                tmp = path.with_name(path.stem + ".tmp.npz")
                np.savez(tmp, train=train.astype(np.float32), val=val.astype(np.float32),
                         test=test.astype(np.float32))  # fmt: skip
                tmp.replace(path)
            with np.load(path) as f:
                self._cache = {k: torch.from_numpy(f[k]) for k in ("train", "val", "test")}
        return self._cache

    def eval_split(self, split: str) -> Tensor:
        """The points ``(N, D)`` of ``test``, ``val`` or ``train`` (preprocessed, float32)."""
        if split not in self.eval_splits:
            raise ValueError(f"unknown split {split!r} for {self.name}: use test, val or train")
        return self._splits()[split]

    def train_dataloader(self) -> ResumableLoader:
        ds = TensorDataset(self.eval_split("train"))
        return ResumableLoader(ds, self.batch_size, seed=self.seed, owner=self)

    def val_dataloader(self) -> DataLoader:
        x = self.eval_split("val")
        x = x[: self.val_limit] if self.val_limit else x
        return DataLoader(TensorDataset(x), batch_size=self.eval_batch_size)

    def test_dataloader(self) -> DataLoader:
        return DataLoader(TensorDataset(self.eval_split("test")), batch_size=self.eval_batch_size)


@register_datamodule
class PowerDataModule(TabularDataModule):
    """UCI household electric power consumption, 6 dims (MAF's POWER)."""

    name, dim, files = "power", 6, ("power/data.npy",)

    def _read(self, root):
        data = np.load(root / "power/data.npy", allow_pickle=False).astype(np.float64)
        rng = np.random.RandomState(42)
        rng.shuffle(data)
        n = data.shape[0]
        data = np.delete(np.delete(data, 3, axis=1), 1, axis=1)
        noise = np.hstack((0.001 * rng.rand(n, 1), 0.01 * rng.rand(n, 1), rng.rand(n, 3),
                           np.zeros((n, 1))))  # fmt: skip
        return _standardize(*_split_tail(data + noise))


@register_datamodule
class GasDataModule(TabularDataModule):
    """UCI gas sensor array under dynamic mixtures (ethylene and CO), 8 dims (MAF's GAS).

    Args:
        trust_pickle: Read ``ethylene_CO.pickle`` (a pandas pickle: unpickling runs code from
            the file). Without it the UCI text file ``ethylene_CO.txt`` is read.
        Others: see :class:`TabularDataModule`.
    """

    name, dim = "gas", 8

    def __init__(self, *args, trust_pickle: bool = False, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.trust_pickle = trust_pickle

    def _needed(self, root):
        if self.trust_pickle or not (root / "gas/ethylene_CO.txt").is_file():
            if (root / "gas/ethylene_CO.pickle").is_file() and not self.trust_pickle:
                raise ValueError(
                    f"{root / 'gas/ethylene_CO.pickle'} is a pandas pickle, and reading it runs "
                    "code stored in the file. Pass trust_pickle=True (--data.init_args."
                    "trust_pickle true) if it is the MAF archive from its source, or put the "
                    "UCI text file ethylene_CO.txt beside it, which is read without either"
                )
            return ("gas/ethylene_CO.pickle",) if self.trust_pickle else ("gas/ethylene_CO.txt",)
        return ("gas/ethylene_CO.txt",)

    def _read(self, root):
        if self._needed(root) == ("gas/ethylene_CO.pickle",):
            try:
                import pandas as pd
            except ImportError:
                raise ImportError(
                    "reading gas/ethylene_CO.pickle needs pandas: pip install pandas"
                ) from None
            frame = pd.read_pickle(root / "gas/ethylene_CO.pickle")
            data = frame.drop(columns=["Meth", "Eth", "Time"]).to_numpy(np.float64)
        else:  # Time, CO conc., ethylene conc., 16 sensors; one header line
            data = np.loadtxt(root / "gas/ethylene_CO.txt", skiprows=1)[:, 3:]
        while True:
            high = (np.corrcoef(data, rowvar=False) > 0.98).sum(1)
            if not (high > 1).any():
                break
            data = np.delete(data, int(np.flatnonzero(high > 1)[0]), axis=1)
        data = (data - data.mean(0)) / data.std(0, ddof=1)
        return _split_tail(data)


@register_datamodule
class HepmassDataModule(TabularDataModule):
    """UCI HEPMASS (the 1000 GeV mass files, positive class), 21 dims (MAF's HEPMASS)."""

    name, dim = "hepmass", 21
    files = ("hepmass/1000_train.csv", "hepmass/1000_test.csv")

    def _read(self, root):
        train = np.loadtxt(root / "hepmass/1000_train.csv", delimiter=",", skiprows=1)
        test = np.loadtxt(root / "hepmass/1000_test.csv", delimiter=",", skiprows=1)
        train = train[train[:, 0] == 1][:, 1:]
        test = test[test[:, 0] == 1][:, 1:-1]  # the test file has one column too many
        mu, s = train.mean(0), train.std(0, ddof=1)
        train, test = (train - mu) / s, (test - mu) / s
        keep = [j for j in range(train.shape[1]) if _count_of_smallest(train[:, j]) <= 5]
        train, test = train[:, keep], test[:, keep]
        n_val = int(train.shape[0] * 0.1)
        return train[:-n_val], train[-n_val:], test


def _count_of_smallest(col: np.ndarray) -> int:
    return int((col == col.min()).sum())


@register_datamodule
class MinibooneDataModule(TabularDataModule):
    """UCI MiniBooNE particle identification, 43 dims (MAF's MINIBOONE)."""

    name, dim, files = "miniboone", 43, ("miniboone/data.npy",)

    def _read(self, root):
        data = np.load(root / "miniboone/data.npy", allow_pickle=False).astype(np.float64)
        return _standardize(*_split_tail(data))


@register_datamodule
class BSDS300DataModule(TabularDataModule):
    """8x8 patches of the Berkeley segmentation images, 63 dims (MAF's BSDS300)."""

    name, dim, files = "bsds300", 63, ("BSDS300/BSDS300.hdf5",)

    def _read(self, root):
        try:
            import h5py
        except ImportError:
            raise ImportError(
                "reading BSDS300.hdf5 needs h5py: pip install h5py (or implicit-zoo[tabular])"
            ) from None
        with h5py.File(root / "BSDS300/BSDS300.hdf5", "r") as f:
            return tuple(np.asarray(f[k], np.float64) for k in ("train", "validation", "test"))
