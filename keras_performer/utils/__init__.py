"""Helpers around the layers: weight transfer from exact-attention models."""

from keras_performer.utils.weight_transfer import transfer_weights

__all__ = ["transfer_weights"]
