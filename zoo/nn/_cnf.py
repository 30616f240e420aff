"""Continuous normalizing flows (Chen et al. 2018; FFJORD, Grathwohl et al. 2019) with the
RNODE regularizers (Finlay et al. 2020).

The flow integrates ``dz/dt = f(t, z)`` together with ``d logp/dt = -tr(df/dz)``; with
``trace="hutchinson"`` the trace is estimated by ``e^T (df/dz) e`` with one probe ``e`` fixed
for the whole solve, which keeps the dynamics deterministic for adaptive solvers.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from ._ode import ODEBlock
from ._regularizers import sample_noise

__all__ = ["CNF"]


def exact_trace(dz: Tensor, z: Tensor, create_graph: bool) -> Tensor:
    """``tr(d dz / dz)`` per sample with one backward pass per dimension, shape ``(B,)``.

    Example:
        >>> import torch
        >>> from zoo.nn import exact_trace
        >>> z = torch.randn(3, 2, requires_grad=True)
        >>> A = torch.tensor([[1.0, 2.0], [0.0, 3.0]])
        >>> exact_trace(z @ A.T, z, create_graph=False)  # the trace of A for every sample
        tensor([4., 4., 4.])
    """
    flat = dz.reshape(z.shape[0], -1)  # images: one backward pass per pixel and channel
    tr = dz.new_zeros(z.shape[0])
    for i in range(flat.shape[1]):
        (g,) = torch.autograd.grad(
            flat[:, i].sum(), z, create_graph=create_graph, retain_graph=True
        )
        tr = tr + g.reshape(z.shape[0], -1)[:, i]
    return tr


class _CNFDynamics(nn.Module):
    def __init__(self, func: nn.Module, trace: str, kinetic: bool, jacobian: bool) -> None:
        super().__init__()
        self.func = func
        self.trace = trace
        self.kinetic = kinetic
        self.jacobian = jacobian
        self.noise: Tensor | None = None

    def forward(self, t, state):
        z = state[0]
        create = torch.is_grad_enabled()  # build the graph only when someone differentiates
        with torch.enable_grad():
            if not (create and z.requires_grad):  # e.g. the adjoint's no-grad forward solve
                z = z.detach().requires_grad_(True)
            dz = self.func(t, z)
            vjp = None
            if self.trace == "exact":
                tr = exact_trace(dz, z, create_graph=create)
            else:
                (vjp,) = torch.autograd.grad(
                    dz, z, self.noise, create_graph=create, retain_graph=True
                )
                tr = (vjp * self.noise).reshape(z.shape[0], -1).sum(1)
        out = [dz, -tr]
        if self.kinetic:
            out.append(dz.pow(2).reshape(z.shape[0], -1).sum(1))
        if self.jacobian:
            if vjp is None:
                (vjp,) = torch.autograd.grad(dz, z, self.noise, create_graph=create)
            out.append(vjp.pow(2).reshape(z.shape[0], -1).sum(1))
        return tuple(out)


class CNF(nn.Module):
    """A continuous normalizing flow layer.

    Args:
        func: Vector field ``func(t, z)`` on ``(B, D)`` states (or ``(B, C, H, W)`` images).
        trace: ``"exact"`` (D backward passes) or ``"hutchinson"`` (one).
        noise: Hutchinson probe distribution, ``"gaussian"`` or ``"rademacher"``.
        T: Integration end time (the flow runs over ``[0, T]``).
        method: torchdiffeq method.
        rtol: Relative tolerance.
        atol: Absolute tolerance.
        adjoint: Use the adjoint method for gradients.
        kinetic_energy: Accumulate RNODE's kinetic energy ``int ||f||^2 dt``.
        jacobian_frobenius: Accumulate RNODE's ``int ||df/dz||_F^2 dt`` (Hutchinson).
        max_num_steps: Step budget of an adaptive solve; a solve that needs more raises
            ``ODEBudgetError`` naming the budget and how to raise it.

    Attributes:
        reg: Dict of the accumulated regularizers of the last call, each a ``(B,)`` tensor.

    Example:
        >>> import torch
        >>> class Lin(torch.nn.Module):
        ...     def forward(self, t, z):
        ...         return 0.5 * z
        >>> cnf = CNF(Lin(), trace="exact", rtol=1e-8, atol=1e-8)
        >>> z, dlogp = cnf(torch.randn(3, 2))
        >>> round(float(dlogp[0]), 4)  # log-density change = -T tr(A) = -1
        -1.0
    """

    def __init__(
        self,
        func: nn.Module,
        trace: str = "hutchinson",
        noise: str = "gaussian",
        T: float = 1.0,
        method: str = "dopri5",
        rtol: float = 1e-5,
        atol: float = 1e-5,
        adjoint: bool = False,
        kinetic_energy: bool = False,
        jacobian_frobenius: bool = False,
        max_num_steps: int = 10_000,
    ) -> None:
        super().__init__()
        if trace not in ("exact", "hutchinson"):
            raise ValueError(f"unknown trace {trace!r}; valid names: exact, hutchinson")
        if noise not in ("gaussian", "rademacher"):
            raise ValueError(f"unknown noise {noise!r}; valid names: gaussian, rademacher")
        self.noise = noise
        self.T = float(T)
        self.dynamics = _CNFDynamics(func, trace, kinetic_energy, jacobian_frobenius)
        self.block = ODEBlock(
            self.dynamics, t=[0.0, self.T], method=method, rtol=rtol, atol=atol, adjoint=adjoint,
            max_num_steps=max_num_steps,
        )  # fmt: skip
        self.reg: dict[str, Tensor] = {}

    @property
    def nfe_forward(self) -> int:
        return self.block.nfe_forward

    @property
    def nfe_backward(self) -> int:
        return self.block.nfe_backward

    def forward(self, z: Tensor, logp: Tensor | None = None, reverse: bool = False):
        """Push ``z`` through the flow.

        Args:
            z: States ``(B, D)``; data when ``reverse=False`` (data -> base), base samples when
                ``reverse=True`` (base -> data).
            logp: Running log-density term to add to; defaults to zeros.
            reverse: Integrate from ``T`` back to 0.

        Returns:
            ``(z_out, logp_out)`` with ``logp_out = logp + int -tr(df/dz) dt`` along the path.
            Integrating data ``x`` to base ``z`` (FFJORD's convention) with ``logp=0`` gives
            ``log p_x(x) = log p_z(z_out) - logp_out``.
        """
        if z.dim() < 2:
            raise ValueError(
                f"CNF expects (batch, dim) or (batch, C, H, W) states, got shape {tuple(z.shape)}"
            )
        if logp is None:
            logp = z.new_zeros(z.shape[0])
        dyn = self.dynamics
        dyn.noise = sample_noise(z, self.noise)
        state = [z, logp]
        if dyn.kinetic:
            state.append(z.new_zeros(z.shape[0]))
        if dyn.jacobian:
            state.append(z.new_zeros(z.shape[0]))
        t = torch.tensor([self.T, 0.0] if reverse else [0.0, self.T])
        out = self.block(tuple(state), t=t)
        self.reg = {}
        i = 2
        if dyn.kinetic:
            self.reg["kinetic_energy"] = out[i]
            i += 1
        if dyn.jacobian:
            self.reg["jacobian_frobenius"] = out[i]
        return out[0], out[1]
