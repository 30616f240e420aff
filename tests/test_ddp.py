"""Exact gradients under DistributedDataParallel (gloo, 2 CPU processes, the mechanism behind
Lightning's ``strategy="ddp"``): after one backward, the averaged gradients equal the
single-process gradients of the full batch, in float64, for every gradient mode of the DEQ
and every family's tiny config. (The Latent ODE has its own in test_time_series.py.)"""

from __future__ import annotations

import os

import pytest
import torch

pytestmark = pytest.mark.timeout(180)


def _small_deq(grad: str):
    from zoo.nn import DEQ
    from zoo.solvers import Anderson, ImplicitGrad, PhantomGrad

    class Net(torch.nn.Module):
        def __init__(self):
            super().__init__()
            torch.manual_seed(0)
            self.lin = torch.nn.Linear(6, 6)
            self.inj = torch.nn.Linear(3, 6)
            with torch.no_grad():
                self.lin.weight.mul_(0.5 / torch.linalg.matrix_norm(self.lin.weight, 2))
            g = (
                ImplicitGrad(tol=1e-12, max_iter=200)
                if grad == "implicit"
                else PhantomGrad(steps=3, tau=0.8)
            )
            self.deq = DEQ(
                lambda z, x: torch.tanh(self.lin(z) + x),
                solver=Anderson(tol=1e-12, max_iter=200),
                grad=g,
            )

        def forward(self, x):
            return self.deq(self.inj(x))

    return Net().double()


def _build(kind: str):
    import zoo

    torch.manual_seed(0)
    if kind in ("implicit", "phantom"):
        return _small_deq(kind)
    if kind in ("ffjord", "odenet", "latent_ode", "mdeq_seg", "satnet", "optnet"):
        return _build_more(kind)
    if kind == "mdeq":
        m = zoo.create_model(
            "mdeq_tiny", in_chans=1, channels=[4, 8], head_channels=[2, 4], final_channels=8,
            groups=2, dropout=0.0,
            solver={"name": "anderson", "tol": 1e-10, "max_iter": 60},
            grad={"name": "implicit", "tol": 1e-10, "max_iter": 60},
        )  # fmt: skip
        return m.double().eval()  # eval: BatchNorm uses its running stats, as one process does
    m = zoo.create_model(
        "deq_transformer_tiny", vocab_size=50, d_model=16, n_heads=2, d_ff=32, tgt_len=6,
        mem_len=0, dropout=0.0,
        solver={"name": "anderson", "tol": 1e-10, "max_iter": 200},
        grad={"name": "implicit", "tol": 1e-10, "max_iter": 200},
    )  # fmt: skip
    return m.double().eval()


def _build_more(kind: str):
    import zoo

    if kind == "ffjord":
        m = zoo.create_model("ffjord_toy", hidden=(8, 8), rtol=1e-10, atol=1e-10)
        return m.double()
    if kind == "odenet":  # GroupNorm: per-sample, so the split cannot matter
        m = zoo.create_model("odenet", in_chans=1, channels=8, grid_steps=2, kinetic_weight=0.1)
        return m.double()
    if kind == "mdeq_seg":
        m = zoo.create_model(
            "mdeq_seg_tiny", channels=[4, 4], groups=2,
            solver={"name": "anderson", "tol": 1e-10, "max_iter": 60},
            grad={"name": "implicit", "tol": 1e-10, "max_iter": 60},
        )  # fmt: skip
        return m.double().eval()  # eval: the head's BatchNorm uses its running stats
    if kind == "satnet":  # well posed (more clauses than variables), solved tightly
        m = zoo.create_model("satnet", n_bits=8, m=16, aux=2, cell_bits=1, k=5, tol=1e-12,
                             max_iter=2000, grad_tol=1e-12, grad_max_iter=500)  # fmt: skip
        return m.double()
    if kind == "optnet":
        return zoo.create_model("optnet", box=2, tol=1e-12).double()
    from zoo.models.latent_ode import LatentODE

    m = LatentODE(input_dim=2, latent_dim=3, rec_dims=5, units=7, rtol=1e-9, atol=1e-9)
    return m.double().eval()  # eval: z0 = posterior mean, so no sampling noise


KINDS = ["implicit", "phantom", "mdeq", "deq_lm", "ffjord", "odenet", "mdeq_seg", "latent_ode",
         "satnet", "optnet"]  # fmt: skip


def _batch(kind: str) -> tuple[torch.Tensor, ...]:
    """The full batch of 4, as tensors whose first dimension is the batch."""
    g = torch.Generator().manual_seed(1)
    f64 = torch.float64
    if kind in ("implicit", "phantom"):
        return (torch.randn(4, 3, generator=g, dtype=f64),)
    if kind == "mdeq":
        return torch.randn(4, 1, 8, 8, generator=g, dtype=f64), torch.tensor([0, 3, 5, 9])
    if kind == "ffjord":
        return (torch.randn(4, 2, generator=g, dtype=f64),)
    if kind == "odenet":
        return torch.randn(4, 1, 12, 12, generator=g, dtype=f64), torch.tensor([1, 2, 7, 9])
    if kind == "mdeq_seg":  # every pixel labelled: the per-pixel mean is a per-sample mean
        x = torch.randn(4, 1, 8, 8, generator=g, dtype=f64)
        return x, torch.randint(0, 11, (4, 8, 8), generator=g)
    if kind in ("satnet", "optnet"):
        n = 8 if kind == "satnet" else 64
        target = torch.randint(0, 2, (4, n), generator=g).to(f64)
        given = torch.rand(4, n, generator=g) < 0.5
        given[:, -1] = False
        return target * given, given, target
    if kind == "latent_ode":
        mask = (torch.rand(4, 6, 2, generator=g) < 0.6).to(f64)
        mask[:, 0, 0] = 1
        return torch.randn(4, 6, 2, generator=g, dtype=f64) * mask, mask
    ids = torch.randint(0, 50, (4, 6), generator=g)
    return ids, torch.randint(0, 50, (4, 6), generator=g)


def _loss(model, kind, *batch):
    """A per-sample mean, so the mean of two halves' losses is the full batch's."""
    if kind == "ffjord":
        return -model(batch[0]).mean()  # forward is log_prob (and goes through DDP)
    if kind == "latent_ode":
        v, mk = batch
        t = torch.linspace(0, 1, v.shape[1], dtype=v.dtype)
        return model.loss(model.reconstruct(t, v, mk), v, mk)
    if kind in ("satnet", "optnet"):  # the task's loss: a per-sample mean over the bits to find
        inputs, given, target = batch
        return ((model(inputs, given) - target) ** 2 * ~given).sum(1).mean()
    out = model(batch[0])
    if kind in ("implicit", "phantom"):
        return out.pow(2).sum(1).mean()
    y = batch[1]
    if kind == "odenet":  # with RNODE's kinetic term (a training forward), as the task adds it
        return torch.nn.functional.cross_entropy(out, y) + model_aux(model)
    if kind in ("mdeq", "mdeq_seg"):
        return torch.nn.functional.cross_entropy(out, y)
    return torch.nn.functional.cross_entropy(out.reshape(-1, out.shape[-1]), y.reshape(-1))


def model_aux(model):
    inner = getattr(model, "module", model)  # DDP wraps the model
    return inner.aux_loss


def single_process_grads(kind: str) -> dict[str, torch.Tensor]:
    model = _build(kind)
    _loss(model, kind, *_batch(kind)).backward()
    return {n: p.grad for n, p in model.named_parameters() if p.grad is not None}


def assert_same_grads(ddp: dict, single: dict, rtol: float = 1e-6) -> None:
    assert set(single) == set(ddp) and single
    for n, g in single.items():
        assert torch.allclose(ddp[n], g, rtol=rtol, atol=1e-10), (n, (ddp[n] - g).abs().max())


def _worker(rank, world, kind, out):
    """One rank's half of the batch through DDP (tests/_dist.py sets up the gloo group)."""
    from torch.nn.parallel import DistributedDataParallel as DDP

    model = DDP(_build(kind))
    half = slice(2 * rank, 2 * rank + 2)
    _loss(model, kind, *(b[half] for b in _batch(kind))).backward()
    if rank == 0:
        torch.save(
            {n: p.grad for n, p in model.module.named_parameters() if p.grad is not None}, out
        )


@pytest.mark.parametrize(
    "kind", KINDS[:7] + [pytest.param(k, marks=pytest.mark.slow) for k in KINDS[8:]]
)
def test_ddp_gradients_equal_the_full_batch_gradients(kind, tmp_path):
    from _dist import spawn_two

    out = tmp_path / "grads.pt"
    spawn_two(_worker, kind, str(out))
    assert_same_grads(torch.load(out, weights_only=True), single_process_grads(kind))


@pytest.mark.slow
@pytest.mark.timeout(600)
@pytest.mark.parametrize("kind", KINDS)
def test_lightning_ddp_strategy_gradients_equal_the_full_batch_gradients(kind, tmp_path):
    """Through a Lightning ``Trainer(strategy="ddp", devices=2)`` on CPU: its launcher
    re-executes the script (tests/_lightning_ddp.py) as rank 1, Lightning's DistributedSampler
    splits the 4 samples, and the gradients after the all-reduce equal one process's."""
    import subprocess
    import sys
    from pathlib import Path

    script = Path(__file__).with_name("_lightning_ddp.py")
    out = tmp_path / "grads.pt"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONWARNINGS": "ignore"}
    r = subprocess.run(
        [sys.executable, str(script), kind, str(out)],
        capture_output=True, text=True, env=env, cwd=tmp_path, timeout=540,
    )  # fmt: skip
    assert r.returncode == 0, (r.stdout[-2000:], r.stderr[-4000:])
    got = torch.load(out, weights_only=True)
    assert got.pop("__world_size__").item() == 2 and got.pop("__local_batch__").item() == 2
    assert_same_grads(got, single_process_grads(kind))
