"""LightningModules: one task per problem type; models stay plain ``nn.Module``s."""

from .classification import ImageClassification
from .language_model import LanguageModeling
from .time_series import MaskedMSE, TimeSeries

__all__ = ["ImageClassification", "LanguageModeling", "MaskedMSE", "TimeSeries"]
