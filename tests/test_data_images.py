"""Image data modules on small files written here in each original format, and on the real
offline copies when ZOO_DATA_DIR is set."""

import gzip
import io
import pickle
import struct
import tarfile
import warnings

import numpy as np
import pytest
import torch
from _formats import write_fashion_mnist, write_idx
from PIL import Image

from zoo.data import (
    CIFAR10DataModule,
    CIFAR10JPEGDataModule,
    FashionMNISTDataModule,
    ImageNetDataModule,
    MissingDataError,
)
from zoo.data._image import batch_augment
from zoo.data.cifar10 import CIFAR10_CLASSES


@pytest.fixture(autouse=True)
def _cache(tmp_path, monkeypatch):
    monkeypatch.setenv("ZOO_CACHE_DIR", str(tmp_path / "cache"))


def test_fashion_mnist_idx(tmp_path):
    write_fashion_mnist(tmp_path, 40, 10)
    dm = FashionMNISTDataModule(data_dir=str(tmp_path), batch_size=8, val_size=8)
    dm.setup()
    x, y = next(iter(dm.train_dataloader()))
    assert x.shape == (8, 1, 28, 28) and x.dtype == torch.uint8 and y.dtype == torch.long
    assert (
        len(dm._splits["train"]) == 32
        and len(dm._splits["val"]) == 8
        and len(dm._splits["test"]) == 10
    )


def test_val_size_zero_validates_on_test_with_a_warning(tmp_path):
    """val_size=0 trains on every training image; validating then means the test split."""
    write_fashion_mnist(tmp_path, 40, 10)
    dm = FashionMNISTDataModule(data_dir=str(tmp_path), batch_size=8, val_size=0)
    dm.setup()
    assert len(dm._splits["train"]) == 40 and "val" not in dm._splits
    with pytest.warns(UserWarning, match="limit_val_batches=0"):
        assert len(dm.val_dataloader().dataset) == 10

    class T:
        limit_val_batches = 0

    dm.trainer = T()  # validation switched off: nothing to warn about
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        dm.val_dataloader()


def test_fashion_mnist_missing_and_truncated(tmp_path):
    with pytest.raises(
        MissingDataError, match="fashion-mnist.*train-images-idx3-ubyte.gz.*ZOO_DATA_DIR"
    ):
        FashionMNISTDataModule(data_dir=str(tmp_path)).setup()
    root = tmp_path / "fashion-mnist"
    root.mkdir()
    with gzip.open(root / "train-images-idx3-ubyte.gz", "wb") as f:
        f.write(struct.pack(">HBBIII", 0, 8, 3, 5, 28, 28) + b"\0" * 100)
    write_idx(root / "train-labels-idx1-ubyte.gz", np.zeros(5))
    with pytest.raises(ValueError, match="truncated"):
        FashionMNISTDataModule(data_dir=str(tmp_path))._load("train")


def _jpeg(rng):
    buf = io.BytesIO()
    Image.fromarray(rng.integers(0, 255, (32, 32, 3), dtype=np.uint8)).save(buf, "JPEG")
    return buf.getvalue()


def test_cifar10_jpeg_tar(tmp_path):
    rng = np.random.default_rng(0)
    src = tmp_path / "cifar10-jpeg"
    src.mkdir()
    with tarfile.open(src / "cifar10-jpeg.tar.gz", "w:gz") as tf:
        for split, per in (("train", 3), ("test", 1)):
            for cls in CIFAR10_CLASSES:
                for i in range(per):
                    data = _jpeg(rng)
                    info = tarfile.TarInfo(f"cifar10/{split}/{cls}/{i:04d}.jpg")
                    info.size = len(data)
                    tf.addfile(info, io.BytesIO(data))
    dm = CIFAR10JPEGDataModule(data_dir=str(tmp_path), batch_size=4, val_size=5)
    dm.setup()
    assert len(dm._splits["train"]) == 25 and len(dm._splits["test"]) == 10
    x, y = dm._splits["test"].tensors
    assert x.shape == (10, 3, 32, 32) and sorted(y.tolist()) == list(range(10))
    # the second load comes from the cache, with the same bytes
    dm2 = CIFAR10JPEGDataModule(data_dir=str(tmp_path), val_size=5)
    dm2.setup()
    assert torch.equal(dm2._splits["test"].tensors[0], x)


def test_cifar10_torchvision_pickles(tmp_path):
    base = tmp_path / "cifar10" / "cifar-10-batches-py"
    base.mkdir(parents=True)
    rng = np.random.default_rng(0)

    def batch(name, n):
        d = {
            "data": rng.integers(0, 255, (n, 3072), dtype=np.uint8),
            "labels": rng.integers(0, 10, n).tolist(),
        }
        with open(base / name, "wb") as f:
            pickle.dump(d, f)

    for i in range(1, 6):
        batch(f"data_batch_{i}", 4)
    batch("test_batch", 6)
    with open(base / "batches.meta", "wb") as f:
        pickle.dump({"label_names": list(CIFAR10_CLASSES)}, f)
    dm = CIFAR10DataModule(data_dir=str(tmp_path), val_size=2)
    dm.setup()
    assert dm._splits["test"].tensors[0].shape == (6, 3, 32, 32)
    assert len(dm._splits["train"]) == 18


def test_cifar10_missing_message(tmp_path):
    with pytest.raises(MissingDataError, match="cifar10-jpeg.tar.gz.*ZOO_DATA_DIR"):
        CIFAR10JPEGDataModule(data_dir=str(tmp_path)).setup()


def test_imagenet_folder(tmp_path):
    rng = np.random.default_rng(0)
    for split in ("train", "val"):
        for wnid in ("n01440764", "n01443537"):
            d = tmp_path / "imagenet" / split / wnid
            d.mkdir(parents=True)
            for i in range(2):
                Image.fromarray(rng.integers(0, 255, (40, 50, 3), dtype=np.uint8)).save(
                    d / f"{i}.JPEG"
                )
    dm = ImageNetDataModule(data_dir=str(tmp_path), img_size=32, batch_size=2, num_workers=0)
    dm.setup("fit")
    x, y = next(iter(dm.train_dataloader()))
    assert x.shape == (2, 3, 32, 32)
    with pytest.raises(MissingDataError, match="image-net.org"):
        ImageNetDataModule(data_dir=str(tmp_path / "none")).setup("fit")


def test_batch_augment_shapes_and_content():
    x = torch.arange(2 * 3 * 8 * 8, dtype=torch.float32).view(2, 3, 8, 8)
    out = batch_augment(x, pad=0, flip=False)
    assert torch.equal(out, x)
    out = batch_augment(x, pad=2)
    assert out.shape == x.shape


def test_pad_argument_overrides_the_dataset_default():
    """pad=0 must leave only the flip: every augmented image is the original or its mirror."""

    class T:
        training = True

    assert FashionMNISTDataModule(val_size=0).pad == 2
    dm = FashionMNISTDataModule(val_size=0, pad=0)
    dm.trainer = T()
    torch.manual_seed(0)
    x = torch.randint(0, 256, (64, 1, 28, 28), dtype=torch.uint8)
    out, _ = dm.on_after_batch_transfer((x, torch.zeros(64, dtype=torch.long)), 0)
    ref = dm.normalize(x)
    same = (out == ref).flatten(1).all(1)
    mirrored = (out == ref.flip(3)).flatten(1).all(1)
    assert bool((same | mirrored).all()) and 0 < int(mirrored.sum()) < 64
    # with the default padding some images are shifted, so neither matches
    dm2 = FashionMNISTDataModule(val_size=0)
    dm2.trainer = T()
    out2, _ = dm2.on_after_batch_transfer((x, torch.zeros(64, dtype=torch.long)), 0)
    assert not bool(
        ((out2 == ref).flatten(1).all(1) | (out2 == ref.flip(3)).flatten(1).all(1)).all()
    )
    with pytest.raises(ValueError, match="padding"):
        FashionMNISTDataModule(pad=-1)


def test_real_fashion_mnist(zoo_data_dir):
    dm = FashionMNISTDataModule(data_dir=str(zoo_data_dir), val_size=5000)
    x, y = dm._load("test")
    assert x.shape == (10000, 1, 28, 28) and int(y.bincount().min()) == 1000


def test_augmentation_pads_black_in_pixel_space():
    """The crop padding must look like the (black) image border, not like the mean colour."""

    class T:
        training = True

    dm = FashionMNISTDataModule(val_size=0)
    dm.trainer = T()
    torch.manual_seed(0)
    x = torch.zeros(64, 1, 28, 28, dtype=torch.uint8)  # an all-black batch
    out, _ = dm.on_after_batch_transfer((x, torch.zeros(64, dtype=torch.long)), 0)
    black = dm.normalize(torch.zeros(1, 1, 1, 1))
    assert torch.allclose(out, black.expand_as(out))


def _write_cifar_tar(root, seed):
    rng = np.random.default_rng(seed)
    src = root / "cifar10-jpeg"
    src.mkdir(parents=True, exist_ok=True)
    with tarfile.open(src / "cifar10-jpeg.tar.gz", "w:gz") as tf:
        for cls in CIFAR10_CLASSES:
            data = _jpeg(rng)
            info = tarfile.TarInfo(f"cifar10/test/{cls}/0000.jpg")
            info.size = len(data)
            tf.addfile(info, io.BytesIO(data))


@pytest.mark.parametrize("kind", ["cifar10_jpeg", "physionet2012", "sotu"])
def test_a_cache_is_never_read_for_other_or_missing_data(kind, tmp_path, monkeypatch):
    """Decoded caches are keyed to their source; a missing source is an error even with a
    cache, unless ZOO_CACHE_ONLY=1 asks for the cache."""
    from _formats import write_physionet

    from zoo.data import PhysioNet2012DataModule, SOTUDataModule

    monkeypatch.setenv("ZOO_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.delenv("ZOO_CACHE_ONLY", raising=False)
    a, b = tmp_path / "a", tmp_path / "b"

    def write(root, seed):
        if kind == "cifar10_jpeg":
            _write_cifar_tar(root, seed)
        elif kind == "physionet2012":
            write_physionet(root, n_a=4 + seed, n_b=3)
        else:
            src = root / "src" / "sotu" / "data"
            src.mkdir(parents=True)
            for year in (1990, 2005, 2015):
                (src / f"{year}_x_y.txt").write_text(f"word{seed} " * (20 + year % 7))
            (root / "text").mkdir()
            with tarfile.open(root / "text" / "sotu.tar.gz", "w:gz") as tf:
                tf.add(root / "src" / "sotu", arcname="sotu")

    def load(root):
        if kind == "cifar10_jpeg":
            return CIFAR10JPEGDataModule(data_dir=str(root)).eval_split("test")[0]
        if kind == "physionet2012":
            dm = PhysioNet2012DataModule(data_dir=str(root), quantization=0.1, batch_size=100)
            return next(iter(dm.eval_split("train"))).values
        return SOTUDataModule(data_dir=str(root), vocab_size=None).eval_split("test")

    write(a, 0)
    write(b, 1)
    first, other = load(a), load(b)
    assert not _same(first, other)  # b was decoded from b, not served from a's cache
    assert _same(load(a), first)
    with pytest.raises(MissingDataError, match="not found"):
        load(tmp_path / "nonexistent")
    if kind != "sotu":  # the text module reads raw tokens from the source; its cache is the ids
        monkeypatch.setenv("ZOO_CACHE_ONLY", "1")
        with pytest.raises(MissingDataError, match="2 caches"):
            load(tmp_path / "nonexistent")


def _same(x, y) -> bool:
    if isinstance(x, list):
        return x == y
    return x.shape == y.shape and bool(torch.equal(x, y))
