"""Training never dies of a bad solve: a DEQ whose cell turns expansive mid-training, and an ODE
that exceeds its step budget, keep training; the steps are logged, and can be skipped."""

from __future__ import annotations

import warnings

import lightning.pytorch as pl
import pytest
import torch
from torch.utils.data import DataLoader, TensorDataset

from zoo.tasks import ImageClassification

pytestmark = pytest.mark.timeout(240)


class _Blow(pl.Callback):
    """Make the equilibrium cell expansive at step 5."""

    def on_train_batch_start(self, trainer, pl_module, batch, i):
        if trainer.global_step == 5:
            with torch.no_grad():
                for p in pl_module.model.cell.parameters():
                    p.mul_(30.0)


class _Record(pl.Callback):
    def __init__(self):
        self.rows, self.weights = [], []

    def on_train_batch_end(self, trainer, pl_module, out, batch, i):
        m = trainer.callback_metrics
        self.rows.append((float(m["train/converged"]), float(m["train/skipped"])))
        self.weights.append(pl_module.model.classifier.weight.detach().clone())


def _fit(skip: bool):
    torch.manual_seed(0)
    margs = dict(
        in_chans=1, channels=[4, 8], head_channels=[2, 4], final_channels=8, groups=2,
        solver={"name": "picard", "tol": 0.5, "max_iter": 30},
    )  # fmt: skip
    task = ImageClassification(arch="mdeq_tiny", model_args=margs, skip_unconverged=skip)
    x, y = torch.randn(80, 1, 8, 8), torch.randint(0, 10, (80,))
    rec = _Record()
    tr = pl.Trainer(
        max_steps=20, logger=False, enable_checkpointing=False, enable_progress_bar=False,
        enable_model_summary=False, callbacks=[_Blow(), rec],
    )  # fmt: skip
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        tr.fit(task, DataLoader(TensorDataset(x, y), batch_size=4))
    return tr, task, rec


def test_an_expansive_cell_keeps_training_and_says_so():
    tr, task, rec = _fit(skip=False)
    assert tr.global_step == 20
    conv = [c for c, _ in rec.rows]
    assert conv[0] == 1.0 and not any(conv[6:])  # converged before, never after the blow-up
    assert all(torch.isfinite(p).all() for p in task.parameters())
    assert not torch.equal(rec.weights[6], rec.weights[-1])  # it still trains (best iterate)


def test_skip_unconverged_skips_exactly_those_steps():
    tr, task, rec = _fit(skip=True)
    assert tr.global_step == 20
    assert all(s == 1.0 - c for c, s in rec.rows)  # skipped exactly when not converged
    assert all(s for _, s in rec.rows[6:])  # every step after the blow-up
    for i in range(1, 20):  # a skipped step leaves the weights alone; a taken one moves them
        same = torch.equal(rec.weights[i - 1], rec.weights[i])
        assert same == bool(rec.rows[i][1]), i


def test_an_ode_over_its_step_budget_is_a_clear_error():
    from zoo.nn import ODEBlock, ODEBudgetError

    class Stiff(torch.nn.Module):
        def forward(self, t, z):
            return -1e6 * (z - torch.cos(t))

    block = ODEBlock(Stiff(), rtol=1e-10, atol=1e-10, max_num_steps=50)
    with pytest.raises(ODEBudgetError, match="max_num_steps=50"):
        block(torch.ones(2, 3))
