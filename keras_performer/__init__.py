"""Performer (FAVOR+) attention layers for Keras 3."""

from keras_performer import callbacks
from keras_performer import layers
from keras_performer import models
from keras_performer import ops
from keras_performer.callbacks import FeatureRedraw
from keras_performer.layers import PerformerAttention
from keras_performer.layers import PerformerDecoder
from keras_performer.layers import PerformerEncoder
from keras_performer.models import PerformerBackbone
from keras_performer.models import PerformerCausalLM
from keras_performer.models import PerformerCausalLMPreprocessor
from keras_performer.models import PerformerTextClassifier
from keras_performer.models import PerformerTextClassifierPreprocessor
from keras_performer.models import PerformerTokenizer
from keras_performer.utils import convert_to_performer
from keras_performer.utils import transfer_weights

__version__ = "0.2.0"


def __getattr__(name):
    # `export` needs TensorFlow: loaded on first use only.
    if name == "export":
        import importlib

        return importlib.import_module("keras_performer.export")
    raise AttributeError(f"module 'keras_performer' has no attribute {name!r}")


__all__ = [
    "FeatureRedraw",
    "PerformerAttention",
    "PerformerBackbone",
    "PerformerCausalLM",
    "PerformerCausalLMPreprocessor",
    "PerformerDecoder",
    "PerformerEncoder",
    "PerformerTextClassifier",
    "PerformerTextClassifierPreprocessor",
    "PerformerTokenizer",
    "callbacks",
    "convert_to_performer",
    "layers",
    "models",
    "ops",
    "transfer_weights",
]
