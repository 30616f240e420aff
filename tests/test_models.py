"""Registry-wide model checks: every entry point builds, gives finite outputs of the right
shape, and every parameter receives a gradient."""

import warnings

import pytest
import torch

import zoo

FAST = {"solver": {"name": "anderson", "max_iter": 3}, "grad": {"name": "phantom", "steps": 1}}
INPUTS = {"mdeq_tiny": (2, 3, 32, 32), "mdeq_seg_small": (1, 3, 32, 32)}
BIG = {"mdeq_large", "mdeq_xl", "deq_transformer_medium"}


@pytest.mark.parametrize("arch", [a for a in zoo.list_models() if a not in BIG])
def test_entry_point_forward_backward(arch):
    _check(arch)


@pytest.mark.slow
@pytest.mark.parametrize("arch", sorted(BIG))
def test_big_entry_points(arch):
    _check(arch)


def _check(arch):
    from zoo.models._registry import _ENTRY_META

    if _ENTRY_META[arch]["task"] == "time-series":
        import inspect

        kw = {"input_dim": 3}
        if "latent_dim" in inspect.signature(type(zoo.create_model(arch))).parameters:
            kw["latent_dim"] = 4
        model = zoo.create_model(arch, **kw).train()
        t, v, m = torch.linspace(0, 1, 6), torch.randn(2, 6, 3), torch.ones(2, 6, 3)
        out = model.reconstruct(t, v, m, m, n_samples=2)
        model.loss(out, v, m).backward()
        assert out["mean"].shape == (2, 2, 6, 3) and torch.isfinite(out["mean"]).all()
        no_grad = [n for n, p in model.named_parameters() if p.grad is None]
        assert not no_grad, f"parameters without gradient: {no_grad[:5]}"
        return
    lm = _ENTRY_META[arch]["task"] == "language-modeling"
    kw = dict(FAST) if "deq" in arch else {}
    if lm:
        kw["vocab_size"] = 50
    model = zoo.create_model(arch, **kw).train()
    shape = INPUTS.get(arch, (2, 3, 32, 32))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        out = model(torch.randint(0, 50, (2, 16)) if lm else torch.randn(shape))
    assert torch.isfinite(out).all()
    if lm:
        assert out.shape == (2, 16, 50)
    elif "seg" in arch:
        assert out.shape == (shape[0], model.num_classes, *shape[2:])
    else:
        assert out.shape == (shape[0], model.num_classes)
    out.float().pow(2).mean().backward()
    no_grad = [n for n, p in model.named_parameters() if p.requires_grad and p.grad is None]
    assert not no_grad, f"parameters without gradient: {no_grad[:5]}"


def test_mdeq_tiny_size_matches_official_tiny():
    n = zoo.create_model("mdeq_tiny").num_params()
    assert 150_000 < n < 215_000


def test_pretraining_mode_unrolls_cell():
    m = zoo.create_model(
        "mdeq_tiny", channels=(8, 8), head_channels=(4, 4), final_channels=16, pretrain_depth=3
    )
    m.pretraining = True
    m(torch.randn(2, 3, 32, 32)).sum().backward()
    assert m.solver_stats is None
