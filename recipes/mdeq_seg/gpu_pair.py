"""Train mdeq_seg_tiny and hrnet_seg_tiny on Fashion scenes side by side on one GPU, each sized
to the same wall-time budget (issue #20's equal-budget comparison).

1. The scenes are generated once (both runs then read the cache).
2. A probe runs both recipes at once for a few dozen steps (no pretraining, no validation) and
   reads each one's seconds a step from ``zoo.callbacks.StepTimer``'s last line.
3. Each recipe then runs from scratch, both at once, with ``max_steps`` set to what the budget
   holds at its probed step time (times ``--fill``, for validation and contention), so its cosine
   schedule ends inside the budget; the recipes' ``max_time`` stops them regardless.
4. Each final state is exported (``zoo export``) and evaluated on the held-out and test scenes
   (``zoo eval --split val`` / ``--split test``).

Run:  python recipes/mdeq_seg/gpu_pair.py [--budget-min 5] [--out gpu_pair]
Needs ZOO_DATA_DIR (the folder holding fashion-mnist/) and a CUDA GPU. ``--dry-run`` prints the
commands without running them. Writes ``<out>/pair.json`` (probe, max_steps, evaluations) and
the runs' console logs beside it; the runs themselves go to runs/<recipe>/ as usual.
"""

from __future__ import annotations

import argparse
import json
import re
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
RUNS = {
    # recipe, probe steps (the faster model probes longer, so the two overlap), probe overrides
    "mdeq_seg_tiny": (
        HERE / "mdeq_seg_tiny.fashion_scenes.yaml",
        60,
        ["--model.init_args.pretrain_steps", "0"],
    ),
    "hrnet_seg_tiny": (HERE / "hrnet_seg_tiny.fashion_scenes.yaml", 150, []),
}
ZOO = [sys.executable, "-c", "import sys; from zoo.cli import main; sys.exit(main())"]


def _launch(args: list[str], log: Path, cwd: Path | None = None) -> subprocess.Popen:
    print("$ zoo", " ".join(args), f"> {log}", flush=True)
    return subprocess.Popen(ZOO + args, stdout=log.open("w"), stderr=subprocess.STDOUT, cwd=cwd)


def _wait_all(procs: dict[str, subprocess.Popen], logs: dict[str, Path]) -> None:
    for name, p in procs.items():
        if p.wait() != 0:
            tail = logs[name].read_text(errors="replace")[-3000:]
            raise SystemExit(
                f"{name} failed (exit {p.returncode}); the end of {logs[name]}:\n{tail}"
            )


def _step_time(log: Path) -> float:
    found = re.findall(r"step_time_s=([0-9.]+)", log.read_text(errors="replace"))
    if not found:
        raise SystemExit(f"no 'step_time_s=' line in {log}: did the probe train?")
    return float(found[-1])


def max_steps_for(step_time_s: float, budget_s: float, fill: float) -> int:
    """Steps that fill ``fill`` of ``budget_s`` at ``step_time_s`` a step: at least 20, and a
    multiple of 100 from 1,000 on."""
    if not (step_time_s > 0 and budget_s > 0 and 0 < fill <= 1):
        raise ValueError(
            f"need step_time_s > 0, budget_s > 0 and 0 < fill <= 1, got {step_time_s}, "
            f"{budget_s}, {fill}"
        )
    steps = max(int(fill * budget_s / step_time_s), 20)
    return steps // 100 * 100 if steps >= 1000 else steps


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--budget-min", type=float, default=5.0, help="training minutes for each run")
    p.add_argument("--fill", type=float, default=0.85, help="share of the budget the steps fill")
    p.add_argument("--out", default="gpu_pair", help="folder for pair.json and the console logs")
    p.add_argument("--accelerator", default="gpu", help="cpu only to try the launcher itself")
    p.add_argument("--quick", action="store_true", help="probe 12 steps each (trying it out)")
    p.add_argument("--skip-eval", action="store_true", help="stop after training (export later)")
    p.add_argument("--dry-run", action="store_true")
    a = p.parse_args(argv)
    out = Path(a.out).resolve()
    out.mkdir(parents=True, exist_ok=True)
    report: dict = {"budget_min": a.budget_min, "fill": a.fill, "accelerator": a.accelerator}
    device = "cuda" if a.accelerator == "gpu" else a.accelerator
    common = ["--trainer.accelerator", a.accelerator]
    t0 = time.time()

    if a.dry_run:
        for cfg, n, extra in RUNS.values():
            print("$ zoo fit --config", cfg, "--trainer.max_steps", n, *extra)
        return 0

    from zoo.data.fashion_scenes import FashionScenesDataModule

    for stage in ("fit", "test"):  # generate and cache the scenes once, before two readers
        FashionScenesDataModule().setup(stage)
    report["data_s"] = round(time.time() - t0, 1)

    # 2. the probe, both at once, in a scratch folder (its runs/ are thrown away)
    probe_dir = out / "probe"
    probe_dir.mkdir(exist_ok=True)
    logs = {name: out / f"probe_{name}.log" for name in RUNS}
    procs = {
        name: _launch(
            [
                "fit",
                "--config",
                str(cfg),
                "--trainer.max_steps",
                str(12 if a.quick else n),
                *common,
                "--trainer.limit_val_batches",
                "0",
                *extra,
            ],
            logs[name],
            cwd=probe_dir,
        )
        for name, (cfg, n, extra) in RUNS.items()
    }
    _wait_all(procs, logs)
    budget_s = a.budget_min * 60
    report["probe"] = {}
    for name in RUNS:
        st = _step_time(logs[name])
        steps = max_steps_for(st, budget_s, a.fill)
        report["probe"][name] = {"step_time_s": st, "max_steps": steps}
        print(f"{name}: {st * 1000:.1f} ms a step side by side -> max_steps {steps}", flush=True)
    report["probe_s"] = round(time.time() - t0, 1)

    # 3. the runs, from scratch, both at once
    logs = {name: out / f"train_{name}.log" for name in RUNS}
    procs = {}
    for name, (cfg, _, _) in RUNS.items():
        steps = report["probe"][name]["max_steps"]
        procs[name] = _launch(
            [
                "fit",
                "--config",
                str(cfg),
                "--trainer.max_steps",
                str(steps),
                "--trainer.val_check_interval",
                str(max(steps // 4, 1)),
                *common,
            ],
            logs[name],
        )
    _wait_all(procs, logs)
    report["train_s"] = round(time.time() - t0, 1)

    # 4. export and evaluate
    report["eval"] = {}
    for name, (cfg, _, _) in RUNS.items() if not a.skip_eval else ():
        ckpt = Path(f"runs/{name}_fashion_scenes_gpu/checkpoints/last.ckpt")
        folder = out / "export" / f"{name}.fashion_scenes"
        recipe = str(cfg.relative_to(HERE.parent.parent))
        export = ["export", str(ckpt), "--name", f"{name}.fashion_scenes"]
        subprocess.run(ZOO + export + ["--out-dir", str(folder), "--recipe", recipe], check=True)
        report["eval"][name] = {}
        for split in ("val", "test"):
            js = out / f"eval_{name}_{split}.json"
            subprocess.run(
                ZOO
                + ["eval", str(folder), "--split", split, "--device", device, "--json", str(js)],
                check=True,
            )
            report["eval"][name][split] = json.loads(js.read_text())
    report["total_s"] = round(time.time() - t0, 1)
    (out / "pair.json").write_text(json.dumps(report, indent=1))
    print(json.dumps({k: v for k, v in report.items() if k != "eval"}, indent=1))
    for name, ev in report["eval"].items():
        print(name, {split: e["metrics"] for split, e in ev.items()})
    return 0


if __name__ == "__main__":
    sys.exit(main())
