"""Where data lives: ``ZOO_DATA_DIR`` (read-only is fine) and a separate writable cache."""

from __future__ import annotations

import os
from pathlib import Path

__all__ = ["MissingDataError", "data_root", "cache_root"]


class MissingDataError(FileNotFoundError):
    """Raised when dataset files are missing; the message names the path and the fix."""


def data_root(data_dir: str | os.PathLike | None = None) -> Path:
    """``data_dir`` if given, else ``$ZOO_DATA_DIR``, else ``~/.cache/implicit-zoo/data``."""
    if data_dir is not None:
        return Path(data_dir).expanduser()
    env = os.environ.get("ZOO_DATA_DIR")
    if env:
        return Path(env).expanduser()
    return cache_root() / "data"


def cache_root() -> Path:
    """Writable cache for extracted archives and processed tensors (never beside raw data).

    ``$ZOO_CACHE_DIR`` or ``$XDG_CACHE_HOME/implicit-zoo`` (default ``~/.cache/implicit-zoo``).
    """
    env = os.environ.get("ZOO_CACHE_DIR")
    if env:
        root = Path(env).expanduser()
    else:
        xdg = os.environ.get("XDG_CACHE_HOME", str(Path.home() / ".cache"))
        root = Path(xdg) / "implicit-zoo"
    root.mkdir(parents=True, exist_ok=True)
    return root


def missing(what: str, expected: Path, how: str) -> MissingDataError:
    return MissingDataError(f"{what} not found: expected {expected}. {how}")
