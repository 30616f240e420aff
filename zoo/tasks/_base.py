"""What every zoo task shares: stage dispatch, bf16 autocast, timm optimizer + cosine schedule."""

from __future__ import annotations

import math

import lightning.pytorch as pl
import torch

__all__ = ["ZooTask"]


_JAC_SEED = 0x5EED  # the jac_reg_freq draws: a fixed stream indexed by the step


class ZooTask(pl.LightningModule):
    """Subclasses implement ``_common_step(batch, stage)`` and ``_warmup_steps()``; their
    hyperparameters include ``optimizer``, ``lr``, ``weight_decay``, ``min_lr`` and ``bf16``, and
    optionally ``init_from`` (weights to start from, see ``zoo.training.init_weights_from``)."""

    def _autocast(self):
        return torch.autocast(
            self.device.type, dtype=torch.bfloat16, enabled=bool(self.hparams.bf16)
        )

    def configure_model(self) -> None:
        self._apply_init_from()

    def _show_solver_warnings_once(self) -> None:
        # a budget-limited solve warns whenever it stops short of its tolerance: in training
        # that is every step, and the solver statistics are logged (SolverStatsCallback); show
        # each such warning once per run
        import warnings

        from ..solvers import ConvergenceWarning
        from ..solvers._grad import GradientWarning

        self._warnings_once = warnings.catch_warnings()
        self._warnings_once.__enter__()
        for category in (ConvergenceWarning, GradientWarning):
            warnings.filterwarnings("once", category=category)

    def on_fit_end(self) -> None:
        ctx = getattr(self, "_warnings_once", None)
        if ctx is not None:
            self._warnings_once = None
            ctx.__exit__(None, None, None)

    def on_exception(self, exception: BaseException) -> None:
        self.on_fit_end()

    def _apply_init_from(self) -> None:
        # runs in configure_model, before Lightning restores a resumed run, so --ckpt_path wins
        source = self.hparams.get("init_from")
        if not source or self.model is None or getattr(self, "_initialized_from", None):
            return
        if self._trainer is None or self.trainer.state.fn != "fit":
            return
        from ..training import init_weights_from

        report = init_weights_from(self.model, source)
        self._initialized_from = source
        kept = report["kept_init"]
        msg = f"init_from {source}: {len(report['loaded'])} tensors loaded"
        if kept:
            msg += f"; {len(kept)} keep their initialization ({', '.join(kept[:4])})"
        print(msg, flush=True)

    def on_save_checkpoint(self, checkpoint: dict) -> None:
        # the global RNG (dropout, augmentation) at this step, so a resumed run draws the same
        # numbers as an uninterrupted one (a tensor: readable with weights_only=True)
        checkpoint["zoo_rng"] = {"torch": torch.get_rng_state()}

    def on_load_checkpoint(self, checkpoint: dict) -> None:
        state = checkpoint.get("zoo_rng")
        if state is not None:
            torch.set_rng_state(state["torch"])
        shrunk = checkpoint.get("zoo_shrunk_state")
        if shrunk:  # zoo shrink-state: say the resume is not bit-exact, and why
            print(
                f"resuming from a shrunk state: its optimizer moments were stored in "
                f"{shrunk.get('moments')} (zoo shrink-state); they continue in full precision",
                flush=True,
            )

    def _common_step(self, batch, stage: str):  # pragma: no cover - abstract
        raise NotImplementedError

    def _warmup_steps(self) -> int:
        return 0

    # ----- shared by the image tasks (hyperparameters warmup_epochs, pretrain_steps, ...) -----
    def _warmup_from_epochs(self) -> int:
        """``warmup_epochs`` in optimizer steps."""
        epochs = max(int(self.trainer.max_epochs or 1), 1)
        return self.hparams.warmup_epochs * max(
            int(self.trainer.estimated_stepping_batches // epochs), 1
        )

    def _pretraining(self) -> bool:
        """Training with the shallow unrolled cell (MDEQ's first ``pretrain_steps``)."""
        return self.training and self.global_step < self.hparams.get("pretrain_steps", 0)

    def _jac_reg_weight_now(self) -> float:
        """The Jacobian term's weight at this training step (0 = no term this step).

        ``jac_reg_weight``, plus 0.1 for every ``jac_reg_increment`` steps after pretraining
        (locuslab/deq's ``jac_incremental``); 0 in pretraining, and on the steps that the
        ``jac_reg_freq`` draw leaves out (its ``jac_loss_freq``). The draw depends on the step
        alone, so a resumed run repeats it.
        """
        hp = self.hparams
        w = float(hp.get("jac_reg_weight", 0.0))
        if w <= 0 or self._pretraining():
            return 0.0
        step, inc = int(self.global_step), int(hp.get("jac_reg_increment", 0))
        if inc > 0:
            w += 0.1 * (step // inc - int(hp.get("pretrain_steps", 0)) // inc)
        freq = float(hp.get("jac_reg_freq", 1.0))
        if freq < 1.0:
            draw = torch.rand((), generator=torch.Generator().manual_seed(_JAC_SEED + step))
            if float(draw) >= freq:
                return 0.0
        return w

    def _arm_jac_reg(self) -> float:
        """Before a training forward: this step's Jacobian weight, and the model's equilibrium
        layers told whether to compute the term at all (a step without it skips its cost)."""
        w = self._jac_reg_weight_now()
        if float(self.hparams.get("jac_reg_freq", 1.0)) < 1.0:  # else the term is never skipped
            for mod in self.model.modules():
                if hasattr(mod, "jac_reg_enabled"):
                    mod.jac_reg_enabled = w > 0
        return w

    def _add_jac_reg(self, loss, bs: int, weight: float | None = None):
        """``loss`` plus the weighted Jacobian regularizer of the last forward (when on)."""
        jac = getattr(self.model, "jac_loss", None)
        w = self._jac_reg_weight_now() if weight is None else weight
        if w > 0 and jac is not None:
            loss = loss + w * jac
            self.log("train/jac_loss", jac.detach(), batch_size=bs)
            self.log("train/jac_weight", w, batch_size=bs)
        return loss

    def _log_nfe(self, stage: str, bs: int) -> None:
        nfe = self.model.cost().nfe_forward if hasattr(self.model, "cost") else 0
        if nfe:
            self.log(f"{stage}/nfe", float(nfe), batch_size=bs)

    def training_step(self, batch, batch_idx):
        """One step that never kills the run: a non-finite loss or an ODE solve over its step
        budget skips the optimizer step (with a warning), and so does an unconverged fixed-point
        solve when ``skip_unconverged`` is set; every step logs ``train/converged`` and
        ``train/residual`` (implicit models: the largest final relative residual) and
        ``train/skipped``."""
        import warnings

        from ..nn import ODEBudgetError

        try:
            loss = self._common_step(batch, "train")
        except ODEBudgetError as e:
            warnings.warn(f"step {self.global_step}: {e}; the step is skipped", stacklevel=2)
            self.log("train/skipped", 1.0, on_step=True, on_epoch=False)
            return None
        cost = self.model.cost() if hasattr(self.model, "cost") else None
        converged = None if cost is None else cost.converged
        if converged is not None:
            self.log("train/converged", float(converged), on_step=True, on_epoch=False)
        if cost is not None and cost.residual is not None:
            self.log("train/residual", cost.residual, on_step=True, on_epoch=False)
        skip = self._skip_reason(loss, cost)
        self.log("train/skipped", float(skip is not None), on_step=True, on_epoch=False)
        if skip:
            warnings.warn(
                f"step {self.global_step}: {skip}; the optimizer step is skipped", stacklevel=2
            )
            return None  # Lightning skips backward and the optimizer step
        return loss

    def _skip_reason(self, loss: torch.Tensor, cost) -> str | None:
        """Why this step's optimizer step is skipped (``None``: it is taken). A task may add
        its own reasons; the shared ones are a non-finite loss and, with ``skip_unconverged``,
        a forward solve that missed its tolerance."""
        if not math.isfinite(float(loss.detach())):
            return "the loss is not finite"
        converged = None if cost is None else cost.converged
        if converged is False and self.hparams.get("skip_unconverged", False):
            return "the forward solve did not converge (skip_unconverged)"
        return None

    def validation_step(self, batch, batch_idx):
        self._common_step(batch, "val")

    def test_step(self, batch, batch_idx):
        self._common_step(batch, "test")

    def configure_optimizers(self):
        from timm.optim import create_optimizer_v2
        from timm.scheduler import CosineLRScheduler

        hp = self.hparams
        for key in ("lr", "min_lr"):
            v = hp.get(key)
            if v is not None and (
                not math.isfinite(float(v)) or float(v) < 0 or (key == "lr" and not v)
            ):
                raise ValueError(
                    f"{key}={v!r}: a learning rate is a positive finite number "
                    f"({'> 0' if key == 'lr' else '>= 0'}), e.g. 1e-3"
                )
        extra = {} if hp.get("momentum") is None else {"momentum": float(hp.momentum)}
        opt = create_optimizer_v2(
            self.model, opt=hp.optimizer, lr=hp.lr, weight_decay=hp.weight_decay, **extra
        )
        total = self._total_steps()
        sched = CosineLRScheduler(
            opt,
            t_initial=total,
            lr_min=hp.min_lr,
            warmup_t=self._warmup_steps(),
            warmup_lr_init=hp.lr * 0.01,
            t_in_epochs=False,
        )
        return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "interval": "step"}}

    def _total_steps(self) -> int:
        """Optimizer steps of the whole run (the cosine schedule's length).

        A run bounded only by ``max_time`` has no known length: that is fine for a constant
        learning rate (``min_lr >= lr``), and an error otherwise, since a cosine schedule needs
        its length."""
        steps = float(self.trainer.estimated_stepping_batches)
        if math.isfinite(steps):
            return max(int(steps), 1)
        if self.hparams.min_lr >= self.hparams.lr:
            return 10**9  # a constant schedule: its length changes nothing
        raise ValueError(
            "the learning-rate schedule needs the run's length, but the trainer has no "
            "max_steps or max_epochs (only max_time); set trainer.max_steps, or make the "
            "learning rate constant with model.min_lr equal to model.lr"
        )

    def on_fit_start(self) -> None:
        # ``estimated_stepping_batches`` (the schedules) built the training loader before a
        # resumed run's loop state was restored, and Lightning then never hands that loader its
        # saved position. Drop it: the fit loop rebuilds it after the restore, so a run killed
        # mid-epoch resumes at the batch where it stopped (zoo.data._image.ResumableLoader).
        self.trainer.fit_loop._combined_loader = None
        self._show_solver_warnings_once()

    def lr_scheduler_step(self, scheduler, metric) -> None:
        scheduler.step_update(num_updates=self.global_step)
