"""Regularizers for implicit models.

* Jacobian Frobenius norm, Hutchinson-estimated: DEQ stabilization (Bai, Koltun, Kolter 2021,
  "Stabilizing Equilibrium Models by Jacobian Regularization") and RNODE (Finlay et al. 2020).
* Kinetic energy of a vector field: RNODE.
"""

from __future__ import annotations

import torch
from torch import Tensor

__all__ = ["jacobian_frobenius", "kinetic_energy", "sample_noise"]


def sample_noise(like: Tensor, kind: str = "gaussian") -> Tensor:
    """Zero-mean, identity-covariance probe vectors for Hutchinson estimators.

    Args:
        like: Tensor whose shape, dtype and device the noise copies.
        kind: ``"gaussian"`` or ``"rademacher"``.

    Example:
        >>> import torch
        >>> from zoo.nn import sample_noise
        >>> sample_noise(torch.zeros(2, 3), kind="rademacher").abs().unique()
        tensor([1.])
    """
    if kind == "gaussian":
        return torch.randn_like(like)
    if kind == "rademacher":
        return torch.randint_like(like, 0, 2).mul_(2).sub_(1)
    raise ValueError(f"unknown noise {kind!r}; valid names: gaussian, rademacher")


def jacobian_frobenius(
    f_out: Tensor, z_in: Tensor, n_samples: int = 1, noise: str = "gaussian", create_graph=True
) -> Tensor:
    """Unbiased estimate of ``||df/dz||_F^2 / dim``, averaged over the batch.

    Args:
        f_out: Output of ``f`` at ``z_in``, shape ``(B, ...)``, with a graph to ``z_in``.
        z_in: Input with ``requires_grad=True``, same batch size.
        n_samples: Number of probe vectors.
        noise: ``"gaussian"`` or ``"rademacher"``.
        create_graph: Keep the graph so the estimate can be minimized.

    Returns:
        A scalar tensor.

    Example:
        >>> z = torch.randn(4, 3, requires_grad=True)
        >>> jacobian_frobenius(2 * z, z, noise="rademacher").item()  # ||2 I||_F^2 / 3
        4.0
    """
    total = f_out.new_zeros(())
    dim = f_out[0].numel()
    for _i in range(n_samples):
        eps = sample_noise(f_out, noise)
        (vjp,) = torch.autograd.grad(f_out, z_in, eps, create_graph=create_graph, retain_graph=True)
        total = total + vjp.pow(2).reshape(vjp.shape[0], -1).sum(1).mean() / dim
    return total / n_samples


def kinetic_energy(dz: Tensor) -> Tensor:
    """Per-sample squared speed ``||dz/dt||^2``, shape ``(B,)``.

    Example:
        >>> import torch
        >>> from zoo.nn import kinetic_energy
        >>> kinetic_energy(torch.tensor([[3.0, 4.0]]))
        tensor([25.])
    """
    return dz.pow(2).reshape(dz.shape[0], -1).sum(1)
