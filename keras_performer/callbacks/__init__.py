"""Keras callbacks for training Performers."""

from keras_performer.callbacks.feature_redraw import FeatureRedraw
from keras_performer.callbacks.feature_redraw import redraw_features

__all__ = ["FeatureRedraw", "redraw_features"]
