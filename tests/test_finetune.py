"""``init_from``: start a training run from other weights (fine-tuning, warm restarts)."""

from __future__ import annotations

import lightning.pytorch as pl
import pytest
import torch
from torch.utils.data import DataLoader, TensorDataset

from zoo.models import create_model
from zoo.tasks import ImageClassification
from zoo.training import init_weights_from

TINY = dict(
    channels=[4, 4],
    head_channels=[2, 2],
    final_channels=8,
    expansion=1,
    groups=2,
    in_chans=1,
    solver={"name": "anderson", "max_iter": 2},
    pretrain_depth=1,
)


def _same(a: torch.nn.Module, b: torch.nn.Module, skip: tuple[str, ...] = ()) -> bool:
    sb = b.state_dict()
    return all(torch.equal(v, sb[k]) for k, v in a.state_dict().items() if not k.startswith(skip))


def _lightning_ckpt(path, model_args=TINY):
    """A Lightning-format checkpoint of a freshly initialised tiny task."""
    task = ImageClassification("mdeq_tiny", model_args=model_args)
    torch.save({"state_dict": task.state_dict(), "hyper_parameters": dict(task.hparams)}, path)
    return task


def test_from_lightning_checkpoint(tmp_path):
    torch.manual_seed(1)
    src = _lightning_ckpt(tmp_path / "a.ckpt")
    torch.manual_seed(2)
    dst = create_model("mdeq_tiny", **TINY)
    assert not _same(src.model, dst)
    report = init_weights_from(dst, tmp_path / "a.ckpt")
    assert _same(src.model, dst)
    assert report["kept_init"] == [] and report["ignored"] == []


def test_from_folder_with_a_new_head(tmp_path):
    torch.manual_seed(1)
    src = create_model("mdeq_tiny", **TINY)
    (tmp_path / "m").mkdir()
    src._save_pretrained(tmp_path / "m")  # config.json + model.safetensors, as zoo export writes
    dst = create_model("mdeq_tiny", **{**TINY, "num_classes": 3})
    report = init_weights_from(dst, tmp_path / "m")
    assert report["kept_init"] == ["classifier.bias", "classifier.weight"]
    assert report["ignored"] == ["classifier.bias", "classifier.weight"]
    assert _same(src, dst, skip=("classifier.",))


def test_clear_errors(tmp_path):
    model = create_model("mdeq_tiny", **TINY)
    with pytest.raises(FileNotFoundError, match="no Lightning checkpoint"):
        init_weights_from(model, tmp_path / "missing.ckpt")
    torch.save({"state_dict": {"model.other.weight": torch.zeros(2)}}, tmp_path / "b.ckpt")
    with pytest.raises(ValueError, match="same architecture"):
        init_weights_from(model, tmp_path / "b.ckpt")


class _Capture(pl.Callback):
    """Records the model's weights when training starts (after any resume)."""

    def on_train_start(self, trainer, pl_module):
        self.start = {k: v.clone() for k, v in pl_module.model.state_dict().items()}


def _fit(task, tmp_path, ckpt_path=None, steps=1):
    x = torch.randn(8, 1, 28, 28)
    y = torch.randint(0, 10, (8,))
    dl = DataLoader(TensorDataset(x, y), batch_size=4)
    cap = _Capture()
    trainer = pl.Trainer(
        max_steps=steps,
        accelerator="cpu",
        logger=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        callbacks=[cap],
        default_root_dir=tmp_path,
        limit_val_batches=0,
    )
    trainer.fit(task, dl, ckpt_path=ckpt_path)
    return trainer, cap.start


def test_trainer_starts_from_init_weights_and_resume_wins(tmp_path):
    torch.manual_seed(1)
    src = _lightning_ckpt(tmp_path / "init.ckpt")
    torch.manual_seed(2)
    task = ImageClassification("mdeq_tiny", model_args=TINY, init_from=str(tmp_path / "init.ckpt"))
    trainer, start = _fit(task, tmp_path)
    assert all(torch.equal(v, start[k]) for k, v in src.model.state_dict().items())
    trainer.save_checkpoint(tmp_path / "run.ckpt")
    trained = {k: v.clone() for k, v in task.model.state_dict().items()}
    assert not all(torch.equal(v, trained[k]) for k, v in src.model.state_dict().items())

    # resuming the run restores its own weights, not the init_from ones
    again = ImageClassification("mdeq_tiny", model_args=TINY, init_from=str(tmp_path / "init.ckpt"))
    _, start = _fit(again, tmp_path, ckpt_path=tmp_path / "run.ckpt", steps=2)
    assert all(torch.equal(v, start[k]) for k, v in trained.items())


def test_cards_name_every_stage_of_a_chained_recipe():
    from zoo.cards import recipe_stages

    fm = "recipes/mdeq/mdeq_tiny.fashion_mnist.stage{}.yaml"
    for k in range(2, 7):  # each stage starts from the weights of the one before
        assert recipe_stages(fm.format(k))[k - 2 :] == [fm.format(k - 1), fm.format(k)]
    assert len(recipe_stages("recipes/mdeq/mdeq_tiny.fashion_mnist.yaml")) == 7
    assert recipe_stages("recipes/mdeq/mdeq_tiny.cifar10.stage1.yaml") == [
        "recipes/mdeq/mdeq_tiny.cifar10.stage1.yaml"
    ]
    assert recipe_stages("recipes/mdeq/mdeq_tiny.cifar10.stage2.yaml") == [
        "recipes/mdeq/mdeq_tiny.cifar10.stage1.yaml",
        "recipes/mdeq/mdeq_tiny.cifar10.stage2.yaml",
    ]
    # stage 4 starts from stage 2 (stage 3 was tried and not shipped)
    assert recipe_stages("recipes/mdeq/experiments/mdeq_tiny_cifar10_cpu_stage4.yaml") == [
        "recipes/mdeq/mdeq_tiny.cifar10.stage1.yaml",
        "recipes/mdeq/mdeq_tiny.cifar10.stage2.yaml",
        "recipes/mdeq/experiments/mdeq_tiny_cifar10_cpu_stage4.yaml",
    ]
    # the shipped chain: stage 5 also starts from stage 2
    assert recipe_stages("recipes/mdeq/mdeq_tiny.cifar10.yaml") == [
        "recipes/mdeq/mdeq_tiny.cifar10.stage1.yaml",
        "recipes/mdeq/mdeq_tiny.cifar10.stage2.yaml",
        "recipes/mdeq/mdeq_tiny.cifar10.yaml",
    ]


def test_export_ships_the_averaged_weights_and_counts_whole_epochs(tmp_path):
    """An EMA run's checkpoint holds the average in ``state_dict``; ``zoo export`` ships it."""
    import json

    from lightning.pytorch.callbacks import EMAWeightAveraging
    from safetensors.torch import load_file

    from zoo.training import export_checkpoint

    torch.manual_seed(0)
    task = ImageClassification("mdeq_tiny", model_args=TINY, lr=0.05)
    x, y = torch.randn(8, 1, 28, 28), torch.randint(0, 10, (8,))
    trainer = pl.Trainer(
        max_steps=3,  # 2 batches per epoch: one whole epoch and half of the next
        accelerator="cpu",
        logger=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        enable_checkpointing=False,
        callbacks=[EMAWeightAveraging(decay=0.5)],
        limit_val_batches=0,
    )
    trainer.fit(task, DataLoader(TensorDataset(x, y), batch_size=4))
    trainer.save_checkpoint(tmp_path / "ema.ckpt")
    state = torch.load(tmp_path / "ema.ckpt", map_location="cpu", weights_only=True)
    assert "current_model_state" in state
    # make the raw weights differ from the average, so shipping the wrong one would show
    state["current_model_state"] = {k: v + 1 for k, v in state["current_model_state"].items()}
    torch.save(state, tmp_path / "ema.ckpt")

    out = export_checkpoint(tmp_path / "ema.ckpt", "mdeq_tiny.fashion_mnist", tmp_path / "out")
    shipped = load_file(out / "model.safetensors")
    avg = {k[len("model.") :]: v for k, v in state["state_dict"].items() if k.startswith("model.")}
    assert shipped.keys() == avg.keys()
    assert all(torch.equal(shipped[k], avg[k]) for k in avg)
    cfg = json.loads((out / "config.json").read_text())["pretrained_cfg"]
    assert cfg["averaged_weights"] is True
    assert (cfg["trained_steps"], cfg["trained_epochs"]) == (3, 1)
