"""Model families, the registry and Hub glue."""

from ._base import ZooModel
from ._registry import (
    checkpoint_dir,
    create_model,
    list_models,
    list_pretrained,
    load,
    model_info,
    register_model,
    register_pretrained,
)

__all__ = [
    "ZooModel",
    "checkpoint_dir",
    "create_model",
    "list_models",
    "list_pretrained",
    "load",
    "model_info",
    "register_model",
    "register_pretrained",
]
