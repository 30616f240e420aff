"""Lightning callbacks: solver statistics logging."""

from __future__ import annotations

import lightning.pytorch as pl

__all__ = ["SolverStatsCallback", "SaveLastOnTrainEnd"]


class SolverStatsCallback(pl.Callback):
    """Log the forward solver's NFE, residual and converged fraction of implicit models.

    Looks for ``pl_module.model.solver_stats`` (a :class:`~zoo.solvers.SolverStats`), and for
    ODE models ``pl_module.model.nfe`` (a dict of counts).

    Args:
        every_n_steps: Logging interval in training steps.
    """

    def __init__(self, every_n_steps: int = 10) -> None:
        self.every_n_steps = every_n_steps

    def _log(self, pl_module, stage: str, on_step: bool) -> None:
        model = getattr(pl_module, "model", None)
        stats = getattr(model, "solver_stats", None)
        if stats is not None and stats.n_iter:
            for k, v in stats.summary().items():
                pl_module.log(
                    f"{stage}/solver_{k}",
                    v,
                    on_step=on_step,
                    on_epoch=not on_step,
                    prog_bar=k == "nfe" and stage == "train",
                )
        nfe = getattr(model, "nfe", None)
        if isinstance(nfe, dict):
            for k, v in nfe.items():
                pl_module.log(f"{stage}/nfe_{k}", float(v), on_step=on_step, on_epoch=not on_step)

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        if trainer.global_step % self.every_n_steps == 0:
            self._log(pl_module, "train", on_step=True)

    def on_validation_batch_end(
        self, trainer, pl_module, outputs, batch, batch_idx, dataloader_idx=0
    ):
        self._log(pl_module, "val", on_step=False)


class SaveLastOnTrainEnd(pl.Callback):
    """Write ``<dirpath>/last.ckpt`` when training ends.

    ``ModelCheckpoint(every_n_train_steps=N, save_last=True)`` only saves every N steps, so the
    final steps of a run would be missing from ``last.ckpt``; this closes that gap.

    Args:
        dirpath: The checkpoint folder (the recipe's ModelCheckpoint dirpath).
    """

    def __init__(self, dirpath: str) -> None:
        self.dirpath = dirpath

    def on_train_end(self, trainer, pl_module) -> None:
        from pathlib import Path

        trainer.save_checkpoint(str(Path(self.dirpath) / "last.ckpt"))
