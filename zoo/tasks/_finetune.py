"""Fine-tune a shipped checkpoint with a plain Lightning ``Trainer``."""

from __future__ import annotations

import warnings
from pathlib import Path

__all__ = ["from_pretrained"]

# set per checkpoint by the recipe, never carried into a fine-tuning run: the recipe's own
# weights chain, and MDEQ's shallow pretraining (a fine-tune starts from an equilibrium model)
_NOT_CARRIED = ("arch", "model_args", "init_from", "pretrain_steps")


def _recipe_settings(recipe: str | None) -> tuple[dict, dict]:
    """The training hyperparameters and model arguments of a shipped recipe (``{}``s when the
    recipe is not at hand, as in a pip-installed zoo)."""
    import yaml

    from ..cards import ROOT

    path = ROOT / recipe if recipe else None
    if path is None or not Path(path).is_file():
        warnings.warn(
            f"the recipe {recipe!r} is not at hand (a pip-installed zoo ships none): the task's "
            "default training settings apply; pass hyperparameters to from_pretrained to change "
            "them",
            UserWarning,
            stacklevel=3,
        )
        return {}, {}
    init = ((yaml.safe_load(path.read_text()) or {}).get("model") or {}).get("init_args") or {}
    hp = {k: v for k, v in init.items() if k not in _NOT_CARRIED}
    return hp, dict(init.get("model_args") or {})


def from_pretrained(name: str, hparams: dict | None = None, **model_args):
    """A LightningModule that fine-tunes the shipped checkpoint ``name`` with its recipe's
    training settings, ready for a plain ``lightning.Trainer``.

    Args:
        name: A shipped checkpoint, e.g. ``"mdeq_tiny.fashion_mnist"``.
        hparams: Task hyperparameters that override the recipe's (``lr``, ``optimizer``, ...).
        **model_args: Model arguments that differ from the checkpoint's, e.g. ``num_classes=5``
            (a new head, randomly initialized; the body keeps its weights) or ``in_chans=3``
            (an image classifier's stem adapted as timm does).

    Tensors whose name and shape match the checkpoint's are copied (an image classifier's stem
    is adapted to new ``in_chans``); the others keep their initialization and are listed in
    ``task.kept_init``.

    Example:
        >>> import zoo.tasks
        >>> task = zoo.tasks.from_pretrained("odenet.fashion_mnist", num_classes=2)
        >>> type(task).__name__, task.model.num_classes, task.kept_init
        ('ImageClassification', 2, ['head.4.bias', 'head.4.weight'])
    """
    import zoo

    from ..models import model_info
    from ..models._classifier import TimmClassifier
    from ..models._registry import _model_class
    from ._spec import get_task

    info = model_info(name)
    arch = name.split(".")[0]
    cls = _model_class(arch)
    adapt = {}
    if cls is not None and issubclass(cls, TimmClassifier):
        adapt = {k: model_args[k] for k in ("num_classes", "in_chans") if k in model_args}
    source = zoo.load(name, **adapt)
    hp, recipe_args = _recipe_settings(info.get("recipe"))
    hp.update(hparams or {})
    # the checkpoint's architecture, the recipe's training budget, then the caller's changes
    args = {**source.model_args, **recipe_args, **model_args}
    for k in ("num_classes", "in_chans"):
        if k in source.model_args and k not in model_args:
            args[k] = source.model_args[k]
    task = get_task(info["task"]).module_class()(arch=arch, model_args=args, **hp)
    if task.model is None:  # a task that builds its model at setup (a language model's vocab)
        task.configure_model()
    src, own = source.state_dict(), task.model.state_dict()
    take = {k: v for k, v in src.items() if k in own and own[k].shape == v.shape}
    task.model.load_state_dict(take, strict=False)
    kept = {k for k in own if k not in take}
    if "num_classes" in adapt:  # the adapted source's head is new too
        head = task.model.get_classifier()
        kept |= {
            f"{mod_name}.{p}" for mod_name, mod in task.model.named_modules() if mod is head
            for p, _ in mod.named_parameters()
        }  # fmt: skip
    task.kept_init = sorted(kept)
    task._initialized_from = name  # configure_model must not load it again
    task.model.pretrained_cfg = dict(source.pretrained_cfg)
    task.model.tokenizer = getattr(source, "tokenizer", None)
    return task
