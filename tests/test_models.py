"""Registry-wide model checks: every entry point builds, gives finite outputs of the right
shape, and every parameter receives a gradient."""

import warnings

import pytest
import torch

import zoo

FAST = {"solver": {"name": "anderson", "max_iter": 3}, "grad": {"name": "phantom", "steps": 1}}
BIG = {"mdeq_large", "mdeq_xl", "mdeq_seg_xl", "deq_transformer_medium", "ffjord_bsds300"}


@pytest.mark.parametrize("arch", [a for a in zoo.list_models() if a not in BIG])
def test_entry_point_forward_backward(arch):
    _check(arch)


@pytest.mark.slow
@pytest.mark.parametrize("arch", sorted(BIG))
def test_big_entry_points(arch):
    _check(arch)


def _check(arch):
    """Generic over families: the task spec of the entry point supplies a tiny batch."""
    from zoo.models import architectures
    from zoo.tasks import get_task

    task = architectures()[arch]["task"]
    kw = dict(FAST) if "deq" in arch else {}
    spec = get_task(task)  # every registered task has a spec: it supplies the inputs
    kw.update(spec.smoke_model_args(arch))
    model = zoo.create_model(arch, **kw).train()
    args, shape = spec.smoke_inputs(model)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        out = model(*args)
    if isinstance(out, dict):  # a series model's mean, or a pure classifier's logits
        out = out["mean"] if out.get("mean") is not None else out["logits"]
    assert out.shape == shape and torch.isfinite(out).all()
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
