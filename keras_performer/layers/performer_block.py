"""What `PerformerEncoder` and `PerformerDecoder` share: arguments,
attention sublayers, the feedforward network and the residual wiring."""

import keras

from keras_performer.layers import performer_options as options_lib
from keras_performer.layers.performer_attention import PerformerAttention
from keras_performer.layers.performer_attention import clone_initializer
from keras_performer.ops.checks import check_positive_int
from keras_performer.ops.checks import check_rate
from keras_performer.ops.masks import check_attention_mask
from keras_performer.ops.masks import check_sequence_mask

# Seeds a block takes from its `seed`: one per attention layer (a decoder
# has two, self- and cross-attention), so that a stack of blocks seeded
# `seed + SEEDS_PER_BLOCK * i` gives every attention layer its own.
SEEDS_PER_BLOCK = 2

# The blocks' own `Args:` entries (`document_block`).
BLOCK_DOCS = """\
intermediate_dim: int. Hidden size of the feedforward network.
num_heads: int. Number of attention heads; the hidden size (the
    inputs' last axis) must be a multiple of it.
dropout: float. Dropout rate of the attention and feedforward
    outputs. Defaults to `0.0`.
activation: str or callable. Activation of the feedforward network.
    Defaults to `"relu"`.
layer_norm_epsilon: float. Epsilon of the layer norms. Defaults to
    `1e-5`.
kernel_initializer: initializer of the dense kernels. Defaults to
    `"glorot_uniform"`.
bias_initializer: initializer of the dense biases. Defaults to
    `"zeros"`.
normalize_first: bool. Whether layer norms come before the attention
    and feedforward sublayers (pre-LN, as in GPT-2) rather than after
    the residual sums. Defaults to `False`."""


def document_block(cls):
    """Class decorator: the `Args:` entries of the blocks and of the
    Performer options in place of the lines `{block_arguments}` and
    `{performer_options}` of the class docstring."""
    return options_lib.document(
        options_lib.fill_docstring(cls, "block_arguments", BLOCK_DOCS)
    )


class PerformerBlock(keras.layers.Layer):
    """Base of the Performer transformer blocks (not a layer to use alone).

    Arguments as in `keras_hub.layers.TransformerEncoder`, plus the
    Performer options of `keras_performer.PerformerAttention`, which are
    passed to its attention sublayers under the same names.
    """

    def __init__(
        self,
        intermediate_dim,
        num_heads,
        dropout=0.0,
        activation="relu",
        layer_norm_epsilon=1e-5,
        kernel_initializer="glorot_uniform",
        bias_initializer="zeros",
        normalize_first=False,
        **kwargs,
    ):
        check_positive_int("intermediate_dim", intermediate_dim)
        check_positive_int("num_heads", num_heads)
        check_rate("dropout", dropout)
        options = options_lib.pop_performer_options(kwargs)
        super().__init__(**kwargs)
        self.supports_masking = True
        self.intermediate_dim = intermediate_dim
        self.num_heads = num_heads
        self.dropout = dropout
        self.activation = keras.activations.get(activation)
        self.layer_norm_epsilon = layer_norm_epsilon
        self.kernel_initializer = keras.initializers.get(kernel_initializer)
        self.bias_initializer = keras.initializers.get(bias_initializer)
        self.normalize_first = normalize_first
        options_lib.set_performer_options(self, options)

    def _check_inputs(self, name, sequence, padding_mask, attention_masks):
        """Raises `ValueError` unless `sequence` is a float tensor `(batch,
        length, hidden_dim)`, its padding mask `(name, mask)` `(batch,
        length)`, and each of `attention_masks`, `(name, mask, source)`
        with `source` the sequence of the keys, `(batch, length, source
        length)` or `(batch, 1 or heads, length, source length)`."""
        shape = tuple(sequence.shape)
        if len(shape) != 3:
            raise ValueError(
                f"`{name}` must have rank 3 (batch, length, hidden_dim). "
                f"Received: {name}.shape={shape}"
            )
        dtype = keras.backend.standardize_dtype(sequence.dtype)
        if "float" not in dtype:
            raise ValueError(
                f"`{name}` must be a float tensor (token ids go through an "
                f"embedding first). Received: {name}.dtype={dtype}"
            )
        check_sequence_mask(*padding_mask, sequence)
        for mask_name, mask, source in attention_masks:
            check_attention_mask(
                mask_name, mask, shape[0], shape[1], source.shape[1]
            )

    def _head_dim(self, hidden_dim):
        if hidden_dim is None or hidden_dim % self.num_heads:
            raise ValueError(
                "The hidden size (the inputs' last axis) must be a multiple "
                f"of `num_heads`. Received: hidden size {hidden_dim}, "
                f"num_heads={self.num_heads}"
            )
        return hidden_dim // self.num_heads

    def _attention(self, hidden_dim, name, seed_offset, rotary):
        """A `PerformerAttention` sublayer; `seed_offset` (below
        `SEEDS_PER_BLOCK`) gives each of a block's attention layers its own
        projection."""
        return PerformerAttention(
            num_heads=self.num_heads,
            key_dim=self._head_dim(hidden_dim),
            dropout=self.dropout,
            kernel_initializer=clone_initializer(self.kernel_initializer),
            bias_initializer=clone_initializer(self.bias_initializer),
            **{
                **options_lib.performer_options(self),
                "rotary_max_wavelength": (
                    self.rotary_max_wavelength if rotary else None
                ),
                "seed": self.seed + seed_offset,
            },
            dtype=self.dtype_policy,
            name=name,
        )

    def _build_self_attention(self, shape, name):
        """The self-attention sublayer, its layer norm and dropout."""
        self._self_attention_layer = self._attention(
            shape[-1], name, seed_offset=0, rotary=True
        )
        self._self_attention_layer.build(shape)
        self._self_attention_layer_norm = self._layer_norm(
            shape, "self_attention_layer_norm"
        )
        self._self_attention_dropout = self._dropout("self_attention_dropout")

    def _layer_norm(self, shape, name):
        norm = keras.layers.LayerNormalization(
            epsilon=self.layer_norm_epsilon, dtype=self.dtype_policy, name=name
        )
        norm.build(shape)
        return norm

    def _dropout(self, name):
        return keras.layers.Dropout(
            self.dropout, dtype=self.dtype_policy, name=name
        )

    def _feedforward_dense(self, units, activation, input_shape, name):
        dense = keras.layers.Dense(
            units,
            activation=activation,
            kernel_initializer=clone_initializer(self.kernel_initializer),
            bias_initializer=clone_initializer(self.bias_initializer),
            dtype=self.dtype_policy,
            name=name,
        )
        dense.build(input_shape)
        return dense

    def _build_feedforward(self, shape):
        """The two dense layers of the feedforward network (the caller
        builds its layer norm, in keras-hub's weight order)."""
        self._feedforward_intermediate_dense = self._feedforward_dense(
            self.intermediate_dim,
            self.activation,
            shape,
            "feedforward_intermediate_dense",
        )
        self._feedforward_output_dense = self._feedforward_dense(
            shape[-1],
            None,
            tuple(shape[:-1]) + (self.intermediate_dim,),
            "feedforward_output_dense",
        )
        self._feedforward_dropout = self._dropout("feedforward_dropout")

    def _residual(self, x, sublayer, norm, dropout, training):
        """`x + dropout(sublayer(x))`, with the layer norm before the
        sublayer (`normalize_first`) or after the sum. `sublayer` may return
        `(output, cache)`; then so does this."""
        y = sublayer(norm(x) if self.normalize_first else x)
        extra = None
        if isinstance(y, tuple):
            y, extra = y
        y = dropout(y, training=training) + x
        if not self.normalize_first:
            y = norm(y)
        return y if extra is None else (y, extra)

    def _self_attention(self, x, training, **attention_arguments):
        """The self-attention sublayer with its residual connection."""
        return self._residual(
            x,
            lambda y: self._self_attention_layer(
                y, training=training, **attention_arguments
            ),
            self._self_attention_layer_norm,
            self._self_attention_dropout,
            training,
        )

    def _feedforward(self, x, training):
        return self._residual(
            x,
            lambda y: self._feedforward_output_dense(
                self._feedforward_intermediate_dense(y)
            ),
            self._feedforward_layer_norm,
            self._feedforward_dropout,
            training,
        )

    def get_config(self):
        config = super().get_config()
        config.update(
            {
                "intermediate_dim": self.intermediate_dim,
                "num_heads": self.num_heads,
                "dropout": self.dropout,
                "activation": keras.activations.serialize(self.activation),
                "layer_norm_epsilon": self.layer_norm_epsilon,
                "kernel_initializer": keras.initializers.serialize(
                    self.kernel_initializer
                ),
                "bias_initializer": keras.initializers.serialize(
                    self.bias_initializer
                ),
                "normalize_first": self.normalize_first,
                **options_lib.performer_options(self),
            }
        )
        return config
