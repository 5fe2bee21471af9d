"""Helpers around the layers: weight transfer from exact-attention models
and the conversion of trained Transformers."""

from keras_performer.utils.conversion import convert_to_performer
from keras_performer.utils.weight_transfer import transfer_weights

__all__ = ["convert_to_performer", "transfer_weights"]
