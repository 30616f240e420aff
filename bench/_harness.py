"""What every benchmark script shares: one argument parser, the repository's paths whatever the
working directory, and child processes that run a function of a script in a fresh interpreter.

Each script is runnable from any directory (``python bench/memory.py --quick``) and importable
(``import memory; memory.main(["--quick"])``), and writes its table to ``bench/results/``.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

BENCH = Path(__file__).resolve().parent
ROOT = BENCH.parent
RESULTS = BENCH / "results"
if str(BENCH) not in sys.path:
    sys.path.insert(0, str(BENCH))

__all__ = ["BENCH", "ROOT", "RESULTS", "parser", "results_dir", "setup", "run_child"]


def results_dir() -> Path:
    """Where tables go by default: ``bench/results/``, or ``$ZOO_BENCH_RESULTS`` (a smoke run of
    every script writes there, leaving the stored results alone)."""
    return Path(os.environ.get("ZOO_BENCH_RESULTS") or RESULTS)


def parser(doc: str | None, out: str, device: str = "cpu") -> argparse.ArgumentParser:
    """The shared options: ``--quick`` (a smoke run: tiny batches, few repeats), ``--out`` (the
    JSON file; its ``.md`` twin goes beside it), ``--device`` and ``--threads``. ``out`` is the
    default file name under :func:`results_dir`."""
    p = argparse.ArgumentParser(
        description=(doc or "").strip().split("\n\n")[0],
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--quick", action="store_true", help="a smoke run: tiny batches, few repeats")
    p.add_argument(
        "--out",
        default=str(results_dir() / out),
        help=f"JSON results file (default bench/results/{out})",
    )
    p.add_argument("--device", default=device, help=f"cpu, cuda or cuda:N (default {device})")
    p.add_argument(
        "--threads", type=int, default=None, help="torch CPU threads (default: torch's own)"
    )
    return p


def setup(args: argparse.Namespace) -> argparse.Namespace:
    """Apply the shared options (threads; spinning OpenMP threads off, as on shared machines)."""
    import torch

    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    if args.threads is not None:
        if args.threads < 1:
            raise SystemExit(f"--threads must be >= 1, got {args.threads}")
        torch.set_num_threads(args.threads)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    return args


def run_child(fn, *args, env: dict | None = None) -> dict:
    """``fn(*args)`` in a fresh interpreter (a clean allocator and peak memory), with ``env``
    added to the environment; ``fn`` is a module-level function of a bench script and returns
    a JSON-ready dict."""
    import inspect

    module = fn.__module__
    if module == "__main__":  # the script was run directly: import it by its file name
        module = Path(inspect.getfile(fn)).stem
    cmd = [sys.executable, str(BENCH / "_child.py"), module, fn.__name__, json.dumps(args)]
    r = subprocess.run(cmd, capture_output=True, text=True, env={**os.environ, **(env or {})})
    if r.returncode:
        raise RuntimeError(
            f"{fn.__module__}.{fn.__name__}{tuple(args)} failed:\n{r.stderr[-2000:]}"
        )
    return json.loads(r.stdout.strip().splitlines()[-1])
