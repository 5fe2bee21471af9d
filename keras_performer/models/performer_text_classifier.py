"""PerformerTextClassifier: a keras-hub text classifier with FAVOR+."""

import keras
import keras_hub
from keras import ops

from keras_performer.models import special_tokens
from keras_performer.models.performer_backbone import PerformerBackbone
from keras_performer.models.performer_text_classifier_preprocessor import (
    PerformerTextClassifierPreprocessor,
)
from keras_performer.ops.checks import check_positive_int
from keras_performer.ops.checks import check_rate


@keras.saving.register_keras_serializable(package="keras_performer")
class PerformerTextClassifier(keras_hub.models.TextClassifier):
    """A text classifier on a `PerformerBackbone`.

    A `keras_hub.models.TextClassifier`: the backbone's hidden states,
    averaged over the tokens that are not padding, then dropout and a
    dense layer to `num_classes` scores. With a preprocessor, `fit`,
    `evaluate` and `predict` take raw strings.

    Args:
        backbone: a `PerformerBackbone` (usually `causal=False`).
        num_classes: int. Number of classes.
        preprocessor: a `PerformerTextClassifierPreprocessor` or `None`
            (inputs then come tokenized). Defaults to `None`.
        activation: the activation of the scores, e.g. `"softmax"`.
            Defaults to `None` (logits, as `compile()`'s default loss
            expects).
        dropout: float. Dropout before the dense layer. Defaults to `0.0`.
        **kwargs: base model arguments, such as `name`.

    Example:

    >>> backbone = keras_performer.models.PerformerBackbone(
    ...     vocabulary_size=258, num_layers=1, num_heads=2, hidden_dim=16,
    ...     intermediate_dim=32, max_sequence_length=64, causal=False,
    ... )
    >>> preprocessor = (
    ...     keras_performer.models.PerformerTextClassifierPreprocessor(
    ...         keras_hub.tokenizers.ByteTokenizer(), sequence_length=16,
    ...         start_token_id=256, end_token_id=257,
    ...     )
    ... )
    >>> classifier = keras_performer.models.PerformerTextClassifier(
    ...     backbone, num_classes=2, preprocessor=preprocessor,
    ... )
    >>> history = classifier.fit(
    ...     x=["a fine film", "a dull film"], y=[1, 0], verbose=0)
    >>> classifier.predict(["a fine film"], verbose=0).shape
    (1, 2)
    """

    backbone_cls = PerformerBackbone
    preprocessor_cls = PerformerTextClassifierPreprocessor

    def __init__(
        self,
        backbone,
        num_classes,
        preprocessor=None,
        activation=None,
        dropout=0.0,
        **kwargs,
    ):
        if not isinstance(backbone, PerformerBackbone):
            raise ValueError(
                "`backbone` must be a keras_performer.models."
                f"PerformerBackbone. Received: backbone={backbone!r}"
            )
        check_positive_int("num_classes", num_classes)
        check_rate("dropout", dropout)
        special_tokens.check_vocabulary(backbone, preprocessor)
        # === Layers ===
        self.backbone = backbone
        self.preprocessor = preprocessor
        self.output_dropout = keras.layers.Dropout(
            dropout, dtype=backbone.dtype_policy, name="output_dropout"
        )
        self.output_dense = keras.layers.Dense(
            num_classes,
            activation=activation,
            dtype=backbone.dtype_policy,
            name="logits",
        )
        # === Functional model ===
        inputs = backbone.input
        hidden_states = backbone(inputs)
        # The mean over the tokens (none for an empty text: zeros).
        weights = ops.cast(inputs["padding_mask"], hidden_states.dtype)[
            ..., None
        ]
        pooled = ops.sum(hidden_states * weights, axis=1) / ops.maximum(
            ops.sum(weights, axis=1), 1.0
        )
        outputs = self.output_dense(self.output_dropout(pooled))
        super().__init__(inputs=inputs, outputs=outputs, **kwargs)
        # === Config ===
        self.num_classes = num_classes
        self.activation = keras.activations.get(activation)
        self.dropout = dropout

    def get_config(self):
        config = super().get_config()
        config.update(
            {
                "num_classes": self.num_classes,
                "activation": keras.activations.serialize(self.activation),
                "dropout": self.dropout,
            }
        )
        return config
