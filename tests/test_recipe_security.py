"""A recipe chooses the zoo's own classes and nothing else: no value inside a task's
``model_args``, a data module's arguments or any other free-form field instantiates anything,
whatever it names. Every case runs ``zoo fit`` to the end and checks a marker file that the
payload would have written."""

from __future__ import annotations

import sys

import pytest
import yaml

from zoo.cli import main

pytestmark = pytest.mark.timeout(120)

# every task, with an architecture and a data module it trains with
TASKS = {
    "ImageClassification": ("mdeq_tiny", "zoo.data.FashionMNISTDataModule"),
    "segmentation.Segmentation": (
        "mdeq_seg_tiny",
        "zoo.data.fashion_scenes.FashionScenesDataModule",
    ),
    "LanguageModeling": ("deq_transformer_tiny", "zoo.data.ShakespeareCharDataModule"),
    "density.DensityEstimation": ("ffjord_toy", "zoo.data.toy2d.Toy2DDataModule"),
    "TimeSeries": ("latent_ode", "zoo.data.PeriodicDataModule"),
}


def _payloads(marker) -> dict:
    """How a value could name code, each writing ``marker`` if it ever ran."""
    write = f"open({str(marker)!r}, 'w').write('ran')"
    return {
        "os.system": {"class_path": "os.system", "init_args": {"command": f"touch {marker}"}},
        "subprocess.Popen": {
            "class_path": "subprocess.Popen",
            "init_args": {"args": [sys.executable, "-c", write]},
        },
        "builtins.eval": {"class_path": "builtins.eval", "init_args": {"source": write}},
        "nested dict": {
            "outer": [{"inner": {"class_path": "builtins.exec", "init_args": {"source": write}}}]
        },
    }


def _recipe(task: str, where: str, payload) -> dict:
    arch, data = TASKS[task]
    model_args = {"hidden": payload} if where == "model_args" else {}
    data_args = {"batch_size": payload} if where == "data" else {}
    return {
        "model": {
            "class_path": f"zoo.tasks.{task}",
            "init_args": {"arch": arch, "model_args": model_args},
        },
        "data": {"class_path": data, "init_args": data_args},
        "trainer": {"max_steps": 1, "logger": False, "enable_checkpointing": False},
    }


def _run(tmp_path, recipe: dict, capsys) -> tuple[int, str]:
    path = tmp_path / "r.yaml"
    path.write_text(yaml.safe_dump(recipe))
    try:
        rc = main(
            ["fit", "--config", str(path), "--trainer.default_root_dir", str(tmp_path / "run")]
        )
    except SystemExit as e:  # LightningCLI's parser refused a typed value (usage, status 2)
        rc = e.code
    return rc, capsys.readouterr().err


@pytest.mark.parametrize("task", sorted(TASKS))
@pytest.mark.parametrize(
    "payload", ["os.system", "subprocess.Popen", "builtins.eval", "nested dict"]
)
def test_model_args_never_run_code(task, payload, tmp_path, capsys):
    marker = tmp_path / "PWNED"
    rc, err = _run(tmp_path, _recipe(task, "model_args", _payloads(marker)[payload]), capsys)
    assert not marker.exists(), "a model argument ran code"
    assert rc == 2
    assert "names code" in err and "model_args" in err


@pytest.mark.parametrize("payload", ["os.system", "subprocess.Popen", "nested dict"])
def test_data_arguments_never_run_code(payload, tmp_path, capsys):
    marker = tmp_path / "PWNED"
    rc, err = _run(tmp_path, _recipe("TimeSeries", "data", _payloads(marker)[payload]), capsys)
    assert not marker.exists(), "a data-module argument ran code"
    assert rc == 2 and "batch_size" in err


def test_a_command_line_value_never_runs_code(tmp_path, capsys):
    marker = tmp_path / "PWNED"
    recipe = _recipe("TimeSeries", "model_args", {})
    path = tmp_path / "r.yaml"
    path.write_text(yaml.safe_dump(recipe))
    evil = yaml.safe_dump({"x": _payloads(marker)["os.system"]}, default_flow_style=True)
    rc = main(["fit", "--config", str(path), f"--model.init_args.model_args={evil.strip()}"])
    assert not marker.exists()
    assert rc == 2 and "names code" in capsys.readouterr().err


@pytest.mark.parametrize("where", ["model", "data", "callback"])
def test_a_class_position_takes_only_its_own_kind(where, tmp_path, capsys):
    """Where a recipe may choose a class, it gets the zoo's or Lightning's, never os.system."""
    marker = tmp_path / "PWNED"
    evil = _payloads(marker)["os.system"]
    recipe = _recipe("TimeSeries", "model_args", {})
    if where == "model":
        recipe["model"] = evil
    elif where == "data":
        recipe["data"] = evil
    else:
        recipe["trainer"]["callbacks"] = [evil]
    path = tmp_path / "r.yaml"
    path.write_text(yaml.safe_dump(recipe))
    with pytest.raises(SystemExit) as e:  # LightningCLI's own parser error (usage, status 2)
        main(["fit", "--config", str(path)])
    assert e.value.code == 2
    assert not marker.exists()
