"""PhysioNet/CinC Challenge 2012 ICU time series (Silva et al. 2012), preprocessed as the
Latent ODE paper did (Rubanova, Chen, Duvenaud 2019; YuliaRubanova/latent_ode), so that the
reconstruction MSE compares with theirs:

* set-a and set-b together (8,000 patients), 41 variables including the static Age, Gender,
  Height, ICUType and Weight (observed at time 0); ``RecordID`` is dropped;
* times in hours over the 48 h window, rounded to a grid of ``quantization`` hours
  (``0.016`` ~ 1 minute, the paper's protocol; ``0.1`` is 10x cheaper); a row of zeros with an
  empty mask at time 0 starts every patient, and repeated measurements in a step are averaged;
* normalization over all records, as the reference code does it: ``(x - min) / max`` per
  variable (``normalization="minmax"`` gives the textbook ``(x - min) / (max - min)``);
* an 80/20 train/test split shuffled with seed 42 (sklearn ``train_test_split`` semantics:
  ``RandomState(42).permutation``; the first ``ceil(0.2 n)`` patients are the test set);
* batches hold the union of their patients' time points, scaled to [0, 1] by the batch
  maximum, with a per-variable mask.

The in-hospital mortality label of ``Outcomes-{a,b}.txt`` rides along for classification.
Patients without a single observation are skipped and counted.
"""

from __future__ import annotations

import io
import math
from dataclasses import dataclass

import lightning.pytorch as pl
import numpy as np
import torch
from torch import Tensor
from torch.utils.data import DataLoader, Dataset

from ._common import (
    CorruptDataError,
    cache_root,
    cached_file,
    check_positive,
    data_root,
    missing,
    open_tar,
)
from ._resumable import ResumableLoader

__all__ = ["PHYSIONET_PARAMS", "PhysioNet2012DataModule", "collate_irregular", "IrregularBatch"]

PHYSIONET_PARAMS = (
    "Age", "Gender", "Height", "ICUType", "Weight", "Albumin", "ALP", "ALT", "AST", "Bilirubin", "BUN",
    "Cholesterol", "Creatinine", "DiasABP", "FiO2", "GCS", "Glucose", "HCO3", "HCT", "HR", "K", "Lactate",
    "Mg", "MAP", "MechVent", "Na", "NIDiasABP", "NIMAP", "NISysABP", "PaCO2", "PaO2", "pH", "Platelets",
    "RespRate", "SaO2", "SysABP", "Temp", "TroponinI", "TroponinT", "Urine", "WBC",
)  # fmt: skip
_INDEX = {p: i for i, p in enumerate(PHYSIONET_PARAMS)}


@dataclass
class Record:
    record_id: int
    times: np.ndarray  # (T,) hours
    values: np.ndarray  # (T, D) raw values, 0 where unobserved
    mask: np.ndarray  # (T, D) 1 where observed
    label: float  # in-hospital death (nan when unknown)


def parse_record(text: str, quantization: float) -> tuple[int, np.ndarray, np.ndarray, np.ndarray]:
    """One patient file (``Time,Parameter,Value`` lines) -> (id, times, values, mask)."""
    rid = -1
    times = [0.0]
    sums = [np.zeros(len(PHYSIONET_PARAMS))]
    counts = [np.zeros(len(PHYSIONET_PARAMS))]
    prev = 0.0
    for line in text.splitlines()[1:]:
        if not line.strip():
            continue
        t, param, val = line.split(",")
        if param == "RecordID":
            rid = int(float(val))
            continue
        if param not in _INDEX:
            raise ValueError(f"unexpected PhysioNet parameter {param!r}")
        h, m = t.split(":")
        hours = int(h) + int(m) / 60.0
        hours = round(hours / quantization) * quantization
        if hours != prev:
            times.append(hours)
            sums.append(np.zeros(len(PHYSIONET_PARAMS)))
            counts.append(np.zeros(len(PHYSIONET_PARAMS)))
            prev = hours
        j = _INDEX[param]
        sums[-1][j] += float(val)
        counts[-1][j] += 1
    s, c = np.stack(sums), np.stack(counts)
    values = np.where(c > 0, s / np.maximum(c, 1), 0.0)
    return rid, np.asarray(times), values, (c > 0).astype(np.float32)


def _outcomes(root) -> dict[int, float]:
    out = {}
    for f in ("Outcomes-a.txt", "Outcomes-b.txt"):
        p = root / f
        if p.is_file():
            for line in p.read_text().splitlines()[1:]:
                parts = line.strip().split(",")
                if len(parts) >= 6:
                    out[int(parts[0])] = float(parts[5])
    return out


def load_records(
    data_dir=None, quantization: float = 0.016, sets=("a", "b")
) -> tuple[list[Record], int]:
    """Parse (once, then cached) the tarballs. Returns (records, n_skipped_without_observations)."""
    from tqdm import tqdm

    root = data_root(data_dir) / "physionet-2012"
    cache = cached_file(
        cache_root() / "physionet2012",
        f"q{quantization:g}-{''.join(sets)}",
        ".npz",
        [root / f"set-{s}.tar.gz" for s in sets],
        "PhysioNet 2012",
        "Set ZOO_DATA_DIR to the folder holding physionet-2012/ (../shared/data here), "
        "or download set-a/set-b from physionet.org/content/challenge-2012/1.0.0/.",
    )
    if cache.is_file():
        with np.load(cache) as npz:  # read each array once (NpzFile re-reads on every access)
            d = {k: npz[k] for k in npz.files}
        off = d["offsets"]
        recs = [
            Record(
                int(d["ids"][k]),
                d["times"][off[k] : off[k + 1]],
                d["values"][off[k] : off[k + 1]],
                d["mask"][off[k] : off[k + 1]],
                float(d["labels"][k]),
            )
            for k in range(len(d["ids"]))
        ]
        return recs, int(d["skipped"])
    labels = _outcomes(root)
    recs, skipped = [], 0
    for s in sets:
        tar = root / f"set-{s}.tar.gz"
        if not tar.is_file():
            raise missing(
                f"PhysioNet 2012 set-{s}",
                tar,
                "Set ZOO_DATA_DIR to the folder holding physionet-2012/ (../shared/data here), "
                "or download set-a/set-b from physionet.org/content/challenge-2012/1.0.0/.",
            )
        with open_tar(
            tar,
            f"PhysioNet 2012 set-{s}",
            "download set-a/set-b again from physionet.org/content/challenge-2012/1.0.0/",
        ) as tf:
            members = sorted(
                (m for m in tf.getmembers() if m.isfile() and m.name.endswith(".txt")),
                key=lambda m: m.name,
            )
            for m in tqdm(members, desc=f"parsing set-{s}", unit="patient", mininterval=2):
                rid, t, v, msk = parse_record(
                    io.TextIOWrapper(tf.extractfile(m)).read(), quantization
                )
                if msk.sum() == 0:
                    skipped += 1
                    continue
                recs.append(Record(rid, t, v, msk, labels.get(rid, math.nan)))
    if not recs:
        raise CorruptDataError(
            f"PhysioNet 2012: no patient records in {', '.join(f'set-{s}.tar.gz' for s in sets)} "
            f"under {root} (the archives hold no readable <id>.txt files): download them again "
            "from physionet.org/content/challenge-2012/1.0.0/"
        )
    recs.sort(key=lambda r: r.record_id)
    cache.parent.mkdir(parents=True, exist_ok=True)
    offsets = np.cumsum([0] + [len(r.times) for r in recs])
    tmp = cache.with_suffix(".tmp.npz")
    np.savez(
        tmp,
        ids=np.array([r.record_id for r in recs]),
        offsets=offsets,
        times=np.concatenate([r.times for r in recs]),
        values=np.concatenate([r.values for r in recs]),
        mask=np.concatenate([r.mask for r in recs]),
        labels=np.array([r.label for r in recs]),
        skipped=skipped,
    )
    tmp.replace(cache)
    return recs, skipped


@dataclass
class IrregularBatch:
    """A batch on the union of its time points.

    Attributes:
        times: ``(T,)`` increasing times in [0, 1].
        values: ``(B, T, D)`` normalized values, 0 where unobserved.
        mask: ``(B, T, D)`` 1 where observed.
        labels: ``(B,)`` in-hospital death (nan when unknown).
        ids: ``(B,)`` each series' record id, where the data have one (PhysioNet's RecordID).

    Example:
        >>> import torch
        >>> from zoo.data import IrregularBatch
        >>> b = IrregularBatch(torch.tensor([0.0, 0.5]), torch.zeros(3, 2, 4), torch.ones(3, 2, 4),
        ...                    torch.zeros(3))
        >>> tuple(b.values.shape)
        (3, 2, 4)
    """

    times: Tensor
    values: Tensor
    mask: Tensor
    labels: Tensor
    ids: Tensor | None = None

    def to(self, device) -> IrregularBatch:
        return IrregularBatch(
            *(x.to(device) for x in (self.times, self.values, self.mask, self.labels)), self.ids
        )


def collate_irregular(
    records: list[Record], vmin: np.ndarray, vscale: np.ndarray
) -> IrregularBatch:
    """Union of the time points of ``records``; values normalized ``(x - vmin) / vscale``."""
    all_t = np.unique(np.concatenate([r.times for r in records]))
    B, T, D = len(records), len(all_t), records[0].values.shape[1]
    values = np.zeros((B, T, D), dtype=np.float32)
    mask = np.zeros((B, T, D), dtype=np.float32)
    for b, r in enumerate(records):
        idx = np.searchsorted(all_t, r.times)
        values[b, idx] = (r.values - vmin) / vscale
        mask[b, idx] = r.mask
    values *= mask
    t = all_t / all_t.max() if all_t.max() > 0 else all_t
    return IrregularBatch(
        torch.tensor(t, dtype=torch.float32),
        torch.from_numpy(values),
        torch.from_numpy(mask),
        torch.tensor([r.label for r in records], dtype=torch.float32),
        torch.tensor([r.record_id for r in records], dtype=torch.int64),
    )


class _Records(Dataset):
    def __init__(self, recs: list[Record]) -> None:
        self.recs = recs

    def __len__(self) -> int:
        return len(self.recs)

    def __getitem__(self, i: int) -> Record:
        return self.recs[i]


class IrregularDataModule(pl.LightningDataModule):
    """Loaders shared by the irregular time-series data modules: an 80/20 split served as
    :class:`IrregularBatch` es (the test split doubles as validation, as in the reference)."""

    batch_size: int

    def _dataset(self, split: str) -> Dataset:  # pragma: no cover - abstract
        raise NotImplementedError

    def _collate(self, items) -> IrregularBatch:  # pragma: no cover - abstract
        raise NotImplementedError

    def _loader(self, split: str, shuffle: bool) -> DataLoader:
        if shuffle:  # training: resumable mid-epoch, in a seeded per-epoch order
            return ResumableLoader(
                self._dataset(split), self.batch_size, seed=getattr(self, "seed", 0), owner=self,
                collate_fn=self._collate, drop_last=False,
            )  # fmt: skip
        return DataLoader(
            self._dataset(split),
            batch_size=self.batch_size,
            shuffle=shuffle,
            collate_fn=self._collate,
        )

    eval_splits = ("test", "train")

    def eval_split(self, split: str) -> DataLoader:
        """Batches of ``test`` or ``train``, in a fixed order.

        Raises:
            ValueError: for another split. The protocol (the reference code's) has no separate
                validation split: the test split doubles as it.
        """
        if split not in self.eval_splits:
            raise ValueError(
                f"unknown split {split!r} for {self.name}: use {' or '.join(self.eval_splits)} "
                "(this protocol, the reference code's 80/20 split, has no separate validation "
                "split unless the data module holds one out of the training series)"
            )
        self.setup("test")
        return self._loader(split, False)

    def train_dataloader(self) -> DataLoader:
        return self._loader("train", True)

    def val_dataloader(self) -> DataLoader:
        return self._loader("val" if "val" in self.eval_splits else "test", False)

    def test_dataloader(self) -> DataLoader:
        return self._loader("test", False)

    def transfer_batch_to_device(self, batch, device, dataloader_idx):
        return batch.to(device)


class PhysioNet2012DataModule(IrregularDataModule):
    """PhysioNet 2012 for Latent ODEs (see the module docstring for the protocol).

    Args:
        data_dir: Root holding ``physionet-2012/`` (default ``$ZOO_DATA_DIR``).
        quantization: Time grid in hours (0.016 = 1 minute, the paper's; 0.1 is cheaper).
        batch_size: Patients per batch.
        normalization: ``"reference"`` (``(x - min) / max``, the paper's code) or ``"minmax"``.
        seed: Seed of the 80/20 split (42 in the paper).
        n_patients: Use only the first N patients (by record id) - smoke tests.
        val_patients: Hold this many of the training patients out as a validation split
            (``val``), drawn with ``seed + 1``; the test split stays the paper's. 0 (the
            paper's protocol) validates on the test split, as the reference code does.

    Example:
        >>> from zoo.data import PhysioNet2012DataModule
        >>> dm = PhysioNet2012DataModule(data_dir="/nonexistent", quantization=0.1)
        >>> dm.quantization  # nothing is read until setup()
        0.1
    """

    name = "physionet2012"
    variable_names = PHYSIONET_PARAMS

    def __init__(
        self,
        data_dir: str | None = None,
        quantization: float = 0.016,
        batch_size: int = 50,
        normalization: str = "reference",
        seed: int = 42,
        n_patients: int | None = None,
        val_patients: int = 0,
    ) -> None:
        super().__init__()
        check_positive(type(self).__name__, batch_size=batch_size)
        if isinstance(val_patients, bool) or not isinstance(val_patients, int) or val_patients < 0:
            raise ValueError(
                f"val_patients must be a count of training patients to hold out (0 = none, the "
                f"paper's protocol), got {val_patients!r}"
            )
        if (
            isinstance(quantization, bool)
            or not isinstance(quantization, (int, float))
            or not (0 < quantization <= 48)
        ):
            raise ValueError(
                f"quantization must be a time step in hours in (0, 48] (0.016 = 1 minute, the "
                f"paper's), got {quantization!r}"
            )
        if normalization not in ("reference", "minmax"):
            raise ValueError(
                f"normalization must be 'reference' or 'minmax', got {normalization!r}"
            )
        self.save_hyperparameters()
        self.data_dir, self.quantization, self.batch_size = data_dir, quantization, batch_size
        self.normalization, self.seed, self.n_patients = normalization, seed, n_patients
        self.val_patients = val_patients
        if val_patients:
            self.eval_splits = ("test", "val", "train")
        self.splits: dict[str, list[Record]] = {}
        self.skipped = 0

    def setup(self, stage: str | None = None) -> None:
        if self.splits:
            return
        recs, self.skipped = load_records(self.data_dir, self.quantization)
        if self.n_patients:
            recs = recs[: self.n_patients]
        vals = np.concatenate([r.values for r in recs])
        msk = np.concatenate([r.mask for r in recs]).astype(bool)
        vmin = np.where(msk.any(0), np.where(msk, vals, np.inf).min(0), 0.0)
        vmax = np.where(msk.any(0), np.where(msk, vals, -np.inf).max(0), 1.0)
        scale = vmax if self.normalization == "reference" else vmax - vmin
        self.vmin, self.vscale = (
            vmin.astype(np.float32),
            np.where(scale == 0, 1.0, scale).astype(np.float32),
        )
        n = len(recs)
        perm = np.random.RandomState(self.seed).permutation(n)
        n_test = math.ceil(0.2 * n)
        self.splits = {
            "test": [recs[i] for i in perm[:n_test]],
            "train": [recs[i] for i in perm[n_test:]],
        }
        if self.val_patients:
            train = self.splits["train"]
            if self.val_patients >= len(train):
                raise ValueError(
                    f"val_patients={self.val_patients} leaves no training patients (the training "
                    f"split has {len(train)}): hold out fewer"
                )
            held = np.random.RandomState(self.seed + 1).permutation(len(train))
            self.splits["val"] = [train[i] for i in sorted(held[: self.val_patients])]
            self.splits["train"] = [train[i] for i in sorted(held[self.val_patients :])]

    def _dataset(self, split: str) -> Dataset:
        return _Records(self.splits[split])

    def _collate(self, records: list[Record]) -> IrregularBatch:
        return collate_irregular(records, self.vmin, self.vscale)
