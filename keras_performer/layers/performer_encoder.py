"""PerformerEncoder: a transformer encoder block with FAVOR+ attention."""

import keras

from keras_performer.layers.performer_block import PerformerBlock


@keras.saving.register_keras_serializable(package="keras_performer")
class PerformerEncoder(PerformerBlock):
    """A transformer encoder block whose self-attention is a Performer.

    The block of `keras_hub.layers.TransformerEncoder` (self-attention and
    a feedforward network, each with a residual connection and a layer
    norm), with `keras_performer.PerformerAttention` in place of
    `keras.layers.MultiHeadAttention`: same arguments, same call, same
    weights in the same order, in time and memory linear in the sequence
    length. It honors the Keras mask of its input, so it stacks in a
    `keras.Sequential` model after `Embedding(mask_zero=True)`.

    Args:
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
        normalize_first: bool. Whether layer norms come before the
            attention and feedforward (pre-LN, as in GPT-2) rather than
            after the residual sum. Defaults to `False`.
        feature_map: str. Random feature map, as in `PerformerAttention`.
            Defaults to `"softmax"`.
        num_random_features: int. Rows of the random projection. Defaults
            to `256`.
        orthogonal: bool. Orthogonal projection blocks. Defaults to `True`.
        projection_norm: str. `"chi"` or `"sqrt_d"`. Defaults to `"chi"`.
        chunk_size: int. Tokens per chunk of the causal form. Defaults to
            `128`.
        rotary_max_wavelength: int. Rotary position embedding on queries
            and keys when set. Defaults to `None`.
        redraw: bool. Whether the projection may be redrawn; `False`
            freezes the features. Defaults to `True`.
        seed: int. Seed of the random projection; with `None` the block
            picks one and keeps it in its config. Defaults to `None`.
        **kwargs: base layer arguments, such as `name` and `dtype`.

    Call arguments:
        inputs: tensor `(batch, length, hidden_dim)`.
        padding_mask: boolean tensor `(batch, length)`, `False` at padding.
            Taken from the inputs' Keras mask when not given.
        attention_mask: boolean tensor `(batch, length, length)`; it must be
            a padding pattern (see `PerformerAttention`).
        training: bool. Whether dropout is active.
        return_attention_scores: bool. Whether to also return the implied
            attention matrix (quadratic: for short inputs only). Defaults
            to `False`.

    Returns:
        Tensor of the shape of `inputs`, or `(output, scores)` with
        `return_attention_scores=True`.

    Example:

    >>> model = keras.Sequential([
    ...     keras.Input((1024,), dtype="int32"),
    ...     keras.layers.Embedding(1000, 64, mask_zero=True),
    ...     keras_performer.PerformerEncoder(intermediate_dim=128, num_heads=4),
    ...     keras.layers.GlobalAveragePooling1D(),
    ...     keras.layers.Dense(2),
    ... ])
    >>> tuple(model(np.ones((2, 1024), "int32")).shape)
    (2, 2)

    References:
        - [Vaswani et al., 2017](https://arxiv.org/abs/1706.03762)
        - [Choromanski et al., 2021](https://arxiv.org/abs/2009.14794)
    """

    def build(self, inputs_shape):
        hidden_dim = inputs_shape[-1]
        # Sublayers in the order of keras_hub.layers.TransformerEncoder, so
        # that weight lists match one to one.
        self._self_attention_layer = self._attention(
            hidden_dim, "self_attention_layer", seed_offset=0, rotary=True
        )
        self._self_attention_layer.build(inputs_shape)
        self._self_attention_layer_norm = self._layer_norm(
            inputs_shape, "self_attention_layer_norm"
        )
        self._self_attention_dropout = self._dropout("self_attention_dropout")
        self._feedforward_layer_norm = self._layer_norm(
            inputs_shape, "feedforward_layer_norm"
        )
        self._build_feedforward(inputs_shape)

    def compute_output_shape(self, inputs_shape, **kwargs):
        return inputs_shape

    def call(
        self,
        inputs,
        padding_mask=None,
        attention_mask=None,
        training=None,
        return_attention_scores=False,
        mask=None,
    ):
        padding_mask = mask if padding_mask is None else padding_mask
        x = self._residual(
            inputs,
            lambda x: self._self_attention_layer(
                x,
                query_mask=padding_mask,
                attention_mask=attention_mask,
                return_attention_scores=return_attention_scores,
                training=training,
            ),
            self._self_attention_layer_norm,
            self._self_attention_dropout,
            training,
        )
        if return_attention_scores:
            x, scores = x
            return self._feedforward(x, training), scores
        return self._feedforward(x, training)
