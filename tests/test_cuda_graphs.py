"""Graph-captured forward solves (issue #24, lever 4): a solver built with ``cuda_graph=True``
runs a fixed-budget solve with no host synchronization, which ``DEQ`` captures as a CUDA graph
and replays. On the CPU the capture is replaced by ``EagerReplay`` (re-run, results copied into
the captured outputs), so the static-buffer plumbing is tested here: the fixed points and the
gradients equal the ordinary early-exit solve's (float64, 1e-10) for every solver and gradient
mode, new inputs and in-place weight updates reach the replay, and replaced weights are
captured again. The capture itself is tested with ``-m gpu``."""

from __future__ import annotations

import copy
import warnings

import pytest
import torch
from test_compaction import _Cell  # the per-sample-contraction cell, shared
from torch import nn

from zoo.nn import DEQ
from zoo.nn._graphs import EagerReplay, GraphedSolve
from zoo.solvers import get_grad, get_solver

D = torch.float64


def _deq(solver: str, grad: str, graph: bool, max_iter: int = 60, train: bool = False):
    torch.manual_seed(0)
    spec = {"name": solver, "tol": 1e-9, "max_iter": max_iter, "cuda_graph": graph}
    deq = DEQ(_Cell(), solver=get_solver(spec), grad=get_grad(grad)).train(train)
    if graph:
        deq.graphs = GraphedSolve(EagerReplay)
    return deq


def _call(deq, seed: int, device="cpu"):
    g = torch.Generator().manual_seed(seed)
    xa = torch.randn(9, 6, generator=g, dtype=D).to(device).requires_grad_()
    scale = torch.linspace(0.05, 0.97, 9, dtype=D, device=device)  # fast to slow samples
    z0 = [torch.zeros(9, 6, dtype=D, device=device), torch.zeros(9, 3, dtype=D, device=device)]
    for p in deq.parameters():
        p.grad = None
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the small budgets leave samples unconverged
        a, b = deq([xa, scale, None], z0)
        (a.pow(2).sum() + b.sum()).backward()
    grads = torch.cat([p.grad.reshape(-1) for p in deq.parameters()] + [xa.grad.reshape(-1)])
    return torch.cat([a, b], 1).detach(), grads, deq.stats


@pytest.mark.parametrize("solver", ["picard", "anderson", "broyden"])
@pytest.mark.parametrize("grad", ["implicit", "phantom"])
@pytest.mark.parametrize("max_iter", [60, 7])  # all converge / some stop at the budget
def test_replayed_solve_gives_the_early_exit_solve(solver, grad, max_iter):
    eager, graphed = _deq(solver, grad, False, max_iter), _deq(solver, grad, True, max_iter)
    for seed in (1, 2):  # the second call replays with new inputs
        z_e, g_e, st_e = _call(eager, seed)
        z_g, g_g, st_g = _call(graphed, seed)
        assert torch.allclose(z_e, z_g, atol=1e-10, rtol=0)
        assert torch.allclose(g_e, g_g, atol=1e-10, rtol=0)
        assert torch.equal(st_e.converged_mask, st_g.converged_mask)
        assert torch.allclose(st_e.abs_residual, st_g.abs_residual, atol=1e-12, rtol=0)
        assert st_g.nfe == st_g.n_iter == max_iter  # the fixed budget is reported, not hidden
    assert len(graphed.graphs) == 1  # captured once, replayed
    if max_iter == 60:
        assert st_e.nfe < 60 and st_e.converged


def test_weight_updates_reach_the_replay_and_new_weights_are_captured_again():
    eager, graphed = _deq("anderson", "phantom", False), _deq("anderson", "phantom", True)
    for deq in (eager, graphed):
        _call(deq, 1)
        with torch.no_grad():  # an optimizer step: in place
            for p in deq.parameters():
                p.mul_(0.9)
    z_e, _, _ = _call(eager, 1)
    z_g, _, _ = _call(graphed, 1)
    assert torch.allclose(z_e, z_g, atol=1e-10, rtol=0)
    assert len(graphed.graphs) == graphed.graphs.captures == 1
    for deq in (eager, graphed):  # replaced, not updated: the old capture would read stale memory
        deq.cell.w.weight = nn.Parameter(deq.cell.w.weight.detach() * 0.5)
    z_e, _, _ = _call(eager, 1)
    z_g, _, _ = _call(graphed, 1)
    # captured again, and the stale capture dropped
    assert torch.allclose(z_e, z_g, atol=1e-10, rtol=0)
    assert graphed.graphs.captures == 2 and len(graphed.graphs) == 1


def test_training_and_eval_get_their_own_capture_and_copies_share_none():
    deq = _deq("anderson", "phantom", True)
    _call(deq.train(), 1)
    _call(deq.eval(), 1)
    assert len(deq.graphs) == 2
    twin = copy.deepcopy(deq)  # as an EMA callback copies the model
    assert len(twin.graphs) == 0 and twin.graphs.replay_cls is EagerReplay
    z_a, _, _ = _call(deq, 3)
    z_b, _, _ = _call(twin, 3)
    assert torch.allclose(z_a, z_b, atol=1e-12, rtol=0)


def test_fixed_budget_options_are_checked_and_part_of_the_spec():
    with pytest.raises(ValueError, match="compact=True and cuda_graph=True exclude each other"):
        get_solver("anderson", compact=True, cuda_graph=True)
    s = get_solver({"name": "broyden", "max_iter": 12, "cuda_graph": True})
    assert s.spec()["cuda_graph"] is True and get_solver(s.spec()).cuda_graph
    assert "cuda_graph" not in get_solver("anderson").spec()  # default specs are unchanged
    # on the CPU without a replay class the solve simply runs eagerly, fixed budget
    deq = DEQ(_Cell(), solver=s)
    _call(deq, 1)
    assert deq.stats.nfe == 12 and len(deq.graphs) == 0


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
@pytest.mark.parametrize("solver", ["picard", "anderson", "broyden"])
def test_cuda_graph_capture_equals_the_eager_solve(solver):
    eager = _deq(solver, "phantom", False, max_iter=20).cuda()
    graphed = _deq(solver, "phantom", True, max_iter=20).cuda()
    graphed.graphs = GraphedSolve()  # the real capture on CUDA tensors
    for seed in (1, 2, 3):
        z_e, g_e, _ = _call(eager, seed, "cuda")
        z_g, g_g, _ = _call(graphed, seed, "cuda")
        assert torch.allclose(z_e, z_g, atol=1e-10, rtol=0)
        assert torch.allclose(g_e, g_g, atol=1e-10, rtol=0)
    assert len(graphed.graphs) == 1


def test_dropout_masks_are_redrawn_in_place_for_captured_solves():
    """A captured solve reads the dropout mask's storage as it was at capture time, so each new
    forward (a new segment, a new batch) must redraw the mask into that same storage: same
    address, new values. zoo.nn.VariationalDropout, in MDEQ's cell and in the DEQ-Transformer's."""
    import zoo

    torch.manual_seed(0)
    mdeq = zoo.create_model(
        "mdeq_tiny", channels=[8, 8], head_channels=[4, 8], final_channels=16, groups=4,
        expansion=2, dropout=0.3, solver={"name": "anderson", "max_iter": 4},
    ).train()  # fmt: skip
    lm = zoo.create_model(
        "deq_transformer_tiny", vocab_size=40, d_model=16, n_heads=2, d_ff=32, tgt_len=8,
        cell_dropout=0.3, solver={"name": "anderson", "max_iter": 4},
    ).train()  # fmt: skip
    drops = [
        (mdeq, torch.randn(2, 3, 32, 32), mdeq.deq.cell.blocks[0].drop),
        (lm, torch.randint(0, 40, (2, 8)), lm.deq.cell.cell.ff[2]),
    ]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for model, x, drop in drops:
            model(x)
            first, ptr = drop.mask.clone(), drop.mask.data_ptr()
            model(x)
            assert drop.mask.data_ptr() == ptr and not torch.equal(drop.mask, first)
