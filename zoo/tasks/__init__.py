"""LightningModules: one task per problem type; models stay plain ``nn.Module``s."""

from .classification import ImageClassification

__all__ = ["ImageClassification"]
