"""Optimization layers as models of constraint satisfaction: SATNet (a learned MAXSAT
relaxation, :class:`~zoo.nn.SATLayer`), OptNet (a learned quadratic program,
:class:`~zoo.nn.QPLayer`) and an explicit MLP of the same size as their baseline.

Every model maps ``(inputs, given)`` (bits of a partial assignment and which are known, both
``(B, n_bits)``) to the probability of each bit ``(B, n_bits)``, the given bits unchanged. The
bits come in cells of :attr:`cell_bits` (a Sudoku cell is one-hot over its digits; a parity bit
is its own cell), which is how a prediction is decoded.

With ``chain=True`` a model is a three-variable rule applied along a bit string: the rule maps
(the running value, the next bit) to the next running value, whose last value is the output
(SATNet's parity: the running values are rounded between steps, so the rule is learned from the
last step's supervision alone).
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn

from ..nn import QPLayer, SATLayer
from ..solvers import ImplicitGrad
from ._base import Cost, ZooModel, _check_budget
from ._registry import register_model, register_pretrained

__all__ = ["MLPSolver", "OptNetSudoku", "SATNetSolver", "decode_cells", "sudoku_constraints"]


def decode_cells(probs: Tensor, cell_bits: int) -> Tensor:
    """The value of each cell ``(B, n_cells)`` from bit probabilities ``(B, n_bits)``: the argmax
    over a one-hot cell's bits, or the bit itself rounded when a cell is one bit."""
    if cell_bits == 1:
        return (probs > 0.5).long()
    return probs.reshape(probs.shape[0], -1, cell_bits).argmax(-1)


def _check_bits(model, inputs: Tensor, given: Tensor) -> Tensor:
    n = model.n_bits
    if inputs.dim() != 2 or (n is not None and inputs.shape[1] != n):
        want = f"(batch, {n})" if n is not None else "(batch, bits)"
        raise ValueError(f"{model.arch}: inputs must be {want} bits, got {tuple(inputs.shape)}")
    if given.shape != inputs.shape:
        raise ValueError(
            f"{model.arch}: given must have the inputs' shape {tuple(inputs.shape)}, got "
            f"{tuple(given.shape)}"
        )
    if not torch.isfinite(inputs).all() or inputs.min() < 0 or inputs.max() > 1:
        raise ValueError(f"{model.arch}: inputs must be bits or probabilities in [0, 1]")
    return given.bool()


class _CSPModel(ZooModel):
    """What the constraint-satisfaction models share: the bit checks, the chain, the decode."""

    description = ""
    cell_bits: int = 1
    n_bits: int | None = None
    chain: bool = False
    round_between: bool = True

    def _rule(self, inputs: Tensor, given: Tensor) -> Tensor:  # pragma: no cover - abstract
        raise NotImplementedError

    def forward(self, inputs: Tensor, given: Tensor) -> Tensor:
        known = _check_bits(self, inputs, given)
        if not self.chain:
            return self._rule(inputs, known)
        if known[:, -1].any() or not known[:, :-1].all():
            raise ValueError(
                f"{self.arch} (chain): every bit but the last must be given, and the last not"
            )
        B, L = inputs.shape[0], inputs.shape[1] - 1
        mask = torch.tensor([True, True, False], device=inputs.device).expand(B, 3)
        run = inputs[:, :1]
        for i in range(1, L):
            step = torch.cat([run, inputs[:, i : i + 1], run.new_zeros(B, 1)], 1)
            out = self._rule(step, mask)[:, 2:]
            run = out if i == L - 1 or not self.round_between else (out > 0.5).to(out.dtype)
        return torch.cat([inputs[:, :-1], run], 1)

    def decode(self, probs: Tensor) -> Tensor:
        """The predicted value of each cell ``(B, n_cells)`` (:func:`decode_cells`)."""
        return decode_cells(probs, self.cell_bits)


class _SolverBudget:
    """The test-time budget and cost of a model whose forward is one optimization solve:
    ``_solve_layer()`` has ``max_iter`` and ``tol``; ``_stats`` is the last solve's stats;
    ``_settled`` which samples met their tolerance in every solve of the last forward (a chain
    solves once a step)."""

    _what = "layer"
    _stats = None
    _settled: Tensor | None = None

    def _record(self, stats) -> None:
        """Keep a solve's stats; a sample stays settled while every solve of it converged."""
        self._stats = stats
        mask = stats.converged_mask.detach()
        self._settled = mask if self._settled is None else self._settled & mask

    def forward(self, inputs: Tensor, given: Tensor) -> Tensor:
        self._settled = None  # a new forward: no solve of it recorded yet
        return super().forward(inputs, given)

    def _solve_layer(self):  # pragma: no cover - abstract
        raise NotImplementedError

    def _method(self) -> str:  # pragma: no cover - abstract
        raise NotImplementedError

    def set_inference_budget(self, max_iter=None, tol=None, rtol=None, atol=None) -> None:
        """The solve's ``max_iter`` and ``tol`` (rtol/atol are refused)."""
        _check_budget(max_iter, tol, rtol, atol)
        if rtol is not None or atol is not None:
            raise ValueError(f"{self._what}'s budget is max_iter and tol, not rtol/atol")
        layer = self._solve_layer()
        if max_iter is not None:
            layer.max_iter = int(max_iter)
        if tol is not None:
            layer.tol = float(tol)

    def inference_budget(self) -> dict[str, Any]:
        layer = self._solve_layer()
        return {"max_iter": layer.max_iter, "tol": layer.tol, "method": self._method()}

    def _backward_nfe(self) -> int:
        return 0

    def cost(self) -> Cost:
        st = self._stats
        if st is None:
            return Cost()
        return Cost(
            nfe_forward=int(getattr(self, "_nfe", st.nfe)),
            nfe_backward=self._backward_nfe(),
            residual=float(st.residual.max()) if st.residual.numel() else None,
            converged=bool(st.converged),
            converged_mask=self._settled,
        )


class SATNetSolver(_SolverBudget, _CSPModel):
    """A SATNet layer over the bits of a puzzle (or a three-variable SATNet rule along a bit
    string, ``chain=True``).

    Args:
        n_bits: Bits of a puzzle (729 for 9x9 Sudoku); ignored with ``chain`` (the rule has 3).
        m: Clauses.
        aux: Hidden variables.
        cell_bits: Bits per cell (9 for 9x9 Sudoku, 1 for parity).
        chain: Apply a three-variable rule along the bits (parity).
        round_between: With ``chain``, round the running value between steps (SATNet's parity:
            only the last step is then trained); ``False`` passes probabilities, so every step
            is trained from the last bit's supervision.
        k: Vector dimension (default: see :class:`~zoo.nn.SATLayer`).
        method: ``"sequential"``, ``"parallel"`` or ``"satnet"`` (the paper's forward and
            backward, compiled; see :class:`~zoo.nn.SATLayer`).
        prox: The proximal weight of the simultaneous update (see :class:`~zoo.nn.SATLayer`).
        tol: The solve's tolerance.
        max_iter: The solve's iterations at most.
        compact: Stop updating each puzzle once its own solve has settled (``"parallel"``
            only; see :class:`~zoo.nn.SATLayer`).
        grad_tol: Tolerance of the implicit backward solve (not with ``"satnet"``).
        grad_max_iter: Its iterations at most (not with ``"satnet"``).
        random_start: Start each training call's solve from fresh random vectors (the paper's
            code; see :class:`~zoo.nn.SATLayer`); evaluation keeps the fixed start.
        damping: ``"satnet"`` only: the backward's diagonal increment (the package's
            ``prox_lam``; default 1e-2).

    Example:
        >>> import torch
        >>> model = SATNetSolver(n_bits=3, m=4, aux=2, chain=True)
        >>> bits = torch.tensor([[1.0, 0.0, 1.0, 0.0]]); given = torch.tensor([[1, 1, 1, 0]])
        >>> model(bits, given).shape
        torch.Size([1, 4])
    """

    arch = "satnet"
    description = "A SATNet layer (a learned MAXSAT relaxation solved by the mixing method)"

    def __init__(
        self,
        n_bits: int = 729,
        m: int = 600,
        aux: int = 300,
        cell_bits: int = 9,
        chain: bool = False,
        round_between: bool = True,
        k: int | None = None,
        method: str = "parallel",
        prox: float = 0.5,
        tol: float = 1e-4,
        max_iter: int = 100,
        compact: bool = False,
        grad_tol: float = 1e-4,
        grad_max_iter: int = 100,
        random_start: bool = False,
        damping: float | None = None,
    ) -> None:
        super().__init__()
        self._capture(locals())
        if method == "satnet" and (grad_tol, grad_max_iter) != (1e-4, 100):
            raise ValueError(
                "grad_tol and grad_max_iter set the implicit backward of the 'sequential' and "
                "'parallel' methods; method='satnet' runs the paper's backward sweeps (as many "
                "as the forward took): leave them unset, or set damping"
            )
        self.chain, self.cell_bits = bool(chain), cell_bits
        self.round_between = bool(round_between)
        self.n_bits = None if chain else n_bits
        grad = None if method == "satnet" else ImplicitGrad(tol=grad_tol, max_iter=grad_max_iter)
        self.sat = SATLayer(3 if chain else n_bits, m, aux, k=k, method=method, prox=prox,
                            tol=tol, max_iter=max_iter, compact=compact, grad=grad,
                            random_start=random_start, damping=damping)  # fmt: skip
        self._nfe = 0

    def _rule(self, inputs: Tensor, given: Tensor) -> Tensor:
        out = self.sat(inputs, given)
        self._nfe += self.sat.stats.nfe
        self._record(self.sat.stats)
        return out

    def forward(self, inputs: Tensor, given: Tensor) -> Tensor:
        self._nfe = 0
        return super().forward(inputs, given)

    _what = "a SATNet layer"

    def _solve_layer(self):
        return self.sat

    def _method(self) -> str:
        return self.sat.method

    def _backward_nfe(self) -> int:
        if self.sat.method == "satnet":  # the paper's backward: as many sweeps as the forward
            return int(self.sat.stats.nfe) if self.sat.stats is not None else 0
        back = self.sat.grad.last_stats if isinstance(self.sat.grad, ImplicitGrad) else None
        return int(back.nfe) if back is not None else 0


def sudoku_constraints(box: int) -> Tensor:
    """The linear equalities of a one-hot Sudoku board, ``A z = 1``, reduced to independent rows
    (every cell holds one digit; every digit once per row, column and box).

    Example:
        >>> sudoku_constraints(2).shape  # OptNet's 4x4 boards: 40 independent equalities
        torch.Size([40, 64])
    """
    n = box * box
    rows = []
    idx = lambda r, c, d: (r * n + c) * n + d  # noqa: E731
    for r in range(n):
        for c in range(n):
            rows.append([idx(r, c, d) for d in range(n)])
    for d in range(n):
        for u in range(n):
            rows.append([idx(u, c, d) for c in range(n)])
            rows.append([idx(r, u, d) for r in range(n)])
            br, bc = u // box * box, u % box * box
            rows.append([idx(br + i, bc + j, d) for i in range(box) for j in range(box)])
    A = torch.zeros(len(rows), n**3, dtype=torch.float64)
    for i, cols in enumerate(rows):
        A[i, cols] = 1.0
    keep: list[int] = []
    for i in range(len(rows)):  # greedy: a row joins when it raises the rank
        if torch.linalg.matrix_rank(A[keep + [i]]) > len(keep):
            keep.append(i)
    return A[keep].float()


class OptNetSudoku(_SolverBudget, _CSPModel):
    """OptNet's Sudoku model: ``z = argmin 1/2 q |z|^2 - x'z  s.t.  Az = b, z >= 0`` with the
    puzzle's bits ``x`` and learned ``A`` and ``b = A exp(log_z0)`` (the rules are never given:
    ``A`` starts random, with as many rows as the true rules have independent equalities).

    Args:
        box: 2 for 4x4 boards (OptNet's), 3 for 9x9.
        q_penalty: ``q``, the ridge that makes the program strictly convex (OptNet: 0.1).
        tol: Interior-point tolerance (solved in float64).
        max_iter: Interior-point iterations at most.
        seed: Seed of ``A``'s initial values.

    Example:
        >>> import torch
        >>> model = OptNetSudoku(box=2)
        >>> x = torch.zeros(1, 64); x[0, 0] = 1.0; given = torch.zeros(1, 64, dtype=torch.bool)
        >>> given[0, :4] = True
        >>> model(x, given).shape, model.cost().converged
        (torch.Size([1, 64]), True)
    """

    arch = "optnet"
    description = (
        "An OptNet layer (a learned quadratic program, interior point, implicit KKT gradient)"
    )

    def __init__(
        self,
        box: int = 2,
        q_penalty: float = 0.1,
        tol: float = 1e-8,
        max_iter: int = 30,
        seed: int = 0,
    ) -> None:
        super().__init__()
        self._capture(locals())
        n = box**6
        self.cell_bits, self.n_bits = box * box, n
        n_eq = sudoku_constraints(box).shape[0]
        eye = torch.eye(n)
        self.qp = QPLayer(n, n_ineq=n, n_eq=n_eq, tol=tol, max_iter=max_iter,
                          fixed={"Q": q_penalty * eye, "G": -eye, "h": torch.zeros(n)})  # fmt: skip
        with torch.no_grad():
            g = torch.Generator().manual_seed(seed)
            self.qp.A.copy_(torch.rand(n_eq, n, generator=g))  # OptNet's uniform start

    def _rule(self, inputs: Tensor, given: Tensor) -> Tensor:
        # the layer's own solve, on its data cast to float64 (OptNet solves in double)
        data = {k: v.double() for k, v in self.qp.problem().items()}
        z = self.qp(-inputs.double(), **data)
        self._record(self.qp.stats)
        z = z.to(inputs.dtype).clamp(0.0, 1.0)
        return torch.where(given, inputs, z)

    _what = "an OptNet layer"

    def _solve_layer(self):
        return self.qp

    def _method(self) -> str:
        return "interior point"


class MLPSolver(_CSPModel):
    """The explicit baseline: an MLP from the puzzle's bits and mask to every bit's logit (or,
    with ``chain=True``, from the running value and the next bit to the next running value).

    Args:
        n_bits: Bits of a puzzle (ignored with ``chain``: the rule reads 2 bits).
        hidden: Hidden layer widths (ReLU).
        cell_bits: Bits per cell.
        chain: Apply the rule along the bits (parity).
        round_between: With ``chain``, round the running value between steps (see
            :class:`SATNetSolver`).

    Example:
        >>> import torch
        >>> model = MLPSolver(n_bits=64, hidden=[20], cell_bits=4)
        >>> x = torch.zeros(2, 64); given = torch.zeros(2, 64, dtype=torch.bool)
        >>> model(x, given).shape
        torch.Size([2, 64])
    """

    arch = "mlp_csp"
    description = "An MLP of the same size (the explicit baseline)"

    def __init__(
        self,
        n_bits: int = 729,
        hidden: list[int] | tuple[int, ...] = (400,),
        cell_bits: int = 9,
        chain: bool = False,
        round_between: bool = True,
    ) -> None:
        super().__init__()
        self._capture(locals())
        self.chain, self.cell_bits = bool(chain), cell_bits
        self.round_between = bool(round_between)
        self.n_bits = None if chain else n_bits
        d_in, d_out = (2, 1) if chain else (2 * n_bits, n_bits)
        layers: list[nn.Module] = []
        for h in hidden:
            layers += [nn.Linear(d_in, h), nn.ReLU()]
            d_in = h
        self.net = nn.Sequential(*layers, nn.Linear(d_in, d_out))

    def _rule(self, inputs: Tensor, given: Tensor) -> Tensor:
        if self.chain:
            return torch.cat([inputs[:, :2], torch.sigmoid(self.net(inputs[:, :2]))], 1)
        logits = self.net(torch.cat([inputs, given.to(inputs.dtype)], 1))
        return torch.where(given, inputs, torch.sigmoid(logits))


@register_model(family="optlayers", task="constraint-satisfaction")
def satnet(**kwargs) -> SATNetSolver:
    """A SATNet layer over a puzzle's bits (SATNet's 9x9 Sudoku: m=600, aux=300)."""
    return SATNetSolver(**kwargs)


@register_model(family="optlayers", task="constraint-satisfaction")
def optnet(**kwargs) -> OptNetSudoku:
    """OptNet's Sudoku QP (learned equality constraints, z >= 0)."""
    return OptNetSudoku(**kwargs)


@register_model(family="optlayers", task="constraint-satisfaction")
def mlp_csp(**kwargs) -> MLPSolver:
    """The explicit MLP baseline of the optimization layers."""
    return MLPSolver(**kwargs)


_OPTNET_PAPER = (
    "Amos, Kolter. OptNet: Differentiable Optimization as a Layer in Neural Networks. ICML 2017. "
    "arXiv:1703.00443"
)
_SATNET_PAPER = (
    "Wang, Donti, Wilder, Kolter. SATNet: Bridging deep learning and logical reasoning using a "
    "differentiable satisfiability solver. ICML 2019. arXiv:1905.12149"
)
_PARITY20 = {"length": 20, "n_train": 9000, "n_val": 500, "n_test": 1000}
_SUDOKU4 = {"box": 2, "n_train": 9000, "n_val": 500, "n_test": 1000, "clues": [6, 10]}
# 9x9: puzzles from the SATNet paper's generator; the cards also score the zoo's default ones
_SUDOKU9 = {"box": 3, "n_train": 9000, "n_val": 500, "n_test": 1000, "generator": "satnet"}
_SUDOKU9_UNIQUE = {"box": 3, "n_train": 9000, "n_val": 500, "n_test": 1000, "clues": [30, 40]}


def _puzzles(
    recipe: str, dataset: str, datamodule: str, args: dict, paper: str, sample: str | None = None
) -> dict:
    return dict(
        task="constraint-satisfaction",
        dataset=dataset,
        datamodule=datamodule,
        datamodule_args=dict(args),
        sample=sample or dataset,
        license="apache-2.0",
        paper=paper,
        recipe=f"recipes/optlayers/{recipe}.yaml",
    )


def _sudoku4(recipe: str) -> dict:
    return _puzzles(recipe, "sudoku4", "sudoku", _SUDOKU4, _OPTNET_PAPER)


def _sudoku9(recipe: str) -> dict:
    other = {
        "label": "of the zoo's default generator (30 to 40 givens, removed while the solution "
        "stays unique, so that many need more than propagation)",
        "datamodule_args": _SUDOKU9_UNIQUE,
    }
    return dict(
        _puzzles(recipe, "sudoku", "sudoku", _SUDOKU9, _SATNET_PAPER, sample="sudoku9"),
        card_other_data=other,
    )


def _parity(recipe: str) -> dict:
    return _puzzles(recipe, "parity20", "parity", _PARITY20, _SATNET_PAPER)


register_pretrained(
    {
        "satnet.parity": _parity("satnet.parity"),
        "mlp_csp.parity": _parity("mlp_csp.parity"),
        "optnet.sudoku4": dict(_sudoku4("optnet.sudoku4"), card_budgets=[2, 4, 6, 8]),
        "mlp_csp.sudoku4": _sudoku4("mlp_csp.sudoku4"),
        "mlp_csp.sudoku": _sudoku9("mlp_csp.sudoku"),
        "satnet.sudoku": dict(
            _sudoku9("satnet.sudoku"), card_budgets=[10, 20, 40], card_full=[100, 1e-6]
        ),  # fmt: skip
    }
)
