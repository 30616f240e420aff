"""timm users get the weights and the preprocessing the card states, through timm's own paths."""

from __future__ import annotations

import numpy as np
import pytest

import zoo

timm = pytest.importorskip("timm")

CLASSIFIERS = [
    n
    for n in zoo.list_models(pretrained=True)
    if zoo.model_info(n).get("task") == "image-classification"
]


@pytest.mark.parametrize("name", ["odenet.cifar10", "mdeq_tiny.fashion_mnist"])
def test_every_form_of_the_tag_loads_the_named_weights(name):
    """A string (create_model), a dict (validate.py's resolved config) and a PretrainedCfg."""
    from timm.models import get_pretrained_cfg
    from timm.models._factory import resolve_model_input_args

    arch, tag = name.split(".")
    want = zoo.load(name).state_dict()
    forms = {
        "name": dict(model_name=name),
        "str": dict(model_name=arch, pretrained_cfg=tag),
        "PretrainedCfg": dict(model_name=arch, pretrained_cfg=get_pretrained_cfg(name)),
        "validate.py": resolve_model_input_args(name, {}),
    }
    for form, kw in forms.items():
        m = timm.create_model(**{"pretrained": True, **kw})
        assert m.pretrained_cfg["name"] == name, form
        got = m.state_dict()
        assert all((got[k] == v).all() for k, v in want.items()), form


def test_a_config_without_a_tag_is_refused_not_replaced_by_the_default():
    with pytest.raises(RuntimeError, match="without a tag"):
        timm.create_model("odenet", pretrained=True, pretrained_cfg={"hf_hub_id": "x"})
    with pytest.raises(RuntimeError, match="no pretrained weights"):
        timm.create_model("odenet.imagenet", pretrained=True)


@pytest.mark.parametrize("name", CLASSIFIERS)
def test_timm_resolves_the_training_preprocessing(name):
    from timm.data import resolve_data_config

    m = timm.create_model(name, pretrained=True)
    cfg = resolve_data_config(model=m)
    info = zoo.model_info(name)
    assert cfg["crop_pct"] == 1.0 and tuple(cfg["input_size"]) == tuple(info["input_size"])
    assert tuple(cfg["mean"]) == pytest.approx(tuple(info["mean"]))


@pytest.mark.slow
@pytest.mark.parametrize("name", CLASSIFIERS)
def test_timm_data_pipeline_reproduces_zoo_eval(name, tmp_path):
    """validate.py's path (resolve_data_config, create_dataset, create_loader) on the shipped
    evaluation sample, written out as PNG class folders, gives ``zoo eval --sample``'s top-1."""
    import torch
    from PIL import Image
    from timm.data import create_dataset, create_loader, resolve_data_config
    from timm.models._factory import resolve_model_input_args

    from zoo.evaluate import evaluate
    from zoo.tasks import get_task, sample_path

    info = {**zoo.model_info(name), "name": name}
    data = np.load(sample_path(get_task(info["task"]).protocol(info).sample))
    for i, (x, y) in enumerate(zip(data["x"], data["y"])):
        folder = tmp_path / str(int(y))
        folder.mkdir(exist_ok=True)
        img = x[0] if x.shape[0] == 1 else x.transpose(1, 2, 0)
        Image.fromarray(img).save(folder / f"{i:05d}.png")
    model = timm.create_model(**resolve_model_input_args(name, {}, pretrained=True)).eval()
    cfg = resolve_data_config(model=model)
    mode = "RGB" if cfg["input_size"][0] == 3 else "L"
    ds = create_dataset("", root=str(tmp_path), split="validation", input_img_mode=mode)
    loader = create_loader(
        ds,
        input_size=cfg["input_size"],
        batch_size=50,
        use_prefetcher=False,
        interpolation=cfg["interpolation"],
        mean=cfg["mean"],
        std=cfg["std"],
        crop_pct=cfg["crop_pct"],
        crop_mode=cfg["crop_mode"],
        num_workers=0,
    )
    right = n = 0
    with torch.no_grad():
        for x, y in loader:
            right += int((model(x).argmax(-1) == y).sum())
            n += len(y)
    ours = evaluate(name, sample=True)["metrics"]["top1"]
    assert n == len(data["y"])
    assert 100.0 * right / n == pytest.approx(ours, abs=1e-9)


def test_a_limited_evaluation_is_a_stated_stratified_subset():
    """CIFAR-10's test split is sorted by class: --limit 20 must not score 20 airplanes."""
    import torch

    from zoo.evaluate import evaluate
    from zoo.tasks._spec import stratified_subset

    labels = torch.arange(10).repeat_interleave(50)  # sorted by class, as the folders are
    keep = stratified_subset(labels, 20)
    assert torch.bincount(labels[keep], minlength=10).tolist() == [2] * 10
    assert torch.equal(keep, stratified_subset(labels, 20))  # fixed: seeded
    res = evaluate("odenet.fashion_mnist", sample=True, limit=30)
    assert res["num_samples"] == 30 and "class-stratified" in res["subset"]


@pytest.mark.parametrize("name", CLASSIFIERS)
def test_timm_fine_tuning_arguments(name):
    """num_classes, in_chans and drop_rate through timm; reset_classifier, get_classifier,
    forward_features and forward_head as timm models have them; the body keeps its weights."""
    import torch

    ref = zoo.load(name).state_dict()
    c = zoo.model_info(name)["input_size"][0]
    new_c = 3 if c == 1 else 1
    m = timm.create_model(name, pretrained=True, num_classes=5, in_chans=new_c, drop_rate=0.2)
    assert m.get_classifier().out_features == 5 and m.head_drop.p == 0.2
    kept = [k for k, v in m.state_dict().items() if k in ref and v.shape == ref[k].shape]
    assert all(torch.equal(m.state_dict()[k], ref[k]) for k in kept)
    h, w = zoo.model_info(name)["input_size"][1:]
    x = torch.randn(2, new_c, h, w)
    m.eval()
    with torch.no_grad():
        feats = m.forward_features(x)
        assert m.forward_head(feats).shape == (2, 5)
        assert m.forward_head(feats, pre_logits=True).shape == (2, m.num_features)
        m.reset_classifier(3)
        assert m(x).shape == (2, 3) and m.get_classifier().out_features == 3
        m.reset_classifier(0)  # timm's convention: no head, pooled features out
        assert m(x).shape == (2, m.num_features)
