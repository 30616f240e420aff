"""``torch.compile`` and ``torch.func.vmap`` on the implicit layers.

Under ``torch.compile`` the cell or vector field is compiled and the solvers' bookkeeping runs
eagerly (``torch.compiler.disable``): a compiled DEQ, ODE block and shipped MDEQ give the eager
outputs and gradients (float64: 1e-12 for the small layers; for an MDEQ, whose solves stop at
1e-10, 1e-5 of each gradient's largest entry; float32: 1e-4 for the shipped model's logits). One compiled
training step of a weight-normalized MDEQ works alone and under DDP on gloo (pytorch#113415
reports failures of compile + DDP + weight norm). ``vmap`` over a DEQ is refused with an error
that says what to do instead.
"""

from __future__ import annotations

import warnings

import pytest
import torch
from torch import nn

from zoo.nn import DEQ, DEQCell, ODEBlock
from zoo.solvers import Anderson, ImplicitGrad

D = torch.float64


@pytest.fixture(autouse=True)
def _fresh_dynamo():
    torch._dynamo.reset()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        yield
    torch._dynamo.reset()


class _Cell(DEQCell):
    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.lin = nn.Linear(8, 8, dtype=D)

    def forward(self, z, x):
        return torch.tanh(0.5 * self.lin(z) + x)


def _deq():
    return DEQ(
        _Cell(), solver=Anderson(tol=1e-11, max_iter=80), grad=ImplicitGrad(tol=1e-11, max_iter=80)
    )


def _out_and_grads(fn, params, x):
    x = x.clone().requires_grad_()
    out = fn(x)
    grads = torch.autograd.grad(out.pow(2).sum(), [x, *params])
    return out.detach(), grads


def test_a_compiled_deq_gives_the_eager_outputs_and_gradients():
    deq = _deq()
    x = torch.randn(5, 8, dtype=D, generator=torch.Generator().manual_seed(1))
    params = list(deq.parameters())
    want = _out_and_grads(deq, params, x)
    compiled = torch.compile(deq)
    for _ in range(2):  # the second call reuses the compiled cell
        got = _out_and_grads(compiled, params, x)
        torch.testing.assert_close(got[0], want[0], rtol=0, atol=1e-12)
        for g, w in zip(got[1], want[1]):
            torch.testing.assert_close(g, w, rtol=0, atol=1e-12)
    assert deq.stats.converged


@pytest.mark.parametrize(
    "kw", [{"method": "dopri5", "rtol": 1e-9, "atol": 1e-9}, {"grid_steps": 8}]
)
def test_a_compiled_ode_block_gives_the_eager_outputs_and_gradients(kw):
    class Field(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            torch.manual_seed(0)
            self.lin = nn.Linear(4, 4, dtype=D)

        def forward(self, t, z):
            return torch.tanh(self.lin(z))

    block = ODEBlock(Field(), **kw)
    x = torch.randn(3, 4, dtype=D, generator=torch.Generator().manual_seed(2))
    params = list(block.parameters())
    want = _out_and_grads(block, params, x)
    got = _out_and_grads(torch.compile(block), params, x)
    torch.testing.assert_close(got[0], want[0], rtol=0, atol=1e-12)
    for g, w in zip(got[1], want[1]):
        torch.testing.assert_close(g, w, rtol=0, atol=1e-12)
    assert block.nfe_forward > 0


def test_vmap_over_a_deq_is_refused_with_what_to_do_instead():
    deq = _deq()
    x = torch.randn(4, 8, dtype=D)
    with pytest.raises(ValueError, match="vmap") as err:
        torch.func.vmap(lambda xi: deq(xi[None])[0])(x)
    assert "deq(x)" in str(err.value)  # a DEQ solves a batch already


def _small_mdeq(train: bool = True):
    """A small weight-normalized MDEQ; ``train=False`` for the DDP comparison, where the stem's
    BatchNorm must use its running statistics (each rank sees half the batch)."""
    import zoo

    torch.manual_seed(0)
    m = zoo.create_model(
        "mdeq_tiny", in_chans=1, channels=[4, 8], head_channels=[2, 4], final_channels=8,
        groups=2, dropout=0.0, wnorm=True,
        solver={"name": "anderson", "tol": 1e-10, "max_iter": 60},
        grad={"name": "implicit", "tol": 1e-10, "max_iter": 60},
    )  # fmt: skip
    return m.double().train(train)


def _mdeq_batch():
    g = torch.Generator().manual_seed(1)
    return torch.randn(4, 1, 8, 8, generator=g, dtype=D), torch.tensor([0, 3, 5, 9])


def _mdeq_grads(model):
    x, y = _mdeq_batch()
    torch.nn.functional.cross_entropy(model(x), y).backward()
    return {
        n: p.grad.clone() for n, p in _unwrapped(model).named_parameters() if p.grad is not None
    }


def _unwrapped(model):
    model = getattr(model, "_orig_mod", model)
    return getattr(model, "module", model)


def _assert_close_grads(got: dict, want: dict) -> None:
    """Equal to 1e-5 of each gradient's largest entry: the forward and backward solves stop at
    a relative residual of 1e-10, and the compiled cell rounds differently, so the two runs stop
    at slightly different iterates (measured: at most 5e-7 of the largest entry)."""
    assert set(got) == set(want) and want
    for n, w in want.items():
        err = float((got[n] - w).abs().max())
        assert err <= 1e-5 * float(w.abs().max()) + 1e-12, (n, err, float(w.abs().max()))


@pytest.mark.slow
def test_one_compiled_training_step_of_a_weight_normalized_mdeq():
    """About 90 s on one CPU thread (the compilation of the cell and its backward)."""
    want = _mdeq_grads(_small_mdeq())
    model = _small_mdeq()
    assert any("parametrizations" in n for n, _ in model.named_parameters())  # weight norm
    compiled = torch.compile(model)
    _assert_close_grads(_mdeq_grads(compiled), want)
    torch.optim.SGD(model.parameters(), lr=0.1).step()
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    model.zero_grad()
    _mdeq_grads(compiled)  # a second step after the weights moved: recompiles nothing stale
    assert all(torch.equal(before[n], p) for n, p in model.named_parameters())


@pytest.mark.slow
def test_a_compiled_shipped_mdeq_gives_the_eager_predictions():
    import zoo

    model = zoo.load("mdeq_tiny.cifar10").eval()
    x, _ = zoo.example_batch(model)
    x = x[:4]
    with torch.no_grad():
        want = model(x)
        got = torch.compile(model)(x)
    torch.testing.assert_close(got, want, rtol=0, atol=1e-4)
    assert torch.equal(got.argmax(1), want.argmax(1))


def _ddp_compiled_worker(rank, world, out):
    from torch.nn.parallel import DistributedDataParallel as DDP

    model = torch.compile(DDP(_small_mdeq(train=False)))
    x, y = _mdeq_batch()
    half = slice(2 * rank, 2 * rank + 2)
    torch.nn.functional.cross_entropy(model(x[half]), y[half]).backward()
    if rank == 0:
        grads = {n: p.grad for n, p in _unwrapped(model).named_parameters() if p.grad is not None}
        torch.save(grads, out)


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_compile_with_ddp_and_weight_norm_on_gloo(tmp_path):
    """pytorch#113415: compile + DDP + weight norm. Two gloo ranks, each half the batch, give
    the single-process eager gradients."""
    from _dist import spawn_two

    out = tmp_path / "grads.pt"
    spawn_two(_ddp_compiled_worker, str(out))
    want = _mdeq_grads(_small_mdeq(train=False))
    _assert_close_grads(torch.load(out, weights_only=True), want)
