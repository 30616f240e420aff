"""Hugging Face Hub upload of zoo checkpoints with their model cards."""

from __future__ import annotations

__all__ = ["push"]


def push(name: str, repo_id: str, private: bool = False) -> str:
    """Upload ``config.json``, ``model.safetensors`` and the model card of ``name``.

    Honours ``HF_ENDPOINT``/``HF_TOKEN``. Returns the commit URL.
    """
    from huggingface_hub import constants

    import zoo
    from zoo.models._registry import _endpoint_reachable, hub_timeout

    model = zoo.load(name)
    if constants.HF_HUB_OFFLINE or not _endpoint_reachable():
        raise ConnectionError(
            f"cannot push {name!r}: the Hub at {constants.ENDPOINT} is unreachable "
            + (
                "(HF_HUB_OFFLINE is set)"
                if constants.HF_HUB_OFFLINE
                else f"(no answer in {hub_timeout():g} s)"
            )
            + "; check HF_ENDPOINT and the network"
        )
    card = model.pretrained_cfg.get("card_path")
    if not card:
        raise FileNotFoundError(
            f"{name!r} has no model card (model_cards/{name}.md); write it before pushing"
        )
    from huggingface_hub.errors import HfHubHTTPError

    try:
        return str(
            model.push_to_hub(
                repo_id, private=private, commit_message=f"Upload {name} (implicit-zoo)"
            )
        )
    except HfHubHTTPError as e:
        status = getattr(getattr(e, "response", None), "status_code", None)
        why = {
            401: "the Hub did not accept your token (HF_TOKEN, or `hf auth login`)",
            403: f"your token may not write to {repo_id!r} (its owner, or a write token)",
        }.get(status, "the Hub refused the upload")
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise PermissionError(
            f"cannot push {name!r} to {repo_id!r} at {constants.ENDPOINT}: {why} "
            f"(HTTP {status or '?'}: {first})"
        ) from None
