"""Small evaluation samples shipped in ``samples/`` (<= 1 MB each) for the offline demo.

``python -m zoo.samples`` rebuilds them from ``$ZOO_DATA_DIR``: the first ``per_class``
test images of every class, in test-set order, stored as uint8 with their labels.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

SAMPLES = {
    # dataset: (data module, images per class)
    "fashion_mnist": ("zoo.data.FashionMNISTDataModule", 100),
    "cifar10_jpeg": ("zoo.data.CIFAR10JPEGDataModule", 25),
    # text: the first N test tokens, as strings (encoded with each model's own vocabulary)
    "sotu": ("zoo.data.SOTUDataModule", 20000),
    # time series: the first N test series, as one irregular batch (times, values, mask, labels)
    "physionet2012": ("zoo.data.PhysioNet2012DataModule", 50),
    "periodic": ("zoo.data.PeriodicDataModule", 50),
    "hopper": ("zoo.data.HopperDataModule", 50),
}
SERIES_ARGS = {"physionet2012": {"quantization": 0.1}, "periodic": {}, "hopper": {}}


def build(dataset: str, data_dir: str | None = None, out_dir: Path | None = None) -> Path:
    import importlib

    from .evaluate import sample_path

    dm_path, per_class = SAMPLES[dataset]
    mod, cls = dm_path.rsplit(".", 1)
    klass = getattr(importlib.import_module(mod), cls)
    if hasattr(klass, "_documents"):
        return _build_text(dataset, klass(data_dir=data_dir), per_class, out_dir)
    if dataset in SERIES_ARGS:
        return _build_series(dataset, klass, per_class, data_dir, out_dir)
    dm = klass(data_dir=data_dir, val_size=0)
    x, y = dm._load("test")
    x, y = x.numpy(), y.numpy()
    idx = np.concatenate([np.flatnonzero(y == c)[:per_class] for c in range(int(y.max()) + 1)])
    idx.sort()
    out = (out_dir / f"{dataset}.npz") if out_dir else sample_path(dataset)
    out.parent.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(out, x=x[idx], y=y[idx], source_index=idx)
    size = out.stat().st_size
    if size > 1_000_000:
        raise ValueError(f"{out} is {size} bytes; samples must stay <= 1 MB")
    print(f"wrote {out}: {len(idx)} images, {size / 1e3:.0f} kB")
    return out


def _build_text(dataset, dm, n_tokens, out_dir) -> Path:
    from .evaluate import sample_path

    tokens = [t for doc in dm._documents("test") for t in doc][:n_tokens]
    out = (out_dir / f"{dataset}.npz") if out_dir else sample_path(dataset)
    out.parent.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(out, tokens=np.array(tokens))
    print(f"wrote {out}: {len(tokens)} tokens, {out.stat().st_size / 1e3:.0f} kB")
    return out


def _build_series(dataset, klass, n, data_dir, out_dir) -> Path:
    import inspect

    from .evaluate import sample_path

    kwargs = dict(SERIES_ARGS[dataset])
    if "data_dir" in inspect.signature(klass).parameters:
        kwargs["data_dir"] = data_dir
    dm = klass(batch_size=n, **kwargs)
    dm.setup("test")
    b = next(iter(dm.test_dataloader()))
    out = (out_dir / f"{dataset}.npz") if out_dir else sample_path(dataset)
    out.parent.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(
        out, times=b.times.numpy(), values=b.values.numpy(), mask=b.mask.numpy(),
        labels=b.labels.numpy(),
    )  # fmt: skip
    size = out.stat().st_size
    if size > 1_000_000:
        raise ValueError(f"{out} is {size} bytes; samples must stay <= 1 MB")
    print(f"wrote {out}: {b.values.shape[0]} series, {size / 1e3:.0f} kB")
    return out


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("datasets", nargs="*", default=list(SAMPLES))
    p.add_argument("--data-dir", default=None)
    a = p.parse_args(argv)
    for d in a.datasets:
        build(d, a.data_dir)


if __name__ == "__main__":
    main()
