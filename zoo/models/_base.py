"""Base class of every zoo model: config capture, safetensors I/O, Hub mixin, solver budget."""

from __future__ import annotations

import hashlib
import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from huggingface_hub import PyTorchModelHubMixin
from torch import nn

__all__ = ["Cost", "ZooModel", "ImplicitModelMixin", "check_images", "sha256_file"]

WEIGHTS_NAME = "model.safetensors"
CONFIG_NAME = "config.json"


def sha256_file(path: str | Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


@dataclass(frozen=True)
class Cost:
    """What the last forward (and backward) call cost, the same record for every family.

    Attributes:
        nfe_forward: Cell / vector-field evaluations of the last forward solve (0: explicit).
        nfe_backward: Evaluations of the backward solve since then (implicit gradient, adjoint).
        residual: Largest final relative residual of a fixed-point solve (``None`` for ODEs and
            explicit models).
        converged: Whether every sample of the solve met its tolerance (``None`` when there is
            no such test: an ODE solved to its tolerances, or an explicit model).
        converged_mask: Which samples met it, ``(B,)`` booleans, where the model reports it
            per sample (the optimization layers; ``None`` otherwise).
    """

    nfe_forward: int = 0
    nfe_backward: int = 0
    residual: float | None = None
    converged: bool | None = None
    converged_mask: torch.Tensor | None = None


def check_images(model, x, multiple: int = 1, min_size: int = 1):
    """Clear errors for the image batches users get wrong; returns ``x`` in the model's dtype.

    Checks a 4-D floating-point tensor with ``model.in_chans`` channels, height and width at
    least ``min_size`` and multiples of ``multiple``, and finite values. Shared by every image
    family (MDEQ, its segmenters, ODE-Nets), so they fail the same way.
    """
    arch = getattr(model, "arch", type(model).__name__)
    c = model.in_chans
    cfg = getattr(model, "pretrained_cfg", None) or {}
    hint = (
        f"normalized with mean={cfg['mean']} and std={cfg['std']} (model.pretrained_cfg)"
        if cfg.get("mean") is not None
        else "normalized as in training"
    )
    if not isinstance(x, torch.Tensor) or x.dim() != 4:
        shape = tuple(x.shape) if isinstance(x, torch.Tensor) else type(x).__name__
        raise ValueError(
            f"{arch} expects a (batch, channels, H, W) image tensor, (batch, {c}, H, W) here; "
            f"got {shape}"
        )
    if x.dtype == torch.uint8:
        raise ValueError(
            f"{arch} got uint8 images: convert to float in [0, 1] and normalize them, {hint}"
        )
    if not x.is_floating_point():
        raise ValueError(f"{arch} expects floating-point images, got {x.dtype}")
    if x.shape[1] != c:
        raise ValueError(
            f"{arch} expects {c} input channel(s), got {x.shape[1]}: images of shape "
            f"(batch, {c}, H, W), {hint}; got {tuple(x.shape)}"
        )
    if min(x.shape[-2:]) < min_size:
        raise ValueError(
            f"{arch}: images must be at least {min_size}x{min_size}, got {tuple(x.shape[-2:])}"
        )
    if x.shape[2] % multiple or x.shape[3] % multiple:
        raise ValueError(
            f"{arch}: image height and width must be multiples of {multiple}; got "
            f"{tuple(x.shape[2:])}. Pad the images (torch.nn.functional.pad) or resize them"
        )
    if x.numel() and not bool(torch.isfinite(x).all()):
        raise ValueError(f"{arch} images must be finite: NaN or inf found in the input")
    if x.numel() and cfg.get("mean") and cfg.get("std"):
        # normalized [0, 1] images lie within ((0 - mean) / std, (1 - mean) / std); raw 0-255
        # pixels are about 100 times beyond it
        reach = max(max(abs(-m / s), abs((1 - m) / s)) for m, s in zip(cfg["mean"], cfg["std"]))
        top = float(x.detach().abs().amax())
        if top > 4 * reach + 1:
            raise ValueError(
                f"{arch}: input values reach {top:g}, far outside normalized images (|x| <= "
                f"{reach:.2g}): these look like raw 0-255 pixels. Scale them to [0, 1] and "
                f"normalize them, {hint}"
            )
    dtype = next(model.parameters()).dtype
    return x if x.dtype == dtype or torch.is_autocast_enabled() else x.to(dtype)


def _check_budget(max_iter, tol, rtol=None, atol=None) -> None:
    if max_iter is not None and (isinstance(max_iter, bool) or not isinstance(max_iter, int)):
        raise ValueError(f"max_iter must be a positive integer, got {max_iter!r}")
    if max_iter is not None and max_iter < 1:
        raise ValueError(f"max_iter must be a positive integer, got {max_iter}")
    for k, v in (("tol", tol), ("rtol", rtol), ("atol", atol)):
        if v is None:
            continue
        if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v) or v <= 0:
            raise ValueError(f"{k} must be a positive finite number, got {v!r}")


class ZooModel(
    nn.Module,
    PyTorchModelHubMixin,
    library_name="implicit-zoo",
    repo_url="https://github.com/implicit-zoo/implicit-zoo",
    tags=["implicit-zoo", "deep-implicit-models"],
):
    """An ``nn.Module`` that knows its architecture name, its constructor arguments and its
    pretrained config, and saves/loads as ``config.json`` + ``model.safetensors`` (+ card).

    Subclasses call ``self._capture(locals())`` at the top of ``__init__``.
    """

    arch: str = "zoo_model"
    pretrained_cfg: dict[str, Any]

    def _capture(self, args: dict[str, Any]) -> None:
        kw = {k: v for k, v in args.items() if k not in ("self", "__class__")}
        self.model_args = _jsonable(kw)
        self.pretrained_cfg = {}
        self.tokenizer: dict | None = (
            None  # {"level": "word"|"char", "vocab": [...]} for text models
        )

    # ----- solver budget and cost (the same contract for every family) -------------------------
    def _ode_blocks(self) -> list:
        from ..nn import ODEBlock

        return [m for m in self.modules() if isinstance(m, ODEBlock)]

    def set_inference_budget(
        self,
        max_iter: int | None = None,
        tol: float | None = None,
        rtol: float | None = None,
        atol: float | None = None,
    ) -> None:
        """Change the test-time budget without retraining.

        Implicit (DEQ) models: ``max_iter`` solver iterations and/or tolerance ``tol``. ODE
        models: ``rtol``/``atol`` (``tol`` sets both) of adaptive solves, or ``max_iter`` RK4
        steps of a fixed-grid solve.

        Raises:
            ValueError: for a bad value, for a budget the model cannot use (a tolerance on a
                fixed grid), or for any budget given to an explicit model: never ignored.
        """
        _check_budget(max_iter, tol, rtol, atol)
        if all(v is None for v in (max_iter, tol, rtol, atol)):
            return
        blocks = self._ode_blocks()
        if not blocks:
            raise ValueError(
                f"{type(self).__name__} has no test-time budget to set (no fixed-point solver and "
                "no ODEBlock: an explicit model, or fixed recurrent steps); drop max_iter / tol"
            )
        rtol = tol if rtol is None else rtol
        atol = tol if atol is None else atol
        params = [p for p in self.parameters() if p.is_floating_point()]
        if params and (rtol is not None or atol is not None):
            eps = torch.finfo(params[0].dtype).eps / 10  # an order below machine epsilon
            low = [
                f"{k}={v:g}"
                for k, v in (("rtol", rtol), ("atol", atol))
                if v is not None and v < eps
            ]
            if low:
                raise ValueError(
                    f"{', '.join(low)} is below the precision of this {params[0].dtype} model "
                    f"(a tenth of its machine epsilon: {eps:.2g}): an adaptive solve cannot meet it and would run "
                    f"to its step budget. Use a tolerance >= {eps:.2g}, or cast the model to "
                    "float64 first (model.double()) for tighter solves"
                )
        for b in blocks:
            if b.grid_steps:
                if rtol is not None or atol is not None:
                    raise ValueError(
                        f"{type(self).__name__} solves its ODE on a fixed grid of {b.grid_steps} "
                        "RK4 steps: set the number of steps (max_iter), not a tolerance"
                    )
                if max_iter is not None:
                    b.grid_steps = int(max_iter)
            else:
                if max_iter is not None:
                    raise ValueError(
                        f"{type(self).__name__} solves its ODE adaptively ({b.method}): set "
                        "rtol/atol (or tol), not max_iter"
                    )
                b.rtol = b.rtol if rtol is None else float(rtol)
                b.atol = b.atol if atol is None else float(atol)

    def inference_budget(self) -> dict[str, Any] | None:
        """The current test-time budget (``None`` for an explicit model)."""
        blocks = self._ode_blocks()
        if not blocks:
            return None
        b = blocks[-1]
        if b.grid_steps:
            return {"max_iter": b.grid_steps, "method": "rk4 grid"}
        return {"rtol": b.rtol, "atol": b.atol, "method": b.method}

    def cost(self) -> Cost:
        """The :class:`Cost` of the last call: NFE forward/backward, residual, converged."""
        fwd = bwd = 0
        blocks = self._ode_blocks()
        inside = {id(m) for b in blocks for m in b.modules()}  # counted by the block itself
        for m in self.modules():
            n = m.__dict__.get("nfe")
            if isinstance(n, int) and id(m) not in inside:  # recurrent ODE steppers' counters
                fwd += n
        for b in blocks:
            fwd += b.nfe_forward
            bwd += b.nfe_backward
        return Cost(nfe_forward=fwd, nfe_backward=bwd)

    # ----- serialization -----------------------------------------------------------------------
    def zoo_config(self) -> dict[str, Any]:
        arch = getattr(self, "entry_point", None)
        if arch is None:
            raise ValueError(
                "save a model built by zoo.create_model/zoo.load (it knows its entry point)"
            )
        cfg = {
            "architecture": arch,
            "model_class": type(self).__name__,
            "model_args": self.model_args,
        }
        if self.pretrained_cfg:
            cfg["pretrained_cfg"] = {k: v for k, v in self.pretrained_cfg.items() if k != "sha256"}
        if getattr(self, "tokenizer", None):
            cfg["tokenizer"] = self.tokenizer
        return cfg

    def _save_pretrained(self, save_directory: Path) -> None:
        from safetensors.torch import load_file, save_file, save_model

        save_directory = Path(save_directory)
        path = str(save_directory / WEIGHTS_NAME)
        # save_model stores tied tensors (e.g. embedding = softmax weights) once, and lists each
        # dropped alias in the header's metadata, in an order that changes from run to run.
        # Rewritten without those aliases, the same weights always give the same bytes (and
        # sha256); loading re-ties them from the model's own structure.
        save_model(self, path, metadata={"format": "pt"})
        save_file(load_file(path), path, metadata={"format": "pt"})
        cfg = self.zoo_config()
        cfg.setdefault("pretrained_cfg", {})["sha256"] = sha256_file(save_directory / WEIGHTS_NAME)
        (save_directory / CONFIG_NAME).write_text(json.dumps(cfg, indent=2, sort_keys=True) + "\n")
        card = self.pretrained_cfg.get("card_path")
        if card and Path(card).is_file():
            (save_directory / "README.md").write_text(Path(card).read_text())
        self._save_eval_results(save_directory)

    def _save_eval_results(self, save_directory: Path) -> None:
        """The Hub's leaderboard files (``.eval_results/*.yaml``) of a shipped checkpoint,
        rendered from the same stored results as its card."""
        from .. import cards

        name = self.pretrained_cfg.get("name")
        if not name or not cards.data_path(name).is_file():
            return
        for rel, text in cards.eval_results(name).items():
            (save_directory / rel).parent.mkdir(parents=True, exist_ok=True)
            (save_directory / rel).write_text(text)

    @classmethod
    def _from_pretrained(cls, *, model_id: str, **kwargs):  # used by Mixin.from_pretrained
        from ._registry import load

        return load(model_id if Path(model_id).is_dir() else f"hf-hub:{model_id}")

    def num_params(self) -> int:
        return sum(p.numel() for p in self.parameters())


def _jsonable(obj):
    if isinstance(obj, dict):
        return {k: _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_jsonable(v) for v in obj]
    if isinstance(obj, (str, int, float, bool)) or obj is None:
        return obj
    if hasattr(obj, "spec"):
        return obj.spec()
    if isinstance(obj, torch.dtype):
        return str(obj)
    raise TypeError(f"model argument {obj!r} is not JSON-serializable")


class ImplicitModelMixin:
    """Solver controls for models whose implicit layer is ``self.deq`` (a :class:`zoo.nn.DEQ`)."""

    @property
    def solver_stats(self):
        """:class:`~zoo.solvers.SolverStats` of the last forward solve (``None`` before one)."""
        return self.deq.stats

    @property
    def jac_loss(self):
        """Jacobian-regularization term of the last training forward (``None`` when off)."""
        return self.deq.jac_loss

    def set_inference_budget(
        self,
        max_iter: int | None = None,
        tol: float | None = None,
        rtol: float | None = None,
        atol: float | None = None,
    ) -> None:
        """Test-time trade-off: solve with ``max_iter`` iterations (and/or ``tol``) in eval.

        Raises:
            ValueError: for a bad value, or rtol/atol (ODE budgets) given to a DEQ.
        """
        _check_budget(max_iter, tol, rtol, atol)
        if rtol is not None or atol is not None:
            raise ValueError(
                f"{type(self).__name__} is a DEQ: its budget is max_iter and tol, not rtol/atol"
            )
        kw = {k: v for k, v in (("max_iter", max_iter), ("tol", tol)) if v is not None}
        base = self.deq.eval_solver or self.deq.solver
        self.deq.eval_solver = base.replace(**kw) if kw else None

    def inference_budget(self) -> dict[str, Any]:
        s = self.deq.eval_solver or self.deq.solver
        extra = {k: v for k, v in s.config().items() if k in ("joint", "compact", "returns")}
        return {"max_iter": s.max_iter, "tol": s.tol, "solver": s.name, **extra}

    def cost(self) -> Cost:
        st = self.deq.stats
        if st is None:
            return Cost()
        back = getattr(self.deq.grad, "last_stats", None)
        return Cost(
            nfe_forward=int(st.nfe),
            nfe_backward=int(back.nfe) if back is not None else 0,
            residual=float(st.residual.max()) if st.residual.numel() else None,
            converged=bool(st.converged),
        )

    def set_solver(self, solver) -> None:
        """Replace the forward solver (object, spec dict or name)."""
        from ..solvers import get_solver

        self.deq.solver = get_solver(solver)

    def set_grad(self, grad) -> None:
        """Replace the gradient mode (object, spec dict or name)."""
        from ..solvers import get_grad

        self.deq.grad = get_grad(grad)
