"""Model registry: entry points ``<arch>_<size>`` and pretrained weights ``<arch>.<tag>``.

Weights resolve in this order: the repo's ``checkpoints/`` (or ``$ZOO_CHECKPOINTS``), the
Hugging Face cache, then the Hub. ``hf-hub:org/name`` and local directories also work.
Weights are only ever read from safetensors, after their sha256 is checked.
"""

from __future__ import annotations

import difflib
import fnmatch
import importlib
import importlib.metadata
import json
import os
import pkgutil
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

__all__ = [
    "register_model",
    "register_pretrained",
    "list_models",
    "list_pretrained",
    "weights_location",
    "load",
    "create_model",
    "checkpoint_dir",
    "model_info",
    "default_pretrained",
    "architectures",
    "ENTRY_POINT_GROUP",
]

_ENTRYPOINTS: dict[str, Callable[..., Any]] = {}
_ENTRY_META: dict[str, dict[str, str]] = {}
_PRETRAINED: dict[str, dict[str, Any]] = {}
HUB_ORG = "implicit-zoo"
ENTRY_POINT_GROUP = "zoo.models"
_LOADED = False


def register_model(family: str, task: str, default_tag: str | None = None):
    """Decorator registering an entry point ``fn(**kwargs) -> ZooModel`` under its name.

    Args:
        family: The model family (``mdeq``, ``latent_ode``, ...).
        task: The registered task spec its checkpoints are evaluated with.
        default_tag: The weights ``arch.<default_tag>`` that ``timm.create_model(arch,
            pretrained=True)`` returns (timm's convention: declared per architecture).
    """

    def deco(fn):
        _ENTRYPOINTS[fn.__name__] = fn
        _ENTRY_META[fn.__name__] = {"family": family, "task": task, "default_tag": default_tag}
        return fn

    return deco


def architectures(task: str | None = None) -> dict[str, dict[str, str]]:
    """``{arch: {"family", "task", "default_tag"}}`` of the registered entry points."""
    _ensure_loaded()
    return {a: dict(m) for a, m in _ENTRY_META.items() if task is None or m["task"] == task}


def default_pretrained(arch: str) -> str | None:
    """The declared default weights of ``arch`` (``None`` if it declares none)."""
    _ensure_loaded()
    tag = _ENTRY_META.get(arch, {}).get("default_tag")
    return f"{arch}.{tag}" if tag else None


def register_pretrained(table: dict[str, dict[str, Any]]) -> None:
    """Add a family's table of pretrained configs (``"arch.tag" -> cfg``)."""
    for name, cfg in table.items():
        arch = name.split(".")[0]
        if arch not in _ENTRYPOINTS:
            raise ValueError(f"pretrained {name!r} names no registered entry point {arch!r}")
        _PRETRAINED[name] = {"hf_hub_id": f"{HUB_ORG}/{name}", **cfg}


def _family_entry_points() -> list:
    """The ``zoo.models`` entry points: the built-in families (declared in pyproject.toml) and
    any third-party package's."""
    return list(importlib.metadata.entry_points(group=ENTRY_POINT_GROUP))


def _ensure_loaded() -> None:
    """Import every model family once; each registers its entry points and pretrained table."""
    global _LOADED
    if _LOADED:
        return
    _LOADED = True
    eps = _family_entry_points()
    modules = [(ep.name, ep.value, ep.load) for ep in eps]
    if not any(v.startswith(__package__ + ".") for _, v, _ in modules):
        # a source tree used without `pip install`: its entry points are not declared yet
        for m in pkgutil.iter_modules([str(Path(__file__).parent)]):
            if not m.name.startswith("_"):
                mod = f"{__package__}.{m.name}"
                modules.append((m.name, mod, lambda mod=mod: importlib.import_module(mod)))
    for name, value, load_fn in modules:
        try:
            load_fn()
        except Exception as e:  # one broken plug-in must not take the zoo down
            warnings.warn(f"model family {name!r} ({value}) failed to load: {e}", stacklevel=2)


def list_models(pattern: str = "*", pretrained: bool = False) -> list[str]:
    """Names of the registered models.

    Args:
        pattern: fnmatch pattern, e.g. ``"mdeq*"``.
        pretrained: List pretrained weights (``arch.tag``) instead of architectures.

    Example:
        >>> import zoo
        >>> "mdeq_tiny" in zoo.list_models("mdeq*")
        True
    """
    _ensure_loaded()
    if not pretrained:
        return sorted(n for n in _ENTRYPOINTS if fnmatch.fnmatch(n, pattern))
    return sorted(n for n in _PRETRAINED if fnmatch.fnmatch(n, pattern))


def weights_location(name: str) -> str | None:
    """Where ``zoo.load(name)`` finds the weights without a download: ``"checkpoints"`` (the
    repository's, or ``$ZOO_CHECKPOINTS``), ``"HF cache"``, or ``None`` (the first load
    downloads them from the Hub)."""
    _ensure_loaded()
    _check_name(name, _PRETRAINED)
    if (checkpoint_dir() / name / "model.safetensors").is_file():
        return "checkpoints"
    from huggingface_hub import try_to_load_from_cache

    hit = try_to_load_from_cache(_PRETRAINED[name]["hf_hub_id"], "model.safetensors")
    return "HF cache" if isinstance(hit, str) else None


def list_pretrained(pattern: str = "*", available: bool = False) -> list[str]:
    """Pretrained names: every published checkpoint, or with ``available=True`` only those whose
    weights are here already (the repository's ``checkpoints/`` or the HF cache)."""
    names = list_models(pattern, pretrained=True)
    return [n for n in names if weights_location(n)] if available else names


def model_info(name: str) -> dict[str, Any]:
    """The static pretrained config of ``arch.tag`` (dataset, paper, recipe, ...)."""
    _ensure_loaded()
    _check_name(name, _PRETRAINED)
    return dict(_PRETRAINED[name])


def _check_name(name: str, table: dict) -> None:
    if name not in table:
        close = difflib.get_close_matches(
            name, list(_PRETRAINED) + list(_ENTRYPOINTS), n=4, cutoff=0.5
        )
        hint = f"; did you mean {', '.join(repr(c) for c in close)}?" if close else ""
        raise ValueError(f"unknown model {name!r}{hint} (see zoo.list_models())")


def create_model(arch: str, **kwargs):
    """Build a randomly initialized model from its entry point name."""
    _ensure_loaded()
    _check_name(arch, _ENTRYPOINTS)
    return _build(arch, _checked_model_args(arch, kwargs, arch), arch)


def checkpoint_dir() -> Path:
    """Where shipped checkpoints live: ``$ZOO_CHECKPOINTS`` or the repo's ``checkpoints/``."""
    env = os.environ.get("ZOO_CHECKPOINTS")
    if env:
        return Path(env)
    return Path(__file__).resolve().parents[2] / "checkpoints"


def _resolve_files(name: str) -> tuple[Path, Path, str]:
    """Find ``config.json`` and ``model.safetensors`` for a name. Returns (config, weights, where)."""
    p = Path(name)
    if p.is_dir():
        return _pair(p, "local directory")
    if name.startswith("hf-hub:"):
        return _from_hub(name[len("hf-hub:") :])
    _ensure_loaded()
    _check_name(name, _PRETRAINED)
    local = checkpoint_dir() / name
    if (local / "model.safetensors").is_file():
        return _pair(local, "repo checkpoints/")
    return _from_hub(_PRETRAINED[name]["hf_hub_id"])


def _pair(d: Path, where: str) -> tuple[Path, Path, str]:
    cfg, w = d / "config.json", d / "model.safetensors"
    for f in (cfg, w):
        if not f.is_file():
            raise FileNotFoundError(
                f"{f} is missing; a zoo checkpoint folder holds config.json and model.safetensors"
            )
    return cfg, w, where


def hub_timeout() -> float:
    """Seconds the Hub reachability check waits: ``$ZOO_HUB_TIMEOUT`` (default 3)."""
    raw = os.environ.get("ZOO_HUB_TIMEOUT", "3")
    try:
        value = float(raw)
    except ValueError:
        value = -1.0
    if not value > 0:
        raise ValueError(f"ZOO_HUB_TIMEOUT={raw!r}: give a positive number of seconds")
    return value


def _endpoint_reachable(timeout: float | None = None) -> bool:
    """Quick TCP check of ``HF_ENDPOINT``, bounded by ``timeout`` seconds (default
    :func:`hub_timeout`), so an unreachable Hub fails in seconds, not after
    huggingface_hub's retries."""
    import socket
    from urllib.parse import urlparse

    from huggingface_hub import constants

    timeout = hub_timeout() if timeout is None else timeout
    url = urlparse(constants.ENDPOINT)
    port = url.port or (443 if url.scheme == "https" else 80)
    try:
        with socket.create_connection((url.hostname, port), timeout=timeout):
            return True
    except OSError:
        return False


def _from_hub(repo_id: str) -> tuple[Path, Path, str]:
    from huggingface_hub import constants, hf_hub_download
    from huggingface_hub.errors import (
        EntryNotFoundError,
        LocalEntryNotFoundError,
        RepositoryNotFoundError,
    )

    def get(filename: str, offline: bool) -> str:
        return hf_hub_download(repo_id, filename, local_files_only=offline)

    try:  # 1) the HF cache, without touching the network
        return Path(get("config.json", True)), Path(get("model.safetensors", True)), "HF cache"
    except (LocalEntryNotFoundError, FileNotFoundError, OSError):
        pass
    offline_msg = (
        f"the Hub repository {repo_id!r} is not in the HF cache and the Hub is unreachable "
        f"(HF_ENDPOINT {constants.ENDPOINT}"
        f"{'; HF_HUB_OFFLINE is set' if constants.HF_HUB_OFFLINE else ''}); download it once "
        "online (unset HF_HUB_OFFLINE), or put its folder (config.json + model.safetensors) "
        f"under a directory named by ZOO_CHECKPOINTS (now {checkpoint_dir()})"
    )
    if constants.HF_HUB_OFFLINE or not _endpoint_reachable():
        raise ConnectionError(offline_msg)
    try:  # 2) the Hub
        return Path(get("config.json", False)), Path(get("model.safetensors", False)), "Hub"
    except RepositoryNotFoundError as e:
        raise FileNotFoundError(
            f"Hub repository {repo_id!r} not found at {constants.ENDPOINT} (HTTP {_status(e)}); "
            "check HF_ENDPOINT, or put its folder under ZOO_CHECKPOINTS"
        ) from None
    except LocalEntryNotFoundError:
        raise ConnectionError(offline_msg) from None
    except EntryNotFoundError as e:
        raise FileNotFoundError(f"Hub repository {repo_id!r} lacks a file: {e}") from None


def _status(e) -> str:
    resp = getattr(e, "response", None)
    return str(getattr(resp, "status_code", "?"))


def load(name: str, pretrained: bool = True, **overrides):
    """Load a model in eval mode, weights verified.

    Args:
        name: ``arch.tag`` (pretrained), ``arch`` (random init when ``pretrained=False``),
            ``hf-hub:org/name`` or a local directory with config.json + model.safetensors.
        pretrained: Load weights. ``False`` builds the architecture of ``name`` untrained.
        **overrides: ``max_iter``/``tol`` change the test-time solver budget; anything else
            overrides a constructor argument.

    Example:
        >>> import zoo
        >>> model = zoo.load("mdeq_tiny", pretrained=False)
        >>> model.training
        False
    """
    budget = {k: overrides.pop(k) for k in ("max_iter", "tol", "rtol", "atol") if k in overrides}
    if not isinstance(name, (str, os.PathLike)) or not str(name).strip():
        raise ValueError(
            f"a model is named by a non-empty string (arch.tag, hf-hub:org/name or a folder), "
            f"got {name!r}; see zoo.list_models(pretrained=True)"
        )
    name = str(name)
    if not pretrained:
        arch = name.split(".")[0]
        _ensure_loaded()
        # arch.tag: the tag's architecture arguments (e.g. 1 input channel), untrained
        args = _tag_model_args(name) if "." in name else {}
        model = create_model(arch, **{**args, **overrides})
        cfg = {}
    else:
        cfg_path, w_path, where = _resolve_files(name)
        cfg = _read_config(cfg_path, name)
        arch = cfg.get("architecture")
        _ensure_loaded()
        if not isinstance(arch, str) or arch not in _ENTRYPOINTS:
            raise ValueError(
                f"checkpoint {name!r} names an unknown architecture {arch!r}; a config names a "
                "registered architecture (zoo.list_models()), never an import path"
            )
        # timm's fine-tuning arguments: the checkpoint loads as trained, then its head and
        # stem are adapted (a new head keeps the pretrained body)
        from ._classifier import TimmClassifier

        adapt = {}
        cls = _model_class(arch)
        if cls is not None and issubclass(cls, TimmClassifier):
            adapt = {k: overrides.pop(k) for k in ("num_classes", "in_chans") if k in overrides}
        args = {**_checked_model_args(arch, cfg.get("model_args"), name), **overrides}
        model = _build(arch, args, name)
        pcfg = dict(cfg.get("pretrained_cfg") or {})
        # fields that name local files or provenance are set here, never read from a download
        for key in ("card_path", "source", "hf_hub_id"):
            pcfg.pop(key, None)
        _verify_sha(w_path, pcfg.get("sha256"), name)
        _load_weights(model, w_path, name)
        # one source of truth: a registered name's table (the code) wins over config.json,
        # which carries only what was measured or recorded at export (metrics, sha256, steps)
        registered = pcfg.get("name", name)
        static = dict(_PRETRAINED.get(registered, {}))
        static.update(_card_facts(registered) if registered in _PRETRAINED else {})
        if "card_path" not in static and (w_path.parent / "README.md").is_file():
            static["card_path"] = str(w_path.parent / "README.md")
        model.pretrained_cfg = {**pcfg, **static, "name": pcfg.get("name", name), "source": where}
        model.tokenizer = cfg.get("tokenizer")
        if "num_classes" in adapt and adapt["num_classes"] != model.num_classes:
            model.reset_classifier(adapt["num_classes"])
        if "in_chans" in adapt and adapt["in_chans"] != model.in_chans:
            model.set_in_chans(adapt["in_chans"])
    model.eval()
    if budget:
        model.set_inference_budget(**budget)
    return model


def _card_facts(name: str) -> dict:
    """The card and the measured metrics of a shipped checkpoint, from its data file
    (``model_cards/NAME.yaml``, rendered into ``NAME.md``) when this is a source tree."""
    from .. import cards

    out = {}
    if (cards.CARDS / f"{name}.md").is_file():
        out["card_path"] = str(cards.CARDS / f"{name}.md")
    row = cards.shipped_row(name)
    if row is not None:
        out["metrics"] = {
            **row["metrics"],
            "nfe_mean": row.get("nfe_mean"),
            "split": row.get("split"),
            "num_samples": row.get("num_samples"),
            "command": f"zoo card {name}",
        }
    return out


def _read_config(path: Path, name: str) -> dict:
    try:
        cfg = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise ValueError(f"checkpoint {name!r}: {path} is not valid JSON ({e})") from None
    if not isinstance(cfg, dict):
        raise ValueError(f"checkpoint {name!r}: {path} must hold a JSON object")
    for key in ("model_args", "pretrained_cfg"):
        if not isinstance(cfg.get(key) or {}, dict):
            raise ValueError(f"checkpoint {name!r}: {key} in {path} must be a JSON object")
    return cfg


def _model_class(arch: str):
    """The class an entry point returns (its return annotation), or ``None``."""
    import typing

    try:
        return typing.get_type_hints(_ENTRYPOINTS[arch]).get("return")
    except Exception:
        return None


def _checked_model_args(arch: str, args, name: str) -> dict:
    """Config ``model_args`` checked against the architecture's signature before building."""
    import inspect

    args = dict(args or {})
    cls = _model_class(arch)
    if cls is not None:
        params = inspect.signature(cls).parameters
        if not any(p.kind is p.VAR_KEYWORD for p in params.values()):
            bad = sorted(set(args) - set(params))
            if bad:
                raise ValueError(
                    f"checkpoint {name!r}: {arch} takes no argument(s) {', '.join(bad)}; its "
                    f"arguments are {', '.join(sorted(params))}"
                )
    return args


def _build(arch: str, args: dict, name: str):
    import torch

    try:
        with torch.random.fork_rng(devices=[]):  # random init leaves the caller's RNG alone
            model = _ENTRYPOINTS[arch](**args)
    except TypeError as e:
        raise ValueError(f"checkpoint {name!r}: model_args do not fit {arch}: {e}") from None
    model.entry_point = arch
    return model


def _tag_model_args(name: str) -> dict:
    """The architecture arguments of pretrained ``arch.tag``: from its shipped config.json if
    present (no download), else the table's ``model_args``."""
    _check_name(name, _PRETRAINED)
    local = checkpoint_dir() / name / "config.json"
    if local.is_file():
        return dict(json.loads(local.read_text()).get("model_args", {}))
    return dict(_PRETRAINED[name].get("model_args", {}))


def _verify_sha(path: Path, expected: str | None, name: str) -> None:
    from ._base import sha256_file

    if expected is None:
        return
    got = sha256_file(path)
    if got != expected:
        raise ValueError(
            f"sha256 mismatch for {name!r}: {path} has {got[:16]}..., config.json expects "
            f"{expected[:16]}... The file is corrupted or truncated; delete it and download again"
        )


_FLOAT_DTYPES = ("F16", "BF16", "F32", "F64")
_TORCH_NAMES = {"BOOL": "bool", "U8": "uint8", "I8": "int8", "I16": "int16", "I32": "int32",
                "I64": "int64", "U16": "uint16", "U32": "uint32", "U64": "uint64"}  # fmt: skip


def _check_dtypes(model, path: Path, name: str) -> None:
    """Refuse an integer or bool tensor for a floating-point parameter (its values would be cast
    silently). Reads only the file's header."""
    from safetensors import SafetensorError, safe_open

    own = model.state_dict()
    wrong = []
    try:
        with safe_open(str(path), framework="pt") as f:
            for key in f.keys():  # noqa: SIM118 - safe_open is not a mapping
                target = own.get(key)
                dtype = f.get_slice(key).get_dtype()
                if target is not None and target.is_floating_point() and dtype not in _FLOAT_DTYPES:
                    torch_name = f"torch.{_TORCH_NAMES.get(dtype, dtype.lower())}"
                    wrong.append(f"{key} ({torch_name}, the model's is {target.dtype})")
    except (SafetensorError, OSError) as e:
        raise ValueError(f"cannot read weights of {name!r} from {path}: {e}") from None
    if wrong:
        raise ValueError(
            f"checkpoint {name!r}: {len(wrong)} tensor(s) in {path.name} are not floating point "
            f"where the model's are: {', '.join(wrong[:5])}{' ...' if len(wrong) > 5 else ''}; "
            "a cast would change the model silently. Re-export the weights from the model"
        )


def _check_finite(model, path: Path, name: str) -> None:
    """Refuse loaded weights with NaN or infinite values, naming the tensors."""
    import torch

    bad = [
        f"{k} ({int((~torch.isfinite(v)).sum())} values)"
        for k, v in model.state_dict().items()
        if v.is_floating_point() and not bool(torch.isfinite(v).all())
    ]
    if bad:
        raise ValueError(
            f"checkpoint {name!r}: {len(bad)} tensor(s) in {path.name} hold NaN or infinite "
            f"values: {', '.join(bad[:5])}{' ...' if len(bad) > 5 else ''}; the weights are "
            "broken (a diverged run, or a corrupted file)"
        )


def _load_weights(model, path: Path, name: str) -> None:
    from safetensors import SafetensorError
    from safetensors.torch import load_model

    _check_dtypes(model, path, name)
    try:
        missing, unexpected = load_model(model, str(path), strict=False)
    except (SafetensorError, OSError) as e:
        raise ValueError(f"cannot read weights of {name!r} from {path}: {e}") from None
    except RuntimeError as e:  # shape mismatches
        raise ValueError(
            f"checkpoint {name!r} does not match architecture {type(model).__name__}: {e}"
        ) from None
    if missing or unexpected:
        missing, unexpected = sorted(missing), sorted(unexpected)
        raise ValueError(
            f"checkpoint {name!r} does not match architecture {type(model).__name__}:\n"
            f"  missing keys: {missing[:10]}{' ...' if len(missing) > 10 else ''}\n"
            f"  unexpected keys: {unexpected[:10]}{' ...' if len(unexpected) > 10 else ''}"
        )
    _check_finite(model, path, name)
