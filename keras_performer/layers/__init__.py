"""Keras layers: the attention layer and the transformer blocks."""

from keras_performer.layers.performer_attention import PerformerAttention
from keras_performer.layers.performer_decoder import PerformerDecoder
from keras_performer.layers.performer_encoder import PerformerEncoder

__all__ = ["PerformerAttention", "PerformerDecoder", "PerformerEncoder"]
