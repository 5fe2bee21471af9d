"""PerformerEncoder: a transformer encoder block with FAVOR+ attention."""

import keras

from keras_performer.layers.performer_block import PerformerBlock
from keras_performer.layers.performer_block import document_block


@document_block
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
        {block_arguments}
        {performer_options}
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
        # Sublayers in the order of keras_hub.layers.TransformerEncoder, so
        # that weight lists match one to one.
        self._build_self_attention(inputs_shape, "self_attention_layer")
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
        self._check_inputs(
            "inputs",
            inputs,
            ("padding_mask", padding_mask),
            [("attention_mask", attention_mask, inputs)],
        )
        x = self._self_attention(
            inputs,
            training,
            query_mask=padding_mask,
            attention_mask=attention_mask,
            return_attention_scores=return_attention_scores,
        )
        if return_attention_scores:
            x, scores = x
            return self._feedforward(x, training), scores
        return self._feedforward(x, training)
