"""Fine-tuning in plain Python: ``zoo.tasks.from_pretrained`` gives a LightningModule with the
recipe's training settings; a plain ``lightning.Trainer`` runs 8 steps of it on new data with a
new number of classes (or new outputs) for every family, and the result evaluates."""

from __future__ import annotations

import warnings

import pytest
import torch

import zoo
import zoo.tasks

pytestmark = pytest.mark.timeout(300)


def _trainer(steps: int = 8):
    import lightning.pytorch as pl

    return pl.Trainer(
        max_steps=steps,
        accelerator="cpu",
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
    )


def _loader(*tensors, batch_size: int = 8):
    ds = torch.utils.data.TensorDataset(*tensors)
    return torch.utils.data.DataLoader(ds, batch_size=batch_size, shuffle=True)


def _fit(task, loader, steps: int = 8):
    before = {k: v.detach().clone() for k, v in task.model.state_dict().items()}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # budget-limited solves warn by design
        _trainer(steps).fit(task, train_dataloaders=loader)
    assert task.global_step == steps
    after = task.model.state_dict()
    assert any(not torch.equal(before[k], after[k]) for k in before), "nothing trained"
    return task.model.eval()


CLASSIFIERS = [
    ("mdeq_tiny.fashion_mnist", {"num_classes": 2}),
    ("odenet.fashion_mnist", {"num_classes": 4, "in_chans": 3}),
    pytest.param("resnet_small.cifar10", {"num_classes": 2}, marks=pytest.mark.slow),
]


@pytest.mark.parametrize("name,change", CLASSIFIERS)
def test_an_image_classifier_fine_tunes_to_new_classes(name, change):
    task = zoo.tasks.from_pretrained(name, **change)
    head = task.model.get_classifier()
    assert len(task.kept_init) == 2 and all(k.endswith(("weight", "bias")) for k in task.kept_init)
    assert head.out_features == change["num_classes"]  # only the new head is new
    x, y = zoo.example_batch(zoo.load(name), 64)
    if change.get("in_chans", x.shape[1]) != x.shape[1]:
        x = x.expand(-1, change["in_chans"], -1, -1).contiguous()
    y = y % change["num_classes"]
    model = _fit(task, _loader(x, y))
    with torch.no_grad():
        acc = (model(x).argmax(-1) == y).float().mean().item()
    assert model(x[:2]).shape == (2, change["num_classes"]) and 0 <= acc <= 1


@pytest.mark.slow
def test_a_segmenter_fine_tunes_to_new_classes():
    name = "mdeq_seg_tiny.fashion_scenes"
    task = zoo.tasks.from_pretrained(name, num_classes=3)
    assert any(k.startswith("head.") for k in task.kept_init)
    x, y = zoo.example_batch(zoo.load(name), 16)
    model = _fit(task, _loader(x, y % 3, batch_size=4))
    with torch.no_grad():
        assert model(x[:2]).shape == (2, 3, *x.shape[2:])


@pytest.mark.slow
def test_a_flow_fine_tunes_on_new_data():
    task = zoo.tasks.from_pretrained("ffjord_toy.8gaussians")
    assert task.kept_init == []
    from zoo.data.toy2d import sample_toy

    x = sample_toy("moons", 256, 0)
    model = _fit(task, _loader(x, batch_size=64))
    with torch.no_grad():
        assert torch.isfinite(model.log_prob(x[:16])).all()


def test_a_time_series_model_fine_tunes_on_new_series():
    name = "latent_ode.periodic"
    task = zoo.tasks.from_pretrained(name)
    b = zoo.example_batch(zoo.load(name), 16)
    new = type(b)(b.times, 0.5 * b.values, b.mask, b.labels)  # new data: another amplitude
    model = _fit(task, torch.utils.data.DataLoader([new] * 20, batch_size=None))
    with torch.no_grad():
        mean, _ = model.predict(new.times, new.values, new.mask, new.times, n_samples=1)
    assert torch.isfinite(mean).all()


@pytest.mark.slow
def test_a_language_model_fine_tunes_on_new_text():
    name = "transformer_tiny.shakespeare_char"
    model = zoo.load(name)
    task = zoo.tasks.from_pretrained(name)
    x, y = zoo.example_batch(model, 2000)
    model = _fit(task, _loader(x, y, batch_size=2))
    with torch.no_grad():
        assert torch.isfinite(model(x[:1])).all()


def test_recipe_settings_are_carried_and_can_be_overridden():
    task = zoo.tasks.from_pretrained("odenet.fashion_mnist", hparams={"lr": 1e-4})
    assert task.hparams.lr == 1e-4 and task.hparams.pretrain_steps == 0
    assert task.hparams.optimizer == "adam"  # the recipe's, not a default
    with pytest.raises(ValueError, match="unknown model"):
        zoo.tasks.from_pretrained("odenet.imagenet")
