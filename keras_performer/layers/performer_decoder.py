"""PerformerDecoder: a transformer decoder block with FAVOR+ attention."""

import keras
from keras import ops

from keras_performer.layers.performer_block import PerformerBlock
from keras_performer.layers.performer_block import document_block


@document_block
@keras.saving.register_keras_serializable(package="keras_performer")
class PerformerDecoder(PerformerBlock):
    """A transformer decoder block whose attention is a Performer.

    The block of `keras_hub.layers.TransformerDecoder` (causal
    self-attention, optional cross-attention over an encoder sequence, a
    feedforward network, each with a residual connection and a layer norm)
    with `keras_performer.PerformerAttention` in place of multi-head
    attention: same arguments, same weights in the same order. Cross
    attention is built when the first call passes an `encoder_sequence`.

    Decoding is incremental with caches of constant size: the causal
    FAVOR+ state `(S, z)` of the self-attention, whatever the position, and
    the sums of the encoder's keys and values for the cross-attention,
    whatever the encoder's length (keras-hub's `cross_attention_cache`
    protocol).

    Args:
        {block_arguments}
        {performer_options}
        **kwargs: base layer arguments, such as `name` and `dtype`.

    Call arguments:
        decoder_sequence: tensor `(batch, length, hidden_dim)`.
        encoder_sequence: tensor `(batch, source_length, hidden_dim)` for
            cross-attention, or `None`. A block built without one (its
            first call) has no cross-attention.
        decoder_padding_mask: boolean `(batch, length)`, `False` at
            padding. Taken from the decoder sequence's Keras mask when not
            given.
        decoder_attention_mask: boolean `(batch, length, length)`; it must
            be a padding pattern (see `PerformerAttention`).
        encoder_padding_mask: boolean `(batch, source_length)`.
        encoder_attention_mask: boolean `(batch, length, source_length)`;
            a padding pattern.
        self_attention_cache: the decoding state, from
            `get_initial_cache()` or an earlier call. Defaults to `None`.
        self_attention_cache_update_index: int or int tensor, the position
            of the first token of this call. Tokens at positions the cache
            already holds are not absorbed again (see `PerformerAttention`).
            Defaults to `None`.
        cross_attention_cache: the cross-attention cache, as in
            `keras_hub.layers.TransformerDecoder`, from
            `get_initial_cross_attention_cache()` or an earlier call: the
            sums of the encoder's keys and values per head, whose size does
            not depend on the encoder's length. With a
            `self_attention_cache` only. Defaults to `None`.
        cross_attention_cache_update_index: `0` to fill the
            `cross_attention_cache` from `encoder_sequence`, `None` to
            reuse it (each later step). Defaults to `None`.
        use_causal_mask: bool. Whether position `i` sees only positions
            `<= i` in self-attention. Defaults to `True`.
        training: bool. Whether dropout is active.

    Returns:
        Tensor of the shape of `decoder_sequence`; `(output,
        self_attention_cache)` with a `self_attention_cache`; `(output,
        self_attention_cache, cross_attention_cache)` with both caches.

    Example:

    >>> decoder = keras_performer.PerformerDecoder(
    ...     intermediate_dim=64, num_heads=2
    ... )
    >>> x = np.random.normal(size=(1, 10, 16)).astype("float32")
    >>> full = decoder(x)
    >>> cache = decoder.get_initial_cache(batch_size=1)
    >>> for i in range(10):
    ...     out, cache = decoder(
    ...         x[:, i : i + 1],
    ...         self_attention_cache=cache,
    ...         self_attention_cache_update_index=i,
    ...     )
    >>> np.allclose(out[:, 0], full[:, -1], atol=1e-5)
    True

    References:
        - [Vaswani et al., 2017](https://arxiv.org/abs/1706.03762)
        - [Choromanski et al., 2021](https://arxiv.org/abs/2009.14794)
    """

    def __init__(self, *args, **kwargs):
        # The cache is a float32 state that Keras must not cast to the
        # compute dtype with the inputs; `call` casts the sequences.
        kwargs["autocast"] = False
        super().__init__(*args, **kwargs)

    def build(self, decoder_sequence_shape, encoder_sequence_shape=None):
        shape = decoder_sequence_shape
        hidden_dim = shape[-1]
        # Sublayers in the order of keras_hub.layers.TransformerDecoder, so
        # that weight lists match one to one.
        self._build_self_attention(shape, "self_attention")
        self._cross_attention_layer = None
        if encoder_sequence_shape is not None:
            self._cross_attention_layer = self._attention(
                hidden_dim, "cross_attention", seed_offset=1, rotary=False
            )
            # Decoder queries come in order (FAVOR++ and FAVOR# moments).
            self._cross_attention_layer.ordered_queries = True
            self._cross_attention_layer.build(shape, encoder_sequence_shape)
            self._cross_attention_layer_norm = self._layer_norm(
                shape, "cross_attention_layer_norm"
            )
            self._cross_attention_dropout = self._dropout(
                "cross_attention_dropout"
            )
        self._build_feedforward(shape)
        self._feedforward_layer_norm = self._layer_norm(
            shape, "feedforward_layer_norm"
        )

    def get_initial_cache(self, batch_size):
        """Returns the self-attention cache before any token (constant
        size, see `PerformerAttention.get_initial_cache`)."""
        if not self.built:
            raise ValueError(
                "Call the decoder once (or `build` it) before asking for a "
                "cache: its size depends on the hidden size. Received: an "
                "unbuilt layer"
            )
        return self._self_attention_layer.get_initial_cache(batch_size)

    def get_initial_cross_attention_cache(self, batch_size):
        """Returns an empty cross-attention cache: the sums of the encoder's
        keys and values per head, constant size whatever the encoder's
        length (see `PerformerAttention.key_value_cache`). A call with
        `cross_attention_cache_update_index=0` fills it."""
        if self._cross_attention_layer is None:
            raise ValueError(
                "This decoder has no cross-attention: it is built with it by "
                "a first call with an `encoder_sequence`. Received: a "
                + (
                    "decoder built without one"
                    if self.built
                    else "unbuilt layer"
                )
            )
        return self._cross_attention_layer.get_initial_cache(batch_size)

    def compute_output_shape(
        self, decoder_sequence_shape, encoder_sequence_shape=None, **kwargs
    ):
        return decoder_sequence_shape

    def call(
        self,
        decoder_sequence,
        encoder_sequence=None,
        decoder_padding_mask=None,
        decoder_attention_mask=None,
        encoder_padding_mask=None,
        encoder_attention_mask=None,
        self_attention_cache=None,
        self_attention_cache_update_index=None,
        cross_attention_cache=None,
        cross_attention_cache_update_index=None,
        use_causal_mask=True,
        training=None,
        mask=None,
    ):
        has_cross_attention = self._cross_attention_layer is not None
        if has_cross_attention != (encoder_sequence is not None):
            raise ValueError(
                "This decoder was built "
                + ("with" if has_cross_attention else "without")
                + " cross-attention (by its first call), so it needs "
                + ("an" if has_cross_attention else "no")
                + " `encoder_sequence`. Received: encoder_sequence="
                + ("None" if encoder_sequence is None else "a tensor")
            )
        if cross_attention_cache is not None:
            self._check_cross_attention_cache(
                self_attention_cache,
                cross_attention_cache_update_index,
                encoder_attention_mask,
            )
        if self_attention_cache is not None and not use_causal_mask:
            raise ValueError(
                "Decoding with a cache is causal. Received: "
                "use_causal_mask=False with a self_attention_cache"
            )
        if decoder_padding_mask is None:
            decoder_padding_mask = mask
        self._check_inputs(
            "decoder_sequence",
            decoder_sequence,
            ("decoder_padding_mask", decoder_padding_mask),
            [
                (
                    "decoder_attention_mask",
                    decoder_attention_mask,
                    decoder_sequence,
                )
            ]
            + (
                [
                    (
                        "encoder_attention_mask",
                        encoder_attention_mask,
                        encoder_sequence,
                    )
                ]
                if has_cross_attention
                else []
            ),
        )
        if has_cross_attention:
            self._check_inputs(
                "encoder_sequence",
                encoder_sequence,
                ("encoder_padding_mask", encoder_padding_mask),
                [],
            )
        decoder_sequence = ops.cast(decoder_sequence, self.compute_dtype)
        x = self._self_attention(
            decoder_sequence,
            training,
            query_mask=decoder_padding_mask,
            attention_mask=decoder_attention_mask,
            use_causal_mask=use_causal_mask,
            cache=self_attention_cache,
            cache_update_index=self_attention_cache_update_index,
        )
        cache = None
        if self_attention_cache is not None:
            x, cache = x
        if has_cross_attention:
            encoder_sequence = ops.cast(encoder_sequence, self.compute_dtype)
            attention = self._cross_attention_layer
            if (
                cross_attention_cache is not None
                and cross_attention_cache_update_index is not None
            ):
                cross_attention_cache = attention.key_value_cache(
                    encoder_sequence, value_mask=encoder_padding_mask
                )

            def cross_attention(x):
                if cross_attention_cache is not None:
                    return attention.attend_to_cache(
                        x, cross_attention_cache, training=training
                    )
                return attention(
                    x,
                    encoder_sequence,
                    value_mask=encoder_padding_mask,
                    attention_mask=encoder_attention_mask,
                    training=training,
                )

            x = self._residual(
                x,
                cross_attention,
                self._cross_attention_layer_norm,
                self._cross_attention_dropout,
                training,
            )
        x = self._feedforward(x, training)
        if cache is None:
            return x
        if cross_attention_cache is not None:
            return x, cache, cross_attention_cache
        return x, cache

    def _check_cross_attention_cache(
        self, self_attention_cache, update_index, encoder_attention_mask
    ):
        if self._cross_attention_layer is None or self_attention_cache is None:
            raise ValueError(
                "A `cross_attention_cache` goes with cross-attention and a "
                "`self_attention_cache` (keras-hub's decoding protocol). "
                "Received: a cross_attention_cache "
                + (
                    "for a decoder without cross-attention"
                    if self._cross_attention_layer is None
                    else "and self_attention_cache=None"
                )
            )
        if isinstance(update_index, int) and update_index != 0:
            raise ValueError(
                "`cross_attention_cache_update_index` is `0` (fill the cache "
                "from `encoder_sequence`) or `None` (reuse it): the cache sums "
                "the whole encoder sequence. Received: "
                f"cross_attention_cache_update_index={update_index}"
            )
        if encoder_attention_mask is not None:
            raise ValueError(
                "With a `cross_attention_cache`, `encoder_attention_mask` is "
                "not supported (the cache keeps no attention matrix); use "
                "`encoder_padding_mask`. Received: an encoder_attention_mask"
            )
