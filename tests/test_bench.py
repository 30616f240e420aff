"""Every benchmark script imports, shares the harness's options, and runs its --quick smoke
configuration from any working directory (three of them here, one through child processes)."""

from __future__ import annotations

import importlib
import json
import subprocess
import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parents[1] / "bench"
SCRIPTS = sorted(p.stem for p in BENCH.glob("*.py") if not p.stem.startswith("_"))
sys.path.insert(0, str(BENCH))

pytestmark = pytest.mark.timeout(300)


@pytest.mark.parametrize("name", SCRIPTS)
def test_every_bench_script_imports(name):
    mod = importlib.import_module(name)
    assert callable(mod.main)


def test_run_all_runs_every_script():
    import run_all

    assert sorted(n for n, _ in run_all.SCRIPTS) == sorted(s for s in SCRIPTS if s != "run_all")


@pytest.mark.parametrize(
    "name",
    [
        "backward",
        pytest.param("solver_variants", marks=pytest.mark.slow),  # about 25 s
        pytest.param("segmentation", marks=pytest.mark.slow),  # about 21 s
    ],
)
def test_quick_run_from_another_directory(name, tmp_path):
    """``python bench/NAME.py --quick`` from outside the repository writes its table."""
    out = tmp_path / f"{name}.json"
    r = subprocess.run(
        [sys.executable, str(BENCH / f"{name}.py"), "--quick", "--threads", "1", "--out", str(out)],
        cwd=tmp_path,
        capture_output=True,
        text=True,
    )
    assert r.returncode == 0, r.stderr[-2000:]
    rows = json.loads(out.read_text())
    assert rows and out.with_suffix(".md").read_text().startswith("|")


def test_the_shared_options_are_refused_when_wrong(tmp_path):
    r = subprocess.run(
        [sys.executable, str(BENCH / "backward.py"), "--quick", "--threads", "0"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
    )
    assert r.returncode != 0 and "--threads must be >= 1" in r.stderr
