"""CUDA checks: every shipped checkpoint evaluates on a GPU as on the CPU, and the DEQ's implicit
gradient on the GPU matches the CPU's in float64. Marked ``gpu``: run with ``pytest -m gpu`` on
a machine with CUDA (the default run deselects them)."""

import math

import pytest
import torch

import zoo
from zoo.evaluate import evaluate
from zoo.nn import DEQ
from zoo.solvers import Anderson, ImplicitGrad

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device"),
]


@pytest.mark.parametrize("name", zoo.list_models(pretrained=True))
def test_shipped_checkpoint_on_cuda_matches_cpu(name):
    cpu = evaluate(name, sample=True, limit=200, device="cpu")
    gpu = evaluate(name, sample=True, limit=200, device="cuda")
    assert gpu["device"].startswith("cuda") and gpu["num_samples"] == cpu["num_samples"]
    k = cpu["primary_metric"]
    a, b = cpu["metrics"][k], gpu["metrics"][k]
    if k == "top1":  # 200 images: at most two flipped predictions (TF32 convolutions)
        assert abs(a - b) <= 1.0, (a, b)
    else:  # perplexity, MSE
        assert math.isclose(a, b, rel_tol=2e-2), (a, b)


class _Cell(torch.nn.Module):
    def __init__(self, d=8):
        super().__init__()
        self.lin = torch.nn.Linear(d, d)
        with torch.no_grad():
            self.lin.weight.mul_(0.4)

    def forward(self, z, x):
        return torch.tanh(self.lin(z) + x)


def _grads(device):
    torch.manual_seed(0)
    cell = _Cell().double()
    x = torch.randn(4, 8, dtype=torch.float64)
    cell, x = cell.to(device), x.to(device).requires_grad_()
    deq = DEQ(
        cell, solver=Anderson(tol=1e-12, max_iter=200), grad=ImplicitGrad(tol=1e-12, max_iter=200)
    )
    deq(x).square().sum().backward()
    return [t.grad.cpu() for t in (x, cell.lin.weight, cell.lin.bias)]


def test_implicit_gradient_on_cuda_matches_cpu_float64():
    for g_cpu, g_gpu in zip(_grads("cpu"), _grads("cuda")):
        torch.testing.assert_close(g_gpu, g_cpu, rtol=1e-7, atol=1e-10)
