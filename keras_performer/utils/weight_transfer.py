"""Weights of an exact-attention model into the same Performer model."""

import keras
import keras_hub

from keras_performer.layers.mha_compatibility import exact_attention_weights
from keras_performer.layers.performer_attention import PerformerAttention
from keras_performer.layers.performer_decoder import PerformerDecoder
from keras_performer.layers.performer_encoder import PerformerEncoder

# Exact-attention layer classes and the Performer class that replaces each
# (here and in `convert_to_performer`).
PERFORMER_COUNTERPARTS = {
    keras.layers.MultiHeadAttention: PerformerAttention,
    keras_hub.layers.CachedMultiHeadAttention: PerformerAttention,
    keras_hub.layers.TransformerEncoder: PerformerEncoder,
    keras_hub.layers.TransformerDecoder: PerformerDecoder,
}


def transfer_weights(source_model, target_model):
    """Copies a model's weights into the same model built with Performers.

    The two models must have the same layers in the same order, except
    that `keras.layers.MultiHeadAttention`, `keras_hub.layers.
    TransformerEncoder` and `keras_hub.layers.TransformerDecoder` in the
    source may be `PerformerAttention`, `PerformerEncoder` and
    `PerformerDecoder` in the target: their trainable weights are the same,
    and the target keeps its random projections. This is the paper's
    backward compatibility (Sec. 4.2): a trained Transformer becomes a
    Performer that a short fine-tuning brings back to its accuracy.

    Args:
        source_model: a built `keras.Model` with exact attention.
        target_model: a built `keras.Model`, the same architecture with
            Performer layers.

    Raises:
        ValueError: when a model is not built, or the two do not match
            (number of layers, classes, weight shapes); the message names
            the first layers that differ.

    Example:

    >>> def model(block):
    ...     return keras.Sequential([
    ...         keras.Input((16, 8)), block(intermediate_dim=16, num_heads=2)
    ...     ])
    >>> exact = model(keras_hub.layers.TransformerEncoder)
    >>> performer = model(keras_performer.PerformerEncoder)
    >>> keras_performer.transfer_weights(exact, performer)

    References:
        - [Choromanski et al., 2021](https://arxiv.org/abs/2009.14794)
    """
    for name, model in (
        ("source_model", source_model),
        ("target_model", target_model),
    ):
        if not model.built:
            raise ValueError(
                f"`{name}` must be built (called once, or made with an "
                f"`Input`) before its weights can move. Received: {name}="
                f"{model.name} (not built)"
            )
    _transfer(source_model, target_model)


def _transfer(source, target):
    if isinstance(source, keras.Model) and type(source) is type(target):
        if len(source.layers) != len(target.layers):
            raise ValueError(
                "The two models must have the same layers. Received: "
                f"{len(source.layers)} layers in {source.name}, "
                f"{len(target.layers)} in {target.name}"
            )
        for source_layer, target_layer in zip(
            source.layers, target.layers, strict=True
        ):
            _transfer(source_layer, target_layer)
        return
    transfer_layer_weights(source, target)


def transfer_layer_weights(source, target):
    """Copies the weights of one layer into its copy or its Performer
    counterpart (whose random features stay); raises `ValueError` when
    `target` is neither or the weight shapes differ."""
    performer = _performer_class(source)
    if not isinstance(target, performer or type(source)):
        raise ValueError(
            f"Layer {source.name} ({type(source).__name__}) has no "
            f"counterpart in the target model. Received: {target.name} "
            f"({type(target).__name__})"
        )
    target_weights = target.weights
    if performer is not None:  # The random features stay the target's.
        target_weights = exact_attention_weights(target)
    source_shapes = [tuple(w.shape) for w in source.weights]
    target_shapes = [tuple(w.shape) for w in target_weights]
    if source_shapes != target_shapes:
        raise ValueError(
            f"Layers {source.name} and {target.name} have different weights. "
            f"Received: shapes {source_shapes} and {target_shapes}"
        )
    for source_weight, target_weight in zip(
        source.weights, target_weights, strict=True
    ):
        target_weight.assign(source_weight)


def _performer_class(layer):
    for exact_class, performer_class in PERFORMER_COUNTERPARTS.items():
        if isinstance(layer, exact_class):
            return performer_class
    return None
