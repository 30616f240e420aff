"""One source per number: the cards, the README's checkpoint table, the leaderboard page and the
benchmark summary are rendered from stored data, and a committed file that differs from its
rendering fails here. Every card's "Use it" block runs."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

import zoo
from zoo import cards, docs

ROOT = Path(__file__).resolve().parents[1]
SHIPPED = zoo.list_models(pretrained=True)


def test_every_rendered_file_matches_its_data():
    stale = [str(p.relative_to(ROOT)) for p in docs.stale()]
    assert not stale, f"run `zoo docs`: these differ from their rendering: {stale}"


def test_every_checkpoint_has_its_data_and_card():
    for name in SHIPPED:
        data = cards.read_data(name)
        assert data.get("results"), name
        assert sum(bool(r.get("shipped")) for r in data["results"]) == 1, name
        assert (cards.CARDS / f"{name}.md").is_file(), name
        for fig in (data.get("measured") or {}).get("figures") or []:
            assert (cards.CARDS / fig["file"]).is_file(), (name, fig)


def test_a_hand_edit_of_a_number_is_caught():
    """Change one number of a card and of the README table: the drift check names the file."""
    name = "mdeq_tiny.cifar10"
    value = str(cards.shipped_row(name)["metrics"]["top1"])
    for target in (cards.CARDS / f"{name}.md", docs.README):
        edited = target.read_text()
        assert value in edited
        edited = edited.replace(value, "99.99", 1)

        def read(p, target=target, edited=edited):
            return edited if p == target else p.read_text()

        assert docs.stale(read) == [target]


def test_the_readme_stays_short_and_speaks_to_its_reader():
    text = docs.README.read_text()
    assert len(text.encode()) <= 12 * 1024
    for f in [
        docs.README,
        *sorted(cards.CARDS.glob("*.md")),
        *sorted((ROOT / "docs").glob("*.md")),
    ]:
        text = "\n".join(ln for ln in f.read_text().splitlines() if not ln.startswith("```"))
        words = re.findall(r"\b(?:issue #?\d+|issues?\b|sessions?\b|levers?\b|20\d\d-\d\d-\d\d)",
                           text, flags=re.I)  # fmt: skip
        assert not words, f"{f.relative_to(ROOT)} speaks of our process: {words[:5]}"


def test_code_holds_no_card_prose():
    """The pretrained tables hold what loading needs; the card's words live in its data file."""
    prose = {"train_split", "test_split", "selection", "compute", "limitations", "paper_results",
             "data_note", "entropy_floor", "training_objective"}  # fmt: skip
    for name in SHIPPED:
        assert not prose & set(zoo.model_info(name)), name
    for f in sorted((ROOT / "zoo" / "models").glob("*.py")):
        assert not re.search(r"20\d\d-\d\d-\d\d|[Vv]ersion \d", f.read_text()), f.name


def _snippet(name: str) -> str:
    text = (cards.CARDS / f"{name}.md").read_text()
    block = re.search(r"## Use it\n```python\n(.*?)```", text, re.S)
    assert block, name
    return block.group(1)


@pytest.mark.parametrize("name", SHIPPED)
def test_every_cards_snippet_runs(name, capsys):
    exec(compile(_snippet(name), f"<{name} card>", "exec"), {})
    assert capsys.readouterr().out.strip()  # every snippet prints what it predicted


def test_hub_eval_results_files_come_from_the_same_data():
    import yaml

    files = cards.eval_results("mdeq_tiny.cifar10")
    ((path, text),) = files.items()
    assert path == ".eval_results/uoft-cs_cifar10.yaml"
    entry = yaml.safe_load(text)[0]
    assert entry["dataset"]["id"] == "uoft-cs/cifar10"
    assert entry["value"] == cards.shipped_row("mdeq_tiny.cifar10")["metrics"]["top1"]
    assert entry["task"]["type"] == "image-classification"


def test_a_baseline_papers_figure_is_quoted_only_where_the_card_asks():
    """``baseline_paper: true`` (no paper reports the model on its protocol) quotes the
    baseline's papers' figures in Compared, named as the baseline model's; a card without it
    shows its own papers' figures only."""
    for name, asks in (
        ("ncde.physionet_mortality", True),
        ("latent_ode.physionet_mortality", False),
    ):
        info = cards.card_info(name)
        assert bool(info.get("baseline_paper")) is asks
        theirs = cards.card_info(info["baseline"])["papers"]
        assert theirs, info["baseline"]
        rows = [r for r in cards.render_card(name).splitlines() if "for the baseline's model" in r]
        if asks:
            assert len(rows) == len(theirs)
            for row, p in zip(rows, theirs, strict=True):
                assert f"| {p['value']:g} | {p['setup']} |" in row
        else:
            assert rows == []
