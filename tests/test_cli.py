"""The zoo command end to end on tiny data: fit -> export -> list -> eval -> card -> leaderboard."""

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from _formats import write_fashion_mnist

from zoo.cli import main

ROOT = Path(__file__).resolve().parents[1]
RECIPE = ROOT / "recipes" / "mdeq" / "mdeq_tiny.fashion_mnist.stage1.yaml"
TINY = {
    "in_chans": 1,
    "channels": [4, 4],
    "head_channels": [2, 2],
    "final_channels": 8,
    "expansion": 1,
    "groups": 2,
    "solver": {"name": "anderson", "max_iter": 3},
    "grad": {"name": "phantom", "steps": 1},
}


def test_version_and_help():
    out = subprocess.run(
        [sys.executable, "-m", "zoo.cli", "--version"], capture_output=True, text=True
    )
    assert out.returncode == 0 and out.stdout.startswith("implicit-zoo ")


def test_list(capsys):
    assert main(["list", "mdeq*"]) == 0
    assert "mdeq_tiny" in capsys.readouterr().out
    assert main(["list"]) == 0
    rows = capsys.readouterr().out.splitlines()
    # one column for the names, however long the longest (deq_transformer_tiny.shakespeare_char)
    starts = {r.index(" language-modeling") for r in rows if " language-modeling" in r}
    assert len(starts) == 1, rows


def test_a_closed_pipe_ends_quietly():
    """`zoo list | head -1`: the reader leaves early; no error message, exit status 0."""
    code = (
        "import sys, zoo.cli as c\n"
        "def gone(args): raise BrokenPipeError(32, 'Broken pipe')\n"
        "c._cmd_list = gone\n"
        "sys.exit(c.main(['list']))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert out.returncode == 0 and out.stderr == "", out.stderr


def test_unknown_model_is_a_clear_error(capsys):
    assert main(["eval", "mdeq_tiyn.fashion_mnist"]) == 2
    assert "did you mean" in capsys.readouterr().err


def test_a_folder_exported_under_an_unknown_name_says_why_it_cannot_be_evaluated(tmp_path, capsys):
    """Its weights load, but no protocol (task, dataset, metric) is known for the name."""
    import shutil

    folder = tmp_path / "mine.sudoku"
    shutil.copytree(ROOT / "checkpoints" / "mlp_csp.sudoku", folder)
    cfg = json.loads((folder / "config.json").read_text())
    cfg["pretrained_cfg"]["name"] = "mine.sudoku"
    (folder / "config.json").write_text(json.dumps(cfg))
    assert main(["eval", str(folder)]) == 2
    err = capsys.readouterr().err
    assert "no evaluation protocol is known" in err and "Traceback" not in err


def _tiny_fashion(tmp_path, monkeypatch, n_train: int, n_test: int) -> None:
    """Random Fashion-MNIST IDX files under tmp_path/data; chdir there and point ZOO_DATA_DIR at it."""
    write_fashion_mnist(tmp_path / "data", n_train, n_test)
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("ZOO_DATA_DIR", str(tmp_path / "data"))


def test_fit_export_eval_card_leaderboard(tmp_path, monkeypatch, capsys):
    _tiny_fashion(tmp_path, monkeypatch, 48, 20)
    monkeypatch.setenv("ZOO_CHECKPOINTS", str(tmp_path / "checkpoints"))
    monkeypatch.setenv("ZOO_CACHE_DIR", str(tmp_path / "cache"))
    import zoo.cards

    monkeypatch.setattr(zoo.cards, "CARDS", tmp_path / "cards")

    args = [
        "fit",
        "--config",
        str(RECIPE),
        "--trainer.max_epochs=1",
        "--trainer.limit_train_batches=2",
        "--trainer.limit_val_batches=1",
        "--trainer.enable_progress_bar=false",
        f"--model.init_args.model_args={json.dumps(TINY)}",
        "--model.init_args.pretrain_steps=1",
        "--data.init_args.batch_size=8",
        "--data.init_args.val_size=8",
        "--data.init_args.eval_batch_size=8",
    ]
    assert main(args) == 0
    ckpt = tmp_path / "runs" / "mdeq_tiny_fashion_mnist" / "checkpoints" / "last.ckpt"
    assert ckpt.is_file()

    assert main(["export", str(ckpt), "--name", "mdeq_tiny.fashion_mnist"]) == 0
    cfg = json.loads(
        (tmp_path / "checkpoints" / "mdeq_tiny.fashion_mnist" / "config.json").read_text()
    )
    assert cfg["model_args"]["solver"]["max_iter"] == 12  # the recipe's eval budget ships
    assert cfg["pretrained_cfg"]["trained_epochs"] == 1  # saved at the end of its one epoch
    # the run's CSV log rides along, thinned to the card's training-figure keys
    curve = json.loads(
        (tmp_path / "checkpoints" / "mdeq_tiny.fashion_mnist" / "training_log.json").read_text()
    )
    assert "val/acc1" in curve and all(len(p) == 2 and p[0] >= 0 for p in curve["val/acc1"])
    # one source of truth: the protocol stays in the pretrained table, merged in at load
    assert not {"recipe", "datamodule", "task"} & set(cfg["pretrained_cfg"])
    import zoo

    loaded = zoo.load("mdeq_tiny.fashion_mnist").pretrained_cfg
    assert loaded["recipe"].endswith("mdeq_tiny.fashion_mnist.yaml")
    assert loaded["trained_epochs"] == 1

    # timm returns the zoo's weights once zoo is imported
    code = (
        "import zoo, timm; m = timm.create_model('mdeq_tiny.fashion_mnist', pretrained=True); "
        "print(m.pretrained_cfg['name'], m.pretrained_cfg['source'])"
    )
    import os

    r = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        env={**os.environ, "ZOO_CHECKPOINTS": str(tmp_path / "checkpoints")},
    )
    assert r.returncode == 0, r.stderr[-2000:]
    assert r.stdout.split() == ["mdeq_tiny.fashion_mnist", "repo", "checkpoints/"]

    capsys.readouterr()
    assert main(["list", "--pretrained"]) == 0
    assert "mdeq_tiny.fashion_mnist" in capsys.readouterr().out

    out = tmp_path / "eval.json"
    assert main(["eval", "mdeq_tiny.fashion_mnist", "--max-iter", "2", "--json", str(out)]) == 0
    res = json.loads(out.read_text())
    assert res["num_samples"] == 20 and res["nfe_mean"] <= 2 and 0 <= res["metrics"]["top1"] <= 100
    assert res["command"] == "zoo eval mdeq_tiny.fashion_mnist --max-iter 2"

    assert main(["eval", "mdeq_tiny.fashion_mnist", "--sample", "--limit", "50"]) == 0

    # --split val: the training images the recipes hold out; with 48 < 5,000 that is all of them
    assert main(["eval", "mdeq_tiny.fashion_mnist", "--split", "val", "--json", str(out)]) == 0
    res = json.loads(out.read_text())
    from zoo.data import FashionMNISTDataModule

    dm = FashionMNISTDataModule(data_dir=str(tmp_path / "data"))
    x, y = dm.eval_split("val")
    with torch.no_grad():
        pred = zoo.load("mdeq_tiny.fashion_mnist")(dm.normalize(x)).argmax(1)
    assert res["num_samples"] == 48 and res["command"].endswith("--split val")
    assert res["metrics"]["top1"] == round(100 * (pred == y).float().mean().item(), 2)
    capsys.readouterr()
    assert main(["eval", "mdeq_tiny.fashion_mnist", "--split", "train"]) == 2
    assert "is empty" in capsys.readouterr().err
    assert main(["eval", "mdeq_tiny.fashion_mnist", "--split", "tset"]) == 2
    assert "unknown split 'tset'" in capsys.readouterr().err

    card_args = ["--budgets", "2,12", "--full-solve", "4,1e-3"]
    assert main(["card", "mdeq_tiny.fashion_mnist", *card_args]) == 0
    card = (tmp_path / "cards" / "mdeq_tiny.fashion_mnist.md").read_text()
    assert (
        card.startswith("---\nlicense: apache-2.0") and "model-index" in card and "zoo card" in card
    )
    assert (tmp_path / "cards" / "mdeq_tiny.fashion_mnist.budget.png").stat().st_size > 1000
    stored = zoo.cards.read_data("mdeq_tiny.fashion_mnist")["results"]
    assert [r["budget"] for r in stored] == [2, 12, "full solve (4 it, tol 0.001)"]
    assert "top1" in zoo.load("mdeq_tiny.fashion_mnist").pretrained_cfg["metrics"]

    # offline, with one checkpoint here: the others are listed as not measured (exit 1)
    assert main(["leaderboard", "--sample", "--limit", "40", "--out", str(tmp_path / "lb.md")]) == 1
    lb = (tmp_path / "lb.md").read_text()
    assert "mdeq_tiny.fashion_mnist" in lb and "papers' own figures" in lb
    assert "- odenet.cifar10: the Hub repository 'implicit-zoo/odenet.cifar10'" in lb
    # one table per dataset, with the parameter count of each model beside its metric
    assert "### fashion_mnist (image-classification" in lb and "| parameters |" in lb


@pytest.mark.parametrize("bad", [["eval"], ["push", "x"]])
def test_argparse_errors(bad):
    with pytest.raises(SystemExit):
        main(bad)


def test_language_model_fit_export_eval_generate(tmp_path, monkeypatch, capsys):
    import tarfile

    rng = np.random.default_rng(0)
    words = "the people of the union and the congress shall meet in the year of our lord".split()
    src = tmp_path / "src" / "sotu" / "data"
    src.mkdir(parents=True)
    for year in (1990, 2000, 2005, 2015):
        (src / f"{year}_someone_x.txt").write_text(
            "\n".join(" ".join(rng.choice(words, 25)) for _ in range(12))
        )
    (tmp_path / "data" / "text").mkdir(parents=True)
    with tarfile.open(tmp_path / "data" / "text" / "sotu.tar.gz", "w:gz") as tf:
        tf.add(tmp_path / "src" / "sotu", arcname="sotu")
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("ZOO_CHECKPOINTS", str(tmp_path / "checkpoints"))
    monkeypatch.setenv("ZOO_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.setenv("ZOO_CACHE_DIR", str(tmp_path / "cache"))
    recipe = ROOT / "recipes" / "deq_lm" / "experiments" / "deq_transformer_tiny_sotu_cpu.yaml"
    margs = {
        "d_model": 16,
        "n_heads": 2,
        "d_ff": 32,
        "tgt_len": 8,
        "solver": {"name": "anderson", "max_iter": 3},
        "grad": {"name": "phantom", "steps": 1},
        "jac_reg_samples": 1,
    }
    args = [
        "fit",
        "--config",
        str(recipe),
        "--trainer.max_steps=3",
        "--trainer.val_check_interval=3",
        "--trainer.limit_val_batches=2",
        "--trainer.enable_progress_bar=false",
        f"--model.init_args.model_args={json.dumps(margs)}",
        "--model.init_args.warmup_steps=1",
        "--data.init_args.batch_size=2",
        "--data.init_args.eval_batch_size=2",
        "--data.init_args.bptt=8",
    ]
    assert main(args) == 0
    ckpt = tmp_path / "runs" / "deq_transformer_tiny_sotu" / "checkpoints" / "last.ckpt"
    assert main(["export", str(ckpt), "--name", "deq_transformer_tiny.sotu"]) == 0
    cfg = json.loads(
        (tmp_path / "checkpoints" / "deq_transformer_tiny.sotu" / "config.json").read_text()
    )
    assert cfg["tokenizer"]["level"] == "word" and "union" in cfg["tokenizer"]["vocab"]
    assert cfg["model_args"]["vocab_size"] == len(cfg["tokenizer"]["vocab"])

    out = tmp_path / "lm.json"
    assert main(["eval", "deq_transformer_tiny.sotu", "--json", str(out)]) == 0
    res = json.loads(out.read_text())
    assert res["primary_metric"] == "ppl" and res["metrics"]["ppl"] > 1 and res["nfe_mean"] <= 20

    capsys.readouterr()
    assert (
        main(
            [
                "generate",
                "deq_transformer_tiny.sotu",
                "--prompt",
                "The people of",
                "--max-new-tokens",
                "5",
            ]
        )
        == 0
    )
    text = capsys.readouterr().out.strip().split()
    assert text[:3] == ["the", "people", "of"] and len(text) == 8
    assert main(["generate", "deq_transformer_tiny.sotu", "--prompt", "   "]) == 2

    import zoo.cards as cards

    monkeypatch.setattr(cards, "CARDS", tmp_path / "cards")
    assert (
        main(["card", "deq_transformer_tiny.sotu", "--budgets", "2,3", "--full-solve", "none"]) == 0
    )
    card = (tmp_path / "cards" / "deq_transformer_tiny.sotu.md").read_text()
    assert "perplexity" in card and "## A generated sample" in card and "> the" in card.lower()


def test_time_series_fit_export_eval_card(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("ZOO_CHECKPOINTS", str(tmp_path / "checkpoints"))
    monkeypatch.setenv("ZOO_CACHE_DIR", str(tmp_path / "cache"))
    import zoo.cards as cards

    monkeypatch.setattr(cards, "CARDS", tmp_path / "cards")
    recipe = ROOT / "recipes" / "latent_ode" / "latent_ode.periodic.yaml"
    margs = {"input_dim": 1, "latent_dim": 3, "rec_dims": 4, "units": 8}
    args = ["fit", "--config", str(recipe), "--trainer.max_epochs=1",
            "--trainer.enable_progress_bar=false", f"--model.init_args.model_args={json.dumps(margs)}",
            "--data.init_args.n=1000"]  # fmt: skip
    assert main(args) == 0
    ckpt = tmp_path / "runs" / "latent_ode_periodic" / "checkpoints" / "last.ckpt"
    assert main(["export", str(ckpt), "--name", "latent_ode.periodic"]) == 0
    out = tmp_path / "ts.json"
    assert main(["eval", "latent_ode.periodic", "--json", str(out)]) == 0
    res = json.loads(out.read_text())
    assert res["num_samples"] == 200 and res["primary_metric"] == "mse" and res["nfe_mean"] > 0
    assert main(["card", "latent_ode.periodic"]) == 0
    card = (tmp_path / "cards" / "latent_ode.periodic.md").read_text()
    assert "time-series-forecasting" in card and "MSE (reference per-series average)" in card
    assert (tmp_path / "cards" / "latent_ode.periodic.trajectories.png").stat().st_size > 1000


def _tiny_fit_args(*extra: str) -> list[str]:
    """`zoo fit` of the Fashion-MNIST recipe on the tiny files: batch 4, 4 held out, TINY cell."""
    return [
        "fit",
        "--config",
        str(RECIPE),
        *extra,
        "--trainer.limit_val_batches=1",
        "--trainer.enable_progress_bar=false",
        f"--model.init_args.model_args={json.dumps(TINY)}",
        "--model.init_args.pretrain_steps=0",
        "--data.init_args.batch_size=4",
        "--data.init_args.val_size=4",
        "--data.init_args.eval_batch_size=4",
    ]


def test_checkpoints_follow_default_root_dir_and_resume(tmp_path, monkeypatch):
    """A recipe's checkpoints go to <default_root_dir>/checkpoints; '--ckpt_path last' finds them."""
    import torch

    _tiny_fashion(tmp_path, monkeypatch, 24, 8)
    args = _tiny_fit_args("--trainer.default_root_dir=mine", "--trainer.limit_train_batches=2")
    assert main([*args, "--trainer.max_epochs=1"]) == 0
    last = tmp_path / "mine" / "checkpoints" / "last.ckpt"
    assert last.is_file()
    assert not (tmp_path / "runs" / "mdeq_tiny_fashion_mnist" / "checkpoints").exists()
    assert torch.load(last, weights_only=True)["global_step"] == 2

    # the next session: same command plus --ckpt_path last continues the run
    assert main([*args, "--trainer.max_epochs=2", "--ckpt_path=last"]) == 0
    assert torch.load(last, weights_only=True)["global_step"] == 4


def test_resume_after_a_mid_epoch_stop_finishes_that_epoch(tmp_path, monkeypatch):
    """A run stopped mid-epoch (max_time, max_steps) resumes inside that epoch.

    Lightning marks the epoch completed when training stops early, so without the rewind in
    SaveLastOnTrainEnd the resumed run would skip the rest of that epoch's batches.
    """
    import torch

    _tiny_fashion(tmp_path, monkeypatch, 24, 8)  # 20 training images, batch 4: 5 steps/epoch
    args = _tiny_fit_args("--trainer.max_epochs=1")
    assert main([*args, "--trainer.max_steps=2"]) == 0  # stops after 2 of 5 steps
    last = tmp_path / "runs" / "mdeq_tiny_fashion_mnist" / "checkpoints" / "last.ckpt"
    state = torch.load(last, weights_only=True)
    assert state["global_step"] == 2 and state["epoch"] == 0
    assert main([*args, "--ckpt_path=last"]) == 0
    state = torch.load(last, weights_only=True)
    assert state["global_step"] == 5  # the other 3 steps of epoch 0 ran
    assert state["loops"]["fit_loop"]["epoch_progress"]["current"]["completed"] == 1


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the error on a machine without CUDA")
def test_eval_device_errors_and_auto(capsys):
    assert main(["eval", "mdeq_tiny.fashion_mnist", "--sample", "--device", "cuda"]) == 2
    assert "sees no CUDA GPU" in capsys.readouterr().err
    assert main(["eval", "mdeq_tiny.fashion_mnist", "--sample", "--device", "gpu0"]) == 2
    assert "unknown device 'gpu0'" in capsys.readouterr().err
    assert (
        main(["eval", "mdeq_tiny.fashion_mnist", "--sample", "--limit", "8", "--device", "auto"])
        == 0
    )
    assert "mdeq_tiny.fashion_mnist" in capsys.readouterr().out


def test_leaderboard_skips_a_model_whose_data_is_missing_and_says_so(tmp_path, monkeypatch, capsys):
    """One dataset missing must not cost the others' measurements: the rest are measured and
    written, the skipped model is listed with the reason, and the exit status says so."""
    import zoo
    import zoo.evaluate as ev
    from zoo.data._common import MissingDataError

    real = ev.evaluate
    names = ["ffjord_toy.pinwheel", "ffjord_toy.8gaussians"]

    def evaluate(name, **kw):
        if name == "ffjord_toy.pinwheel":
            raise MissingDataError("pinwheel not found: expected /nowhere. Set ZOO_DATA_DIR")
        return real(name, **(kw | {"sample": True, "limit": 40}))

    monkeypatch.setattr(zoo, "list_models", lambda pretrained=False: list(names))
    monkeypatch.setattr(ev, "evaluate", evaluate)
    out = tmp_path / "lb.md"
    assert main(["leaderboard", "--out", str(out)]) == 1
    lb, err = out.read_text(), capsys.readouterr().err
    assert "ffjord_toy.8gaussians" in lb.split("Not measured here")[0]  # measured and written
    assert "- ffjord_toy.pinwheel: pinwheel not found: expected /nowhere" in lb
    assert "skipped ffjord_toy.pinwheel" in err and "1 of 2 models skipped" in err
    assert [r["name"] for r in json.loads(out.with_suffix(".json").read_text())] == [names[1]]
    # when nothing can be measured, the data error itself is the answer (a clear CLI error)
    names[1] = "ffjord_toy.pinwheel"
    assert main(["leaderboard", "--out", str(out)]) == 2
    assert "pinwheel not found" in capsys.readouterr().err
