"""Model families, the registry and Hub glue.

Families register themselves: each is a module of the ``zoo.models`` entry-point group (the
built-in ones are declared in pyproject.toml) that calls :func:`register_model` and
:func:`register_pretrained` when imported.
"""

from ._base import Cost, ZooModel
from ._registry import (
    ENTRY_POINT_GROUP,
    architectures,
    checkpoint_dir,
    create_model,
    default_pretrained,
    list_models,
    list_pretrained,
    load,
    model_info,
    register_model,
    register_pretrained,
    weights_location,
)

__all__ = [
    "ENTRY_POINT_GROUP",
    "Cost",
    "ZooModel",
    "architectures",
    "checkpoint_dir",
    "create_model",
    "default_pretrained",
    "list_models",
    "list_pretrained",
    "weights_location",
    "load",
    "model_info",
    "register_model",
    "register_pretrained",
]
