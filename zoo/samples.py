"""Small evaluation samples shipped with the package (``zoo/_samples``, <= 1 MB each) for the
offline demo and ``zoo eval --sample``.

``python -m zoo.samples`` rebuilds them from ``$ZOO_DATA_DIR``. Each pretrained checkpoint's
task spec says what its sample holds (the first images of each class, the first test tokens,
the first test series) and which sample it reads; a sample is cut with exactly the data
arguments of the checkpoints that use it, and records them (``protocol`` inside the file).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

__all__ = ["build", "protocols", "sample_protocol"]

MAX_BYTES = 1_000_000


def protocols() -> dict[str, tuple]:
    """``{sample name: (task spec, protocol)}`` over every pretrained checkpoint."""
    from .models import list_pretrained, model_info
    from .tasks import get_task

    out: dict[str, tuple] = {}
    for name in list_pretrained():
        info = model_info(name)
        spec = get_task(info["task"])
        p = spec.protocol({**info, "name": name})
        prev = out.get(p.sample)
        if prev and (prev[1].datamodule, prev[1].datamodule_args) != (
            p.datamodule,
            p.datamodule_args,
        ):
            raise ValueError(
                f"sample {p.sample!r} is shared by checkpoints with different data arguments "
                f"({prev[1].datamodule_args} and {p.datamodule_args}); give one a `sample` name"
            )
        out[p.sample] = (spec, p)
    return out


def _protocol_record(p) -> str:
    return json.dumps({"datamodule": p.datamodule, "datamodule_args": p.datamodule_args})


def sample_protocol(path: str | Path) -> dict | None:
    """The data arguments a shipped sample was cut with (``None`` for an old file)."""
    with np.load(path) as d:
        return json.loads(str(d["protocol"])) if "protocol" in d.files else None


def build(sample: str, data_dir: str | None = None, out_dir: Path | None = None) -> Path:
    """Cut ``sample`` from the real data; refuse a file over 1 MB."""
    from .tasks import sample_path

    table = protocols()
    if sample not in table:
        raise ValueError(f"unknown sample {sample!r}; known: {', '.join(sorted(table))}")
    spec, p = table[sample]
    out = (Path(out_dir) / f"{sample}.npz") if out_dir else sample_path(sample)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(out.stem + ".tmp.npz")
    what = spec.build_sample(p, data_dir, tmp)
    with np.load(tmp) as d:
        arrays = {k: d[k] for k in d.files}
    np.savez_compressed(tmp, **arrays, protocol=np.array(_protocol_record(p)))
    size = tmp.stat().st_size
    if size > MAX_BYTES:
        tmp.unlink()
        raise ValueError(f"{out} would be {size} bytes; samples must stay <= 1 MB")
    tmp.replace(out)
    print(f"wrote {out}: {what}, {size / 1e3:.0f} kB")
    return out


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("samples", nargs="*", help="sample names (default: all)")
    p.add_argument("--data-dir", default=None)
    p.add_argument("--out-dir", default=None)
    a = p.parse_args(argv)
    for s in a.samples or sorted(protocols()):
        build(s, a.data_dir, a.out_dir)


if __name__ == "__main__":
    main()
