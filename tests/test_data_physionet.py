"""PhysioNet 2012 preprocessing, on small files written here in the original format."""

import math

import numpy as np
import pytest
import torch
from _formats import PHYSIONET_RECORD as REC
from _formats import write_physionet as _write_sets

from zoo.data import PhysioNet2012DataModule
from zoo.data.physionet import PHYSIONET_PARAMS, parse_record


@pytest.fixture(autouse=True)
def _cache(tmp_path, monkeypatch):
    monkeypatch.setenv("ZOO_CACHE_DIR", str(tmp_path / "cache"))


def test_parse_record_quantizes_and_averages():
    rid, t, v, m = parse_record(REC.format(rid=7), quantization=0.1)
    assert rid == 7 and len(PHYSIONET_PARAMS) == 41 and v.shape == (len(t), 41)
    hr = PHYSIONET_PARAMS.index("HR")
    # 00:07 and 00:09 round to 0.1 h and are averaged; 00:00 statics share the time-0 row
    assert np.allclose(t[:3], [0.0, 0.1, 1.6]) and v[1, hr] == 75.0 and m[1, hr] == 1
    assert m[0, PHYSIONET_PARAMS.index("Age")] == 1 and v[0, PHYSIONET_PARAMS.index("Height")] == -1
    assert math.isclose(t[-1], 48.0)  # 47:59 rounds up
    _, t1, _, _ = parse_record(REC.format(rid=7), quantization=1 / 60)
    assert len(t1) == 5  # 1-minute grid keeps 00:07 and 00:09 apart


def test_datamodule_split_normalization_and_batches(tmp_path):
    _write_sets(tmp_path)
    dm = PhysioNet2012DataModule(data_dir=str(tmp_path), quantization=0.1, batch_size=4)
    dm.setup()
    assert dm.skipped == 1  # the patient with no observation
    assert len(dm.splits["test"]) == 2 and len(dm.splits["train"]) == 7  # ceil(0.2 * 9) = 2
    hr = PHYSIONET_PARAMS.index("HR")
    assert dm.vmin[hr] == 75.0 and dm.vscale[hr] == 90.0  # reference: (x - min) / max
    b = next(iter(dm.val_dataloader()))
    assert b.values.shape[0] == 2 and b.times[0] == 0 and b.times[-1] == 1
    assert torch.all(b.values[b.mask == 0] == 0) and not torch.isnan(b.labels).any()
    mm = PhysioNet2012DataModule(data_dir=str(tmp_path), quantization=0.1, normalization="minmax")
    mm.setup()
    assert mm.vscale[hr] == 15.0
    with pytest.raises(ValueError, match="normalization"):
        PhysioNet2012DataModule(normalization="zscore")


def test_missing_tarballs_say_where(tmp_path):
    with pytest.raises(FileNotFoundError, match="physionet-2012/set-a.tar.gz.*physionet.org"):
        PhysioNet2012DataModule(data_dir=str(tmp_path)).setup()


def test_real_physionet(zoo_data_dir):
    dm = PhysioNet2012DataModule(data_dir=str(zoo_data_dir), quantization=0.1)
    dm.setup()
    assert len(dm.splits["train"]) + len(dm.splits["test"]) + dm.skipped == 8000
    assert len(dm.splits["test"]) == math.ceil(0.2 * (8000 - dm.skipped))


def test_a_held_out_validation_split_comes_from_training_patients_only(tmp_path):
    _write_sets(tmp_path)
    ids = lambda recs: [r.record_id for r in recs]  # noqa: E731
    paper = PhysioNet2012DataModule(data_dir=str(tmp_path), quantization=0.1, batch_size=4)
    held = PhysioNet2012DataModule(
        data_dir=str(tmp_path), quantization=0.1, batch_size=4, val_patients=3
    )
    paper.setup(), held.setup()
    assert ids(held.splits["test"]) == ids(paper.splits["test"])  # the paper's test split
    assert sorted(ids(held.splits["train"]) + ids(held.splits["val"])) == sorted(
        ids(paper.splits["train"])
    )
    assert len(held.splits["val"]) == 3 and "val" not in paper.eval_splits
    b = next(iter(held.val_dataloader()))
    assert b.values.shape[0] == 3  # validation reads the held-out patients, not the test split
    assert next(iter(held.eval_split("val"))).values.shape[0] == 3
    with pytest.raises(ValueError, match="unknown split 'val'"):
        paper.eval_split("val")
    with pytest.raises(ValueError, match="leaves no training patients"):
        PhysioNet2012DataModule(data_dir=str(tmp_path), quantization=0.1, val_patients=7).setup()
    with pytest.raises(ValueError, match="val_patients"):
        PhysioNet2012DataModule(val_patients=-1)
