"""Lightning callbacks: solver statistics, a final last.ckpt, and step timing."""

from __future__ import annotations

import lightning.pytorch as pl
import torch

__all__ = ["SolverStatsCallback", "SaveLastOnTrainEnd", "StepTimer", "StopAtStep"]


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
            self._log_backward(pl_module)

    @staticmethod
    def _log_backward(pl_module) -> None:
        """The last backward solve of an implicit gradient (``ImplicitGrad.last_stats``):
        ``train/backward_nfe``, ``..._residual_max``, ``..._converged_frac``."""
        from .solvers import GradMode

        model = getattr(pl_module, "model", None)
        if not isinstance(model, torch.nn.Module):
            return
        for m in model.modules():
            grad = getattr(m, "grad", None)
            stats = getattr(grad, "last_stats", None) if isinstance(grad, GradMode) else None
            if stats is not None and stats.n_iter:
                for k, v in stats.summary().items():
                    if k != "solve_time":
                        pl_module.log(f"train/backward_{k}", v, on_step=True, on_epoch=False)
                return

    def on_validation_batch_end(
        self, trainer, pl_module, outputs, batch, batch_idx, dataloader_idx=0
    ):
        self._log(pl_module, "val", on_step=False)


class SaveLastOnTrainEnd(pl.Callback):
    """Write ``<dirpath>/last.ckpt`` when training ends.

    ``ModelCheckpoint(every_n_train_steps=N, save_last=True)`` only saves every N steps, so the
    final steps of a run would be missing from ``last.ckpt``; this closes that gap. A run that
    stopped mid-epoch (``max_time``, ``max_steps``) is saved as mid-epoch, so that
    ``--ckpt_path last`` finishes that epoch instead of skipping the rest of it. A
    ``fast_dev_run`` saves nothing.

    Args:
        dirpath: The checkpoint folder; by default the ModelCheckpoint's folder (``zoo fit``
            sets it to ``<default_root_dir>/checkpoints``).
    """

    def __init__(self, dirpath: str | None = None) -> None:
        self.dirpath = dirpath

    def on_train_end(self, trainer, pl_module) -> None:
        from pathlib import Path

        if trainer.fast_dev_run or trainer.sanity_checking:
            return  # a dry run never replaces a real state (Lightning saves none then either)
        folder = self.dirpath
        if folder is None:  # the ModelCheckpoint's folder, else <default_root_dir>/checkpoints
            cb = trainer.checkpoint_callback
            folder = getattr(cb, "dirpath", None) or Path(trainer.default_root_dir) / "checkpoints"
        path = str(Path(folder) / "last.ckpt")
        # Lightning counts the epoch as completed when training stops early (max_time,
        # max_steps, should_stop), so resuming from this file would skip the rest of that
        # epoch. Save the progress as a mid-epoch ModelCheckpoint would: epoch started, not done.
        fit = trainer.fit_loop
        progress = fit.epoch_progress
        mid_epoch = (
            not fit.epoch_loop.batch_progress.is_last_batch
            and fit.epoch_loop.batch_progress.current.completed > 0
            and progress.current.completed == progress.current.started > 0
        )
        here = Path(folder).resolve()
        for cb in trainer.checkpoint_callbacks:  # Lightning >= 2.6 would save it again as last-v1
            dirpath = getattr(cb, "dirpath", None)
            if (
                dirpath
                and Path(dirpath).resolve() == here
                and hasattr(cb, "_last_checkpoint_saved")
            ):
                cb._last_checkpoint_saved = True
        rewound = (progress.total, progress.current) if mid_epoch else ()
        for p in rewound:
            p.completed -= 1
            p.processed -= 1
        try:
            trainer.save_checkpoint(path, weights_only=False)
        finally:
            for p in rewound:
                p.completed += 1
                p.processed += 1


class StopAtStep(pl.Callback):
    """Stop training after ``step`` optimizer steps, leaving the schedule where ``max_epochs``
    laid it out (``trainer.max_steps`` would shorten the cosine schedule to ``step``).

    Matches another run's step count without changing its learning-rate path: a stage that must
    stop where an earlier run's wall-time budget stopped it, for a like-for-like comparison.

    Args:
        step: Optimizer steps after which the run ends (its last state is saved as usual).
    """

    def __init__(self, step: int) -> None:
        if isinstance(step, bool) or not isinstance(step, int) or step < 1:
            raise ValueError(f"step must be an integer >= 1, got {step!r}")
        self.step = step

    def _check(self, trainer) -> None:
        if trainer.global_step >= self.step:
            trainer.should_stop = True

    def on_train_start(self, trainer, pl_module):
        self._check(trainer)

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        self._check(trainer)


class StepTimer(pl.Callback):
    """Measure wall-clock seconds per training step, after ``skip`` warm-up steps.

    Logs ``train/step_time_s`` every ``every_n_steps`` steps and prints one line at the end of
    training (``step_time_s=<mean> steps=<n>``), which is what a launcher parses to size a run
    to a time budget. GPU work is synchronized before each reading.

    Args:
        skip: Steps ignored at the start (allocator, cuDNN autotuning, pretraining switch).
        every_n_steps: Logging interval in training steps.
    """

    def __init__(self, skip: int = 10, every_n_steps: int = 50) -> None:
        self.skip = skip
        self.every_n_steps = every_n_steps
        self._t0: float | None = None
        self._pause: float | None = None
        self._n = 0

    @staticmethod
    def _now(pl_module) -> float:
        import time

        import torch

        if pl_module.device.type == "cuda":
            torch.cuda.synchronize(pl_module.device)
        return time.perf_counter()

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        step = trainer.global_step
        if step == self.skip:
            self._t0, self._n = self._now(pl_module), 0
        elif self._t0 is not None:
            self._n += 1
            if step % self.every_n_steps == 0:
                pl_module.log("train/step_time_s", self.mean(pl_module), on_step=True)

    def on_validation_start(self, trainer, pl_module):
        # validation time is not step time: restart the clock after it
        self._pause = self._now(pl_module) if self._t0 is not None else None

    def on_validation_end(self, trainer, pl_module):
        if self._pause is not None and self._t0 is not None:
            self._t0 += self._now(pl_module) - self._pause

    def mean(self, pl_module) -> float:
        return (self._now(pl_module) - self._t0) / max(self._n, 1)

    def on_train_end(self, trainer, pl_module) -> None:
        if self._t0 is not None and self._n > 0:
            print(f"step_time_s={self.mean(pl_module):.5f} steps={self._n}", flush=True)
