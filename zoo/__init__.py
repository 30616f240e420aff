"""implicit-zoo: deep implicit models (DEQ, MDEQ, Latent ODE, FFJORD) with pretrained weights.

Example:
    >>> import zoo
    >>> names = zoo.list_models("mdeq*")
"""

from __future__ import annotations

__version__ = "0.1.0"

__all__ = ["__version__", "list_models", "load", "create_model", "model_info", "example_batch"]


def list_models(pattern: str = "*", pretrained: bool = False) -> list[str]:
    """Registered architectures, or pretrained weights ``arch.tag`` with ``pretrained=True``.

    Example:
        >>> import zoo
        >>> "mdeq_tiny.cifar10" in zoo.list_models("mdeq*", pretrained=True)
        True
    """
    from .models import list_models as _list

    return _list(pattern, pretrained)


def load(name: str, pretrained: bool = True, **overrides):
    """Load a model in one line: ``zoo.load("mdeq_tiny.cifar10", max_iter=6)``.

    See :func:`zoo.models.load`.

    Example:
        >>> import zoo
        >>> model = zoo.load("odenet.fashion_mnist")
        >>> model.training, model.pretrained_cfg["dataset"]
        (False, 'fashion_mnist')
    """
    from .models import load as _load

    return _load(name, pretrained, **overrides)


def create_model(arch: str, **kwargs):
    """Build an untrained model from its entry point, e.g. ``zoo.create_model("mdeq_tiny")``.

    Example:
        >>> import zoo
        >>> zoo.create_model("resnet_small", in_chans=1, channels=8).num_params() > 0
        True
    """
    from .models import create_model as _create

    return _create(arch, **kwargs)


def model_info(name: str) -> dict:
    """Static pretrained config of ``arch.tag``.

    Example:
        >>> import zoo
        >>> zoo.model_info("mdeq_tiny.cifar10")["task"]
        'image-classification'
    """
    from .models import model_info as _info

    return _info(name)


def example_batch(model, n: int = 8):
    """``n`` test units of a pretrained model's shipped sample, ready for the model.

    See :func:`zoo.evaluate.example_batch`.

    Example:
        >>> import zoo
        >>> x, y = zoo.example_batch(zoo.load("odenet.fashion_mnist"), 4)
        >>> tuple(x.shape)
        (4, 1, 28, 28)
    """
    from .evaluate import example_batch as _example

    return _example(model, n)


def _install_timm_hook() -> None:
    from ._timm_hook import install

    install()


_install_timm_hook()
