"""ODE-Net image classifiers and their ResNet baseline: float64 checks against independent
answers (direct backprop against the adjoint, RNODE's integrals against quadrature and a
closed form), the test-time budget contract, and one training step through the task."""

from __future__ import annotations

import math

import pytest
import torch

import zoo
from zoo.models.odenet import ODENet, ResNetSmall, _Field
from zoo.nn import ODEBlock

D = torch.float64


def _net(**kw):
    torch.manual_seed(0)
    return ODENet(in_chans=1, channels=8, **kw).double()


def _grads(m, x, y):
    m.zero_grad()
    torch.nn.functional.cross_entropy(m(x), y).backward()
    return {n: p.grad.clone() for n, p in m.named_parameters()}


def test_adjoint_gradients_match_direct_backprop_float64():
    """The adjoint's gradients against direct backprop through a much tighter solve. A random
    GroupNorm field is sensitive: at rtol 1e-6 direct backprop itself is ~1.3% from the 1e-8
    reference, the adjoint ~0.8%; a mis-wired adjoint (lost field gradients) is off by ~100%."""
    x = torch.randn(2, 1, 28, 28, dtype=D, generator=torch.Generator().manual_seed(1))
    y = torch.tensor([0, 4])
    ref = _grads(_net(rtol=1e-8, atol=1e-8, max_num_steps=10_000), x, y)
    adj = _grads(_net(rtol=1e-6, atol=1e-6, adjoint=True), x, y)
    flat = lambda g: torch.cat([v.flatten() for v in g.values()])  # noqa: E731
    assert float((flat(adj) - flat(ref)).norm() / flat(ref).norm()) < 0.02
    # (norm3.bias has a zero gradient: the head's GroupNorm removes a constant velocity)
    field = [n for n in ref if n.startswith("field.") and float(ref[n].norm()) > 1e-9]
    assert len(field) >= 6
    for n in field:  # the field's own gradients come through the adjoint's parameter integral
        assert float((adj[n] - ref[n]).norm() / ref[n].norm()) < 0.05, n


def test_a_grid_gradient_matches_finite_differences_float64():
    m = _net(grid_steps=2, augment_dim=2)
    x = torch.randn(2, 1, 12, 12, dtype=D, generator=torch.Generator().manual_seed(2))
    y = torch.tensor([1, 3])
    g = _grads(m, x, y)["field.func.conv1.conv.weight"]
    w = m.field.func.conv1.conv.weight
    idx, h = (2, 3, 1, 1), 1e-6
    with torch.no_grad():
        losses = []
        for s in (1, -1):
            w[idx] += s * h
            losses.append(float(torch.nn.functional.cross_entropy(m(x), y)))
            w[idx] -= s * h
    assert abs((losses[0] - losses[1]) / (2 * h) - float(g[idx])) < 1e-7


class _Linear(torch.nn.Module):
    def __init__(self, A):
        super().__init__()
        self.A = A

    def forward(self, t, z):
        return z @ self.A.T


def test_rnode_integrals_against_quadrature_and_closed_form_float64():
    """For f(z) = A z: kinetic = int_0^1 ||A z(t)||^2 / d dt with z(t) = expm(A t) z0 (by
    quadrature), jacobian = ||A^T eps||^2 / d exactly (the Jacobian is constant)."""
    g = torch.Generator().manual_seed(3)
    A = torch.randn(4, 4, dtype=D, generator=g) * 0.5
    z0 = torch.randn(2, 4, dtype=D, generator=g)
    field = _Field(_Linear(A))
    field.noise = torch.randn(2, 4, dtype=D, generator=g)
    zero = z0.new_zeros(2)
    z1, kin, jac = ODEBlock(field, rtol=1e-11, atol=1e-11)((z0, zero, zero))
    ts = torch.linspace(0, 1, 2001, dtype=D)
    zt = torch.stack([z0 @ torch.linalg.matrix_exp(A * t).T for t in ts])  # (T, B, 4)
    speed = (zt @ A.T).pow(2).sum(-1) / 4  # (T, B)
    quad = torch.trapezoid(speed, ts, dim=0)
    assert torch.allclose(z1, z0 @ torch.linalg.matrix_exp(A).T, atol=1e-9)
    assert torch.allclose(kin, quad, rtol=1e-6)
    assert torch.allclose(jac, (field.noise @ A).pow(2).sum(1) / 4, rtol=1e-9)


def test_regularizers_only_in_training_and_weighted():
    m = ODENet(in_chans=1, channels=8, grid_steps=1, kinetic_weight=0.5, jacobian_weight=0.25)
    x = torch.randn(2, 1, 12, 12)
    m.train()
    m(x)
    want = 0.5 * m.reg["kinetic_energy"].mean() + 0.25 * m.reg["jacobian_frobenius"].mean()
    assert m.aux_loss is not None and torch.allclose(m.aux_loss, want)
    m.eval()
    m(x)
    assert m.aux_loss is None and m.reg == {}


def test_budget_contract_grid_and_adaptive():
    grid = ODENet(in_chans=1, channels=8, grid_steps=2).eval()
    x = torch.randn(2, 1, 12, 12)
    grid(x)
    assert grid.cost().nfe_forward == 8
    grid.set_inference_budget(max_iter=4)
    grid(x)
    assert grid.cost().nfe_forward == 16 and grid.inference_budget()["max_iter"] == 4
    with pytest.raises(ValueError, match="not a tolerance"):
        grid.set_inference_budget(tol=1e-3)
    ada = ODENet(in_chans=1, channels=8).eval()
    ada.set_inference_budget(tol=1e-2)
    ada(x)
    cheap = ada.cost().nfe_forward
    ada.set_inference_budget(tol=1e-7)
    ada(x)
    assert ada.cost().nfe_forward > cheap > 0
    with pytest.raises(ValueError, match="adaptively"):
        ada.set_inference_budget(max_iter=3)
    with pytest.raises(ValueError, match="no test-time budget"):
        ResNetSmall(in_chans=1, channels=8).set_inference_budget(max_iter=3)


def test_resnet_small_has_the_odenets_parameters_less_the_time_channels():
    c = 16
    ode, res = ODENet(in_chans=1, channels=c), ResNetSmall(in_chans=1, channels=c)
    time_channels = 2 * c * 9  # each of the field's two convs sees t as one more input channel
    conv_bias = 2 * c  # the field's convs have biases; timm's BasicBlock convs have none
    assert ode.num_params() - res.num_params() == time_channels + conv_bias + 2 * c
    # (+2c: the field's third GroupNorm, where the BasicBlock has two)
    assert res.blocks[0].__class__.__module__.startswith("timm.")


def test_augment_dim_appends_zero_channels():
    m = ODENet(in_chans=1, channels=8, augment_dim=3, grid_steps=1).eval()
    assert m.head[-1].in_features == 11
    seen = {}

    def spy(mod, args):
        seen.setdefault("z", args[1])

    m.field.register_forward_pre_hook(spy)
    m(torch.randn(2, 1, 12, 12))
    assert seen["z"].shape[1] == 11 and torch.equal(
        seen["z"][:, 8:], torch.zeros_like(seen["z"][:, 8:])
    )


def test_training_step_through_the_task_uses_the_regularizer():
    import lightning.pytorch as pl
    from torch.utils.data import DataLoader, TensorDataset

    from zoo.tasks import ImageClassification

    args = {"in_chans": 1, "channels": 8, "grid_steps": 1, "kinetic_weight": 0.1}
    task = ImageClassification(arch="odenet", model_args=args, lr=1e-2)
    data = TensorDataset(torch.randn(16, 1, 12, 12), torch.randint(0, 10, (16,)))
    seen = []

    class Spy(pl.Callback):
        def on_train_batch_end(self, trainer, module, outputs, batch, idx):
            seen.append(float(trainer.callback_metrics["train/aux_loss"]))

    tr = pl.Trainer(max_steps=2, logger=False, enable_checkpointing=False, callbacks=[Spy()],
                    enable_progress_bar=False, enable_model_summary=False)  # fmt: skip
    tr.fit(task, DataLoader(data, batch_size=8))
    assert len(seen) == 2 and all(math.isfinite(v) and v > 0 for v in seen)


def test_registered_and_loadable_untrained():
    for arch in ("odenet", "resnet_small"):
        m = zoo.load(arch, pretrained=False, in_chans=1)
        assert not m.training and m(torch.zeros(1, 1, 28, 28)).shape == (1, 10)
