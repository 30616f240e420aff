"""MkDocs hooks: pages rendered from the stored results at build time, never committed twice.

The model cards (``model_cards/*.md`` and their figures) appear under ``cards/``, the
benchmark summary (``bench/RESULTS.md``) as ``benchmarks.md``, and the model-zoo page is
rendered from ``model_cards/*.yaml`` by ``zoo.docs.zoo_page``.
"""

from __future__ import annotations

import re
import sys
from pathlib import Path

from mkdocs.structure.files import File

ROOT = Path(__file__).resolve().parents[1]
DOCS = str(Path(__file__).resolve().parent)


def on_config(config):
    if DOCS not in sys.path:  # the tutorial pages import _tutorial (mkdocs resets the path
        sys.path.insert(0, DOCS)  # after loading this module, so it is set here)
    return config


def on_files(files, config):
    from zoo.docs import zoo_page

    for f in sorted((ROOT / "model_cards").iterdir()):
        if f.suffix in (".md", ".png"):
            files.append(File.generated(config, f"cards/{f.name}", abs_src_path=str(f)))
    results = (ROOT / "bench" / "RESULTS.md").read_text()
    files.append(File.generated(config, "benchmarks.md", content=results))
    files.append(File.generated(config, "zoo.md", content=zoo_page()))
    return files


def on_page_markdown(markdown, page, config, files):
    # a card links its training history with a repository-relative path (../recipes/...): on
    # the site that is a source file, not a page, so it is named, not linked
    if page.file.src_uri.startswith("cards/"):
        markdown = re.sub(r"\[([^\]]+)\]\(\.\./recipes/[^)]+\)", r"`\1`", markdown)
    return markdown
