"""Performer (FAVOR+) attention layers for Keras 3."""

from keras_performer import ops
from keras_performer.layers.performer_attention import PerformerAttention

__version__ = "0.1.0"

__all__ = ["PerformerAttention", "ops"]
