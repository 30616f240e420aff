"""Neural ODE blocks over torchdiffeq (Chen et al., NeurIPS 2018)."""

from __future__ import annotations

import torch
from torch import Tensor, nn

__all__ = ["ODEBlock"]


class _Counted(nn.Module):
    """Wraps a vector field ``func(t, z)`` and counts its evaluations."""

    def __init__(self, func: nn.Module) -> None:
        super().__init__()
        self.func = func
        self.nfe = 0

    def forward(self, t, z):
        self.nfe += 1
        return self.func(t, z)


class ODEBlock(nn.Module):
    """Integrate ``dz/dt = func(t, z)`` with torchdiffeq, counting function evaluations.

    Args:
        func: ``nn.Module`` called as ``func(t, z)``; ``z`` may be a tensor or a tuple.
        t: Integration times (at least two, increasing or decreasing); default ``[0, 1]``.
        method: Any torchdiffeq method (``"dopri5"``, ``"rk4"``, ``"euler"``, ...).
        rtol: Relative tolerance of adaptive methods.
        atol: Absolute tolerance of adaptive methods.
        adjoint: Use ``odeint_adjoint`` (O(1) memory, solves an ODE backwards) instead of
            backpropagating through the solver.
        options: Extra solver options for torchdiffeq (e.g. ``{"step_size": 0.1}``).

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
    ) -> None:
        super().__init__()
        if not isinstance(func, nn.Module):
            raise TypeError("func must be an nn.Module (the adjoint needs its parameters)")
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
        t = t.to(device=ref.device, dtype=ref.dtype)
        self.counted.nfe = 0
        kw = dict(rtol=self.rtol, atol=self.atol, method=self.method, options=self.options)
        if self.adjoint:
            params = tuple(p for p in self.counted.parameters() if p.requires_grad)
            out = torchdiffeq.odeint_adjoint(self.counted, z0, t, adjoint_params=params, **kw)
        else:
            out = torchdiffeq.odeint(self.counted, z0, t, **kw)
        self.nfe_forward = self.counted.nfe
        if return_all:
            return out
        return tuple(o[-1] for o in out) if isinstance(out, tuple) else out[-1]

    def extra_repr(self) -> str:
        return f"method={self.method!r}, rtol={self.rtol}, atol={self.atol}, adjoint={self.adjoint}"
