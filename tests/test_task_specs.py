"""The plug-in design: a new problem type and family are new files only; the generic
commands (eval, card, leaderboard, samples) never name a task."""

from __future__ import annotations

import importlib.metadata
import json
import sys
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
PLUGINS = Path(__file__).parent / "plugins"


@pytest.fixture
def toy_family(tmp_path, monkeypatch):
    """Register tests/plugins/toy_family.py through the entry-point path a third-party package
    would use (an ``importlib.metadata`` entry point of group ``zoo.models``)."""
    from zoo.models import _registry
    from zoo.tasks import _spec

    # the plug-in's registrations live only as long as the test
    _registry._ensure_loaded()
    _spec._ensure_builtin()
    for mod, attr in ((_registry, "_ENTRYPOINTS"), (_registry, "_ENTRY_META"),
                      (_registry, "_PRETRAINED"), (_spec, "_TASKS")):  # fmt: skip
        monkeypatch.setattr(mod, attr, dict(getattr(mod, attr)))
    monkeypatch.setattr(_spec, "_SAMPLE_DIRS", list(_spec._SAMPLE_DIRS))
    monkeypatch.syspath_prepend(str(PLUGINS))
    monkeypatch.setenv("TOY_SAMPLES", str(tmp_path / "samples"))
    (tmp_path / "samples").mkdir()
    builtin = _registry._family_entry_points()
    toy = importlib.metadata.EntryPoint(name="toy", value="toy_family", group="zoo.models")
    monkeypatch.setattr(_registry, "_family_entry_points", lambda: [*builtin, toy])
    monkeypatch.setattr(_registry, "_LOADED", False)
    monkeypatch.setenv("ZOO_CHECKPOINTS", str(tmp_path / "checkpoints"))
    import zoo.cards

    monkeypatch.setattr(zoo.cards, "CARDS", tmp_path / "cards")
    yield tmp_path
    sys.modules.pop("toy_family", None)


def test_toy_family_gets_eval_card_leaderboard_and_sample(toy_family, capsys):
    import zoo
    from zoo.cli import main
    from zoo.samples import build

    tmp = toy_family
    assert "toy_regressor" in zoo.list_models("toy*")
    model = zoo.create_model("toy_regressor")
    with torch.no_grad():
        model.lin.weight.fill_(2.0)
        model.lin.bias.fill_(1.0)
    model.pretrained_cfg = {"name": "toy_regressor.unit"}
    model.save_pretrained(tmp / "checkpoints" / "toy_regressor.unit")
    assert zoo.list_models("toy*", pretrained=True) == ["toy_regressor.unit"]

    # demo sample, built by the spec, found by `zoo eval --sample`
    build("toy_points", out_dir=tmp / "samples")
    out = tmp / "eval.json"
    assert main(["eval", "toy_regressor.unit", "--sample", "--json", str(out)]) == 0
    res = json.loads(out.read_text())
    assert res["task"] == "toy-regression" and res["unit"] == "point"
    assert res["num_samples"] == 16 and res["metrics"]["mse"] < 0.05
    assert main(["eval", "toy_regressor.unit", "--split", "train", "--json", str(out)]) == 0
    assert json.loads(out.read_text())["num_samples"] == 64
    capsys.readouterr()
    assert main(["eval", "toy_regressor.unit", "--split", "val"]) == 2
    assert "unknown split 'val'" in capsys.readouterr().err

    # a budget given to a model without a solver is refused, never ignored
    assert main(["eval", "toy_regressor.unit", "--max-iter", "3"]) == 2
    assert "no test-time budget" in capsys.readouterr().err

    # a new checkpoint's card: its hand-written fields first, then `zoo card` measures
    import zoo.cards as cards

    cards.write_data(
        "toy_regressor.unit",
        {
            "dataset": {"id": "toy_points", "name": "toy points", "train": "64 generated points "
                        "(seed 0)", "test": "64 generated points (seed 1)"},
            "papers": [{"metric": "mse", "value": 0.01, "setup": "the noise floor"}],
        },
    )  # fmt: skip
    # a card measured on part of the split says so wherever its numbers appear
    assert main(["card", "toy_regressor.unit", "--limit", "8"]) == 0
    card = (tmp / "cards" / "toy_regressor.unit.md").read_text()
    assert "`zoo card toy_regressor.unit --limit 8`" in card and "full test set" not in card
    assert "only the first 8 points of the split" in card and "not the full split" in card
    assert cards.shipped_row("toy_regressor.unit")["limit"] == 8

    assert main(["card", "toy_regressor.unit"]) == 0
    card = (tmp / "cards" / "toy_regressor.unit.md").read_text()
    assert "--limit" not in card and "full test set" in card
    assert "A toy linear regressor" in card and "tabular-regression" in card
    assert "| MSE |" in card.replace("mean NFE | ", "") and "the noise floor" in card
    rows = cards.read_data("toy_regressor.unit")["results"]
    assert (
        zoo.load("toy_regressor.unit").pretrained_cfg["metrics"]["mse"] == rows[0]["metrics"]["mse"]
    )
    assert rows[0]["num_samples"] == 64  # the card measures the full test split
    assert "toy points" in cards.data_path("toy_regressor.unit").read_text()  # kept by zoo card

    lb = tmp / "lb.md"
    assert main(["leaderboard", "--sample", "--out", str(lb)]) == 1  # the zoo's own: not here
    text = lb.read_text()
    row = next(r for r in text.splitlines() if r.startswith("| toy_regressor.unit"))
    section = text[: text.index(row)].rsplit("### ", 1)[1].splitlines()[0]
    assert "toy-regression" in section and "mse" in row  # one table per task and dataset


def test_central_files_name_no_task():
    """evaluate, cards, samples and the CLI are generic: no task name appears in them."""
    from zoo.tasks import list_tasks

    tasks = list_tasks()
    assert {"image-classification", "language-modeling", "time-series"} <= set(tasks)
    for f in ("evaluate.py", "cards.py", "samples.py", "cli.py", "demo.py"):
        text = (ROOT / "zoo" / f).read_text()
        assert not [t for t in tasks if t in text], f


def test_get_grad_roundtrips_specs_and_keeps_kwargs():
    from zoo.solvers import Broyden, ImplicitGrad, PhantomGrad, get_grad

    g = ImplicitGrad(solver=Broyden(), tol=1e-5, max_iter=7)
    back = get_grad(g.spec())
    assert isinstance(back, ImplicitGrad) and back.spec() == g.spec()
    assert back.solver.name == "broyden" and back.solver.max_iter == 7
    assert get_grad(PhantomGrad(steps=1), steps=4).steps == 4
    with pytest.raises(ValueError, match="no option"):
        get_grad("phantom", stepz=3)


def test_pretrained_false_uses_the_tags_arguments():
    import zoo

    m = zoo.load("mdeq_tiny.fashion_mnist", pretrained=False)
    first = next(p for p in m.parameters() if p.dim() == 4)
    assert first.shape[1] == 1  # one input channel, as the tag's weights
    assert zoo.load("mdeq_tiny", pretrained=False).model_args.get("in_chans", 3) == 3


def test_eval_split_is_public_and_rejects_unknown_splits(tmp_path):
    from zoo.data import FashionMNISTDataModule, PeriodicDataModule, SOTUDataModule

    with pytest.raises(ValueError, match="unknown split 'dev'"):
        FashionMNISTDataModule(data_dir=str(tmp_path)).eval_split("dev")
    with pytest.raises(ValueError, match="unknown split 'val '"):
        SOTUDataModule(data_dir=str(tmp_path)).eval_split("val ")
    with pytest.raises(ValueError, match="no separate validation"):
        PeriodicDataModule(n=20).eval_split("val")
    batch = next(iter(PeriodicDataModule(n=20, batch_size=4).eval_split("train")))
    assert batch.values.shape[0] == 4


def test_time_series_split_is_honoured_and_rnn_vae_evaluates(tmp_path):
    import zoo
    from zoo.evaluate import evaluate

    test = evaluate("latent_ode.periodic", limit=20)
    train = evaluate("latent_ode.periodic", split="train", limit=20)
    assert test["split"] == "test" and train["split"] == "train"
    assert test["metrics"] != train["metrics"] and train["unit"] == "series"
    with pytest.raises(ValueError, match="unknown split 'val'"):
        evaluate("latent_ode.periodic", split="val")

    vae = zoo.create_model("rnn_vae", input_dim=1, latent_dim=4, rec_dims=8, units=8)
    vae.pretrained_cfg = {**zoo.model_info("latent_ode.periodic"), "name": "my_vae"}
    vae.save_pretrained(tmp_path / "my_vae")
    res = evaluate(str(tmp_path / "my_vae"), sample=True)
    assert res["num_samples"] == 50 and res["metrics"]["mse"] > 0
    assert vae.cost().nfe_forward == 0  # the RNN-VAE solves no ODE


def test_library_calls_leave_the_global_rng_alone():
    from zoo.evaluate import evaluate

    torch.manual_seed(1234)
    before = torch.get_rng_state()
    evaluate("latent_ode.periodic", sample=True, limit=10)
    assert torch.equal(before, torch.get_rng_state())


def test_every_protocol_matches_its_recipe_and_sample():
    """One source of truth: a checkpoint is evaluated on the data arguments it was trained
    with, and its shipped sample was cut with the same ones."""
    import inspect

    import yaml

    import zoo
    from zoo.data import datamodule_class
    from zoo.samples import sample_protocol
    from zoo.tasks import get_task, sample_path

    loader_only = {"batch_size", "eval_batch_size", "num_workers", "augment", "pad", "bptt"}
    loader_only |= {"limit_train", "val_size", "data_dir", "val_patients"}  # the test split stays
    for name in zoo.list_models(pretrained=True):
        info = zoo.model_info(name)
        p = get_task(info["task"]).protocol(info)
        recipe = yaml.safe_load((ROOT / info["recipe"]).read_text())
        data = recipe["data"]
        cls = datamodule_class(p.datamodule)
        assert data["class_path"].rsplit(".", 1)[1] == cls.__name__, name
        defaults = {
            k: v.default
            for k, v in inspect.signature(cls).parameters.items()
            if v.default is not inspect.Parameter.empty
        }
        trained = {**defaults, **(data.get("init_args") or {})}
        evaluated = {**defaults, **p.datamodule_args}
        for k in set(trained) - loader_only:
            assert trained[k] == evaluated[k], (name, k, trained[k], evaluated[k])
        stamp = sample_protocol(sample_path(p.sample))
        assert stamp == {"datamodule": p.datamodule, "datamodule_args": p.datamodule_args}, name


def test_every_shipped_sample_is_read_by_a_checkpoint():
    """No orphan in the package: each file under zoo/_samples is some checkpoint's sample."""
    from zoo.samples import protocols
    from zoo.tasks import sample_path

    used = {sample_path(s).resolve() for s in protocols()}
    shipped = set((ROOT / "zoo" / "_samples").glob("*.npz"))
    assert {p.resolve() for p in shipped} <= used, sorted(
        p.name for p in shipped if p.resolve() not in used
    )


@pytest.mark.slow
def test_wheel_install_finds_samples_and_families(tmp_path):
    """A non-editable install (a built wheel) carries the samples and the entry points."""
    import subprocess
    import zipfile

    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", str(ROOT), "--no-deps", "--no-build-isolation",
         "-w", str(tmp_path / "wheel"), "-q"],
        check=True,
    )  # fmt: skip
    whl = next((tmp_path / "wheel").glob("*.whl"))
    names = zipfile.ZipFile(whl).namelist()
    assert "zoo/_samples/fashion_mnist.npz" in names
    ep = next(n for n in names if n.endswith("entry_points.txt"))
    assert "[zoo.models]" in zipfile.ZipFile(whl).read(ep).decode()
    subprocess.run(
        [sys.executable, "-m", "pip", "install", "--no-deps", "-q", "--target",
         str(tmp_path / "site"), str(whl)],
        check=True,
    )  # fmt: skip
    site = str(tmp_path / "site")
    code = (
        f"import zoo; assert zoo.__file__.startswith({site!r}), zoo.__file__; "
        "from zoo.evaluate import evaluate; "
        "r = evaluate('mdeq_tiny.fashion_mnist', sample=True, limit=20); print(r['num_samples'])"
    )
    env = {
        **__import__("os").environ,
        "PYTHONPATH": str(tmp_path / "site"),
        "ZOO_CHECKPOINTS": str(ROOT / "checkpoints"),
    }
    r = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env=env, cwd=tmp_path
    )
    assert r.returncode == 0, r.stderr[-2000:]
    assert r.stdout.strip().endswith("20")


def _result(name: str, task: str, dataset: str, metrics: dict, primary: str, unit: str) -> dict:
    return {
        "name": name, "task": task, "dataset": dataset, "metrics": metrics,
        "primary_metric": primary, "params": 1000, "nfe_mean": 10.0,
        "latency_ms_per_sample": 1.0, "split": "test", "num_samples": 1600, "unit": unit,
        "device": "cpu", "data": "test data",
    }  # fmt: skip


@pytest.mark.parametrize(
    ("mse", "verdict"), [(1.059e-3, "0.50x (met)"), (4.236e-3, "2.00x (missed)")]
)
def test_time_series_leaderboard_has_the_papers_layout(mse, verdict):
    """The time-series table: the protocol (mode and grid), ours beside the paper's figure for
    the same row, and their ratio, met or missed; other tasks keep the generic table."""
    from zoo.evaluate import leaderboard_markdown

    rows = [
        _result("latent_ode.physionet", "time-series", "physionet2012", {"mse": mse}, "mse", "series"),
        _result("ode_rnn.physionet", "time-series", "physionet2012", {"mse": 0.01}, "mse", "series"),
        _result("odenet.cifar10", "image-classification", "cifar10_jpeg", {"top1": 60.0}, "top1", "image"),
    ]  # fmt: skip
    text = "\n".join(leaderboard_markdown(rows))
    assert "n=1600 series)" in text and "seriess" not in text
    line = next(s for s in text.splitlines() if s.startswith("| latent_ode.physionet"))
    assert "interpolation, 1-min grid" in line and "0.002118" in line and verdict in line
    other = next(s for s in text.splitlines() if s.startswith("| ode_rnn.physionet"))
    assert other.split(" | ")[3:5] == ["-", "-"]  # no paper figure on its 0.1 h grid: no ratio
    assert "| odenet.cifar10 | 1,000 | top1 60.0 |" in text
