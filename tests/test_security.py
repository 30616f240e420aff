"""A downloaded checkpoint (a Hub repo is a folder) never runs code: every config field that
could name code is resolved through the zoo's registries, and refused with a clear error
otherwise. Each case checks both that nothing ran and what the error says."""

from __future__ import annotations

import json
import pickle
import sys

import pytest
import torch

import zoo
from zoo.cli import main


@pytest.fixture
def good_folder(tmp_path):
    """A valid checkpoint folder: an untrained latent ODE on the periodic protocol."""
    m = zoo.create_model("latent_ode", input_dim=1, latent_dim=4, rec_dims=8, units=8)
    m.pretrained_cfg = {**zoo.model_info("latent_ode.periodic"), "name": "mine"}
    m.save_pretrained(tmp_path / "good")
    return tmp_path / "good"


def _edit(folder, tmp_path, edit) -> str:
    cfg = json.loads((folder / "config.json").read_text())
    edit(cfg)
    out = tmp_path / "evil"
    out.mkdir(exist_ok=True)
    (out / "config.json").write_text(json.dumps(cfg))
    (out / "model.safetensors").write_bytes((folder / "model.safetensors").read_bytes())
    return str(out)


def _marker_args(marker):
    return ["python3", "-c", f"open({str(marker)!r}, 'w').write('ran')"]


CASES = {
    # field: (how the config names code, what the error must say)
    "datamodule import path": (
        lambda c, m: c["pretrained_cfg"].update(
            datamodule="subprocess.Popen", datamodule_args={"args": _marker_args(m)}
        ),
        "never by import path",
    ),
    "datamodule under zoo.data": (
        lambda c, m: c["pretrained_cfg"].update(datamodule="zoo.data.os.system"),
        "unknown data module",
    ),
    "datamodule class_path dict": (
        lambda c, m: c["pretrained_cfg"].update(
            datamodule={"class_path": "subprocess.Popen", "init_args": {"args": _marker_args(m)}}
        ),
        "a registered data-module name (a string)",
    ),
    "datamodule argument holding code": (
        lambda c, m: c["pretrained_cfg"].update(
            datamodule="periodic",
            datamodule_args={"n": {"class_path": "subprocess.Popen", "init_args": {}}},
        ),
        "a config is data",
    ),
    "datamodule argument it does not take": (
        lambda c, m: c["pretrained_cfg"].update(
            datamodule="periodic", datamodule_args={"__init__": 1}
        ),
        "has no argument '__init__'",
    ),
    "architecture import path": (
        lambda c, m: c.update(
            architecture="subprocess.Popen", model_args={"args": _marker_args(m)}
        ),
        "never an import path",
    ),
    "task import path": (
        lambda c, m: c["pretrained_cfg"].update(task="subprocess.Popen"),
        "unknown task",
    ),
    "model argument that is a class path": (
        lambda c, m: c["model_args"].update(class_path="subprocess.Popen"),
        "takes no argument(s) class_path",
    ),
    "datamodule argument granting trust": (
        lambda c, m: c["pretrained_cfg"].update(
            datamodule="gas", datamodule_args={"trust_pickle": True}
        ),
        "grants no trust",
    ),
    "sample path traversal": (
        lambda c, m: c["pretrained_cfg"].update(sample="../../../../etc/passwd"),
        "not a plain name",
    ),
    "config that is not an object": (
        lambda c, m: (c.clear(), c.update(architecture=["subprocess.Popen"])),
        "unknown architecture",
    ),
}


@pytest.mark.parametrize("case", list(CASES))
def test_a_config_never_selects_code(case, good_folder, tmp_path, capsys):
    marker = tmp_path / "marker"
    edit, message = CASES[case]
    folder = _edit(good_folder, tmp_path, lambda c: edit(c, marker))
    before = set(sys.modules)
    assert main(["eval", folder, "--sample"]) == 2
    err = capsys.readouterr().err
    assert message in err, err
    assert "Traceback" not in err
    assert not marker.exists()
    assert not {"subprocess"} & (set(sys.modules) - before)  # nothing imported by name


def test_solver_and_grad_specs_resolve_by_registered_name_only(good_folder):
    from zoo.solvers import get_grad, get_solver

    for bad in ("subprocess.Popen", "os.system", {"name": "builtins.eval"}):
        with pytest.raises(ValueError, match="valid names"):
            get_solver(bad)
        with pytest.raises(ValueError, match="valid names"):
            get_grad(bad)
    with pytest.raises(ValueError, match="valid names"):
        get_grad({"name": "implicit", "solver": {"name": "os.system"}})


def test_a_downloaded_config_cannot_point_the_card_at_a_local_file(good_folder, tmp_path):
    secret = tmp_path / "secret.txt"
    secret.write_text("do not upload")
    folder = _edit(
        good_folder, tmp_path, lambda c: c["pretrained_cfg"].update(card_path=str(secret))
    )
    m = zoo.load(folder)
    assert "card_path" not in m.pretrained_cfg or m.pretrained_cfg["card_path"] != str(secret)
    m.save_pretrained(tmp_path / "resaved")
    readme = tmp_path / "resaved" / "README.md"
    assert not readme.exists() or "do not upload" not in readme.read_text()


class _Evil:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (open, (str(self.marker), "w"))


def test_a_pickled_checkpoint_is_refused_with_a_clear_error(tmp_path, capsys):
    marker = tmp_path / "ran"
    evil = tmp_path / "evil.ckpt"
    torch.save(
        {"state_dict": {}, "hyper_parameters": {"x": _Evil(marker)}}, evil, pickle_protocol=2
    )
    assert (
        main(["export", str(evil), "--name", "mdeq_tiny.cifar10", "--out-dir", str(tmp_path / "o")])
        == 2
    )
    err = capsys.readouterr().err
    assert "refusing to read" in err and "evil.ckpt" in err and "weights_only" in err
    assert not marker.exists()

    from zoo.training import init_weights_from

    with pytest.raises(ValueError, match="refusing to read"):
        init_weights_from(zoo.create_model("mdeq_tiny"), str(evil))
    assert not marker.exists()
    garbage = tmp_path / "garbage.ckpt"
    garbage.write_bytes(pickle.dumps([1, 2, 3])[:5])
    with pytest.raises(ValueError, match="refusing to read"):
        init_weights_from(zoo.create_model("mdeq_tiny"), str(garbage))
