"""The MAF tabular data sets (POWER, GAS, HEPMASS, MINIBOONE, BSDS300), read from small files
the tests write in the archive's formats (the real files cannot be obtained here): MAF's
preprocessing, split sizes, standardization, the pickle guard, the cache, and zoo eval of a
flow on one of them."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from tests._formats import write_maf
from zoo.data import build_datamodule
from zoo.data._common import MissingDataError


@pytest.fixture()
def maf(tmp_path, monkeypatch):
    monkeypatch.setenv("ZOO_CACHE_DIR", str(tmp_path / "cache"))
    raw = write_maf(tmp_path / "data", n=400)
    return tmp_path / "data", raw


def _splits(name, root, **kw):
    dm = build_datamodule(name, kw, data_dir=str(root))
    return [dm.eval_split(s).numpy().astype(np.float64) for s in ("train", "val", "test")]


def test_power_rows_are_the_raw_rows_with_maf_noise(maf):
    root, raw = maf
    train, val, test = _splits("power", root)
    assert (len(train), len(val), len(test)) == (324, 36, 40)  # 10% test, 10% of the rest
    both = np.vstack([train, val])
    assert np.allclose(both.mean(0), 0, atol=1e-5) and np.allclose(both.std(0), 1, atol=1e-5)
    # every row is a raw row, found by its noise-free time column (the raw file's row index),
    # with columns 1 and 3 dropped and uniform noise in [0, bound) added to the others
    rows = np.vstack([train, val, test])
    slope, icpt = np.polyfit(rows[:, 5], np.arange(400)[np.argsort(np.argsort(rows[:, 5]))], 1)
    idx = np.rint(rows[:, 5] * slope + icpt).astype(int)
    assert sorted(idx) == list(range(400)) and not (idx == np.arange(400)).all()  # shuffled
    kept = raw["power"][idx][:, [0, 2, 4, 5, 6]]
    for j, bound in enumerate((0.001, 0.01, 1.0, 1.0, 1.0)):
        s, c = np.polyfit(rows[:, j], kept[:, j], 1)
        assert np.ptp(rows[:, j] * s + c - kept[:, j]) <= bound * 1.05, j


def test_gas_drops_correlated_columns_and_pickle_needs_trust(maf):
    root, raw = maf
    train, val, test = _splits("gas", root)
    copies = raw["gas"][:, 11:]  # the first of each correlated pair is dropped: copies remain
    want = (copies - copies.mean(0)) / copies.std(0, ddof=1)
    assert train.shape[1] == 8 and np.allclose(np.vstack([train, val, test]), want, atol=1e-5)
    assert (len(train), len(val), len(test)) == (324, 36, 40)
    (root / "maf/gas/ethylene_CO.txt").unlink()  # only the pickle left
    with pytest.raises(ValueError, match="trust_pickle"):
        _splits("gas", root)
    with pytest.raises(ValueError, match="grants no trust"):  # never from a config
        _splits("gas", root, trust_pickle=True)
    pytest.importorskip("pandas")
    from zoo.data.tabular import GasDataModule

    dm = GasDataModule(data_dir=str(root), trust_pickle=True)  # the user's own choice
    trusted = [dm.eval_split(s).numpy() for s in ("train", "val", "test")]
    assert np.allclose(np.vstack(trusted), want, atol=1e-5)


def test_hepmass_positive_class_sample_std_and_maf_feature_rule(maf):
    root, raw = maf
    train, val, test = _splits("hepmass", root)
    tr_raw, te_raw = raw["hepmass"]
    pos = tr_raw[tr_raw[:, 0] == 1]
    assert train.shape[1] == 21 and test.shape[1] == 21  # 28 features - the 7 discrete ones
    assert len(train) + len(val) == len(pos) and len(val) == int(0.1 * len(pos))
    assert len(test) == int((te_raw[:, 0] == 1).sum())
    both = np.vstack([train, val])
    assert np.allclose(both.mean(0), 0, atol=1e-5) and np.allclose(
        both.std(0, ddof=1), 1, atol=1e-5
    )
    mass = pos[:, 28]  # the last kept feature is the mass column, standardized by train stats
    assert np.allclose(both[:, -1], (mass - mass.mean()) / mass.std(ddof=1), atol=1e-5)


def test_miniboone_and_bsds300(maf):
    root, raw = maf
    train, val, test = _splits("miniboone", root)
    assert (len(train), len(val), len(test), train.shape[1]) == (324, 36, 40, 43)
    assert np.allclose(np.vstack([train, val]).mean(0), 0, atol=1e-5)
    pytest.importorskip("h5py")
    train, val, test = _splits("bsds300", root)
    for got, key in ((train, "train"), (val, "validation"), (test, "test")):
        assert np.allclose(got, raw["bsds"][key], atol=1e-6)


def test_missing_files_name_the_archive_and_the_cache_is_keyed_to_the_source(maf, tmp_path):
    root, _ = maf
    with pytest.raises(MissingDataError, match="maf/.*1161203"):
        _splits("power", tmp_path / "nowhere")
    a = _splits("miniboone", root)[0]
    cached = list((tmp_path / "cache" / "tabular").glob("miniboone-*.npz"))
    assert len(cached) == 1
    np.save(root / "maf/miniboone/data.npy", np.random.RandomState(9).randn(200, 43))
    b = _splits("miniboone", root)[0]
    assert len(b) == 162 and len(a) == 324  # a new source, a new cache: never the stale one
    with pytest.raises(ValueError, match="use test, val or train"):
        build_datamodule("power", {}, data_dir=str(root)).eval_split("valid")


def test_zoo_eval_of_a_flow_on_power(maf, tmp_path):
    from zoo.evaluate import evaluate

    root, _ = maf
    torch.manual_seed(0)
    import zoo

    m = zoo.create_model("ffjord_power", hidden=(8,), num_blocks=2, rtol=1e-4, atol=1e-4)
    m.pretrained_cfg = {"name": "my_power_flow", "task": "density-estimation",
                        "dataset": "power", "datamodule": "power", "datamodule_args": {}}  # fmt: skip
    m.save_pretrained(tmp_path / "flow")
    res = evaluate(str(tmp_path / "flow"), data_dir=str(root))
    assert res["num_samples"] == 40 and math.isfinite(res["metrics"]["nll"])
    assert abs(res["metrics"]["bpd"] - res["metrics"]["nll"] / (6 * math.log(2))) < 1e-3
