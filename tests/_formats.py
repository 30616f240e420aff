"""Writers of small files in original dataset formats, shared by the tests."""

import gzip
import io
import struct
import tarfile
from pathlib import Path

import numpy as np


def write_idx(path, arr) -> None:
    """A gzipped uint8 IDX file (the MNIST/Fashion-MNIST format)."""
    arr = np.asarray(arr)
    with gzip.open(path, "wb") as f:
        f.write(struct.pack(">HBB", 0, 8, arr.ndim) + struct.pack(">" + "I" * arr.ndim, *arr.shape))
        f.write(arr.astype(np.uint8).tobytes())


def write_fashion_mnist(root, n_train: int, n_test: int) -> None:
    """Random Fashion-MNIST images and labels in IDX files under ``root/fashion-mnist``."""
    (root / "fashion-mnist").mkdir(parents=True)
    rng = np.random.default_rng(0)
    for split, n in (("train", n_train), ("t10k", n_test)):
        write_idx(
            root / "fashion-mnist" / f"{split}-images-idx3-ubyte.gz",
            rng.integers(0, 255, (n, 28, 28)),
        )
        write_idx(
            root / "fashion-mnist" / f"{split}-labels-idx1-ubyte.gz", rng.integers(0, 10, (n,))
        )


PHYSIONET_RECORD = """Time,Parameter,Value
00:00,RecordID,{rid}
00:00,Age,54
00:00,Gender,0
00:00,Height,-1
00:00,ICUType,4
00:00,Weight,-1
00:07,GCS,15
00:07,HR,70
00:09,HR,80
01:37,HR,90
47:59,Temp,37.5
"""


def write_physionet(root, n_a=6, n_b=4, empty=1) -> None:
    """PhysioNet 2012 tarballs and outcome files; the first ``empty`` set-b records are empty."""
    (root / "physionet-2012").mkdir(parents=True)
    outcomes = {}
    for s, n, base in (("a", n_a, 132000), ("b", n_b, 142000)):
        with tarfile.open(root / "physionet-2012" / f"set-{s}.tar.gz", "w:gz") as tf:
            for k in range(n):
                rid = base + k
                text = (
                    PHYSIONET_RECORD.format(rid=rid)
                    if not (s == "b" and k < empty)
                    else f"Time,Parameter,Value\n00:00,RecordID,{rid}\n"
                )
                data = text.encode()
                info = tarfile.TarInfo(f"set-{s}/{rid}.txt")
                info.size = len(data)
                tf.addfile(info, io.BytesIO(data))
                outcomes[rid] = k % 2
        lines = ["RecordID,SAPS-I,SOFA,Length_of_stay,Survival,In-hospital_death"]
        lines += [
            f"{r},1,1,5,-1,{o}"
            for r, o in outcomes.items()
            if str(r).startswith("13" if s == "a" else "14")
        ]
        (root / "physionet-2012" / f"Outcomes-{s}.txt").write_text("\n".join(lines) + "\n")


def write_cityscapes(root, n_train: int = 2, n_val: int = 1, size=(32, 64)) -> None:
    """Random Cityscapes images and label-id maps in torchvision's layout under
    ``root/cityscapes`` (leftImg8bit/, gtFine/ ``*_gtFine_labelIds.png``)."""
    from PIL import Image

    rng = np.random.default_rng(0)
    h, w = size
    for split, n, city in (("train", n_train, "aachen"), ("val", n_val, "frankfurt")):
        img_dir = root / "cityscapes" / "leftImg8bit" / split / city
        gt_dir = root / "cityscapes" / "gtFine" / split / city
        img_dir.mkdir(parents=True)
        gt_dir.mkdir(parents=True)
        for k in range(n):
            stem = f"{city}_{k:06d}_000019"
            Image.fromarray(rng.integers(0, 255, (h, w, 3), dtype=np.uint8)).save(
                img_dir / f"{stem}_leftImg8bit.png"
            )
            ids = rng.choice([0, 7, 8, 11, 24, 26, 33, -1 % 256], size=(h, w)).astype(np.uint8)
            Image.fromarray(ids).save(gt_dir / f"{stem}_gtFine_labelIds.png")


def write_maf(root, n: int = 400, seed: int = 0) -> dict:
    """The MAF archive's five files under ``root/maf`` in their formats, small: POWER and
    MINIBOONE ``.npy`` (8 and 43 columns), GAS as the UCI text file (time, 2 concentrations, 16
    sensors, 8 of them near-copies of the other 8) and as a pandas pickle of MAF's columns,
    HEPMASS CSVs (label + 27 features + mass, the test file with one extra column; 7 features
    discrete), BSDS300 hdf5 (63 dims). Returns the raw arrays."""
    import numpy as np

    rng = np.random.RandomState(seed)
    maf = Path(root) / "maf"
    for d in ("power", "gas", "hepmass", "miniboone", "BSDS300"):
        (maf / d).mkdir(parents=True, exist_ok=True)
    power = rng.rand(n, 8) * 10
    power[:, 7] = np.arange(n)  # the time column (MAF adds no noise to it)
    np.save(maf / "power/data.npy", power)
    mini = rng.randn(n, 43)
    np.save(maf / "miniboone/data.npy", mini)
    base = rng.randn(n, 8)
    sensors = np.hstack([base, base + 1e-3 * rng.randn(n, 8)])  # each pair correlates > 0.98
    gas = np.hstack([np.arange(n)[:, None] * 0.01, rng.rand(n, 2), sensors])
    head = "Time (seconds), CO conc (ppm), Ethylene conc (ppm), " + ", ".join(
        f"Sensor {i}" for i in range(1, 17)
    )
    np.savetxt(maf / "gas/ethylene_CO.txt", gas, header=head, comments="")
    try:
        import pandas as pd

        cols = ["Time", "Meth", "Eth"] + [f"S{i}" for i in range(16)]
        pd.DataFrame(gas, columns=cols).to_pickle(maf / "gas/ethylene_CO.pickle")
    except ImportError:
        pass

    def hep(rows, extra):
        feats = rng.randn(rows, 27)
        feats[:, 20:] = rng.randint(0, 3, (rows, 7))  # discrete: the smallest value repeats
        label = rng.randint(0, 2, (rows, 1)).astype(float)
        cols = [label, feats, rng.rand(rows, 1) * 1000] + ([rng.rand(rows, 1)] if extra else [])
        return np.hstack(cols)

    names = ["# label"] + [f"f{i}" for i in range(27)] + ["mass"]
    train, test = hep(n, False), hep(n // 2, True)
    np.savetxt(maf / "hepmass/1000_train.csv", train, delimiter=",", header=",".join(names),
               comments="")  # fmt: skip
    np.savetxt(maf / "hepmass/1000_test.csv", test, delimiter=",",
               header=",".join(names + ["extra"]), comments="")  # fmt: skip
    bsds = {
        k: rng.randn(m, 63) for k, m in (("train", n), ("validation", n // 4), ("test", n // 4))
    }
    try:
        import h5py

        with h5py.File(maf / "BSDS300/BSDS300.hdf5", "w") as f:
            for k, v in bsds.items():
                f.create_dataset(k, data=v)
    except ImportError:
        pass
    return {"power": power, "miniboone": mini, "gas": gas, "hepmass": (train, test), "bsds": bsds}
