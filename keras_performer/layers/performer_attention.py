"""PerformerAttention: a drop-in for `keras.layers.MultiHeadAttention`."""

import functools
import re

import keras
import keras_hub
from keras import ops

from keras_performer.layers import mha_compatibility
from keras_performer.layers import performer_options as options_lib
from keras_performer.layers.attention_cache import AttentionCache
from keras_performer.layers.call_masks import call_masks
from keras_performer.layers.kernel_moments import KernelMoments
from keras_performer.layers.random_features import RandomFeatures
from keras_performer.ops import causal
from keras_performer.ops import favor
from keras_performer.ops import masks


@options_lib.document
@keras.saving.register_keras_serializable(package="keras_performer")
class PerformerAttention(
    RandomFeatures, KernelMoments, AttentionCache, keras.layers.Layer
):
    """Multi-head attention with FAVOR+ random features (a Performer).

    Same arguments, call signature and trainable weights as
    `keras.layers.MultiHeadAttention`, so it replaces it in a model and loads
    its trained weights, but approximates softmax attention in time and
    memory linear in the sequence length. Called with one input it is
    self-attention, so `model.add(PerformerAttention(...))` works in a
    `keras.Sequential` model.

    The random projection is a non-trainable weight, with the seed and the
    draw number it comes from: all three are saved and loaded with the
    model, and the projection changes only when redrawn on purpose
    (`redraw_features`, or the `keras_performer.callbacks.FeatureRedraw`
    callback during training).

    Args:
        num_heads: int. Number of attention heads.
        key_dim: int. Size of each head for query and key.
        value_dim: int. Size of each head for value. Defaults to `key_dim`.
        dropout: float. Dropout rate on the attention output of each head
            (linear attention forms no attention matrix to drop from).
            Defaults to `0.0`.
        use_bias: bool. Whether the dense projections use biases.
            Defaults to `True`.
        output_shape: int, or a tuple of ints for several output axes (as
            in `MultiHeadAttention`): the size of the output's last axis or
            axes. Defaults to the query's last axis.
        attention_axes: `None`, or the sequence axis `1`: attention over
            other axes is not supported. Defaults to `None`.
        sliding_window: int. When set, each query sees only the keys
            within `sliding_window - 1` positions of itself (a symmetric
            band, causal with `use_causal_mask`), as in
            `MultiHeadAttention`: the quadratic form, `O(T S)` time and
            memory. Not with a decoding `cache`. Defaults to `None`.
        flash_attention: accepted for `MultiHeadAttention` compatibility
            and ignored: linear attention forms no attention matrix to
            tile. Defaults to `None`.
        kernel_initializer: initializer of the dense kernels.
            Defaults to `"glorot_uniform"`.
        bias_initializer: initializer of the dense biases. Defaults to
            `"zeros"`.
        kernel_regularizer: regularizer of the dense kernels. Defaults to
            `None`.
        bias_regularizer: regularizer of the dense biases. Defaults to `None`.
        activity_regularizer: regularizer of the dense outputs. Defaults to
            `None`.
        kernel_constraint: constraint of the dense kernels. Defaults to
            `None`.
        bias_constraint: constraint of the dense biases. Defaults to `None`.
        use_gate: bool. Whether each head's output is multiplied by a
            sigmoid gate computed from the query, as in
            `MultiHeadAttention(use_gate=True)` (same weights). Defaults to
            `False`.
        {performer_options}
        **kwargs: base layer arguments, such as `name` and `dtype`.

    Call arguments:
        query: query tensor of shape `(batch, target_length, dim)`.
        value: value tensor of shape `(batch, source_length, dim)`.
            Defaults to `query` (self-attention).
        key: key tensor of shape `(batch, source_length, dim)`. Defaults to
            `value`.
        query_mask: boolean mask `(batch, target_length)`; outputs at
            masked queries are zero before the output projection. Taken
            from the query's Keras mask when not given.
        value_mask: boolean mask `(batch, source_length)` of padded keys.
            Taken from the value's Keras mask when not given.
        key_mask: boolean mask `(batch, source_length)` of padded keys.
            Taken from the key's Keras mask when not given.
        attention_mask: boolean mask `(batch, target_length,
            source_length)` or `(batch, 1 or num_heads, target_length,
            source_length)`, applied exactly to the FAVOR estimate. A
            padding pattern (an outer product of a query mask and a key
            mask, lower triangular when causal, the same for all heads)
            takes the linear form; any other mask (a prefix LM, packed
            sequences, a band, per-head masks) the quadratic form of
            `keras_performer.ops.masked_favor_attention`, `O(T S)` time
            and memory, as the mask itself. The choice is made on the
            device for a mask on an accelerator or inside a compiled
            function (no read-back to the host).
        return_attention_scores: bool. Whether to also return the implied
            attention matrix `(batch, num_heads, target_length,
            source_length)`; quadratic in the length. Defaults to `False`.
        training: bool. Whether dropout is active. Defaults to `None`.
        use_causal_mask: bool. Whether query `i` sees only keys `j <= i`.
            Defaults to `False`.
        cache: state of earlier tokens for incremental causal decoding,
            from `get_initial_cache()` or an earlier call. Its size does not
            grow with the sequence. Defaults to `None`.
        cache_update_index: int or int tensor, the position of the first
            token of this call, as in
            `keras_hub.layers.CachedMultiHeadAttention`. The cache counts
            the keys it holds (positions `0` to `n - 1`, fed in order): a
            token at a position below `n` is not absorbed a second time, so
            keras-hub's generation loop, which feeds again the last token
            of a prompt, gets the right state. Also the start position of
            the rotary embedding. Defaults to `None`: every unmasked token
            is absorbed.

    Returns:
        The attention output `(batch, target_length, output_dim)`; with
        `return_attention_scores=True`, the tuple `(output, scores)`; with a
        `cache`, the tuple `(output, cache)`.

    Example:

    >>> model = keras.Sequential([
    ...     keras.Input((128, 32)),
    ...     keras_performer.PerformerAttention(num_heads=4, key_dim=8),
    ... ])
    >>> tuple(model(np.ones((2, 128, 32))).shape)
    (2, 128, 32)

    References:
        - [Choromanski et al., 2021](https://arxiv.org/abs/2009.14794)
    """

    def __init__(
        self,
        num_heads,
        key_dim,
        value_dim=None,
        dropout=0.0,
        use_bias=True,
        output_shape=None,
        attention_axes=None,
        sliding_window=None,
        flash_attention=None,
        kernel_initializer="glorot_uniform",
        bias_initializer="zeros",
        kernel_regularizer=None,
        bias_regularizer=None,
        activity_regularizer=None,
        kernel_constraint=None,
        bias_constraint=None,
        use_gate=False,
        **kwargs,
    ):
        output_shape = mha_compatibility.check_arguments(
            num_heads=num_heads,
            key_dim=key_dim,
            value_dim=value_dim,
            dropout=dropout,
            output_shape=output_shape,
            attention_axes=attention_axes,
            sliding_window=sliding_window,
            flash_attention=flash_attention,
            use_gate=use_gate,
        )
        options = options_lib.pop_performer_options(kwargs)
        rotary_max_wavelength = options["rotary_max_wavelength"]
        if rotary_max_wavelength is not None and key_dim % 2:
            raise ValueError(
                "A rotary embedding needs an even `key_dim`. Received: "
                f"key_dim={key_dim}, "
                f"rotary_max_wavelength={rotary_max_wavelength}"
            )
        # The decoding cache is a float32 state: Keras must not cast it to
        # the compute dtype with the inputs (the dense sublayers cast those).
        kwargs["autocast"] = False
        super().__init__(**kwargs)
        self.supports_masking = True
        self.num_heads = num_heads
        self.key_dim = key_dim
        self.value_dim = value_dim or key_dim
        self.dropout = dropout
        self.use_bias = use_bias
        # Private as in MultiHeadAttention: a public `output_shape` clashes
        # with model summaries.
        self._output_shape = output_shape
        self.attention_axes = attention_axes
        self.sliding_window = sliding_window
        self.flash_attention = flash_attention
        self.use_gate = use_gate
        self.kernel_initializer = keras.initializers.get(kernel_initializer)
        self.bias_initializer = keras.initializers.get(bias_initializer)
        self.kernel_regularizer = keras.regularizers.get(kernel_regularizer)
        self.bias_regularizer = keras.regularizers.get(bias_regularizer)
        # Private, as in MultiHeadAttention: it regularizes the dense
        # sublayers' outputs; the base layer's would add the layer's own.
        self._activity_regularizer = keras.regularizers.get(
            activity_regularizer
        )
        self.kernel_constraint = keras.constraints.get(kernel_constraint)
        self.bias_constraint = keras.constraints.get(bias_constraint)
        options_lib.set_performer_options(self, options)
        self._rotary_embedding = None
        if rotary_max_wavelength is not None:
            self._rotary_embedding = keras_hub.layers.RotaryEmbedding(
                max_wavelength=rotary_max_wavelength,
                dtype=self._sublayer_policy("rotary_embedding"),
            )
        self._dropout_layer = keras.layers.Dropout(
            dropout, seed=self.seed, dtype=self._sublayer_policy("dropout")
        )

    def build(self, query_shape, value_shape=None, key_shape=None):
        value_shape = query_shape if value_shape is None else value_shape
        key_shape = value_shape if key_shape is None else key_shape
        for name, shape in (
            ("query", query_shape),
            ("value", value_shape),
            ("key", key_shape),
        ):
            if len(shape) != 3:
                raise ValueError(
                    f"`{name}` must have rank 3 (batch, length, dim). "
                    f"Received: {name}_shape={tuple(shape)}"
                )
        if None not in (key_shape[1], value_shape[1]) and (
            key_shape[1] != value_shape[1]
        ):
            raise ValueError(
                "`key` and `value` must have the same length. Received: "
                f"key_shape={tuple(key_shape)}, "
                f"value_shape={tuple(value_shape)}"
            )
        # Same sublayers, shapes and order as MultiHeadAttention, so that
        # its trained weights load one to one.
        self._query_dense = self._make_dense(
            "abc,cde->abde", (None, self.num_heads, self.key_dim), "de", "query"
        )
        self._query_dense.build(query_shape)
        self._key_dense = self._make_dense(
            "abc,cde->abde", (None, self.num_heads, self.key_dim), "de", "key"
        )
        self._key_dense.build(key_shape)
        self._gate_dense = None
        if self.use_gate:
            self._gate_dense = self._make_dense(
                "abc,cde->abde",
                (None, self.num_heads, self.value_dim),
                "de",
                "gate",
                activation="sigmoid",
            )
            self._gate_dense.build(query_shape)
        self._value_dense = self._make_dense(
            "abc,cde->abde",
            (None, self.num_heads, self.value_dim),
            "de",
            "value",
        )
        self._value_dense.build(value_shape)
        output_dims = self._output_dims(query_shape)
        output_axes = "efgh"[: len(output_dims)]
        self._output_dense = self._make_dense(
            f"abcd,cd{output_axes}->ab{output_axes}",
            (None,) + output_dims,
            output_axes,
            "attention_output",
        )
        self._output_dense.build(
            (query_shape[0], query_shape[1], self.num_heads, self.value_dim)
        )
        self._build_random_features(self.key_dim)
        self._build_kernel_moments(self.num_heads, self.key_dim)

    def set_weights(self, weights):
        """Sets the weights from a list of arrays: the layer's own
        (`get_weights()`), or a `MultiHeadAttention`'s of the same
        arguments, which has no random features: those stay as they are.
        """
        if not mha_compatibility.set_exact_attention_weights(self, weights):
            super().set_weights(weights)

    def load_own_variables(self, store):
        if len(store.keys()) == 0:
            # A file saved from a MultiHeadAttention of the same model: it
            # has no random features, which stay as drawn from the seed.
            mha_compatibility.read_from_multi_head_attention(store)
            return
        super().load_own_variables(store)

    def _dense_sublayers(self):
        """The dense projections built so far (the gate's if any)."""
        names = ("query", "key", "value", "gate", "output")
        found = (getattr(self, f"_{name}_dense", None) for name in names)
        return [layer for layer in found if layer is not None]

    # Public, as in MultiHeadAttention (LoRA, quantization by sublayer).
    query_dense = property(lambda self: self._query_dense)
    key_dense = property(lambda self: self._key_dense)
    value_dense = property(lambda self: self._value_dense)
    output_dense = property(lambda self: self._output_dense)

    def _make_dense(
        self, equation, output_shape, bias_axes, name, activation=None
    ):
        dense = keras.layers.EinsumDense(
            equation,
            output_shape=output_shape,
            bias_axes=bias_axes if self.use_bias else None,
            activation=activation,
            kernel_initializer=clone_initializer(self.kernel_initializer),
            bias_initializer=clone_initializer(self.bias_initializer),
            kernel_regularizer=self.kernel_regularizer,
            bias_regularizer=self.bias_regularizer,
            activity_regularizer=self._activity_regularizer,
            kernel_constraint=self.kernel_constraint,
            bias_constraint=self.bias_constraint,
            dtype=self._sublayer_policy(name),
            name=name,
        )
        # Masks are applied by this layer; let them pass the projections.
        dense.supports_masking = True
        return dense

    def _sublayer_policy(self, name):
        """The dtype policy of sublayer `name`: the layer's, or its entry in
        a map of policies (a quantized layer's config)."""
        policy = self.dtype_policy
        if isinstance(policy, keras.dtype_policies.DTypePolicyMap):
            return policy[f"{self.path or self.name}/{name}"]
        return policy

    def call(
        self,
        query,
        value=None,
        key=None,
        query_mask=None,
        value_mask=None,
        key_mask=None,
        attention_mask=None,
        return_attention_scores=False,
        training=None,
        use_causal_mask=False,
        cache=None,
        cache_update_index=None,
        mask=None,
    ):
        # Keras passes the query's implicit mask as `mask` to a call with
        # one tensor, and as `*_mask` to a call with several.
        if query_mask is None:
            query_mask = mask
        if cache is not None:
            self._check_decoding(
                cache,
                query,
                cache_update_index,
                return_attention_scores,
                attention_mask,
            )
        (
            value,
            key,
            query_valid,
            key_valid,
            attention_mask,
            is_causal,
            quadratic,
        ) = call_masks(
            query,
            value,
            key,
            query_mask,
            value_mask,
            key_mask,
            attention_mask,
            use_causal_mask,
            self.sliding_window,
            cache,
            cache_update_index,
        )
        gate = None if self._gate_dense is None else self._gate_dense(query)
        query = self._query_dense(query)
        key = self._key_dense(key)
        value = self._value_dense(value)
        if self._rotary_embedding is not None:
            start = 0 if cache_update_index is None else cache_update_index
            query = self._rotary_embedding(query, start_index=start)
            key = self._rotary_embedding(key, start_index=start)
        whole_mask = functools.partial(
            masks.dense_mask,
            attention_mask,
            query_valid,
            key_valid,
            is_causal,
            (ops.shape(query)[1], ops.shape(key)[1]),
        )
        # The running moments learn from training calls, after their reads.
        learn_moments = bool(training) and cache is None
        if return_attention_scores:  # Quadratic: short inputs only.
            scores = favor.favor_attention_scores(
                query,
                key,
                self.projection_matrix,
                feature_map=self.feature_map,
                mask=whole_mask(),
                moments=self._scores_moments(
                    query, key, query_valid, key_valid, is_causal, quadratic
                ),
            )
            out = ops.einsum(
                "bhts,bshd->bthd",
                ops.cast(scores, "float32"),
                ops.cast(value, "float32"),
            )
            out = self._output(out, query_valid, gate, training)
            if learn_moments:
                self._update_running_moments(query, key, query_valid, key_valid)
            return out, scores

        def masked():  # The quadratic form, under the whole mask.
            return favor.masked_favor_attention(
                query,
                key,
                value,
                self.projection_matrix,
                whole_mask(),
                feature_map=self.feature_map,
                moments=self._running_moments(),
            )

        # A mask that is not a padding pattern takes the quadratic form; the
        # choice is made on the device when the mask is not on the host.
        if quadratic is True:
            out = masked()
        elif quadratic is None:
            out, state = self._linear_attention(
                query, key, value, query_valid, key_valid, is_causal, cache
            )
            cache = None if cache is None else state
        else:
            out = ops.cond(
                quadratic,
                masked,
                lambda: self._linear_attention(
                    query, key, value, query_valid, key_valid, is_causal, None
                )[0],
            )
        out = self._output(out, query_valid, gate, training)
        if learn_moments:
            self._update_running_moments(query, key, query_valid, key_valid)
        return out if cache is None else (out, cache)

    def _output(self, out, query_valid, gate, training):
        """The heads' outputs `(batch, T, heads, value_dim)`, zero at padded
        queries, through dropout, the gate and the output projection."""
        if query_valid is not None:
            out = ops.where(query_valid[:, :, None, None], out, 0.0)
        out = self._dropout_layer(out, training=training)
        if gate is not None:
            out = out * ops.cast(gate, out.dtype)
        return self._output_dense(out)

    def _linear_attention(
        self, query, key, value, query_valid, key_valid, is_causal, cache
    ):
        """The linear forms of projected inputs, `(output, state)`: the
        causal one, from `cache` or from no state, or the bidirectional one
        (its state is `None`)."""
        if not is_causal:
            out = favor.favor_attention(
                query,
                key,
                value,
                self.projection_matrix,
                feature_map=self.feature_map,
                key_mask=key_valid,
                moments=self._batch_moments(query, key, query_valid, key_valid),
            )
            return out, None
        if cache is None and key.shape[1] != query.shape[1]:
            key, value, key_valid = masks.causal_keys(
                key, value, key_valid, query.shape[1]
            )
        return causal.causal_favor_attention(
            query,
            key,
            value,
            self.projection_matrix,
            feature_map=self.feature_map,
            key_mask=key_valid,
            chunk_size=self.chunk_size,
            initial_state=cache,
            moments=self._running_moments(),
        )

    def _output_dims(self, query_shape):
        """The output's trailing axes: `output_shape`, or the query's."""
        if self._output_shape is None:
            return (query_shape[-1],)
        if isinstance(self._output_shape, tuple):
            return self._output_shape
        return (self._output_shape,)

    def compute_output_shape(
        self, query_shape, value_shape=None, key_shape=None
    ):
        value_shape = query_shape if value_shape is None else value_shape
        key_shape = value_shape if key_shape is None else key_shape
        if tuple(value_shape)[1:-1] != tuple(key_shape)[1:-1]:
            raise ValueError(
                "`key` and `value` must have the same length. Received: "
                f"value_shape={tuple(value_shape)}, "
                f"key_shape={tuple(key_shape)}"
            )
        return tuple(query_shape[:-1]) + self._output_dims(query_shape)

    def compute_output_spec(
        self,
        query,
        value=None,
        key=None,
        return_attention_scores=False,
        cache=None,
        **kwargs,
    ):
        value = query if value is None else value
        output = keras.KerasTensor(
            self.compute_output_shape(query.shape), dtype=self.compute_dtype
        )
        if cache is not None:
            return output, keras.KerasTensor(cache.shape, dtype="float32")
        if return_attention_scores:
            scores_shape = (
                query.shape[0],
                self.num_heads,
                query.shape[1],
                value.shape[1],
            )
            return output, keras.KerasTensor(
                scores_shape, dtype=self.compute_dtype
            )
        return output

    def get_config(self):
        config = super().get_config()
        config.update(
            {
                "num_heads": self.num_heads,
                "key_dim": self.key_dim,
                "value_dim": self.value_dim,
                "dropout": self.dropout,
                "use_bias": self.use_bias,
                "output_shape": self._output_shape,
                "attention_axes": self.attention_axes,
                "sliding_window": self.sliding_window,
                "flash_attention": self.flash_attention,
                **mha_compatibility.serialized_weight_arguments(self),
                "use_gate": self.use_gate,
                **options_lib.performer_options(self),
            }
        )
        # Quantized sublayers (`model.quantize`) are rebuilt quantized from
        # a map of dtype policies by path, as keras-hub's backbones do; a
        # pattern on the sublayer's name, as the layer's own path may change
        # when a model is loaded (a Sequential builds it in its scope).
        policy = self.dtype_policy
        if not isinstance(policy, keras.dtype_policies.DTypePolicyMap):
            policy = keras.dtype_policies.DTypePolicyMap(default_policy=policy)
            for layer in self._dense_sublayers():
                if layer.quantization_mode is not None:
                    policy[f".*/{re.escape(layer.name)}"] = layer.dtype_policy
            if len(policy):
                config["dtype"] = keras.dtype_policies.serialize(policy)
        return config


def clone_initializer(initializer):
    """A fresh instance for each sublayer: one seeded initializer shared by
    several would give them all the same weights."""
    return initializer.__class__.from_config(initializer.get_config())
