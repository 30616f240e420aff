"""Tasks: one file per problem type, holding its LightningModule and its :class:`TaskSpec`
(evaluation protocol, metrics, card sections, samples). Models stay plain ``nn.Module``s.

Importing this package registers the built-in task specs; :func:`get_task` finds them by
name, and a third-party family registers its own with :func:`register_task`.
"""

from ._finetune import from_pretrained
from ._spec import (
    EvalProtocol,
    EvalResult,
    MetricSpec,
    TaskSpec,
    get_task,
    list_tasks,
    load_sample,
    register_sample_dir,
    register_task,
    sample_path,
)
from .classification import ImageClassification, ImageClassificationSpec
from .language_model import LanguageModeling, LanguageModelingSpec
from .time_series import MaskedMSE, TimeSeries, TimeSeriesSpec

__all__ = [
    "EvalProtocol",
    "EvalResult",
    "ImageClassification",
    "ImageClassificationSpec",
    "LanguageModeling",
    "LanguageModelingSpec",
    "MaskedMSE",
    "MetricSpec",
    "TaskSpec",
    "TimeSeries",
    "TimeSeriesSpec",
    "from_pretrained",
    "get_task",
    "list_tasks",
    "load_sample",
    "register_sample_dir",
    "register_task",
    "sample_path",
]
