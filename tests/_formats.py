"""Writers of small files in original dataset formats, shared by the tests."""

import gzip
import io
import struct
import tarfile

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
