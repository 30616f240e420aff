"""The documentation site: built strictly (every tutorial page runs, every API reference
resolves), then opened in headless Chromium: the model-zoo table, an API page and a tutorial
figure render, and every image on those pages loaded."""

from __future__ import annotations

import functools
import re
import shutil
import subprocess
import sys
import threading
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
pytestmark = [pytest.mark.slow, pytest.mark.timeout(900)]


@pytest.fixture(scope="module")
def site(tmp_path_factory) -> Path:
    pytest.importorskip("mkdocs", reason="the docs extra is not installed (pip install -e .[docs])")
    built = ROOT / "site"
    if not (built / "index.html").is_file():  # `make docs` builds it; else build it here
        built = tmp_path_factory.mktemp("site")
        r = subprocess.run([sys.executable, "-m", "mkdocs", "build", "--strict", "-d", str(built)],
                           cwd=ROOT, capture_output=True, text=True)  # fmt: skip
        assert r.returncode == 0, r.stderr[-3000:]
    return built


def _browser() -> str:
    for name in ("chromium", "chromium-browser", "google-chrome"):
        if shutil.which(name):
            return shutil.which(name)
    pytest.skip("no Chromium here (Debian's chromium package; .ci/run installs it)")


def _dom(site: Path, page: str, tmp_path: Path) -> str:
    handler = functools.partial(SimpleHTTPRequestHandler, directory=str(site))
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    try:
        url = f"http://127.0.0.1:{httpd.server_address[1]}/{page}"
        r = subprocess.run(
            [_browser(), "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
             "--no-first-run", "--disable-background-networking", "--disable-component-update",
             "--disable-sync", f"--user-data-dir={tmp_path / 'profile'}",
             "--virtual-time-budget=15000", "--dump-dom", url],
            capture_output=True, text=True, timeout=120,
        )  # fmt: skip
    finally:
        httpd.shutdown()
        httpd.server_close()
    assert r.returncode == 0, r.stderr[-2000:]
    return r.stdout


def _images_loaded(dom: str) -> tuple[int, int]:
    m = re.search(r'data-images-loaded="(\d+)/(\d+)"', dom)
    assert m, "the page's image check did not run (docs/js/imgcheck.js)"
    return int(m.group(1)), int(m.group(2))


def test_the_model_zoo_table_renders(site, tmp_path):
    import zoo

    dom = _dom(site, "zoo/", tmp_path)
    assert "<table" in dom
    for name in zoo.list_models(pretrained=True):
        assert f'href="../cards/{name}/"' in dom or f"cards/{name}" in dom, name
    ok, total = _images_loaded(dom)
    assert ok == total


def test_an_api_page_renders(site, tmp_path):
    dom = _dom(site, "api/nn/", tmp_path)
    assert 'id="zoo.nn.DEQ"' in dom and "cell" in dom
    ok, total = _images_loaded(dom)
    assert ok == total


@pytest.mark.parametrize("page", ["tutorial/01-fixed-point/", "tutorial/04-flows/"])
def test_a_tutorial_figure_renders_and_loads(site, page, tmp_path):
    dom = _dom(site, page, tmp_path)
    ok, total = _images_loaded(dom)
    assert total >= 1 and ok == total, f"{ok} of {total} images loaded"
