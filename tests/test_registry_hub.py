"""Registry, one-line load, checkpoint integrity and the Hub path (local test server)."""

import json
import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch

import zoo
from zoo.models import ZooModel

ROOT = Path(__file__).resolve().parents[1]
SMALL = dict(channels=(8, 8), head_channels=(4, 4), final_channels=16, expansion=2, groups=4)


@pytest.fixture
def saved_model(tmp_path) -> tuple[ZooModel, Path]:
    model = zoo.create_model("mdeq_tiny", **SMALL).eval()
    d = tmp_path / "mdeq_tiny.unit"
    model.save_pretrained(d)
    return model, d


def test_list_models_and_close_matches():
    assert {"mdeq_tiny", "mdeq_small", "mdeq_large", "mdeq_xl"} <= set(zoo.list_models("mdeq*"))
    with pytest.raises(ValueError, match="did you mean 'mdeq_tiny'"):
        zoo.load("mdeq_tiy", pretrained=False)
    with pytest.raises(ValueError, match="unknown model"):
        zoo.load("resnet50.imagenet")


def test_import_zoo_is_light():
    code = "import sys, zoo; zoo.list_models(); print('lightning' in sys.modules, 'timm' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False False"


def test_save_load_roundtrip(saved_model):
    model, d = saved_model
    cfg = json.loads((d / "config.json").read_text())
    assert cfg["architecture"] == "mdeq_tiny" and "sha256" in cfg["pretrained_cfg"]
    loaded = zoo.load(str(d))
    assert not loaded.training
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        assert torch.allclose(model(x), loaded(x), atol=1e-5)
    assert loaded.pretrained_cfg["source"] == "local directory"


def test_saving_the_same_weights_twice_gives_the_same_bytes(tmp_path):
    """A model with tied tensors (the image flow's field has three names): its safetensors
    file, and so its sha256, depend on the weights only, not on the run that wrote them."""
    torch.manual_seed(0)
    model = zoo.create_model("ffjord_image_tiny", hidden=(4,)).eval()
    shas = set()
    for i in range(3):
        model.save_pretrained(tmp_path / str(i))
        shas.add(
            json.loads((tmp_path / str(i) / "config.json").read_text())["pretrained_cfg"]["sha256"]
        )
    assert len(shas) == 1
    loaded = zoo.load(str(tmp_path / "0"))
    x = torch.randint(0, 256, (2, 1, 28, 28), dtype=torch.uint8)
    with torch.no_grad(), torch.random.fork_rng():
        torch.manual_seed(1)
        a = model.log_prob(x)
        torch.manual_seed(1)
        b = loaded.log_prob(x)
    assert torch.allclose(a, b)


def test_max_iter_override_changes_budget(saved_model):
    _, d = saved_model
    m = zoo.load(str(d), max_iter=3)
    with torch.no_grad(), pytest.warns(UserWarning):
        m(torch.randn(2, 3, 32, 32))
    assert m.solver_stats.n_iter <= 3


def test_corrupted_weights_fail_sha(saved_model):
    _, d = saved_model
    w = d / "model.safetensors"
    w.write_bytes(w.read_bytes()[:-100])
    with pytest.raises(ValueError, match="sha256 mismatch.*corrupted or truncated"):
        zoo.load(str(d))


def test_mismatched_checkpoint_lists_keys(saved_model):
    _, d = saved_model
    cfg = json.loads((d / "config.json").read_text())
    cfg["model_args"]["final_channels"] = 32  # shapes differ -> load_state_dict error
    cfg["model_args"]["head_channels"] = [4, 4, 4]
    cfg["model_args"]["channels"] = [8, 8, 8]
    cfg["pretrained_cfg"].pop("sha256")
    (d / "config.json").write_text(json.dumps(cfg))
    with pytest.raises((ValueError, RuntimeError), match="missing keys|size mismatch"):
        zoo.load(str(d))


def test_wrong_input_shape_says_what_is_expected():
    m = zoo.load("mdeq_tiny", pretrained=False, **SMALL)
    with pytest.raises(ValueError, match=r"expects 3 input channel\(s\), got 1"):
        m(torch.randn(2, 1, 32, 32))
    with pytest.raises(ValueError, match="multiples of 2"):
        m(torch.randn(2, 3, 31, 31))


def test_timm_create_model_after_import_zoo():
    code = textwrap.dedent(
        """
        import zoo, timm
        m = timm.create_model("mdeq_tiny", channels=(8, 8), head_channels=(4, 4), final_channels=16)
        print(type(m).__name__, "mdeq_tiny" in timm.list_models("mdeq*"))
        """
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["MDEQClassifier", "True"]


def _hub_script(body: str, env: dict) -> subprocess.CompletedProcess:
    code = "import zoo, time, sys\n" + textwrap.dedent(body)
    return subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=120
    )


@pytest.mark.hub
def test_hub_download_cache_and_errors(saved_model, tmp_path):
    sys.path.insert(0, str(Path(__file__).parent))
    from hub_server import HubServer

    _, d = saved_model
    served = tmp_path / "served" / "test-org" / "mdeq_tiny.unit"
    shutil.copytree(d, served)
    (tmp_path / "served" / "test-org" / "broken").mkdir()
    (tmp_path / "served" / "test-org" / "broken" / "config.json").write_text("{}")
    env = {**os.environ, "HF_HOME": str(tmp_path / "hf"), "HF_HUB_DISABLE_TELEMETRY": "1"}
    env.pop("HF_HUB_OFFLINE", None)
    with HubServer(tmp_path / "served") as url:
        env["HF_ENDPOINT"] = url
        r = _hub_script(
            "m = zoo.load('hf-hub:test-org/mdeq_tiny.unit'); print(m.pretrained_cfg['source'])", env
        )
        assert r.returncode == 0, r.stderr
        assert r.stdout.strip() == "Hub"
        r = _hub_script(
            """
            for repo in ("test-org/nothing-here", "test-org/broken"):
                try:
                    zoo.load("hf-hub:" + repo)
                except FileNotFoundError as e:
                    print(type(e).__name__, e)
            """,
            env,
        )
        assert r.returncode == 0, r.stderr
        lines = r.stdout.strip().splitlines()
        assert "not found" in lines[0] and "nothing-here" in lines[0]
        assert "lacks a file" in lines[1]
    # server gone: the cache serves the model, offline and online alike
    for offline in ("1", "0"):
        r = _hub_script(
            "m = zoo.load('hf-hub:test-org/mdeq_tiny.unit'); print(m.pretrained_cfg['source'])",
            {**env, "HF_HUB_OFFLINE": offline},
        )
        assert r.returncode == 0, r.stderr
        assert r.stdout.strip() == "HF cache"
    # an unreachable endpoint fails with a clear message (how fast: test_hub_check_is_bounded)
    r = _hub_script(
        """
        try:
            zoo.load("hf-hub:test-org/not-cached")
        except ConnectionError as e:
            print("ConnectionError", e)
        """,
        env,
    )
    assert "ConnectionError" in r.stdout and "unreachable" in r.stdout


def test_hub_check_is_bounded(monkeypatch):
    """The reachability check passes its bound to the socket, and a failed check is a clear
    ConnectionError naming the endpoint, before huggingface_hub's retries."""
    import socket

    from zoo.models import _registry

    seen = []

    def refuse(addr, timeout=None):
        seen.append(timeout)
        raise OSError("unreachable")

    monkeypatch.setattr(socket, "create_connection", refuse)
    monkeypatch.setenv("HF_HUB_OFFLINE", "0")
    monkeypatch.setenv("ZOO_HUB_TIMEOUT", "0.25")
    assert _registry._endpoint_reachable() is False and seen == [0.25]
    monkeypatch.setattr(_registry, "_endpoint_reachable", lambda timeout=None: False)
    with pytest.raises(ConnectionError, match="unreachable"):
        _registry._from_hub("test-org/not-cached-anywhere")
    monkeypatch.setenv("ZOO_HUB_TIMEOUT", "soon")
    with pytest.raises(ValueError, match="ZOO_HUB_TIMEOUT"):
        _registry.hub_timeout()


def test_push_uploads_weights_and_card(saved_model, tmp_path, monkeypatch):
    model, d = saved_model
    card = tmp_path / "card.md"
    card.write_text("---\nlicense: apache-2.0\n---\n# test card\n")
    model.pretrained_cfg = {"card_path": str(card), "dataset": "unit"}
    uploaded = {}

    from huggingface_hub import HfApi

    def fake_create_repo(self, repo_id, **kw):
        from types import SimpleNamespace

        return SimpleNamespace(repo_id=repo_id)

    def fake_upload_folder(self, *, repo_id, folder_path, **kw):
        uploaded.update({p.name: p.read_bytes() for p in Path(folder_path).iterdir()})
        return "https://hub.test/commit/1"

    monkeypatch.setattr(HfApi, "create_repo", fake_create_repo)
    monkeypatch.setattr(HfApi, "upload_folder", fake_upload_folder)
    model.push_to_hub("org/mdeq_tiny.unit")
    assert {"config.json", "model.safetensors", "README.md"} <= set(uploaded)
    assert b"# test card" in uploaded["README.md"]


def test_push_of_a_shipped_checkpoint_uploads_its_eval_results(tmp_path, monkeypatch):
    """The Hub's leaderboard files travel with the weights, from the card's stored results."""
    import yaml
    from huggingface_hub import HfApi

    from zoo import cards

    uploaded = {}

    def fake_create_repo(self, repo_id, **kw):
        from types import SimpleNamespace

        return SimpleNamespace(repo_id=repo_id)

    def fake_upload_folder(self, *, repo_id, folder_path, **kw):
        root = Path(folder_path)
        uploaded.update({str(p.relative_to(root)): p.read_text() for p in root.rglob("*.yaml")})
        return "https://hub.test/commit/1"

    monkeypatch.setattr(HfApi, "create_repo", fake_create_repo)
    monkeypatch.setattr(HfApi, "upload_folder", fake_upload_folder)
    zoo.load("odenet.fashion_mnist").push_to_hub("org/odenet.fashion_mnist")
    entries = yaml.safe_load(uploaded[".eval_results/zalando-datasets_fashion_mnist.yaml"])
    top1 = cards.shipped_row("odenet.fashion_mnist")["metrics"]["top1"]
    assert [e["value"] for e in entries if e["metric"]["name"] == "top-1 %"] == [top1]


@pytest.mark.parametrize("status", [401, 403, 405])
def test_a_refused_push_is_one_clear_line(status, monkeypatch, capsys):
    """A read-only server, a bad token or a repo the token may not write: exit 2, one line."""
    import httpx2
    from huggingface_hub import HfApi
    from huggingface_hub.errors import HfHubHTTPError

    from zoo.cli import main

    def refuse(self, repo_id, **kw):
        request = httpx2.Request("POST", "http://127.0.0.1:9/api/repos/create")
        raise HfHubHTTPError("refused", response=httpx2.Response(status, request=request))

    monkeypatch.setattr(HfApi, "create_repo", refuse)
    monkeypatch.setattr("zoo.models._registry._endpoint_reachable", lambda timeout=None: True)
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    assert main(["push", "odenet.fashion_mnist", "--repo-id", "me/m"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and f"HTTP {status}" in err and "Traceback" not in err
    assert ("token" in err) if status in (401, 403) else "refused the upload" in err
