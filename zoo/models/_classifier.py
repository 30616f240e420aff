"""timm's classifier interface for the zoo's image classifiers.

A timm user fine-tunes with ``timm.create_model(name, pretrained=True, num_classes=5,
in_chans=1, drop_rate=0.2)``, ``model.reset_classifier(n)``, ``model.get_classifier()``,
``model.forward_features(x)`` and ``model.forward_head(features, pre_logits=...)``. Every
image-classification family implements them through :class:`TimmClassifier`: a new head keeps
the pretrained body, and a new number of input channels adapts the stem's first convolution as
timm's ``adapt_input_conv`` does.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

__all__ = ["TimmClassifier", "adapt_input_conv", "check_rate"]


def check_rate(p) -> float:
    """A dropout rate in ``[0, 1)``, or a clear error."""
    if isinstance(p, bool) or not isinstance(p, (int, float)) or not 0 <= p < 1:
        raise ValueError(f"drop_rate must be a number in [0, 1), got {p!r}")
    return float(p)


def adapt_input_conv(conv: nn.Conv2d, in_chans: int) -> nn.Conv2d:
    """A copy of ``conv`` taking ``in_chans`` channels: pretrained filters summed over the input
    channels for one channel, else repeated and rescaled so the output keeps its scale."""
    if isinstance(in_chans, bool) or not isinstance(in_chans, int) or in_chans < 1:
        raise ValueError(f"in_chans must be an integer >= 1, got {in_chans!r}")
    w = conv.weight.detach()
    old = w.shape[1]
    if in_chans == old:
        return conv
    if in_chans == 1:
        new_w = w.sum(1, keepdim=True)
    else:
        reps = math.ceil(in_chans / old)
        new_w = w.repeat(1, reps, 1, 1)[:, :in_chans] * (old / in_chans)
    new = nn.Conv2d(
        in_chans, conv.out_channels, conv.kernel_size, conv.stride, conv.padding,
        conv.dilation, conv.groups, conv.bias is not None,
    )  # fmt: skip
    with torch.no_grad():
        new.weight.copy_(new_w)
        if conv.bias is not None:
            new.bias.copy_(conv.bias)
    return new.to(w.device, w.dtype)


class TimmClassifier:
    """Mixin: the head is ``self.<classifier_attr>`` (an ``nn.Linear``, or a Sequential ending
    in one), the stem ``self.stem`` (its first conv takes the input channels). A family
    implements ``forward_features`` and ``_pool(features)`` (pooled features before the final
    linear layer)."""

    num_classes: int
    in_chans: int
    head_drop: nn.Dropout

    def _head_linear(self) -> tuple[nn.Module, str]:  # (parent module, attribute or index)
        raise NotImplementedError

    def _pool(self, features) -> Tensor:
        raise NotImplementedError

    @property
    def num_features(self) -> int:
        """Width of the pooled features the classifier reads (timm's ``num_features``)."""
        parent, key = self._head_linear()
        lin = parent[key] if isinstance(key, int) else getattr(parent, key)
        return lin.in_features if isinstance(lin, nn.Linear) else self._pooled_width

    def get_classifier(self) -> nn.Module:
        parent, key = self._head_linear()
        return parent[key] if isinstance(key, int) else getattr(parent, key)

    def reset_classifier(self, num_classes: int, global_pool: str | None = None) -> None:
        """A new, randomly initialized final layer for ``num_classes`` (0: none, the model then
        returns pooled features); the body keeps its weights."""
        if isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 0:
            raise ValueError(f"num_classes must be an integer >= 0, got {num_classes!r}")
        if global_pool not in (None, "avg"):
            raise ValueError(f"global_pool={global_pool!r}: these models pool by averaging ('avg')")
        width = self.num_features
        self._pooled_width = width
        new: nn.Module = nn.Linear(width, num_classes) if num_classes else nn.Identity()
        old = self.get_classifier()
        if isinstance(old, nn.Linear):
            new = new.to(old.weight.device, old.weight.dtype)
        parent, key = self._head_linear()
        if isinstance(key, int):
            parent[key] = new
        else:
            setattr(parent, key, new)
        self.num_classes = num_classes
        self.model_args["num_classes"] = num_classes

    def set_in_chans(self, in_chans: int) -> None:
        """Take ``in_chans`` input channels, adapting the stem's first convolution's weights."""
        for i, m in enumerate(self.stem):
            if isinstance(m, nn.Conv2d):
                self.stem[i] = adapt_input_conv(m, in_chans)
                break
        else:  # pragma: no cover - every family's stem starts with a conv
            raise ValueError(f"{type(self).__name__} has no stem convolution to adapt")
        self.in_chans = in_chans
        self.model_args["in_chans"] = in_chans
        cfg = self.pretrained_cfg
        if cfg.get("input_size"):  # the declared input spec follows the new channels
            c = len(cfg.get("mean") or [])
            cfg["input_size"] = [in_chans, *cfg["input_size"][1:]]
            if c and c != in_chans:
                cfg["mean"] = [sum(cfg["mean"]) / c] * in_chans
                cfg["std"] = [sum(cfg["std"]) / c] * in_chans

    def forward_head(self, features, pre_logits: bool = False) -> Tensor:
        """Logits from ``forward_features``' output (pooled features with ``pre_logits``)."""
        pooled = self.head_drop(self._pool(features))
        return pooled if pre_logits else self.get_classifier()(pooled)
