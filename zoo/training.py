"""Training glue: the LightningCLI behind ``zoo fit`` and checkpoint export."""

from __future__ import annotations

import json
from pathlib import Path

__all__ = [
    "run_cli",
    "export_checkpoint",
    "load_lightning_checkpoint",
    "init_weights_from",
    "shrink_state",
]


def run_cli(args: list[str] | None = None, run: bool = True):
    """LightningCLI with any task and data module chosen by ``class_path`` in the YAML."""
    import warnings

    import lightning.pytorch as pl
    from lightning.pytorch.cli import LightningCLI

    import zoo.data  # noqa: F401  (so short class names resolve)
    import zoo.tasks  # noqa: F401

    _recipes_are_data()

    class ZooCLI(LightningCLI):
        def before_instantiate_classes(self) -> None:
            cfg = self.config.get(self.subcommand) if self.subcommand else self.config
            if cfg is not None:
                refuse_code_in_free_form(cfg)
                _checkpoints_follow_root(cfg.get("trainer"))

    # ``zoo fit ARGS`` hands ARGS over explicitly (sys.argv must stay intact: DDP relaunches it)
    warnings.filterwarnings("ignore", message="LightningCLI's args parameter is intended")
    try:
        return ZooCLI(
            pl.LightningModule,
            pl.LightningDataModule,
            subclass_mode_model=True,
            subclass_mode_data=True,
            args=args,
            run=run,
            save_config_kwargs={"overwrite": True},
            auto_configure_optimizers=False,
        )
    finally:
        if run:
            close_distributed()


def close_distributed() -> None:
    """Destroy the default process group a DDP fit left behind (Lightning does not): left to
    the interpreter's exit, gloo's threads can be torn down in the wrong order and abort the
    process ("terminate called without an active exception") after a fit that succeeded."""
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


# The only modules a recipe's ``class_path`` may name: the zoo's tasks, data modules and
# callbacks, and Lightning's callbacks, loggers and profilers. Everything else is denied before
# it is imported.
RECIPE_IMPORT_ALLOWLIST = (
    "zoo.tasks",
    "zoo.data",
    "zoo.callbacks",
    "lightning.pytorch.callbacks",
    "lightning.pytorch.loggers",
    "lightning.pytorch.profilers",
)


def _recipes_are_data() -> None:
    """jsonargparse settings under which a recipe selects no code outside the allowlist.

    By default jsonargparse instantiates a ``{class_path: ..., init_args: ...}`` dict found in a
    value typed ``Any`` (a task's ``model_args``, a data module's free-form dicts) while it
    parses, so a recipe could call ``os.system``. Here such a dict stays a dict (and
    :func:`refuse_code_in_free_form` refuses it), and an import path outside
    ``RECIPE_IMPORT_ALLOWLIST`` is never imported.
    """
    from jsonargparse import set_parsing_settings

    set_parsing_settings(
        instantiate_subclass_spec_in_any=False,
        import_path_denylist=["*"],
        import_path_allowlist=list(RECIPE_IMPORT_ALLOWLIST),
    )


# positions where a recipe legitimately chooses a class (LightningCLI checks their types)
_CLASS_POSITIONS = {("model",), ("data",), ("trainer", "callbacks"), ("trainer", "logger")}


def refuse_code_in_free_form(cfg, where: tuple = ()) -> None:
    """Raise ``ValueError`` when a ``class_path`` appears anywhere but where a recipe chooses
    the zoo's task, data module, callbacks or logger: model arguments and other free-form
    values are data, never code."""
    if hasattr(cfg, "as_dict"):  # a jsonargparse Namespace
        cfg = cfg.as_dict()
    if isinstance(cfg, (list, tuple)):
        for i, v in enumerate(cfg):
            refuse_code_in_free_form(v, where + (i,))
        return
    if not isinstance(cfg, dict):
        return
    if "class_path" in cfg:
        if tuple(k for k in where if not isinstance(k, int)) not in _CLASS_POSITIONS:
            raise ValueError(
                f"{'.'.join(str(k) for k in where)} names code (class_path: "
                f"{cfg['class_path']}); a recipe's model and data arguments are data: give plain "
                "values (numbers, strings, lists, dicts), and choose solvers and models by their "
                "registered names"
            )
        refuse_code_in_free_form(cfg.get("init_args") or {}, where + ("init_args",))
        return
    for k, v in cfg.items():
        refuse_code_in_free_form(v, where + (k,))


CHECKPOINT_CALLBACKS = ("ModelCheckpoint", "SaveLastOnTrainEnd")


def _checkpoints_follow_root(trainer_cfg) -> None:
    """Checkpoint callbacks without a ``dirpath`` write to ``<default_root_dir>/checkpoints``.

    Lightning's own default is a versioned logger folder, which ``--ckpt_path last`` cannot find
    in a later run; a fixed ``dirpath`` in a recipe would not follow
    ``--trainer.default_root_dir``. This keeps both: one run folder, set in one place.
    """
    if trainer_cfg is None or not trainer_cfg.get("default_root_dir"):
        return
    folder = str(Path(trainer_cfg["default_root_dir"]) / "checkpoints")
    for cb in trainer_cfg.get("callbacks") or []:
        class_path = str(cb.get("class_path", "")) if hasattr(cb, "get") else ""
        args = cb.get("init_args") if class_path else None
        if class_path.endswith(CHECKPOINT_CALLBACKS) and args is not None:
            if args.get("dirpath") is None:
                args["dirpath"] = folder


def load_lightning_checkpoint(path: str | Path) -> dict:
    """Read a local Lightning checkpoint without executing pickled code.

    Raises:
        FileNotFoundError: no such file.
        ValueError: the file is not a checkpoint ``weights_only=True`` can read (it holds
            arbitrary pickled objects, which are never unpickled, or it is corrupt).
    """
    import pickle

    import torch

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no Lightning checkpoint at {path}")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except (pickle.UnpicklingError, RuntimeError, EOFError, OSError, ValueError) as e:
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise ValueError(
            f"refusing to read {path}: it is not a checkpoint that loads with weights_only=True "
            f"(tensors and plain data only; pickled code is never run). torch said: {first}"
        ) from None
    if not isinstance(state, dict) or "state_dict" not in state:
        raise ValueError(f"{path} is not a Lightning checkpoint (no 'state_dict')")
    return state


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


def shrink_state(
    src: str | Path, dst: str | Path, moments: str = "bfloat16", in_place: bool = False
) -> dict[str, int]:
    """Store a Lightning state's optimizer moments in ``moments`` precision, to resume from later.

    A resumable state holds the weights plus the optimizer's per-parameter moments: for Adam,
    two more copies of the weights, so a 2 M-parameter model's state is about 23 MB, over the
    repository's 20 MB limit for a committed file. In bfloat16 the moments take half the space.
    Only optimizer state is touched: the weights, the step counters, the schedule, the loop and
    RNG states stay exact. On resume, ``torch.optim.Optimizer.load_state_dict`` casts each
    moment back to its parameter's dtype, so the run continues in full precision; the moments
    carry bfloat16's 8-bit rounding (a relative error of at most 2**-9) once, at the resume
    point. The state gets a ``zoo_shrunk_state`` key that says so.

    Returns the file sizes in bytes: ``{"before": ..., "after": ...}``. The file is written to a
    temporary name and renamed, so an interrupted write never leaves a half state at ``dst``.
    """
    import torch

    if moments != "bfloat16":  # float16 would flush Adam's small second moments to zero
        raise ValueError(
            f"moments={moments!r}: only 'bfloat16' is offered (float16's range flushes Adam's "
            "small second moments to zero)"
        )
    import os

    src, dst = Path(src), Path(dst)
    if dst.exists() and dst.resolve() == src.resolve() and not in_place:
        raise ValueError(
            f"{dst} is the source itself: shrinking in place replaces the only full-precision "
            "state; write elsewhere, or pass --in-place"
        )
    if dst.is_dir():
        raise ValueError(f"{dst} is a folder: give a file name, e.g. {dst / src.name}")
    parent = next((p for p in [dst.parent, *dst.parent.parents] if p.exists()), Path("."))
    if not os.access(parent, os.W_OK):
        raise PermissionError(f"cannot write {dst}: {parent} is not writable")
    state = load_lightning_checkpoint(src)
    before = src.stat().st_size
    opts = state.get("optimizer_states") or []
    if not opts:
        raise ValueError(f"{src} holds no optimizer state: there is nothing to shrink")
    n = 0
    for opt in opts:
        for per_param in (opt.get("state") or {}).values():
            for key, v in per_param.items():
                if key != "step" and torch.is_tensor(v) and v.is_floating_point():
                    per_param[key] = v.to(torch.bfloat16)
                    n += 1
    state["zoo_shrunk_state"] = {"moments": moments, "tensors": n}
    dst.parent.mkdir(parents=True, exist_ok=True)
    tmp = dst.with_name(dst.name + ".tmp")
    try:
        torch.save(state, tmp)
        tmp.replace(dst)
    finally:
        tmp.unlink(missing_ok=True)  # nothing half-written is left behind
    return {"before": before, "after": dst.stat().st_size}


def _completed_epochs(state: dict) -> int:
    """Whole epochs a Lightning checkpoint has finished (``epoch`` alone is off by one at the end)."""
    try:
        loop = state["loops"]["fit_loop"]
        started = int(loop["epoch_progress"]["total"]["started"])
        return started - (0 if loop["epoch_loop.batch_progress"]["is_last_batch"] else 1)
    except (KeyError, TypeError):
        return int(state.get("epoch", 0))


NAME_RULE = r"[A-Za-z0-9][A-Za-z0-9_-]*(\.[A-Za-z0-9][A-Za-z0-9_-]*)?"


def check_checkpoint_name(name: str) -> str:
    """A checkpoint name is ``arch`` or ``arch.tag``: letters, digits, ``_`` and ``-``, one dot
    at most; never a path (no ``/``, no ``..``, not empty)."""
    import re

    if not isinstance(name, str) or not re.fullmatch(NAME_RULE, name):
        raise ValueError(
            f"checkpoint name {name!r} is not arch.tag (letters, digits, '_' and '-', one dot, "
            "e.g. my_mdeq.fashion_mnist): it names a folder under checkpoints/, never a path"
        )
    return name


def _check_writable_dir(out: Path, force: bool, what: str) -> None:
    """``out`` will be (re)filled: refuse an existing non-empty folder without ``force``, a file
    in its place, or a parent that cannot be written, before any work is done."""
    import os

    if out.exists() and not out.is_dir():
        raise ValueError(f"{what}: {out} exists and is not a folder")
    if out.is_dir() and any(out.iterdir()) and not force:
        raise FileExistsError(
            f"{what}: {out} already holds a checkpoint; pass --force to replace it, or choose "
            "another name"
        )
    parent = out if out.is_dir() else next((p for p in out.parents if p.exists()), Path("."))
    if not os.access(parent, os.W_OK):
        raise PermissionError(f"{what}: cannot write under {parent}")


def export_checkpoint(
    ckpt: str | Path,
    name: str,
    out_dir: str | Path | None = None,
    recipe: str | None = None,
    force: bool = False,
) -> Path:
    """Write ``checkpoints/<name>/{config.json, model.safetensors}`` from a Lightning checkpoint.

    The task's ``arch``/``model_args`` hyperparameters rebuild the model (by registered name).
    The static pretrained config of ``name`` (dataset, paper, recipe, ...) stays in the family's
    pretrained table; config.json records the training steps. ``name`` must be ``arch.tag``; an
    existing folder (a shipped checkpoint among them) is replaced only with ``force``.
    """
    from .models import checkpoint_dir, create_model, model_info

    check_checkpoint_name(name)
    out = Path(out_dir) if out_dir else checkpoint_dir() / name
    _check_writable_dir(out, force, "zoo export")
    state = load_lightning_checkpoint(ckpt)
    hp = state.get("hyper_parameters") or {}
    if not isinstance(hp.get("arch"), str):
        raise ValueError(f"{ckpt}: its hyper_parameters name no architecture ('arch')")
    margs = dict(hp.get("model_args") or {})
    if hp.get("eval_max_iter") and isinstance(margs.get("solver"), dict):
        # ship the evaluation budget the run validated with, not the training one
        margs["solver"] = {**margs["solver"], "max_iter": int(hp["eval_max_iter"])}
    model = create_model(hp["arch"], **margs)
    sd = {k[len("model.") :]: v for k, v in state["state_dict"].items() if k.startswith("model.")}
    own = model.state_dict()
    missing, extra = sorted(set(own) - set(sd)), sorted(set(sd) - set(own))
    shapes = sorted(k for k in set(own) & set(sd) if own[k].shape != sd[k].shape)
    if missing or extra or shapes:
        raise ValueError(
            f"{ckpt} does not hold a {hp['arch']} with these model_args: "
            f"missing {missing[:8]}{' ...' if len(missing) > 8 else ''}, "
            f"extra {extra[:8]}{' ...' if len(extra) > 8 else ''}, "
            f"other shapes {shapes[:8]}{' ...' if len(shapes) > 8 else ''}"
        )
    model.load_state_dict(sd, strict=True)
    model.tokenizer = state.get("tokenizer")  # text models: the training split's vocabulary
    try:
        static = model_info(name)
    except ValueError:
        static = {}
    # a registered name's protocol, paper and card live in its pretrained table (the one source
    # of truth, merged in at load); config.json records only what this export knows
    model.pretrained_cfg = {
        "name": name,
        "trained_steps": int(state.get("global_step", 0)),
        "trained_epochs": _completed_epochs(state),
    }
    if recipe and recipe != static.get("recipe"):
        model.pretrained_cfg["recipe"] = recipe
    if "current_model_state" in state:
        # saved by a WeightAveraging callback (e.g. EMA): state_dict holds the averaged weights
        model.pretrained_cfg["averaged_weights"] = True
    out.mkdir(parents=True, exist_ok=True)
    model._save_pretrained(out)
    curve = training_curve(Path(ckpt))
    if curve:  # the run's logged NFE and validation metrics, for the card's training figure
        (out / "training_log.json").write_text(json.dumps(curve, separators=(",", ":")) + "\n")
    return out


TRAINING_CURVE_KEYS = (
    "train/nfe", "train/loss", "val/loss", "val/nll", "val/nfe", "val/acc1", "val/miou", "val/mse",
    "val/ppl",
)  # fmt: skip


def training_curve(ckpt: Path, max_points: int = 300) -> dict[str, list] | None:
    """The CSV log of the run that wrote ``ckpt`` (``<root>/checkpoints/x.ckpt`` with a
    ``CSVLogger`` under ``<root>/logs``), reduced to ``step`` and the logged keys of
    ``TRAINING_CURVE_KEYS``, at most ``max_points`` rows per key (evenly thinned); ``None``
    when no log is found. A resumed run's versions are joined in step order."""
    import csv

    logs = sorted((ckpt.parent.parent / "logs").glob("version_*/metrics.csv"))
    if not logs:
        return None
    series: dict[str, dict[int, float]] = {}
    for f in logs:
        with open(f, newline="") as fh:
            for row in csv.DictReader(fh):
                for k in TRAINING_CURVE_KEYS:
                    if row.get(k) not in (None, "") and row.get("step") not in (None, ""):
                        series.setdefault(k, {})[int(row["step"])] = float(row[k])
    out: dict[str, list] = {}
    for k, pts in series.items():
        steps = sorted(pts)
        stride = max(1, -(-len(steps) // max_points))
        out[k] = [[s, round(pts[s], 5)] for s in steps[::stride]]
    return out or None
