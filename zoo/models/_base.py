"""Base class of every zoo model: config capture, safetensors I/O, Hub mixin, solver budget."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import torch
from huggingface_hub import PyTorchModelHubMixin
from torch import nn

__all__ = ["ZooModel", "ImplicitModelMixin", "sha256_file"]

WEIGHTS_NAME = "model.safetensors"
CONFIG_NAME = "config.json"


def sha256_file(path: str | Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


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

    # ----- solver budget (implicit models override) -------------------------------------------
    def set_inference_budget(self, max_iter: int | None = None, tol: float | None = None) -> None:
        """Change the test-time solver budget without retraining (no-op for explicit models)."""

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
        from safetensors.torch import save_model

        save_directory = Path(save_directory)
        # save_model stores tied tensors (e.g. embedding = softmax weights) once
        save_model(self, str(save_directory / WEIGHTS_NAME), metadata={"format": "pt"})
        cfg = self.zoo_config()
        cfg.setdefault("pretrained_cfg", {})["sha256"] = sha256_file(save_directory / WEIGHTS_NAME)
        (save_directory / CONFIG_NAME).write_text(json.dumps(cfg, indent=2, sort_keys=True) + "\n")
        card = self.pretrained_cfg.get("card_path")
        if card and Path(card).is_file():
            (save_directory / "README.md").write_text(Path(card).read_text())

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

    def set_inference_budget(self, max_iter: int | None = None, tol: float | None = None) -> None:
        """Test-time trade-off: solve with ``max_iter`` iterations (and/or ``tol``) in eval."""
        kw = {k: v for k, v in (("max_iter", max_iter), ("tol", tol)) if v is not None}
        base = self.deq.eval_solver or self.deq.solver
        self.deq.eval_solver = base.replace(**kw) if kw else None

    def set_solver(self, solver) -> None:
        """Replace the forward solver (object, spec dict or name)."""
        from ..solvers import get_solver

        self.deq.solver = get_solver(solver)

    def set_grad(self, grad) -> None:
        """Replace the gradient mode (object, spec dict or name)."""
        from ..solvers import get_grad

        self.deq.grad = get_grad(grad)
