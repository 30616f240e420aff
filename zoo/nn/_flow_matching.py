"""Conditional flow matching (Lipman et al., ICLR 2023) with a minibatch optimal-transport
coupling (Tong et al. 2023, OT-CFM): train a CNF's vector field without solving an ODE.

The path runs as the zoo's CNFs do, from data at ``t = 0`` to the standard-normal base at
``t = T``: ``x_t = (1 - t/T) x + (t/T) z``, whose velocity is ``(z - x) / T``. The field
regresses onto it; the likelihood is still computed exactly by the CNF solve.

Written here rather than taken from ``torchcfm`` (PyPI 1.0.7): that package requires
matplotlib, scikit-learn, pandas, torchdyn, POT and absl-py at run time, for two functions;
this needs only scipy's assignment solver.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

__all__ = ["ot_pairing", "cfm_target", "flow_matching_loss"]


def ot_pairing(x: Tensor, z: Tensor) -> Tensor:
    """The permutation ``p`` minimizing ``sum_i ||x_i - z_p(i)||^2`` (exact minibatch OT with
    uniform weights: an assignment problem). Returns indices into ``z``.

    Example:
        >>> import torch
        >>> from zoo.nn import ot_pairing
        >>> x = torch.tensor([[0.0], [10.0]])
        >>> z = torch.tensor([[9.0], [1.0]])
        >>> ot_pairing(x, z)  # each point goes to its nearest noise sample
        tensor([1, 0])
    """
    from scipy.optimize import linear_sum_assignment

    if x.shape != z.shape or x.dim() < 2:
        raise ValueError(
            f"x and z must both be (batch, ...) of one shape, got {tuple(x.shape)}, {tuple(z.shape)}"
        )
    xf, zf = x.detach().flatten(1).double(), z.detach().flatten(1).double()  # images: flattened
    cost = torch.cdist(xf, zf).pow(2).cpu().numpy()
    _, cols = linear_sum_assignment(cost)
    return torch.as_tensor(cols, device=z.device)


def cfm_target(x: Tensor, z: Tensor, t: Tensor, T: float) -> tuple[Tensor, Tensor]:
    """``(x_t, u_t)``: the point on the straight path at times ``t`` ``(B,)`` and its velocity.

    Example:
        >>> import torch
        >>> from zoo.nn import cfm_target
        >>> x, z, t = torch.randn(4, 2), torch.randn(4, 2), torch.rand(4)
        >>> point, velocity = cfm_target(x, z, t, T=1.0)
        >>> tuple(point.shape), tuple(velocity.shape)
        ((4, 2), (4, 2))
    """
    s = (t / T).reshape(-1, *([1] * (x.dim() - 1))).to(x.dtype)  # (B, 1, ...) broadcasts
    return (1 - s) * x + s * z, (z - x) / T


def flow_matching_loss(
    field: nn.Module, x: Tensor, T: float, ot: bool = True, generator: torch.Generator | None = None
) -> Tensor:
    """Mean over the batch of ``||field(t, x_t) - u_t||^2``, with one uniform time per sample
    (``field`` takes times of shape ``(B,)``) and, with ``ot``, base samples paired to the data
    by minibatch optimal transport.

    Example:
        >>> import torch
        >>> from zoo.models.ffjord import ConcatSquashMLP
        >>> from zoo.nn import flow_matching_loss
        >>> field = ConcatSquashMLP(2, (16,), "concatsquash", "tanh")
        >>> loss = flow_matching_loss(field, torch.randn(64, 2), T=1.0)
        >>> loss.backward(); bool(loss > 0)
        True
    """
    z = torch.randn(x.shape, generator=generator, dtype=x.dtype).to(x.device)
    if ot:
        z = z[ot_pairing(x, z)]
    t = torch.rand(x.shape[0], generator=generator, dtype=x.dtype).to(x.device) * T
    xt, ut = cfm_target(x, z, t, T)
    return (field(t, xt) - ut).pow(2).flatten(1).sum(1).mean()
