"""Hugging Face Hub upload of zoo checkpoints with their model cards."""

from __future__ import annotations

__all__ = ["push"]


def push(name: str, repo_id: str, private: bool = False) -> str:
    """Upload ``config.json``, ``model.safetensors`` and the model card of ``name``.

    Honours ``HF_ENDPOINT``/``HF_TOKEN``. Returns the commit URL.
    """
    import zoo

    model = zoo.load(name)
    card = model.pretrained_cfg.get("card_path")
    if not card:
        raise FileNotFoundError(
            f"{name!r} has no model card (model_cards/{name}.md); write it before pushing"
        )
    return str(
        model.push_to_hub(repo_id, private=private, commit_message=f"Upload {name} (implicit-zoo)")
    )
