"""Constraint satisfaction: complete a partial assignment (Sudoku boards, parity bits) with a
model that maps ``(inputs, given)`` bits to every bit's probability (SATNet, OptNet, their MLP
baseline: :mod:`zoo.models.optlayers`).

Metrics: the fraction of puzzles solved exactly (every cell to find decoded right: a Sudoku
cell's digit is the argmax of its bits, a parity bit is rounded) and the fraction of the cells
to find that are right.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from ..models import create_model
from ..models.optlayers import decode_cells
from ._base import ZooTask
from ._spec import EvalResult, FiniteGuard, MetricSpec, TaskSpec, load_sample, register_task

__all__ = ["ConstraintSatisfaction", "ConstraintSatisfactionSpec", "PuzzleScore"]


class PuzzleScore:
    """Puzzles solved exactly and cells right, over the cells to find, accumulated by batch.

    Example:
        >>> import torch
        >>> s = PuzzleScore(cell_bits=1)
        >>> target = torch.tensor([[1.0, 0.0, 1.0], [1.0, 1.0, 0.0]])
        >>> given = torch.tensor([[True, True, False], [True, True, False]])
        >>> s.update(torch.tensor([[1.0, 0.0, 0.9], [1.0, 1.0, 0.7]]), given, target)
        >>> s.compute()
        {'solved': 50.0, 'cells': 50.0}
    """

    def __init__(self, cell_bits: int) -> None:
        self.cell_bits = cell_bits
        self.solved = self.puzzles = self.right = self.cells = 0

    def _cells(self, bits: Tensor) -> Tensor:
        return decode_cells(bits, self.cell_bits)

    def update(self, probs: Tensor, given: Tensor, target: Tensor) -> None:
        to_find = ~given.reshape(given.shape[0], -1, self.cell_bits)[..., 0]
        ok = (self._cells(probs) == self._cells(target)) | ~to_find
        self.solved += int(ok.all(1).sum())
        self.puzzles += ok.shape[0]
        self.right += int((ok & to_find).sum())
        self.cells += int(to_find.sum())

    def compute(self) -> dict[str, float]:
        return {
            "solved": round(100 * self.solved / max(self.puzzles, 1), 2),
            "cells": round(100 * self.right / max(self.cells, 1), 2),
        }


class ConstraintSatisfaction(ZooTask):
    """Train a constraint-satisfaction model on ``(inputs, given, target)`` batches.

    Args:
        arch: ``satnet``, ``optnet`` or ``mlp_csp``.
        model_args: Constructor arguments.
        loss: ``"bce"`` (binary cross-entropy of the bits to find, SATNet's) or ``"mse"`` (their
            squared error, OptNet's).
        lr: Peak learning rate.
        optimizer: timm optimizer name (timm's ``sgd`` is Nesterov SGD, ``momentum`` SGD with
            classical momentum).
        momentum: The optimizer's momentum where it has one (``None``: timm's default, 0.9);
            ``optimizer: momentum`` with ``momentum: 0`` is plain SGD, SATNet's parity setting.
        weight_decay: Weight decay.
        min_lr: Final learning rate of the cosine schedule (equal to ``lr``: constant).
        bf16: bfloat16 autocast (refused by the optimization layers' solvers: keep it off).
        init_from: Start from these weights (a zoo name, a folder or a ``.ckpt``).
        skip_unconverged: Skip the optimizer step of a batch whose solve did not converge.
        drop_unconverged: Leave the puzzles whose solve did not converge out of the training
            loss (their gradient is that of an unsettled solve); the rest of the batch still
            takes its step, which is skipped only when no puzzle's solve converged. Logs the
            fraction left out as ``train/dropped``. Refused with ``skip_unconverged`` (which
            skips the whole batch) and for a model without a solve (``mlp_csp``).

    Example:
        >>> from zoo.tasks.constraint_satisfaction import ConstraintSatisfaction
        >>> task = ConstraintSatisfaction(arch="mlp_csp", model_args={"n_bits": 64, "cell_bits": 4,
        ...                               "hidden": [8]})
        >>> type(task.model).__name__
        'MLPSolver'
    """

    def __init__(
        self,
        arch: str = "satnet",
        model_args: dict[str, Any] | None = None,
        loss: str = "bce",
        lr: float = 2e-3,
        optimizer: str = "adam",
        momentum: float | None = None,
        weight_decay: float = 0.0,
        min_lr: float = 2e-3,
        bf16: bool = False,
        init_from: str | None = None,
        skip_unconverged: bool = False,
        drop_unconverged: bool = False,
    ) -> None:
        super().__init__()
        if skip_unconverged and drop_unconverged:
            raise ValueError(
                "skip_unconverged skips the whole batch and drop_unconverged only its unsettled "
                "puzzles: set one of them"
            )
        if momentum is not None and not (isinstance(momentum, (int, float)) and 0 <= momentum < 1):
            raise ValueError(f"momentum must be in [0, 1) or None, got {momentum!r}")
        if loss not in ("bce", "mse"):
            raise ValueError(f"loss must be 'bce' or 'mse', got {loss!r}")
        if bf16:
            raise ValueError(
                "bf16: the optimization layers solve in float32/float64 (an interior point and "
                "the mixing method lose their accuracy in bfloat16); train with bf16=false"
            )
        self.save_hyperparameters()
        self.model = create_model(arch, **(model_args or {}))
        if drop_unconverged and self.model.inference_budget() is None:
            raise ValueError(
                f"drop_unconverged: {arch} is explicit (no solve whose convergence could be "
                "tested); train it without drop_unconverged"
            )

    def forward(self, inputs: Tensor, given: Tensor) -> Tensor:
        return self.model(inputs, given)

    def on_before_optimizer_step(self, optimizer) -> None:
        """Log the gradient's norm (``train/grad_norm``): a training that goes astray shows it."""
        norms = [p.grad.detach().norm() for p in self.parameters() if p.grad is not None]
        if norms:
            self.log("train/grad_norm", torch.stack(norms).norm(), on_step=True, on_epoch=False)

    def _common_step(self, batch, stage: str) -> Tensor:
        inputs, given, target = batch
        probs = self.model(inputs, given)
        find = ~given
        if self.hparams.loss == "bce":
            per_bit = F.binary_cross_entropy(probs.clamp(1e-6, 1 - 1e-6), target, reduction="none")
        else:
            per_bit = (probs - target) ** 2
        bs = inputs.shape[0]
        if stage == "train" and self.hparams.get("drop_unconverged", False):
            settled = self.model.cost().converged_mask
            if settled is not None:
                find = find & settled.to(find.device)[:, None]
                self.log("train/dropped", 1.0 - settled.float().mean(), batch_size=bs)
        loss = (per_bit * find).sum() / find.sum().clamp_min(1)
        score = PuzzleScore(self.model.cell_bits)
        score.update(probs.detach(), given, target)
        for k, v in score.compute().items():
            self.log(f"{stage}/{k}", v, prog_bar=k == "solved", batch_size=bs)
        self.log(f"{stage}/loss", loss.detach(), prog_bar=stage == "train", batch_size=bs)
        self._log_nfe(stage, bs)
        return loss

    def _skip_reason(self, loss: Tensor, cost) -> str | None:
        reason = super()._skip_reason(loss, cost)
        if reason is None and self.hparams.get("drop_unconverged", False):
            settled = None if cost is None else cost.converged_mask
            if settled is not None and not bool(settled.any()):
                return "no puzzle's solve converged (drop_unconverged)"
        return reason


class ConstraintSatisfactionSpec(TaskSpec):
    """Puzzles solved exactly (primary) and cells right, on every test puzzle.

    Example:
        >>> from zoo.tasks import get_task
        >>> spec = get_task("constraint-satisfaction")
        >>> spec.primary, [m.key for m in spec.metrics]
        ('solved', ['solved', 'cells'])
    """

    name = "constraint-satisfaction"
    title = "Constraint Satisfaction"
    pipeline_tag = "other"
    tags = ("optimization-layers", "satnet", "optnet", "sudoku")
    unit = "puzzle"
    metrics = (
        MetricSpec("solved", "puzzles solved %", True, "accuracy"),
        MetricSpec("cells", "cells right %", True, "accuracy"),
    )
    primary = "solved"
    splits = ("test", "val", "train")
    lightning_module = "zoo.tasks.constraint_satisfaction:ConstraintSatisfaction"
    default_sample_size = 200

    def eval_batches(self, model, protocol, split, sample, limit, data_dir, batch_size):
        if sample:
            d = load_sample(protocol)
            data = [torch.from_numpy(d[k]) for k in ("inputs", "given", "target")]
            data = [data[0].float(), data[1].bool(), data[2].float()]
        else:
            data = list(protocol.datamodule_obj(data_dir).eval_split(split))
        if limit:
            data = [t[:limit] for t in data]
        return _batches(data, batch_size)

    def evaluate(self, model, batches, protocol, device, clock) -> EvalResult:
        from tqdm import tqdm

        guard = FiniteGuard("bit probabilities")
        score, nfe, n = PuzzleScore(model.cell_bits), [], 0
        for inputs, given, target in tqdm(batches, desc="eval", unit="batch"):
            inputs, given, target = inputs.to(device), given.to(device), target.to(device)
            with clock:
                probs = model(inputs, given)
            guard(probs)
            score.update(probs, given, target)
            nfe.append(model.cost().nfe_forward)
            n += inputs.shape[0]
        guard.check(getattr(model, "pretrained_cfg", {}).get("name", type(model).__name__))
        return EvalResult(
            metrics=score.compute(),
            num_samples=n,
            nfe_mean=round(sum(nfe) / len(nfe), 1) if any(nfe) else None,
            seconds=clock.seconds,
        )

    def protocol_note(self, protocol) -> str:
        return (
            "every puzzle of the split; a puzzle is solved when every cell to find is right (a "
            "Sudoku cell's digit: the argmax of its bits; a parity bit: rounded); cells right "
            "over the cells to find"
        )

    def build_sample(self, protocol, data_dir, out) -> str:
        import numpy as np

        inputs, given, target = protocol.datamodule_obj(data_dir).eval_split("test")
        n = int(protocol.options.get("sample_size", self.default_sample_size))
        np.savez_compressed(
            out,
            inputs=inputs[:n].numpy().astype(np.uint8),
            given=given[:n].numpy(),
            target=target[:n].numpy().astype(np.uint8),
        )
        return f"{min(n, len(inputs))} puzzles"

    def options(self, cfg: dict) -> dict:
        return {k: cfg[k] for k in ("sample_size",) if k in cfg}

    def smoke_model_args(self, arch: str) -> dict:
        return {
            "satnet": {"n_bits": 16, "m": 8, "aux": 2, "cell_bits": 4},
            "optnet": {"box": 2},
            "mlp_csp": {"n_bits": 16, "hidden": [8], "cell_bits": 4},
        }.get(arch, {})

    def smoke_inputs(self, model):
        n = model.n_bits or 5
        given = torch.zeros(2, n, dtype=torch.bool)
        given[:, : n // 2] = True
        inputs = torch.zeros(2, n)
        inputs[:, 0] = 1.0
        return (inputs, given), (2, n)

    def card_facts(self, name: str, model, info: dict) -> dict:
        """Adds, where the pretrained table names other puzzles (``card_other_data``), the
        model's score on their test split at its shipped budget."""
        facts = super().card_facts(name, model, info)
        other = info.get("card_other_data")
        if other:
            from ..data import build_datamodule
            from ..evaluate import _Clock

            split = build_datamodule(info["datamodule"], other["datamodule_args"]).eval_split(
                "test"
            )
            batches = _batches(split, 100)
            dev = next(model.parameters()).device
            with torch.no_grad():
                res = self.evaluate(model.eval(), batches, None, dev, _Clock(dev))
            facts["other_data"] = {
                "datamodule_args": dict(other["datamodule_args"]),
                "num_samples": res.num_samples,
                "solved": round(res.metrics["solved"], 2),
                "cells": round(res.metrics["cells"], 2),
                "nfe_mean": res.nfe_mean,
            }
        return facts

    def card_extra(self, name: str, facts: dict, info: dict) -> list[str]:
        o = facts.get("other_data")
        if not o:
            return []
        label = (info.get("card_other_data") or {}).get("label", "of other data")
        nfe = f", {o['nfe_mean']:g} sweeps on average" if o.get("nfe_mean") else ""
        return [
            "## On harder puzzles",
            "",
            f"On the {o['num_samples']:,} test puzzles {label}, at the shipped budget: "
            f"**{o['solved']:.1f}%** solved and {o['cells']:.2f}% of the cells right{nfe} "
            f"(`zoo card {name}` measures it; the data: "
            f"`SudokuDataModule(**{o['datamodule_args']})`).",
            "",
        ]

    def card_use(self, name: str, facts: dict, info: dict) -> list[str]:
        return [
            "inputs, given, target = zoo.example_batch(model, 4)  # 4 test puzzles of the sample",
            "probs = model(inputs, given)  # every bit's probability; the given bits unchanged",
            "solved = (model.decode(probs) == model.decode(target)).all(1)",
            'print(f"{int(solved.sum())} of 4 solved")',
        ]


def _batches(data, batch_size: int) -> list[tuple]:
    """``(inputs, given, target)`` cut into batches of ``batch_size`` puzzles."""
    n = len(data[0])
    return [tuple(t[i : i + batch_size] for t in data) for i in range(0, n, batch_size)]


register_task(ConstraintSatisfactionSpec())
