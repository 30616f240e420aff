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
        solver={"name": "anderson", "tol": 1e-10, "max_iter": 80},
        grad={"name": "implicit", "tol": 1e-10, "max_iter": 80},
    )  # fmt: skip
    return m.double().eval()


def _batch(kind: str):
    g = torch.Generator().manual_seed(1)
    if kind in ("implicit", "phantom"):
        return torch.randn(4, 3, generator=g, dtype=torch.float64), None
    if kind == "mdeq":
        return torch.randn(4, 1, 8, 8, generator=g, dtype=torch.float64), torch.tensor([0, 3, 5, 9])
    ids = torch.randint(0, 50, (4, 6), generator=g)
    return ids, torch.randint(0, 50, (4, 6), generator=g)


def _loss(model, kind, x, y):
    out = model(x)
    if kind in ("implicit", "phantom"):
        return out.pow(2).sum(1).mean()
    if kind == "mdeq":
        return torch.nn.functional.cross_entropy(out, y)
    return torch.nn.functional.cross_entropy(out.reshape(-1, out.shape[-1]), y.reshape(-1))


def _worker(rank, world, port, kind, out):
    import torch.distributed as dist
    from torch.nn.parallel import DistributedDataParallel as DDP

    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=world)
    torch.set_num_threads(1)
    model = DDP(_build(kind))
    x, y = _batch(kind)
    half = slice(2 * rank, 2 * rank + 2)
    _loss(model, kind, x[half], None if y is None else y[half]).backward()
    if rank == 0:
        torch.save(
            {n: p.grad for n, p in model.module.named_parameters() if p.grad is not None}, out
        )
    dist.destroy_process_group()


@pytest.mark.parametrize("kind", ["implicit", "phantom", "mdeq", "deq_lm"])
def test_ddp_gradients_equal_the_full_batch_gradients(kind, tmp_path):
    from _dist import spawn_two

    out = tmp_path / "grads.pt"
    spawn_two(_worker, kind, str(out))
    ddp = torch.load(out, weights_only=True)
    single = _build(kind)
    x, y = _batch(kind)
    _loss(single, kind, x, y).backward()
    got = {n: p.grad for n, p in single.named_parameters() if p.grad is not None}
    assert set(got) == set(ddp) and got
    for n, g in got.items():
        assert torch.allclose(ddp[n], g, rtol=1e-6, atol=1e-10), (n, (ddp[n] - g).abs().max())
