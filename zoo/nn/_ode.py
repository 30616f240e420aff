"""Neural ODE blocks over torchdiffeq (Chen et al., NeurIPS 2018)."""

from __future__ import annotations

import torch
from torch import Tensor, nn

__all__ = ["ODEBlock", "ODEBudgetError", "grid_solve", "odeint"]

_ADAPTIVE = ("dopri8", "dopri5", "bosh3", "fehlberg2", "adaptive_heun")


class ODEBudgetError(RuntimeError):
    """An adaptive solve needed more than its ``max_num_steps``: the dynamics are too stiff for
    the tolerances (training skips that step; at test time raise the budget or the tolerance).

    Example:
        >>> import torch
        >>> from zoo.nn import ODEBlock, ODEBudgetError
        >>> stiff = ODEBlock(lambda t, z: -1e6 * z, rtol=1e-9, atol=1e-9, max_num_steps=5)
        >>> try:
        ...     stiff(torch.ones(1, 1))
        ... except ODEBudgetError as e:
        ...     print("refused:", str(e)[:40])
        refused: dopri5 needed more than max_num_steps=5
    """


class _Counted(nn.Module):
    """Wraps a vector field ``func(t, z)`` and counts its evaluations."""

    def __init__(self, func: nn.Module) -> None:
        super().__init__()
        self.func = func
        self.nfe = 0

    def forward(self, t, z):
        self.nfe += 1
        return self.func(t, z)


class _FunctionField(nn.Module):
    """A plain function ``f(t, z)`` as a vector field module (no parameters of its own)."""

    def __init__(self, fn) -> None:
        super().__init__()
        self.fn = fn

    def forward(self, t, z):
        return self.fn(t, z)


@torch.compiler.disable
def _eager(fn, *args, **kwargs):
    """An adaptive torchdiffeq solve outside ``torch.compile``'s tracing: its step control
    (``unique`` with a data-dependent size, Python branches on the error) cannot be compiled.
    Compile the vector field itself (``ODEBlock(torch.compile(func))``) to speed it up."""
    return fn(*args, **kwargs)


class ODEBlock(nn.Module):
    """Integrate ``dz/dt = func(t, z)`` with torchdiffeq, counting function evaluations.

    Args:
        func: Called as ``func(t, z)``; ``z`` may be a tensor or a tuple. An ``nn.Module`` (its
            parameters are registered and trained), or a plain function as torchdiffeq accepts
            one (a warning names parameters it closes over, which the block cannot see; the
            adjoint needs a module, and refuses a function).
        t: Integration times (at least two, increasing or decreasing); default ``[0, 1]``.
        method: Any torchdiffeq method (``"dopri5"``, ``"rk4"``, ``"euler"``, ...).
        rtol: Relative tolerance of adaptive methods.
        atol: Absolute tolerance of adaptive methods.
        adjoint: Use ``odeint_adjoint`` (O(1) memory, solves an ODE backwards) instead of
            backpropagating through the solver.
        options: Extra solver options for torchdiffeq (e.g. ``{"step_size": 0.1}``).
        max_num_steps: Step budget of adaptive solvers: a solve that needs more raises
            :class:`ODEBudgetError` instead of running (nearly) forever.
        grid_steps: If > 0, integrate with ``grid_steps`` RK4 steps of
            equal size from ``t[0]`` to ``t[-1]``, then read the state at every requested time
            by cubic Hermite interpolation (the vector field at the nodes gives the slopes). The
            cost no longer grows with the number of output times, and backpropagation goes
            through ``4 * grid_steps + 1`` evaluations instead of an adaptive solver's
            per-output bookkeeping: what makes thousands of irregular output times affordable.
            ``method``, ``rtol`` and ``atol`` are kept for adaptive solves (a model's test-time
            budget may switch back to them) and unused while the grid is on; ``options`` and
            ``max_num_steps`` are refused with it.
        parallel: With ``grid_steps``, a fixed-point solver of the zoo (``Picard``,
            ``Anderson``, ...) that finds all the grid's states at once, each round one batched
            evaluation of ``func`` at every step's time (``func`` must take a time per row);
            Picard is exact after ``grid_steps`` rounds. The rounds are in
            ``block.parallel_stats``. Forward only (no gradient through the rounds).

    Attributes:
        nfe_forward: Evaluations in the last forward solve.
        nfe_backward: Evaluations since then (the adjoint's backward solve); 0 without adjoint.

    Example:
        >>> import torch
        >>> class Decay(torch.nn.Module):
        ...     def forward(self, t, z):
        ...         return -z
        >>> block = ODEBlock(Decay(), method="dopri5", rtol=1e-8, atol=1e-8)
        >>> round(float(block(torch.ones(1, 1))), 5)  # exp(-1)
        0.36788
        >>> traj = block(torch.ones(1, 1), t=torch.linspace(0, 1, 3), return_all=True)
        >>> traj.shape  # torchdiffeq's odeint: the state at every time
        torch.Size([3, 1, 1])
    """

    def __init__(
        self,
        func: nn.Module,
        t: Tensor | list[float] | None = None,
        method: str = "dopri5",
        rtol: float = 1e-5,
        atol: float = 1e-5,
        adjoint: bool = False,
        options: dict | None = None,
        grid_steps: int = 0,
        max_num_steps: int = 10_000,
        parallel=None,
    ) -> None:
        super().__init__()
        import math

        from torchdiffeq._impl.odeint import SOLVERS as _METHODS

        if method not in _METHODS:
            raise ValueError(f"unknown ODE method {method!r}; valid: {', '.join(sorted(_METHODS))}")
        for k, v in (("rtol", rtol), ("atol", atol)):
            if (
                isinstance(v, bool)
                or not isinstance(v, (int, float))
                or not math.isfinite(v)
                or v <= 0
            ):
                raise ValueError(f"{k} must be a positive finite number, got {v!r}")
        if isinstance(grid_steps, bool) or not isinstance(grid_steps, int) or grid_steps < 0:
            raise ValueError(f"grid_steps must be an integer >= 0, got {grid_steps!r}")
        if (
            isinstance(max_num_steps, bool)
            or not isinstance(max_num_steps, int)
            or max_num_steps < 1
        ):
            raise ValueError(f"max_num_steps must be an integer >= 1, got {max_num_steps!r}")
        if grid_steps and adjoint:
            raise ValueError("grid_steps > 0 backpropagates through the grid; set adjoint=False")
        if grid_steps and options:
            raise ValueError(
                f"options={options!r} configure torchdiffeq's solvers, which grid_steps > 0 "
                "replaces by its own RK4 grid; drop options (the grid's step is "
                "(t[-1] - t[0]) / grid_steps)"
            )
        if grid_steps and max_num_steps != 10_000:
            raise ValueError(
                "max_num_steps bounds an adaptive solve; a grid of grid_steps > 0 takes exactly "
                "grid_steps steps: drop max_num_steps"
            )
        if parallel is not None and not grid_steps:
            raise ValueError(
                "parallel=... solves a fixed grid as one fixed point: set grid_steps > 0 too"
            )
        self.parallel = parallel
        self.parallel_stats = None
        if not isinstance(func, nn.Module):
            if not callable(func):
                raise TypeError(
                    f"func must be an nn.Module or a function (t, z) -> dz/dt, got {func!r}"
                )
            if adjoint:
                raise TypeError(
                    "adjoint=True needs func as an nn.Module: the adjoint integrates the "
                    "gradients of its parameters, which a plain function does not declare"
                )
            from ._deq import _warn_unregistered_parameters

            _warn_unregistered_parameters(func, what="ODEBlock's func")
            func = _FunctionField(func)
        self.counted = _Counted(func)
        t = torch.tensor([0.0, 1.0]) if t is None else torch.as_tensor(t, dtype=torch.float32)
        if t.dim() != 1 or t.numel() < 2:
            raise ValueError(
                f"t must be a 1-D tensor of at least 2 times, got shape {tuple(t.shape)}"
            )
        self.register_buffer("t", t, persistent=False)
        self.method = method
        self.rtol = rtol
        self.atol = atol
        self.adjoint = adjoint
        self.options = options
        self.max_num_steps = int(max_num_steps)
        self.grid_steps = int(grid_steps)
        self.nfe_forward = 0

    @property
    def func(self) -> nn.Module:
        return self.counted.func

    @property
    def nfe_backward(self) -> int:
        return self.counted.nfe - self.nfe_forward

    def forward(self, z0, t: Tensor | None = None, return_all: bool = False):
        """Integrate from ``t[0]``; return the state at ``t[-1]`` (or at every ``t``).

        Args:
            z0: Initial state (tensor or tuple of tensors).
            t: Times overriding the default ones.
            return_all: Return the whole trajectory, shape ``(len(t), *z0.shape)``.
        """
        import torchdiffeq

        t = self.t if t is None else t
        ref = z0[0] if isinstance(z0, tuple) else z0
        if ref.dtype in (torch.bfloat16, torch.float16):
            # under autocast the state arrives in half precision: integrate in fp32 (step-size
            # control and the time grid need it); the vector field keeps the caller's autocast
            z0 = tuple(z.float() for z in z0) if isinstance(z0, tuple) else z0.float()
            ref = z0[0] if isinstance(z0, tuple) else z0
        t = t.to(device=ref.device, dtype=ref.dtype)
        self.counted.nfe = 0
        opts = dict(self.options or {})
        if self.method in _ADAPTIVE:
            opts.setdefault("max_num_steps", self.max_num_steps)
        kw = dict(rtol=self.rtol, atol=self.atol, method=self.method, options=opts or None)
        if self.grid_steps and self.parallel is not None:
            out, self.parallel_stats = grid_solve(
                self.counted, z0, t, self.grid_steps, self.parallel
            )
        elif self.grid_steps:
            out = grid_solve(self.counted, z0, t, self.grid_steps)
        else:
            try:
                if self.adjoint:
                    params = tuple(p for p in self.counted.parameters() if p.requires_grad)
                    out = _eager(
                        torchdiffeq.odeint_adjoint, self.counted, z0, t, adjoint_params=params,
                        **kw,
                    )  # fmt: skip
                else:
                    out = _eager(torchdiffeq.odeint, self.counted, z0, t, **kw)
            except AssertionError as e:
                if "underflow in dt" in str(e):
                    self.nfe_forward = self.counted.nfe
                    raise ValueError(
                        f"{self.method} could not take a step (step size underflow after "
                        f"{self.counted.nfe} evaluations): the vector field returns NaN or inf "
                        "values, or the dynamics are degenerate; check the weights and the inputs"
                    ) from None
                if "max_num_steps" not in str(e):
                    raise
                self.nfe_forward = self.counted.nfe
                raise ODEBudgetError(
                    f"{self.method} needed more than max_num_steps={opts['max_num_steps']} steps "
                    f"at rtol={self.rtol:g}, atol={self.atol:g} ({self.counted.nfe} evaluations): "
                    "the dynamics are too stiff for these tolerances"
                ) from None
        self.nfe_forward = self.counted.nfe
        if return_all:
            return out
        return tuple(o[-1] for o in out) if isinstance(out, tuple) else out[-1]

    def extra_repr(self) -> str:
        if self.grid_steps:
            return f"grid_steps={self.grid_steps} (RK4 + cubic Hermite)"
        return f"method={self.method!r}, rtol={self.rtol}, atol={self.atol}, adjoint={self.adjoint}"


def odeint(func, y0, t, **options):
    """torchdiffeq's ``odeint(func, y0, t)`` on the zoo's :class:`ODEBlock`: the solution at
    every time in ``t`` (shape ``(len(t), *y0.shape)``, or a tuple for a tuple state), with
    torchdiffeq's default tolerances (``rtol=1e-7``, ``atol=1e-9``), a step budget
    (:class:`ODEBudgetError`) and NFE counting. ``options`` are :class:`ODEBlock`'s arguments
    (``method``, ``rtol``, ``atol``, ``adjoint``, ``options``, ``max_num_steps``, ...).

    Example:
        >>> import torch
        >>> y = odeint(lambda t, y: -y, torch.ones(2), torch.tensor([0.0, 1.0, 2.0]))
        >>> print(*(round(float(v), 4) for v in y[:, 0]))
        1.0 0.3679 0.1353
    """
    block = ODEBlock(func, t=t, **{"rtol": 1e-7, "atol": 1e-9, **options})
    return block(y0, t=torch.as_tensor(t), return_all=True)


def grid_solve(func, z0: Tensor, t: Tensor, steps: int, parallel=None):
    """RK4 with ``steps`` equal steps from ``t[0]`` to ``t[-1]``; the states at every ``t``
    (sorted, increasing) by cubic Hermite interpolation between the grid nodes.

    With ``parallel`` (a fixed-point solver of the zoo), the grid nodes are found as one fixed
    point, every round evaluating ``func`` at all the steps' times as one batch
    (:func:`zoo.nn.parallel_grid_nodes`; ``func`` then takes a time per row), and the solver's
    stats are returned too.

    Returns:
        ``(len(t), *z0.shape)`` (and the solver's stats with ``parallel``).

    Example:
        >>> import torch
        >>> t = torch.tensor([0.0, 0.3, 0.35, 1.0], dtype=torch.float64)
        >>> z = grid_solve(lambda t, z: -z, torch.ones(1, dtype=torch.float64), t, steps=50)
        >>> bool(torch.allclose(z[:, 0], torch.exp(-t), atol=1e-8))
        True
    """
    if t.numel() > 1 and not bool((t[1:] >= t[:-1]).all()):
        raise ValueError("grid_solve needs increasing times")
    t0, t1 = t[0], t[-1]
    h = (t1 - t0) / steps
    if parallel is not None:  # every node at once, as one fixed point; then the slopes at once
        from ._parallel import parallel_grid_nodes

        Z, stats = parallel_grid_nodes(func, z0, t0, t1, steps, parallel)
        nodes = t0 + h * torch.arange(steps + 1, dtype=z0.dtype, device=z0.device)
        tt = nodes.repeat_interleave(z0.shape[0])
        F = func(tt, Z.reshape(-1, *z0.shape[1:])).reshape(Z.shape)
        return _hermite(Z, F, t, t0, h, steps), stats
    zs, fs = [z0], []
    z = z0
    for k in range(steps):
        tk = t0 + k * h
        k1 = func(tk, z)
        k2 = func(tk + h / 2, z + h / 2 * k1)
        k3 = func(tk + h / 2, z + h / 2 * k2)
        k4 = func(tk + h, z + h * k3)
        fs.append(k1)
        z = z + h / 6 * (k1 + 2 * k2 + 2 * k3 + k4)
        zs.append(z)
    fs.append(func(t1, z))
    return _hermite(torch.stack(zs), torch.stack(fs), t, t0, h, steps)


def _hermite(Z: Tensor, F: Tensor, t: Tensor, t0, h, steps: int) -> Tensor:
    """Cubic Hermite interpolation of the grid nodes ``Z`` with slopes ``F`` at the times ``t``."""
    z0 = Z[0]
    pos = (t - t0) / h if float(h) > 0 else torch.zeros_like(t)
    idx = pos.floor().long().clamp(0, steps - 1)
    s = (pos - idx).view(-1, *([1] * z0.dim()))
    s2, s3 = s * s, s * s * s
    return (
        (2 * s3 - 3 * s2 + 1) * Z[idx]
        + (s3 - 2 * s2 + s) * h * F[idx]
        + (-2 * s3 + 3 * s2) * Z[idx + 1]
        + (s3 - s2) * h * F[idx + 1]
    )
