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
    assert m.log_prob(torch.zeros(0, 2, dtype=D)).shape == (0,)


# bad inputs of the family: tests/test_bad_inputs.py (the shared module, "flow ..." cases)


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
    with pytest.raises(ValueError, match="valid: 2spirals, 8gaussians, checkerboard, circles"):
        sample_toy("spiral", 10, 0)


def test_every_toy_density_is_seeded_shuffled_and_on_ffjords_scale():
    """Each density: n points exactly, the same from the same seed, any prefix from every part
    of it (validation uses the first 10,000), and FFJORD's scale (inside |x| < 4.5)."""
    from zoo.data.toy2d import TOY_DENSITIES

    assert set(TOY_DENSITIES) == {"8gaussians", "checkerboard", "pinwheel", "2spirals", "moons",
                                  "circles", "rings", "swissroll"}  # fmt: skip
    for name in TOY_DENSITIES:
        x = sample_toy(name, 2001, 5)
        assert x.shape == (2001, 2) and torch.equal(x, sample_toy(name, 2001, 5)), name
        assert not torch.equal(x, sample_toy(name, 2001, 6)), name
        assert float(x.abs().max()) < 4.5 and abs(float(x.mean())) < 0.5, name
        head, all_ = x[:200], x  # a prefix spans the density as the whole does
        assert float(head.std(0).min()) > 0.5 * float(all_.std(0).min()), name
    r = sample_toy("rings", 4000, 0).norm(dim=1)  # four rings of radius 0.75, 1.5, 2.25, 3
    for radius in (0.75, 1.5, 2.25, 3.0):
        assert float(((r - radius).abs() < 0.3).float().mean()) > 0.2, radius
    c = sample_toy("circles", 4000, 0).norm(dim=1)  # radii 3 and 1.5, half each
    assert abs(float((c > 2.25).float().mean()) - 0.5) < 0.01


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


# ----- flow matching (OT-CFM) -------------------------------------------------------------------
def test_ot_pairing_is_the_optimal_assignment():
    import itertools

    from zoo.nn import ot_pairing

    g = torch.Generator().manual_seed(0)
    x, z = torch.randn(6, 2, generator=g, dtype=D), torch.randn(6, 2, generator=g, dtype=D)
    p = ot_pairing(x, z)

    def cost(perm):
        return float((x - z[list(perm)]).pow(2).sum())

    best = min(itertools.permutations(range(6)), key=cost)
    assert abs(cost(p.tolist()) - cost(best)) < 1e-12


def test_cfm_target_is_the_paths_velocity():
    """The regression target equals d x_t / dt of the straight path (finite differences)."""
    from zoo.nn import cfm_target

    g = torch.Generator().manual_seed(1)
    x, z = torch.randn(5, 2, generator=g, dtype=D), torch.randn(5, 2, generator=g, dtype=D)
    t, h, T = torch.rand(5, generator=g, dtype=D) * 0.5, 1e-6, 0.5
    _, u = cfm_target(x, z, t, T)
    fd = (cfm_target(x, z, t + h, T)[0] - cfm_target(x, z, t - h, T)[0]) / (2 * h)
    assert torch.allclose(u, fd, atol=1e-8)
    x0, _ = cfm_target(x, z, torch.zeros(5, dtype=D), T)
    x1, _ = cfm_target(x, z, torch.full((5,), T, dtype=D), T)
    assert torch.allclose(x0, x) and torch.allclose(x1, z)  # data at 0, base at T


def test_flow_matching_loss_vanishes_on_the_exact_field():
    """For data at one point ``a`` the conditional velocity is a function of ``(t, x_t)``
    alone, ``v(t, x) = (x - a) / t``: its loss is zero; a wrong field's is not."""
    from zoo.nn import flow_matching_loss

    a, T = torch.tensor([1.5, -0.5], dtype=D), 0.5

    class Exact(torch.nn.Module):
        def forward(self, t, x):
            return (x - a) / t.reshape(-1, 1)

    x = a.expand(64, 2).clone()
    g = torch.Generator().manual_seed(2)
    assert float(flow_matching_loss(Exact(), x, T, ot=False, generator=g)) < 1e-20
    wrong = flow_matching_loss(lambda t, x: torch.zeros_like(x), x, T, generator=g)
    assert float(wrong) > 1.0


def test_flow_matching_trains_a_flow_whose_exact_nll_falls():
    """A few hundred OT-CFM steps (no ODE solve in training) lower the exact NLL that the CNF
    solve reports, on a shifted Gaussian."""
    from zoo.nn import flow_matching_loss

    torch.manual_seed(0)
    m = zoo.create_model("ffjord_toy", hidden=(32, 32), rtol=1e-5, atol=1e-5)
    data = torch.randn(4096, 2) * 0.5 + torch.tensor([2.0, -1.0])
    test = torch.randn(2000, 2) * 0.5 + torch.tensor([2.0, -1.0])
    with torch.no_grad():
        before = float(-m.log_prob(test).mean())
    opt = torch.optim.Adam(m.parameters(), lr=3e-3)
    for _ in range(300):
        x = data[torch.randint(0, 4096, (256,))]
        loss = flow_matching_loss(m.field, x, m.cnf.T)
        opt.zero_grad()
        loss.backward()
        opt.step()
    with torch.no_grad():
        after = float(-m.log_prob(test).mean())
    entropy = math.log(2 * math.pi * math.e * 0.25)  # of N(mu, 0.25 I) in 2-D
    assert after < before - 1.0 and after < entropy + 0.3, (before, after, entropy)


def test_stacked_blocks_are_one_density_and_sample_through_every_block():
    """Three CNFs stacked: the density still integrates to 1 (float64, quadrature), and samples
    come back to their base draws through all blocks (tabular models stack 1-10 blocks)."""
    torch.manual_seed(0)
    m = zoo.create_model("ffjord_toy", hidden=(8,), num_blocks=3, rtol=1e-8, atol=1e-8,
                         layer_type="concat", activation="softplus").double().eval()  # fmt: skip
    assert len(m.blocks) == 3
    g = torch.linspace(-7, 7, 141, dtype=D)
    xx, yy = torch.meshgrid(g, g, indexing="xy")
    with torch.no_grad():
        logp = m.log_prob(torch.stack([xx.reshape(-1), yy.reshape(-1)], 1))
    assert abs(float(logp.exp().sum()) * float(g[1] - g[0]) ** 2 - 1.0) < 5e-3
    x = m.sample(16, generator=torch.Generator().manual_seed(2))
    z0 = torch.randn(16, 2, generator=torch.Generator().manual_seed(2), dtype=D)
    with torch.no_grad():
        z, _ = m.transform(x)
    assert torch.allclose(z, z0, atol=1e-5)
    one = zoo.create_model("ffjord_toy", hidden=(8,), num_blocks=1).double().eval()
    with torch.no_grad():
        one.log_prob(torch.randn(4, 2, dtype=D))
        n1 = one.cost().nfe_forward
        m.set_inference_budget(tol=1e-5)
        m.log_prob(torch.randn(4, 2, dtype=D))
    assert m.cost().nfe_forward > n1  # the cost record counts every block


def test_adjoint_gradient_of_a_stack_matches_direct_backprop():
    """float64: the adjoint through two stacked blocks gives the direct-backprop gradient."""
    grads = []
    for adjoint in (False, True):
        torch.manual_seed(0)
        m = zoo.create_model("ffjord_power", hidden=(6,), num_blocks=2, adjoint=adjoint,
                             trace="exact", rtol=1e-10, atol=1e-10).double()  # fmt: skip
        x = torch.randn(5, 6, generator=torch.Generator().manual_seed(1), dtype=D)
        m.log_prob(x).sum().backward()
        grads.append(torch.cat([p.grad.reshape(-1) for p in m.parameters()]))
    rel = (grads[0] - grads[1]).norm() / grads[0].norm()
    assert rel < 1e-5, float(rel)


def test_tabular_configs_are_ffjords():
    """The five tabular configs: FFJORD's dimensions, blocks, widths and layers."""
    want = {"power": (6, 5, 60), "gas": (8, 5, 160), "hepmass": (21, 10, 210),
            "miniboone": (43, 1, 860), "bsds300": (63, 2, 1260)}  # fmt: skip
    for name, (dim, blocks, width) in want.items():
        m = zoo.create_model(f"ffjord_{name}", hidden=(4,))  # light; the widths below
        assert m.dim == dim and len(m.blocks) == blocks and m.cnf.dynamics.trace == "hutchinson"
        assert m.model_args["num_blocks"] == blocks
        lin = zoo.create_model(f"ffjord_{name}", num_blocks=1).field.layers[0].lin
        assert lin.out_features == width, name
