"""Compatibility with `keras.layers.MultiHeadAttention`: its trained
weights load into `PerformerAttention`, from a list or from a weights file.

The two layers have the same trainable weights in the same order;
`PerformerAttention` also has the random-feature weights, which a
`MultiHeadAttention` lacks and which stay as drawn from the seed (and, for
FAVOR++ and FAVOR#, the running moments, which stay as they are).
"""

import re

import keras
from keras import ops

from keras_performer.ops.checks import check_positive_int
from keras_performer.ops.checks import check_rate

# The non-trainable weights PerformerAttention has and MultiHeadAttention
# lacks: the random features and what they are drawn from.
RANDOM_FEATURE_WEIGHTS = (
    "projection_matrix",
    "projection_seed",
    "projection_draw",
)
# And the running moments of FAVOR++ and FAVOR# (see `KernelMoments`).
PERFORMER_ONLY_WEIGHTS = RANDOM_FEATURE_WEIGHTS + ("query_key_moments",)


def check_arguments(
    num_heads,
    key_dim,
    value_dim,
    dropout,
    output_shape,
    attention_axes,
    sliding_window,
    flash_attention,
    use_gate,
):
    """Checks the arguments `PerformerAttention` shares with
    `MultiHeadAttention`, refusing those it cannot honor; raises
    `ValueError`. Returns `output_shape` as an int, a tuple or `None`."""
    check_positive_int("num_heads", num_heads)
    check_positive_int("key_dim", key_dim)
    if value_dim is not None:
        check_positive_int("value_dim", value_dim)
    check_rate("dropout", dropout)
    if isinstance(output_shape, (list, tuple)):
        for size in output_shape:
            check_positive_int("output_shape", size)
        output_shape = (
            output_shape[0] if len(output_shape) == 1 else tuple(output_shape)
        )
    elif output_shape is not None:
        check_positive_int("output_shape", output_shape)
    if sliding_window is not None:
        check_positive_int("sliding_window", sliding_window)
    if flash_attention not in (None, True, False):
        raise ValueError(
            "`flash_attention` must be None or a bool. Received: "
            f"flash_attention={flash_attention}"
        )
    if not isinstance(use_gate, bool):
        raise ValueError(
            f"`use_gate` must be a bool. Received: use_gate={use_gate}"
        )
    if attention_axes not in (None, 1, (1,), [1]):
        raise ValueError(
            "`attention_axes` must be None or 1 (the sequence axis): "
            "attention over other axes is not supported. "
            f"Received: attention_axes={attention_axes}"
        )
    return output_shape


def serialized_weight_arguments(layer):
    """The config entries of a layer's initializers, regularizers and
    constraints, under `MultiHeadAttention`'s names (its activity
    regularizer is private, as there)."""
    modules = {
        "kernel_initializer": keras.initializers,
        "bias_initializer": keras.initializers,
        "kernel_regularizer": keras.regularizers,
        "bias_regularizer": keras.regularizers,
        "activity_regularizer": keras.regularizers,
        "kernel_constraint": keras.constraints,
        "bias_constraint": keras.constraints,
    }
    private = {"activity_regularizer"}
    return {
        name: module.serialize(
            getattr(layer, f"_{name}" if name in private else name)
        )
        for name, module in modules.items()
    }


def exact_attention_weights(layer):
    """A Performer layer's weights but its random features and moments:
    those of the exact-attention layer it replaces, in the same order."""
    return [w for w in layer.weights if w.name not in PERFORMER_ONLY_WEIGHTS]


def set_exact_attention_weights(layer, weights):
    """Sets a Performer layer's weights from a `MultiHeadAttention`'s list
    (its random features stay). Returns `False`, setting nothing, when the
    list has another length (it may be the layer's own list)."""
    variables = exact_attention_weights(layer)
    if len(weights) != len(variables):
        return False
    for variable, value in zip(variables, weights, strict=True):
        if tuple(variable.shape) != tuple(ops.shape(value)):
            raise ValueError(
                f"Weight {variable.path} has shape {variable.shape}. "
                f"Received: a weight of shape {ops.shape(value)}"
            )
    for variable, value in zip(variables, weights, strict=True):
        variable.assign(value)
    return True


def read_from_multi_head_attention(store):
    """Points `store` at the weights a `MultiHeadAttention` in the same
    place saved, when the file has no group for this layer.

    Inside a Sequential or Functional model, Keras files a layer's weights
    under its class name (`layers/multi_head_attention_1/query_dense/...`),
    so a Performer model looks for `layers/performer_attention_1/...`. The
    sublayers are loaded after this call, from paths under the layer's own:
    they are read from the `MultiHeadAttention`'s group instead. Keras has
    no public API for a weights store's path: this reads the one a Keras 3
    weights store keeps (`_h5_entry_path`); the tests of
    `model.load_weights` catch any change to it.
    """
    path = getattr(store, "_h5_entry_path", None)
    if not path or store.has_path(path):
        return
    parent, _, name = path.rpartition("/")
    number = re.search(r"_\d+$", name)  # `_1` of `performer_attention_1`
    suffix = number.group() if number else ""
    source = f"{parent}/multi_head_attention{suffix}".lstrip("/")
    if not store.has_path(source):
        return
    get = store.get

    def get_from_source(inner_path):
        if inner_path == path or inner_path.startswith(path + "/"):
            inner_path = source + inner_path[len(path) :]
        return get(inner_path)

    store.get = get_from_source
