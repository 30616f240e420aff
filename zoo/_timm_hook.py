"""Register the zoo's image models with timm, without importing timm eagerly.

``import timm`` costs seconds, so ``import zoo`` only installs an import hook: when timm is
imported (before or after zoo), the MDEQ entry points are registered, and
``timm.create_model("mdeq_tiny", pretrained=True)`` returns the zoo's weights.
"""

from __future__ import annotations

import importlib.abc
import importlib.util
import sys

_DONE = False
_TIMM_ARCHS = ("mdeq_tiny", "mdeq_small", "mdeq_large", "mdeq_xl")
_TIMM_ONLY_KWARGS = ("pretrained_cfg", "pretrained_cfg_overlay", "cache_dir", "features_only")


def _make_entry(arch: str):
    def entry(pretrained: bool = False, **kwargs):
        from .models import list_models, load

        cfg = kwargs.pop("pretrained_cfg", None)
        for k in _TIMM_ONLY_KWARGS:
            kwargs.pop(k, None)
        if pretrained:
            tag = getattr(cfg, "tag", None) if cfg is not None else None
            names = list_models(f"{arch}.*", pretrained=True)
            name = (
                f"{arch}.{tag}"
                if tag and f"{arch}.{tag}" in names
                else (names[0] if names else None)
            )
            if name is None:
                raise RuntimeError(f"implicit-zoo ships no pretrained weights for {arch!r} yet")
            return load(name, **kwargs)
        return load(arch, pretrained=False, **kwargs)

    entry.__name__ = arch
    entry.__qualname__ = arch
    entry.__module__ = "zoo._timm_models"
    return entry


def register_with_timm() -> None:
    """Register the entry points with timm now (idempotent)."""
    global _DONE
    if _DONE:
        return
    _DONE = True
    import types

    from timm.models import register_model

    mod = sys.modules.setdefault("zoo._timm_models", types.ModuleType("zoo._timm_models"))
    mod.__all__ = []
    for arch in _TIMM_ARCHS:
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
