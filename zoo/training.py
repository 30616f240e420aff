"""Training glue: the LightningCLI behind ``zoo fit`` and checkpoint export."""

from __future__ import annotations

from pathlib import Path

__all__ = ["run_cli", "export_checkpoint", "load_lightning_checkpoint", "init_weights_from"]


def run_cli(args: list[str] | None = None, run: bool = True):
    """LightningCLI with any task and data module chosen by ``class_path`` in the YAML."""
    import warnings

    import lightning.pytorch as pl
    from lightning.pytorch.cli import LightningCLI

    import zoo.data  # noqa: F401  (so short class names resolve)
    import zoo.tasks  # noqa: F401

    # ``zoo fit ARGS`` hands ARGS over explicitly (sys.argv must stay intact: DDP relaunches it)
    warnings.filterwarnings("ignore", message="LightningCLI's args parameter is intended")
    return LightningCLI(
        pl.LightningModule,
        pl.LightningDataModule,
        subclass_mode_model=True,
        subclass_mode_data=True,
        args=args,
        run=run,
        save_config_kwargs={"overwrite": True},
        auto_configure_optimizers=False,
    )


def load_lightning_checkpoint(path: str | Path) -> dict:
    """Read a local Lightning checkpoint without executing pickled code."""
    import torch

    return torch.load(path, map_location="cpu", weights_only=True)


def init_weights_from(model, source: str | Path) -> dict[str, list[str]]:
    """Copy matching weights from ``source`` into ``model`` (fine-tuning, warm restarts).

    ``source`` is a local Lightning checkpoint (``*.ckpt``, read with ``weights_only=True``) or
    anything ``zoo.load`` takes: ``arch.tag``, ``hf-hub:org/name`` or a local folder. Tensors
    whose name and shape match are copied; the rest keep their initialization (e.g. a new
    classifier head for a different number of classes) and are returned, so callers can report
    them. Raises ``ValueError`` when nothing matches (the wrong architecture).
    """
    if str(source).endswith(".ckpt"):
        if not Path(source).is_file():
            raise FileNotFoundError(
                f"init_from: no Lightning checkpoint at {source}; train the previous stage first "
                "or pass a zoo name such as 'mdeq_tiny.cifar10'"
            )
        raw = load_lightning_checkpoint(source)["state_dict"]
        src = {k[len("model.") :]: v for k, v in raw.items() if k.startswith("model.")}
    else:
        from .models import load

        src = load(str(source)).state_dict()
    own = model.state_dict()
    take = {k: v for k, v in src.items() if k in own and own[k].shape == v.shape}
    if not take:
        raise ValueError(
            f"init_from: no tensor of {source} matches the model being trained "
            f"(its keys start {sorted(src)[:3]}, the model's {sorted(own)[:3]}); "
            "is it the same architecture?"
        )
    model.load_state_dict(take, strict=False)
    return {
        "loaded": sorted(take),
        "kept_init": sorted(k for k in own if k not in take),
        "ignored": sorted(k for k in src if k not in take),
    }


def export_checkpoint(
    ckpt: str | Path, name: str, out_dir: str | Path | None = None, recipe: str | None = None
) -> Path:
    """Write ``checkpoints/<name>/{config.json, model.safetensors}`` from a Lightning checkpoint.

    The task's ``arch``/``model_args`` hyperparameters rebuild the model; the static pretrained
    config of ``name`` (dataset, paper, recipe, ...) is stored with the measured metrics that
    ``zoo eval --json`` wrote, if present.
    """
    from .models import checkpoint_dir, create_model, model_info

    state = load_lightning_checkpoint(ckpt)
    hp = state["hyper_parameters"]
    margs = dict(hp.get("model_args") or {})
    if hp.get("eval_max_iter") and isinstance(margs.get("solver"), dict):
        # ship the evaluation budget the run validated with, not the training one
        margs["solver"] = {**margs["solver"], "max_iter": int(hp["eval_max_iter"])}
    model = create_model(hp["arch"], **margs)
    sd = {k[len("model.") :]: v for k, v in state["state_dict"].items() if k.startswith("model.")}
    model.load_state_dict(sd, strict=True)
    model.tokenizer = state.get("tokenizer")  # text models: the training split's vocabulary
    try:
        static = model_info(name)
    except ValueError:
        static = {}
    model.pretrained_cfg = {
        **{k: v for k, v in static.items() if k not in ("hf_hub_id",)},
        "name": name,
        "recipe": recipe or static.get("recipe"),
        "trained_steps": int(state.get("global_step", 0)),
        "trained_epochs": int(state.get("epoch", 0)) + 1,
    }
    out = Path(out_dir) if out_dir else checkpoint_dir() / name
    out.mkdir(parents=True, exist_ok=True)
    model._save_pretrained(out)
    return out
