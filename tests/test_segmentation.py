"""Semantic segmentation: the fashion-scenes generator, the Cityscapes reader on files written
in its layout, the metric against an independent confusion-matrix computation, the MDEQ
segmenter and its explicit baseline (float64 gradients against finite differences, the budget
contract, initialization from a classification checkpoint), and one Lightning step."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from _formats import write_cityscapes, write_fashion_mnist

import zoo
from zoo.data.fashion_mnist import read_idx
from zoo.data.fashion_scenes import THRESHOLD, FashionScenesDataModule, make_scenes
from zoo.tasks import get_task
from zoo.tasks.segmentation import check_masks

TINY_MDEQ = dict(
    channels=(8, 8),
    expansion=1,
    groups=2,
    solver={"name": "anderson", "max_iter": 4},
    grad={"name": "phantom", "steps": 1},
)


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    root = tmp_path_factory.mktemp("segdata")
    write_fashion_mnist(root, 64, 16)
    write_cityscapes(root)
    return root


def test_scenes_are_deterministic_and_labels_follow_the_pixels(data_dir):
    items = read_idx(data_dir / "fashion-mnist" / "train-images-idx3-ubyte.gz")
    labels = read_idx(data_dir / "fashion-mnist" / "train-labels-idx1-ubyte.gz")
    x1, y1 = make_scenes(items, labels, 20, seed=1)
    x2, y2 = make_scenes(items, labels, 20, seed=1)
    x3, _ = make_scenes(items, labels, 20, seed=3)
    assert np.array_equal(x1, x2) and np.array_equal(y1, y2) and not np.array_equal(x1, x3)
    assert x1.shape == (20, 1, 64, 64) and y1.shape == (20, 64, 64)
    img = x1[:, 0]
    assert (img[y1 > 0] >= THRESHOLD).all()  # a labelled pixel shows its item
    assert (img[y1 == 0] == 0).all()  # background is black
    assert set(np.unique(y1)) <= set(range(11)) and (y1 > 0).mean() > 0.1
    # the first scenes of a seed do not depend on how many are generated
    x4, y4 = make_scenes(items, labels, 5, seed=1)
    assert np.array_equal(x4, x1[:5]) and np.array_equal(y4, y1[:5])


def test_scene_splits_use_their_own_items(data_dir, monkeypatch, tmp_path):
    monkeypatch.setenv("ZOO_CACHE_DIR", str(tmp_path))
    dm = FashionScenesDataModule(data_dir=str(data_dir), num_train=30, num_test=6, val_size=5)
    xt, yt = dm.eval_split("test")
    test_items = read_idx(data_dir / "fashion-mnist" / "t10k-images-idx3-ubyte.gz")
    labels = read_idx(data_dir / "fashion-mnist" / "t10k-labels-idx1-ubyte.gz")
    ref = make_scenes(test_items, labels, 6, seed=2)
    assert np.array_equal(xt.numpy(), ref[0]) and np.array_equal(yt.numpy(), ref[1])
    assert len(dm.eval_split("val")[0]) == 5 and len(dm.eval_split("train")[0]) == 25
    cached = list((tmp_path / "data" / "fashion_scenes").glob("*.npz"))
    assert len(cached) == 2 and not any(".tmp" in p.name for p in cached)
    with pytest.raises(ValueError, match="val_size"):
        FashionScenesDataModule(num_train=10, val_size=10)


def test_training_flip_moves_image_and_mask_together(data_dir, monkeypatch, tmp_path):
    monkeypatch.setenv("ZOO_CACHE_DIR", str(tmp_path))

    class _T:
        training = True

    dm = FashionScenesDataModule(data_dir=str(data_dir), num_train=30, num_test=6, val_size=5)
    x, y = dm.eval_split("test")
    dm.trainer = _T()
    torch.manual_seed(0)
    xa, ya = dm.on_after_batch_transfer((x, y), 0)
    ref = dm.normalize(x)
    flipped = [not torch.equal(xa[i], ref[i]) for i in range(len(x))]
    assert any(flipped) and not all(flipped)
    for i in range(len(x)):
        want_y = y[i].flip(1) if flipped[i] else y[i]
        assert torch.equal(ya[i], want_y.long())
        assert torch.equal(xa[i], ref[i].flip(2) if flipped[i] else ref[i])


def test_cityscapes_reads_its_layout_and_maps_train_ids(data_dir):
    from zoo.data.cityscapes import CITYSCAPES_CLASSES, CityscapesDataModule

    dm = CityscapesDataModule(
        data_dir=str(data_dir), batch_size=2, crop_size=[16, 24], num_workers=0
    )
    assert len(CITYSCAPES_CLASSES) == 19 and CITYSCAPES_CLASSES[0] == "road"
    x, y = dm.eval_split("test")  # the official val set
    assert x.shape == (1, 3, 32, 64) and x.dtype == torch.uint8 and y.shape == (1, 32, 64)
    # label ids 0 7 8 11 24 26 33 255 -> 255 0 1 2 11 13 18 255
    assert set(torch.unique(y).tolist()) <= {255, 0, 1, 2, 11, 13, 18}
    xb, yb = next(iter(dm.train_dataloader()))
    assert xb.shape == (2, 3, 16, 24) and yb.shape == (2, 16, 24)
    xn, yl = dm.on_after_batch_transfer((xb, yb), 0)
    assert xn.dtype == torch.float32 and yl.dtype == torch.int64
    with pytest.raises(FileNotFoundError, match="registration"):
        CityscapesDataModule(data_dir=str(data_dir / "nowhere")).prepare_data()


def test_miou_matches_an_independent_confusion_matrix():
    """The spec's mIoU and pixel accuracy against numpy, with ignored pixels and an absent class."""
    spec = get_task("semantic-segmentation")
    k, ignore = 5, 255
    g = torch.Generator().manual_seed(0)
    y = torch.randint(0, k - 1, (6, 8, 8), generator=g)  # class 4 never in the labels
    y[:, 0] = ignore
    logits = torch.randn(6, k, 8, 8, generator=g)
    logits[:, 4] -= 100  # and never predicted: it must not count in the mean

    class _M(torch.nn.Module):
        num_classes = k

        def forward(self, x):
            return logits[x[:, 0, 0, 0].long()]

        def cost(self):
            from zoo.models._base import Cost

            return Cost()

    x = torch.arange(6, dtype=torch.float32).view(6, 1, 1, 1).expand(6, 1, 8, 8)
    batches = [(x[:4], y[:4]), (x[4:], y[4:])]
    proto = spec.protocol({"dataset": "fashion_scenes", "datamodule": "fashion_scenes"})

    class _Clock:
        seconds = 0.0

        def __enter__(self):
            return self

        def __exit__(self, *a):
            return False

    res = spec.evaluate(_M(), batches, proto, torch.device("cpu"), _Clock())
    p, t = logits.argmax(1).numpy().ravel(), y.numpy().ravel()
    keep = t != ignore
    cm = np.zeros((k, k))
    np.add.at(cm, (t[keep], p[keep]), 1)
    inter, union = np.diag(cm), cm.sum(0) + cm.sum(1) - np.diag(cm)
    ious = inter[union > 0] / union[union > 0]
    assert res.metrics["miou"] == pytest.approx(100 * ious.mean(), abs=0.01)
    assert res.metrics["pixel_acc"] == pytest.approx(100 * inter.sum() / keep.sum(), abs=0.01)
    assert len(res.metrics["class_iou"]) == 4 and res.num_samples == 6


def test_models_shapes_parameters_and_budget_contract():
    mdeq = zoo.create_model("mdeq_seg_tiny").eval()
    hrnet = zoo.create_model("hrnet_seg_tiny").eval()
    assert abs(hrnet.num_params() / mdeq.num_params() - 1) < 0.02  # the same size
    x = torch.randn(2, 1, 64, 64)
    with torch.no_grad():
        assert mdeq(x).shape == hrnet(x).shape == (2, 11, 64, 64)
        assert mdeq(x[:0]).shape == (0, 11, 64, 64)
    assert mdeq.cost().nfe_forward > 0 and hrnet.cost().nfe_forward == 0
    mdeq.set_inference_budget(max_iter=3)
    with torch.no_grad():
        mdeq(x)
    assert mdeq.cost().nfe_forward <= 3
    with pytest.raises(ValueError, match="no test-time budget"):
        hrnet.set_inference_budget(max_iter=3)  # explicit: a budget is refused, never ignored
    with pytest.raises(ValueError, match="multiples of 4"):
        mdeq(torch.randn(1, 1, 63, 64))
    assert zoo.create_model("mdeq_seg_small").num_params() > 7e6


def test_explicit_baseline_gradient_matches_finite_differences_float64():
    torch.manual_seed(0)
    m = zoo.create_model("hrnet_seg_tiny", channels=(4, 4), groups=2, depth=2).double().eval()
    x = torch.randn(2, 1, 8, 8, dtype=torch.float64)
    y = torch.randint(0, 11, (2, 8, 8))
    loss = lambda: torch.nn.functional.cross_entropy(m(x), y)  # noqa: E731
    loss().backward()
    w = m.cells[1].blocks[0].conv1.parametrizations.weight.original1
    idx, h = (1, 2, 1, 0), 1e-6
    with torch.no_grad():
        w[idx] += h
        up = float(loss())
        w[idx] -= 2 * h
        down = float(loss())
        w[idx] += h
    assert abs((up - down) / (2 * h) - float(w.grad[idx])) < 1e-7


def test_mdeq_segmenter_starts_from_a_classification_checkpoint():
    from zoo.training import init_weights_from

    seg = zoo.create_model("mdeq_seg_tiny")
    report = init_weights_from(seg, "mdeq_tiny.fashion_mnist")
    cls = zoo.load("mdeq_tiny.fashion_mnist")
    assert any(k.startswith("deq.cell.") for k in report["loaded"])
    assert any(k.startswith("stem.") for k in report["loaded"])
    assert all(k.startswith("head.") for k in report["kept_init"])
    a = seg.state_dict()["deq.cell.blocks.0.conv1.parametrizations.weight.original1"]
    assert torch.equal(
        a, cls.state_dict()["deq.cell.blocks.0.conv1.parametrizations.weight.original1"]
    )


def test_masks_are_checked():
    x = torch.zeros(2, 1, 8, 8)
    with pytest.raises(ValueError, match="do not match"):
        check_masks(x, torch.zeros(2, 8, 9, dtype=torch.long), 11)
    with pytest.raises(ValueError, match="outside the 11 classes"):
        check_masks(x, torch.full((2, 8, 8), 11), 11)
    with pytest.raises(ValueError, match="integer class ids"):
        check_masks(x, torch.zeros(2, 8, 8), 11)
    assert check_masks(x, torch.full((2, 8, 8), 255, dtype=torch.uint8), 11).dtype == torch.int64


@pytest.mark.parametrize("arch", ["mdeq_seg_tiny", "hrnet_seg_tiny"])
def test_one_lightning_step_learns(arch, data_dir, monkeypatch, tmp_path):
    import lightning.pytorch as pl

    from zoo.tasks.segmentation import Segmentation

    monkeypatch.setenv("ZOO_CACHE_DIR", str(tmp_path))
    margs = dict(TINY_MDEQ) if arch.startswith("mdeq") else dict(channels=(8, 8), groups=2)
    task = Segmentation(arch=arch, model_args=margs, lr=1e-2, pretrain_steps=1)
    dm = FashionScenesDataModule(
        data_dir=str(data_dir), num_train=40, num_test=8, val_size=8, batch_size=8
    )
    trainer = pl.Trainer(
        max_steps=4, logger=False, enable_checkpointing=False, enable_progress_bar=False,
        default_root_dir=tmp_path, num_sanity_val_steps=0, val_check_interval=4,
    )  # fmt: skip
    trainer.fit(task, dm)
    m = trainer.callback_metrics
    assert torch.isfinite(m["train/loss"]) and 0 <= float(m["val/miou"]) <= 1
    if arch.startswith("mdeq"):
        assert float(m["val/nfe"]) > 0


@pytest.mark.parametrize("arch", ["mdeq_seg_tiny", "hrnet_seg_tiny"])
def test_auxiliary_loss_at_lower_resolutions(arch):
    """aux_heads adds one 1x1 classifier per lower branch; in training their logits sit at the
    branch's resolution and the task's loss adds their cross-entropy against the labels
    downsampled by nearest neighbour (checked against a strided slice of the labels, the
    ignore index kept); inference and the default models are unchanged."""
    from zoo.tasks.segmentation import Segmentation, aux_loss

    torch.manual_seed(0)
    kw = {"num_classes": 11, "in_chans": 1}
    plain = zoo.create_model(arch, **kw)
    m = zoo.create_model(arch, **kw, aux_heads=True).train()
    extra = sum(p.numel() for p in m.head.aux.parameters())
    assert m.num_params() == plain.num_params() + extra > plain.num_params()
    x = torch.randn(2, 1, 64, 64)
    y = torch.randint(0, 11, (2, 64, 64))
    y[0, :8] = 255
    m(x)
    assert (
        len(m.head.aux_logits) == len(m.channels if hasattr(m, "channels") else m.cell.channels) - 1
    )
    for logits in m.head.aux_logits:
        s = 64 // logits.shape[-1]
        ref = torch.nn.functional.cross_entropy(logits, y[:, ::s, ::s], ignore_index=255)
        assert torch.allclose(aux_loss([logits], y, 255), ref)
    total = aux_loss(m.head.aux_logits, y, 255)
    total.backward()
    assert all(p.grad is not None for p in m.head.aux.parameters())
    m.eval()
    with torch.no_grad():
        m(x)
    assert m.head.aux_logits == []
    with pytest.raises(ValueError, match="aux_heads"):
        Segmentation(arch, kw, aux_weight=0.4)
    task = Segmentation(arch, {**kw, "aux_heads": True}, aux_weight=0.4)
    assert task.hparams.aux_weight == 0.4


def test_gpu_pair_launcher_sizes_runs_from_the_probe(tmp_path):
    """recipes/mdeq_seg/gpu_pair.py: the probe's last StepTimer line sets max_steps (the
    2026-12-04 H200 run: 85.0 ms a step -> 3,000 steps in 0.85 of 5 minutes)."""
    import importlib.util
    from pathlib import Path

    path = Path(__file__).parents[1] / "recipes" / "mdeq_seg" / "gpu_pair.py"
    spec = importlib.util.spec_from_file_location("gpu_pair", path)
    gp = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(gp)

    assert gp.max_steps_for(0.08497, 300, 0.85) == 3000
    assert gp.max_steps_for(0.06443, 300, 0.85) == 3900
    assert gp.max_steps_for(0.5, 300, 0.85) == 510  # below 1,000: not rounded
    assert gp.max_steps_for(10.0, 30, 0.85) == 20  # the floor
    with pytest.raises(ValueError, match="fill"):
        gp.max_steps_for(0.1, 300, 1.5)

    log = tmp_path / "probe.log"
    log.write_text("Epoch 0 ...\nstep_time_s=0.09000 steps=5\nstep_time_s=0.08497 steps=50\n")
    assert gp._step_time(log) == pytest.approx(0.08497)
    log.write_text("Traceback ...\n")
    with pytest.raises(SystemExit, match="no 'step_time_s=' line"):
        gp._step_time(log)
    # every recipe it launches exists and asks for the GPU with a wall-time cap
    for cfg, _, _ in gp.RUNS.values():
        text = cfg.read_text()
        assert "accelerator: gpu" in text and "max_time:" in text
