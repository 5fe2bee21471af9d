"""keras-hub models made of Performer blocks: the backbone, the tasks on
it and their preprocessors."""

from keras_performer.models.performer_backbone import PerformerBackbone
from keras_performer.models.performer_causal_lm import PerformerCausalLM
from keras_performer.models.performer_causal_lm_preprocessor import (
    PerformerCausalLMPreprocessor,
)
from keras_performer.models.performer_text_classifier import (
    PerformerTextClassifier,
)
from keras_performer.models.performer_text_classifier_preprocessor import (
    PerformerTextClassifierPreprocessor,
)
from keras_performer.models.performer_tokenizer import PerformerTokenizer

__all__ = [
    "PerformerBackbone",
    "PerformerCausalLM",
    "PerformerCausalLMPreprocessor",
    "PerformerTextClassifier",
    "PerformerTextClassifierPreprocessor",
    "PerformerTokenizer",
]
