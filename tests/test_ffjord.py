"""FFJORD on vectors: the log-density is a density (integrates to 1, float64), sampling
inverts the flow, the toy data are what FFJORD defines, and the family gets zoo eval and a
training step through the density-estimation task spec (new files only)."""

from __future__ import annotations

import json
import math

import pytest
import torch

import zoo
from zoo.data.toy2d import Toy2DDataModule, sample_toy

D = torch.float64


def _flow(**kw):
    torch.manual_seed(0)
    args = dict(hidden=(16, 16), rtol=1e-8, atol=1e-8) | kw
    return zoo.create_model("ffjord_toy", **args).double().eval()


def test_log_prob_integrates_to_one():
    m = _flow()
    g = torch.linspace(-7, 7, 141, dtype=D)
    xx, yy = torch.meshgrid(g, g, indexing="xy")
    with torch.no_grad():
        logp = m.log_prob(torch.stack([xx.reshape(-1), yy.reshape(-1)], 1))
    mass = float(logp.exp().sum()) * float(g[1] - g[0]) ** 2
    assert abs(mass - 1.0) < 5e-3, mass


def test_sample_inverts_transform_and_matches_log_prob():
    m = _flow()
    x = m.sample(32, generator=torch.Generator().manual_seed(3))
    z0 = torch.randn(32, 2, generator=torch.Generator().manual_seed(3), dtype=D)
    with torch.no_grad():
        z, dlogp = m.transform(x)
        logp = m.log_prob(x)
    assert torch.allclose(z, z0, atol=1e-5)
    base = -0.5 * (z.pow(2).sum(1) + 2 * math.log(2 * math.pi))
    assert torch.allclose(logp, base - dlogp)
    assert m.sample(0).shape == (0, 2) and m.log_prob(torch.zeros(0, 2, dtype=D)).shape == (0,)


@pytest.mark.parametrize(
    "bad, match",
    [
        (lambda m: m.log_prob(torch.zeros(3, 3, dtype=D)), r"\(batch, 2\)"),
        (lambda m: m.log_prob(torch.full((2, 2), float("nan"), dtype=D)), "finite"),
        (lambda m: m.log_prob(torch.zeros(2, 2, dtype=torch.long)), "floating"),
        (lambda m: m.sample(-1), "n must be"),
        (lambda m: m.set_inference_budget(max_iter=10), "adaptively"),
    ],
)
def test_bad_inputs(bad, match):
    with pytest.raises(ValueError, match=match):
        bad(_flow())


def test_budget_and_cost():
    m = _flow()
    m.set_inference_budget(tol=1e-3)
    m.log_prob(torch.randn(8, 2, dtype=D))
    cheap = m.cost().nfe_forward
    m.set_inference_budget(tol=1e-9)
    m.log_prob(torch.randn(8, 2, dtype=D))
    assert m.cost().nfe_forward > cheap > 0 and m.inference_budget()["rtol"] == 1e-9


def test_toy_data_are_ffjords():
    a, b = sample_toy("8gaussians", 4000, 0), sample_toy("8gaussians", 4000, 0)
    assert torch.equal(a, b) and abs(float(a.mean())) < 0.1
    r = a.norm(dim=1)  # modes at radius 4/1.414
    assert abs(float(r.median()) - 4 / 1.414) < 0.3
    c = sample_toy("checkerboard", 4000, 1)
    assert float(c.abs().max()) <= 4.0 + 1e-6
    cell = (torch.floor(c[:, 0] / 2) + torch.floor(c[:, 1] / 2)) % 2  # half the squares only
    assert cell.unique().numel() == 1
    with pytest.raises(ValueError, match="valid: 2spirals, 8gaussians, checkerboard"):
        sample_toy("moons", 10, 0)


def test_training_step_and_zoo_eval_of_a_saved_flow(tmp_path):
    import lightning.pytorch as pl

    from zoo.evaluate import evaluate
    from zoo.tasks.density import DensityEstimation

    task = DensityEstimation(model_args={"hidden": [8], "rtol": 1e-4, "atol": 1e-4})
    dm = Toy2DDataModule(n_train=512, n_test=256, batch_size=64)
    tr = pl.Trainer(max_steps=3, logger=False, enable_checkpointing=False,
                    enable_progress_bar=False, enable_model_summary=False, limit_val_batches=0)  # fmt: skip
    tr.fit(task, dm)
    assert tr.global_step == 3 and torch.isfinite(tr.callback_metrics["train/nll"])
    model = task.model
    model.pretrained_cfg = {
        "name": "my_flow", "task": "density-estimation", "dataset": "8gaussians",
        "datamodule": "toy2d", "datamodule_args": {"density": "8gaussians", "n_test": 500},
    }  # fmt: skip
    model.save_pretrained(tmp_path / "my_flow")
    res = evaluate(str(tmp_path / "my_flow"), limit=200)
    assert res["task"] == "density-estimation" and res["num_samples"] == 200
    nll = res["metrics"]["nll"]
    assert math.isfinite(nll) and abs(res["metrics"]["bpd"] - nll / (2 * math.log(2))) < 1e-3
    json.dumps(res)
