"""A pip-installed zoo, outside the repository: built as a wheel, installed on its own, it lists
every published checkpoint, downloads one from the Hub (a local test server) by its
``hf_hub_id``, verifies it, and loads it from the cache the second time."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import sysconfig
import textwrap
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
pytestmark = [pytest.mark.slow, pytest.mark.hub, pytest.mark.timeout(600)]


@pytest.fixture(scope="module")
def installed(tmp_path_factory):
    """The wheel installed into its own folder; the dependencies come from this environment's
    site-packages, on PYTHONPATH (an interpreter outside the repo's venv: its editable install
    of zoo is never seen)."""
    tmp = tmp_path_factory.mktemp("wheel")
    dist, site = tmp / "dist", tmp / "site"
    pip = [sys.executable, "-m", "pip", "--disable-pip-version-check", "-q"]
    subprocess.run([*pip, "wheel", "--no-deps", "--no-build-isolation", "-w", str(dist), str(ROOT)],
                   check=True, capture_output=True)  # fmt: skip
    (wheel,) = dist.glob("implicit_zoo-*.whl")
    subprocess.run([*pip, "install", "--no-deps", "--target", str(site), str(wheel)], check=True)
    deps = sysconfig.get_paths()["purelib"]
    env = {k: v for k, v in os.environ.items() if not k.startswith(("ZOO_", "HF_"))}
    env.update(PYTHONPATH=f"{site}{os.pathsep}{deps}", HF_HOME=str(tmp / "hf"),
               HF_HUB_DISABLE_TELEMETRY="1", ZOO_HUB_TIMEOUT="2")  # fmt: skip
    return tmp, env


def _run(code: str, env: dict, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run(
        [getattr(sys, "_base_executable", sys.executable), "-c", textwrap.dedent(code)],
        env=env, cwd=cwd, capture_output=True, text=True,
    )  # fmt: skip


def test_the_wheel_lists_every_published_checkpoint(installed):
    tmp, env = installed
    r = _run(
        """
        import zoo, zoo.cli
        assert "site" in zoo.__file__, zoo.__file__
        print(len(zoo.list_models(pretrained=True)))
        zoo.cli.main(["list"])
        """,
        env,
        tmp,
    )
    assert r.returncode == 0, r.stderr
    lines = r.stdout.splitlines()
    sys.path.insert(0, str(ROOT))
    import zoo

    assert int(lines[0]) == len(zoo.list_models(pretrained=True)) > 30
    assert sum("downloaded on first load" in line for line in lines) == int(lines[0])


def test_the_wheel_downloads_verifies_and_caches(installed):
    sys.path.insert(0, str(Path(__file__).parent))
    from hub_server import HubServer

    tmp, env = installed
    name = "odenet.fashion_mnist"
    served = tmp / "served" / "implicit-zoo" / name
    shutil.copytree(ROOT / "checkpoints" / name, served, dirs_exist_ok=True)
    load = f"import zoo; m = zoo.load({name!r}); print(m.pretrained_cfg['source'], m.num_params())"
    with HubServer(tmp / "served") as url:
        r = _run(load, {**env, "HF_ENDPOINT": url}, tmp)
        assert r.returncode == 0, r.stderr
        assert r.stdout.split()[0] == "Hub"
        (served / "model.safetensors").write_bytes(b"corrupt")  # the cache is used from now on
        r = _run(load, {**env, "HF_ENDPOINT": url}, tmp)
        assert r.returncode == 0 and r.stdout.split()[0] == "HF", r.stderr
    r = _run(load, {**env, "HF_HUB_OFFLINE": "1"}, tmp)
    assert r.returncode == 0 and r.stdout.split()[0] == "HF", r.stderr


def test_the_wheel_says_how_to_get_weights_it_cannot_reach(installed):
    tmp, env = installed
    r = _run(
        """
        import zoo
        try:
            zoo.load("mdeq_tiny.cifar10")
        except ConnectionError as e:
            print(e)
        """,
        {**env, "HF_HUB_OFFLINE": "1"},
        tmp,
    )
    assert r.returncode == 0, r.stderr
    msg = r.stdout
    for part in (
        "implicit-zoo/mdeq_tiny.cifar10",
        "HF_ENDPOINT",
        "HF_HUB_OFFLINE",
        "ZOO_CHECKPOINTS",
    ):
        assert part in msg, msg
