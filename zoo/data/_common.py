"""Where data lives: ``ZOO_DATA_DIR`` (read-only is fine) and a separate writable cache."""

from __future__ import annotations

import os
from contextlib import contextmanager
from pathlib import Path

__all__ = ["MissingDataError", "data_root", "cache_root", "cached_file", "check_positive"]


def check_positive(owner: str, minimum: int = 1, **values) -> None:
    """``ValueError`` naming the argument unless each value is an integer >= ``minimum``."""
    for k, v in values.items():
        if isinstance(v, bool) or not isinstance(v, int) or v < minimum:
            raise ValueError(f"{owner}: {k} must be an integer >= {minimum}, got {v!r}")


class MissingDataError(FileNotFoundError):
    """Raised when dataset files are missing; the message names the path and the fix.

    Example:
        >>> from zoo.data import FashionMNISTDataModule, MissingDataError
        >>> try:
        ...     FashionMNISTDataModule(data_dir="/nonexistent").eval_split("test")
        ... except MissingDataError as e:
        ...     print("missing:", "not found" in str(e))
        missing: True
    """


def data_root(data_dir: str | os.PathLike | None = None) -> Path:
    """``data_dir`` if given, else ``$ZOO_DATA_DIR``, else ``~/.cache/implicit-zoo/data``.

    Example:
        >>> from zoo.data import data_root
        >>> str(data_root("/some/where"))
        '/some/where'
    """
    if data_dir is not None:
        return Path(data_dir).expanduser()
    env = os.environ.get("ZOO_DATA_DIR")
    if env:
        return Path(env).expanduser()
    return cache_root() / "data"


def cache_root() -> Path:
    """Writable cache for extracted archives and processed tensors (never beside raw data).

    ``$ZOO_CACHE_DIR`` or ``$XDG_CACHE_HOME/implicit-zoo`` (default ``~/.cache/implicit-zoo``).

    Example:
        >>> from zoo.data import cache_root
        >>> cache_root().is_dir()
        True
    """
    env = os.environ.get("ZOO_CACHE_DIR")
    if env:
        root = Path(env).expanduser()
    else:
        xdg = os.environ.get("XDG_CACHE_HOME", str(Path.home() / ".cache"))
        root = Path(xdg) / "implicit-zoo"
    where = "ZOO_CACHE_DIR" if env else "the default cache folder"
    if root.exists() and not root.is_dir():
        raise ValueError(
            f"{where} {root} is a file, not a folder: point ZOO_CACHE_DIR at a writable folder"
        )
    try:
        root.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise PermissionError(
            f"cannot create the cache folder {root} ({where}): {e.strerror}; point "
            "ZOO_CACHE_DIR at a writable folder"
        ) from None
    if not os.access(root, os.W_OK):
        raise PermissionError(f"the cache folder {root} ({where}) is not writable")
    return root


class CorruptDataError(ValueError):
    """A data file that exists but cannot be read: truncated, empty, or not what it should be."""


@contextmanager
def open_tar(path: Path, what: str, how: str):
    """``tarfile.open(path)`` for reading, with a clear error naming the file (and the member)
    when the archive is empty, truncated or not a gzip'd tar, at open or while reading."""
    import tarfile
    import zlib

    bad = (tarfile.TarError, EOFError, zlib.error, OSError)
    path = Path(path)
    try:
        tf = tarfile.open(path, "r:gz")
    except bad as e:
        size = path.stat().st_size if path.is_file() else 0
        raise CorruptDataError(
            f"{what}: {path} cannot be read as a .tar.gz ({size:,} bytes; {e}). The file is "
            f"empty, truncated or of another format: {how}"
        ) from None
    try:
        with tf:
            yield tf
    except bad as e:
        raise CorruptDataError(
            f"{what}: {path} is truncated or damaged ({type(e).__name__}: {e}): {how}"
        ) from None


def missing(what: str, expected: Path, how: str) -> MissingDataError:
    return MissingDataError(f"{what} not found: expected {expected}. {how}")


def _fingerprint(paths: list[Path]) -> str:
    import hashlib

    h = hashlib.sha1()
    for p in paths:
        st = p.stat()
        h.update(f"{p.resolve()}|{st.st_size}|{st.st_mtime_ns};".encode())
    return h.hexdigest()[:12]


def cached_file(folder: Path, stem: str, suffix: str, sources: list[Path], what: str, how: str):
    """The cache file of ``stem`` derived from ``sources``, keyed to them (path, size, mtime).

    A cache written from other files is never read for these. A missing source is an error
    even when some cache exists, unless ``ZOO_CACHE_ONLY=1`` asks for the cache explicitly (then
    the one cache of ``stem`` is used, and several are an error).

    Returns:
        The cache path to read (if it exists) or write.
    """
    missing_src = [p for p in sources if not p.exists()]
    if not missing_src:
        return folder / f"{stem}-{_fingerprint(sources)}{suffix}"
    if os.environ.get("ZOO_CACHE_ONLY") == "1":
        found = sorted(folder.glob(f"{stem}-*{suffix}"))
        found = [f for f in found if ".tmp" not in f.name]
        if len(found) == 1:
            return found[0]
        raise missing(what, missing_src[0], f"ZOO_CACHE_ONLY=1 but {len(found)} caches of {stem} "
                      f"are in {folder}: {how}")  # fmt: skip
    raise missing(what, missing_src[0], how)
