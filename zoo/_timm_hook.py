"""Register the zoo's image models with timm, without importing timm eagerly.

``import timm`` costs seconds, so ``import zoo`` only installs an import hook: when timm is
imported (before or after zoo), every registered image-classification architecture is
registered with timm, with its pretrained tags. ``timm.create_model("mdeq_tiny",
pretrained=True)`` returns the architecture's declared default weights (timm's convention;
``zoo.models.default_pretrained("mdeq_tiny")`` names them) and
``timm.create_model("mdeq_tiny.fashion_mnist", pretrained=True)`` picks a tag.
"""

from __future__ import annotations

import importlib.abc
import importlib.util
import sys

_DONE = False
_TASK = "image-classification"
_TIMM_ONLY_KWARGS = ("pretrained_cfg", "pretrained_cfg_overlay", "cache_dir", "features_only")
# how the image classifiers were trained and evaluated: whole native-size images, no resize and
# no crop (timm's defaults, crop_pct 0.875 and bicubic, would resize 32 px images to 36 and crop)
PREPROCESSING = {"crop_pct": 1.0, "crop_mode": "center", "interpolation": "bilinear"}


def _make_entry(arch: str):
    def entry(pretrained: bool = False, **kwargs):
        from .models import list_models, load

        cfg = kwargs.pop("pretrained_cfg", None)
        for k in _TIMM_ONLY_KWARGS:
            kwargs.pop(k, None)
        if pretrained:
            from .models import default_pretrained

            names = list_models(f"{arch}.*", pretrained=True)
            tag = _tag_of(arch, cfg)
            if tag:
                name = f"{arch}.{tag}"
            else:  # no cfg at all: timm's rule, the declared default tag, else the first one
                name = default_pretrained(arch)
                name = name if name in names else (names[0] if names else None)
            if name not in names:
                raise RuntimeError(
                    f"implicit-zoo has no pretrained weights {name or arch!r}; available: "
                    f"{', '.join(names) or 'none yet'}"
                )
            model = load(name, **kwargs)
            model.pretrained_cfg = {**PREPROCESSING, **model.pretrained_cfg}
            return model
        return load(arch, pretrained=False, **kwargs)

    entry.__name__ = arch
    entry.__qualname__ = arch
    entry.__module__ = "zoo._timm_models"
    return entry


def _tag_of(arch: str, cfg) -> str | None:
    """The pretrained tag in whatever form timm hands the entry point over.

    ``timm.create_model("arch.tag")`` passes the tag as a string; timm's ``validate.py`` and
    ``resolve_model_args`` pass the resolved config as a dict or a ``PretrainedCfg``. ``None``
    only when no config was given (then timm's default tag applies); a config that names no
    tag, or another architecture, is refused rather than silently replaced by the default.
    """
    if cfg is None or cfg == "":
        return None
    if isinstance(cfg, str):
        return cfg
    get = cfg.get if isinstance(cfg, dict) else lambda k: getattr(cfg, k, None)
    tag, named = get("tag"), get("architecture")
    if named and named != arch:
        raise RuntimeError(
            f"timm handed implicit-zoo's {arch!r} a pretrained config of {named!r}; create the "
            f"model by its own name, e.g. timm.create_model('{named}.<tag>', pretrained=True)"
        )
    if not tag:
        raise RuntimeError(
            f"timm handed implicit-zoo's {arch!r} a pretrained config without a tag ({cfg!r}); "
            f"name the weights, e.g. timm.create_model('{arch}.<tag>', pretrained=True)"
        )
    return str(tag)


def _default_cfgs(archs: dict) -> dict:
    """timm ``DefaultCfg`` s: every pretrained ``arch.tag``, the declared default tag first."""
    from timm.models import generate_default_cfgs

    from .models import list_models, model_info

    cfgs = {}
    for arch, meta in archs.items():
        for name in list_models(f"{arch}.*", pretrained=True):
            info = model_info(name)
            star = "*" if name == f"{arch}.{meta.get('default_tag')}" else ""
            cfgs[name + star] = {
                "hf_hub_id": info["hf_hub_id"],
                "input_size": tuple(info.get("input_size", (3, 32, 32))),
                "mean": tuple(info.get("mean", (0.5,))),
                "std": tuple(info.get("std", (0.5,))),
                **PREPROCESSING,
                "fixed_input_size": True,
                "license": info.get("license"),
            }
    return generate_default_cfgs(cfgs)


def register_with_timm() -> None:
    """Register the entry points with timm now (idempotent)."""
    global _DONE
    if _DONE:
        return
    _DONE = True
    import types

    from timm.models import register_model

    from .models import architectures

    mod = sys.modules.setdefault("zoo._timm_models", types.ModuleType("zoo._timm_models"))
    mod.__all__ = []
    archs = architectures(_TASK)
    mod.default_cfgs = _default_cfgs(archs)
    for arch in archs:
        fn = _make_entry(arch)
        setattr(mod, arch, fn)
        register_model(fn)


class _TimmFinder(importlib.abc.MetaPathFinder):
    def find_spec(self, fullname, path, target=None):
        if fullname != "timm":
            return None
        sys.meta_path.remove(self)
        spec = importlib.util.find_spec("timm")
        if spec is None or spec.loader is None:
            return spec
        loader = spec.loader
        original = loader.exec_module

        def exec_module(module):
            original(module)
            try:
                register_with_timm()
            except Exception as e:  # never break timm's own import
                import warnings

                warnings.warn(
                    f"implicit-zoo could not register its models with timm: {e}", stacklevel=2
                )

        loader.exec_module = exec_module
        return spec


def install() -> None:
    if "timm" in sys.modules:
        register_with_timm()
    elif not any(isinstance(f, _TimmFinder) for f in sys.meta_path):
        sys.meta_path.insert(0, _TimmFinder())
