"""Nothing lost on interruption: a tiny training run killed with SIGKILL mid-epoch and resumed
with ``ckpt_path="last"`` ends with the same weights as the uninterrupted run (deterministic
mode, same seed); and a checkpoint being written when the process dies never replaces a good
one with a half-written file."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import pytest
import torch

pytestmark = pytest.mark.timeout(300)

SCRIPT = textwrap.dedent(
    """
    import os, signal, sys, warnings
    import lightning.pytorch as pl
    import torch
    warnings.simplefilter("ignore")
    sys.path.insert(0, {tests!r})
    from _formats import write_fashion_mnist
    from pathlib import Path
    from zoo.data import FashionMNISTDataModule
    from zoo.tasks import ImageClassification

    root, kill_at, resume, family = Path(sys.argv[1]), int(sys.argv[2]), sys.argv[3] == "1", sys.argv[4]
    os.environ["ZOO_CACHE_DIR"] = str(root / "cache")  # runs side by side share no cache
    if family in ("mdeq", "odenet", "mdeq_seg") and not (root / "data").exists():
        write_fashion_mnist(root / "data", 40, 8)
    if family == "lm" and not (root / "data").exists():
        import random, tarfile
        rnd = random.Random(0)
        words = "the people of the union and congress shall meet in the year".split()
        src = root / "src" / "sotu" / "data"
        src.mkdir(parents=True)
        for year in (1990, 2005, 2015):
            (src / f"{{year}}_a_b.txt").write_text(" ".join(rnd.choice(words) for _ in range(180)))
        (root / "data" / "text").mkdir(parents=True)
        with tarfile.open(root / "data" / "text" / "sotu.tar.gz", "w:gz") as tf:
            tf.add(root / "src" / "sotu", arcname="sotu")

    class Kill(pl.Callback):
        def on_train_batch_end(self, trainer, *args):
            if trainer.global_step == kill_at:
                os.kill(os.getpid(), signal.SIGKILL)

    pl.seed_everything(0)
    if family == "mdeq":
        margs = dict(in_chans=1, channels=[4, 8], head_channels=[2, 4], final_channels=8,
                     groups=2, dropout=0.1, solver={{"name": "anderson", "max_iter": 4}})
        task = ImageClassification(arch="mdeq_tiny", model_args=margs, lr=1e-3)
        dm = FashionMNISTDataModule(data_dir=str(root / "data"), batch_size=4, val_size=0, pad=2)
    elif family == "odenet":
        margs = dict(in_chans=1, channels=8, grid_steps=1, jacobian_weight=0.1)
        task = ImageClassification(arch="odenet", model_args=margs, lr=1e-3)
        dm = FashionMNISTDataModule(data_dir=str(root / "data"), batch_size=4, val_size=0, pad=2)
    elif family == "mdeq_seg":  # the flip augmentation draws from the global RNG (restored)
        from zoo.data.fashion_scenes import FashionScenesDataModule
        from zoo.tasks.segmentation import Segmentation
        margs = dict(channels=[4, 4], groups=2, expansion=1, solver={{"name": "anderson", "max_iter": 3}})
        task = Segmentation(arch="mdeq_seg_tiny", model_args=margs, lr=1e-3)
        dm = FashionScenesDataModule(data_dir=str(root / "data"), num_train=50, num_test=4,
                                     val_size=10, batch_size=4)
    elif family == "latent_ode":
        from zoo.data import PeriodicDataModule
        from zoo.tasks import TimeSeries
        margs = dict(input_dim=1, latent_dim=4, rec_dims=8, units=8, decoder_steps=10)
        task = TimeSeries(arch="latent_ode", model_args=margs, n_samples=2, kl_wait_epochs=0)
        dm = PeriodicDataModule(n=50, n_points=20, batch_size=4, obs_frac=0.5)
    elif family == "ffjord":  # Hutchinson's noise comes from the global RNG: it is restored too
        from zoo.data import datamodule_class
        from zoo.tasks.density import DensityEstimation
        margs = dict(hidden=[8], trace="hutchinson", rtol=1e-4, atol=1e-4)
        task = DensityEstimation(arch="ffjord_toy", model_args=margs, lr=1e-2)
        dm = datamodule_class("toy2d")(n_train=40, n_test=16, batch_size=4, eval_batch_size=16)
    elif family == "ncde":  # a classifier of irregular series: the label's loss alone
        from _formats import write_physionet
        from zoo.data import PhysioNet2012DataModule
        from zoo.tasks import TimeSeries
        if not (root / "data").exists():
            write_physionet(root / "data", n_a=30, n_b=14)
        margs = dict(input_dim=41, hidden=4, units=8, rtol=1e-3, atol=1e-3)
        task = TimeSeries(arch="ncde", model_args=margs, classif_weight=1.0, n_samples=1,
                          optimizer="adam", lr=1e-2)
        dm = PhysioNet2012DataModule(data_dir=str(root / "data"), quantization=1.0, batch_size=4,
                                     val_patients=4)
    elif family == "satnet":  # the SATNet layer's own solve and implicit gradient
        from zoo.data.puzzles import SudokuDataModule
        from zoo.tasks.constraint_satisfaction import ConstraintSatisfaction
        margs = dict(n_bits=64, m=8, aux=2, cell_bits=4, max_iter=5, grad_max_iter=5)
        task = ConstraintSatisfaction(arch="satnet", model_args=margs, lr=1e-2, min_lr=1e-2)
        dm = SudokuDataModule(box=2, n_train=40, n_val=4, n_test=4, clues=(6, 9), batch_size=4,
                              augment=True)  # resumes its random symmetries exactly too
    else:
        from zoo.data import SOTUDataModule
        from zoo.tasks import LanguageModeling
        margs = dict(d_model=16, n_heads=2, d_ff=32, tgt_len=4, mem_len=4, dropout=0.1)
        task = LanguageModeling(arch="transformer_tiny", model_args=margs, warmup_steps=1)
        dm = SOTUDataModule(data_dir=str(root / "data"), vocab_size=None, batch_size=2, bptt=4)
    ckpt = pl.callbacks.ModelCheckpoint(dirpath=root / "ckpt", every_n_train_steps=2, save_last=True)
    tr = pl.Trainer(max_epochs=2, deterministic=True, logger=False, enable_progress_bar=False,
                    enable_model_summary=False, limit_val_batches=0, callbacks=[ckpt, Kill()])
    tr.fit(task, dm, ckpt_path="last" if resume else None)
    torch.save(task.model.state_dict(), root / "final.pt")
    """
)


def _start(root, kill_at, resume, tests, family) -> subprocess.Popen:
    code = SCRIPT.format(tests=tests)
    return subprocess.Popen(
        [sys.executable, "-c", code, str(root), str(kill_at), "1" if resume else "0", family],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip


def _wait(proc: subprocess.Popen) -> subprocess.CompletedProcess:
    try:
        out, err = proc.communicate(timeout=240)
    except subprocess.TimeoutExpired:
        proc.kill()
        out, err = proc.communicate()
    return subprocess.CompletedProcess(proc.args, proc.returncode, out, err)


def _run(root, kill_at, resume, tests, family):
    return _wait(_start(root, kill_at, resume, tests, family))


def _whole_and_killed(tmp_path, tests, family):
    """The uninterrupted run and the run killed at step 13, side by side (deterministic runs:
    their weights do not depend on what else the machine runs)."""
    procs = [_start(tmp_path / "whole", -1, False, tests, family),
             _start(tmp_path / "cut", 13, False, tests, family)]  # fmt: skip
    return [_wait(p) for p in procs]


# the MDEQ in the default run; every other family in the slow set (`.ci/run` runs both)
FAMILIES = ["mdeq"] + [
    pytest.param(f, marks=pytest.mark.slow)
    for f in ("latent_ode", "lm", "ffjord", "odenet", "mdeq_seg", "ncde", "satnet")
]


@pytest.mark.parametrize("family", FAMILIES)
def test_sigkill_mid_epoch_then_resume_gives_the_uninterrupted_weights(family, tmp_path):
    from pathlib import Path

    tests = str(Path(__file__).parent)
    # MDEQ: 40 images, batch 4: 10 steps per epoch; killed at step 13 (epoch 1), last save at
    # 12. Latent ODE: 40 series, batch 4. FFJORD: 40 points, batch 4. ODE-Net: as the MDEQ. Segmentation: 40 scenes (50 less 10 held out). LM: more than 13 segments of 2 x 4 tokens.
    whole, killed = _whole_and_killed(tmp_path, tests, family)
    assert whole.returncode == 0, whole.stderr[-2000:]
    assert killed.returncode == -9, killed.stderr[-2000:]
    assert not (tmp_path / "cut" / "final.pt").exists()
    state = torch.load(tmp_path / "cut" / "ckpt" / "last.ckpt", weights_only=True)
    assert state["global_step"] == 12
    resumed = _run(tmp_path / "cut", -1, True, tests, family)
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    a = torch.load(tmp_path / "whole" / "final.pt", weights_only=True)
    b = torch.load(tmp_path / "cut" / "final.pt", weights_only=True)
    for k in a:
        assert torch.equal(a[k], b[k]), k


@pytest.mark.slow  # about 40 s
def test_a_shrunk_state_resumes_to_nearly_the_uninterrupted_weights(tmp_path):
    """``zoo shrink-state``: the killed run's state with its Adam moments in bfloat16 resumes
    (the moments back in float32), keeps weights and counters exact, and ends within bfloat16's
    rounding of the uninterrupted run, not bit-exact."""
    from pathlib import Path

    from zoo.cli import main

    tests = str(Path(__file__).parent)
    whole, killed = _whole_and_killed(tmp_path, tests, "mdeq")
    assert whole.returncode == 0, whole.stderr[-2000:]
    assert killed.returncode == -9, killed.stderr[-2000:]
    last = tmp_path / "cut" / "ckpt" / "last.ckpt"
    full = torch.load(last, weights_only=True)
    assert main(["shrink-state", str(last), str(last), "--in-place"]) == 0
    small = torch.load(last, weights_only=True)
    assert small["zoo_shrunk_state"]["moments"] == "bfloat16"
    for k, v in full["state_dict"].items():
        assert torch.equal(v, small["state_dict"][k]), k
    for i, per_param in full["optimizer_states"][0]["state"].items():
        got = small["optimizer_states"][0]["state"][i]
        assert torch.equal(got["step"], per_param["step"])
        for key in ("exp_avg", "exp_avg_sq"):
            assert got[key].dtype == torch.bfloat16
            torch.testing.assert_close(got[key].float(), per_param[key], rtol=2**-8, atol=0)
    resumed = _run(tmp_path / "cut", -1, True, tests, "mdeq")
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    assert "resuming from a shrunk state" in resumed.stdout
    a = torch.load(tmp_path / "whole" / "final.pt", weights_only=True)
    b = torch.load(tmp_path / "cut" / "final.pt", weights_only=True)
    moved = [k for k in a if a[k].is_floating_point() and not torch.equal(a[k], b[k])]
    assert moved  # the rounded moments did change the last 8 steps' updates
    # against how far those 8 steps moved the weights, the rounding's effect is small
    w12 = {k[len("model.") :]: v for k, v in full["state_dict"].items()}
    off = sum(float((a[k] - b[k]).square().sum()) for k in moved) ** 0.5
    travel = sum(float((a[k] - w12[k]).square().sum()) for k in moved) ** 0.5
    assert off < 0.05 * travel, (off, travel)


def test_shrink_state_refuses_a_state_without_an_optimizer(tmp_path, capsys):
    from zoo.cli import main

    path = tmp_path / "weights_only.ckpt"
    torch.save({"state_dict": {"w": torch.ones(2)}}, path)
    assert main(["shrink-state", str(path), str(tmp_path / "out.ckpt")]) == 2
    assert "holds no optimizer state" in capsys.readouterr().err
    assert not (tmp_path / "out.ckpt").exists()


def test_a_save_killed_midway_never_replaces_a_good_checkpoint(tmp_path):
    """Lightning's checkpoint IO (what every zoo recipe saves with) writes to a temporary file
    and renames it: kill the writer at random moments, the file is always whole."""
    code = textwrap.dedent(
        """
        import sys, torch
        from lightning.fabric.plugins.io.torch_io import TorchCheckpointIO
        io, path, i = TorchCheckpointIO(), sys.argv[1], 0
        while True:
            i += 1
            io.save_checkpoint({"i": i, "w": torch.full((4_000_000,), float(i))}, path)
            print(i, flush=True)
        """
    )
    import time

    path = tmp_path / "last.ckpt"
    saves = []
    for delay in (0.0, 0.13, 0.29, 0.41, 0.57):
        p = subprocess.Popen([sys.executable, "-c", code, str(path)], stdout=subprocess.PIPE)
        p.stdout.readline()  # one save done: a good checkpoint exists
        time.sleep(delay)  # then kill it at some point of a later save
        p.kill()
        p.wait()
        state = torch.load(path, weights_only=True)
        assert bool((state["w"] == state["i"]).all())
        saves.append(int(state["i"]))
    assert max(saves) > 1  # the kills did land during later saves
