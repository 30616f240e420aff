"""CUDA-graph capture of a DEQ's forward solve (solvers built with ``cuda_graph=True``).

A small DEQ cell on a GPU is bound by kernel launches, not arithmetic: a 50-iteration Anderson
solve of the MDEQ cell launches thousands of small kernels, each costing microseconds of CPU
time. A fixed-budget, synchronization-free solve (``FixedPointSolver.run_fixed``) can be
captured once as a CUDA graph and replayed: one launch for the whole solve.

The captured solve reads its inputs from static buffers: the injection ``x`` and the start
``z0`` are copied into them before each replay. The cell's parameters are read where they live,
so optimizer steps (in place) are seen by the next replay; a model whose parameters were
replaced (``.to(...)``, a new ``load_state_dict`` tensor) is captured again, because the key
holds the parameters' addresses.

On a CPU the same code runs with :class:`EagerReplay`, which re-runs the solve at every replay
and copies its results into the captured outputs: that is how the static-buffer plumbing is
tested without a GPU.
"""

from __future__ import annotations

import time
from collections.abc import Callable

import torch
from torch import Tensor
from torch.nn.utils import parametrize

from ..solvers import FixedPointSolver, SolverStats

__all__ = ["GraphedSolve", "EagerReplay", "CudaGraphReplay"]

_OUTPUTS = ("best_z", "best_res", "best_abs", "best_rel", "active")


def _clone(value):
    if value is None or not isinstance(value, (Tensor, list, tuple)):
        return value
    if isinstance(value, Tensor):
        return value.detach().clone()
    out = [_clone(v) for v in value]
    return tuple(out) if isinstance(value, tuple) else out


def _load(static, value) -> None:
    if isinstance(static, Tensor):
        static.copy_(value)
    elif isinstance(static, (list, tuple)):
        for s, v in zip(static, value):
            _load(s, v)


def _signature(value):
    if isinstance(value, Tensor):
        return (tuple(value.shape), value.dtype, str(value.device))
    if isinstance(value, (list, tuple)):
        return tuple(_signature(v) for v in value)
    return repr(value)


class EagerReplay:
    """A stand-in for a CUDA graph: ``replay()`` runs the solve again and writes its results
    into the tensors the first run returned (as a graph's replay overwrites its outputs)."""

    def __init__(self, run: Callable[[], object]) -> None:
        self.run = run
        self.tracker = run()

    def replay(self) -> None:
        fresh = self.run()
        for name in _OUTPUTS:
            getattr(self.tracker, name).copy_(getattr(fresh, name))
        for old, new in zip(self.tracker.trace, fresh.trace):
            old.copy_(new)


class CudaGraphReplay:
    """``run`` warmed up on a side stream, then captured into a ``torch.cuda.CUDAGraph``."""

    def __init__(self, run: Callable[[], object], warmup: int = 2) -> None:
        side = torch.cuda.Stream()
        side.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(side):
            for _ in range(warmup):
                run()
        torch.cuda.current_stream().wait_stream(side)
        self.graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(self.graph):
            self.tracker = run()

    def replay(self) -> None:
        self.graph.replay()


class GraphedSolve:
    """The forward solves of one ``DEQ``, captured once per input signature and replayed.

    Args:
        replay_cls: :class:`CudaGraphReplay` on CUDA tensors; :class:`EagerReplay` (tests) or
            any class with the same two methods.
    """

    def __init__(self, replay_cls=None) -> None:
        self.replay_cls = replay_cls
        self.entries: dict = {}
        self.where: tuple = ()  # the addresses of the parameters the captures read
        self.captures = 0

    def __len__(self) -> int:
        return len(self.entries)

    def clear(self) -> None:
        self.entries.clear()

    def __deepcopy__(self, memo) -> GraphedSolve:  # graphs are not copied (EMA copies, ...)
        return GraphedSolve(self.replay_cls)

    def __getstate__(self) -> dict:
        return {"replay_cls": self.replay_cls, "entries": {}, "where": (), "captures": 0}

    def __call__(
        self, solver: FixedPointSolver, make_g: Callable, x, z0f: Tensor, params: tuple, extra=()
    ) -> tuple[Tensor, SolverStats]:
        """Solve ``z = g(z)`` where ``g = make_g(static_x)``; returns ``(z*, stats)`` like a
        solver call (``z*`` is a fresh tensor, not the graph's output buffer)."""
        where = tuple(p.data_ptr() for p in params)
        if self.entries and where != self.where:
            self.entries.clear()  # the weights moved (.to(), replaced): old captures are stale
        self.where = where
        key = (repr(solver), _signature(x), _signature(z0f), *extra)
        entry = self.entries.get(key)
        if entry is None:
            static_x, static_z0 = _clone(x), z0f.detach().clone()
            g = make_g(static_x)
            cls = self.replay_cls or (CudaGraphReplay if z0f.is_cuda else EagerReplay)

            def run():
                with torch.no_grad(), parametrize.cached():
                    return solver.run_fixed(g, static_z0)

            entry = (cls(run), static_x, static_z0)
            self.captures += 1
            self.entries[key] = entry
        graph, static_x, static_z0 = entry
        t0 = time.perf_counter()
        _load(static_x, x)
        static_z0.copy_(z0f)
        graph.replay()
        tracker = graph.tracker
        stats = tracker.finish(0.0)  # copies to the host: waits for the replay
        stats.wall_time = time.perf_counter() - t0
        solver.warn_unconverged(stats)
        return tracker.best_z.clone(), stats
