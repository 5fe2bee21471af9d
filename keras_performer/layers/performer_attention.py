"""PerformerAttention: a drop-in for `keras.layers.MultiHeadAttention`."""

import re

import keras
import keras_hub
from keras import ops
from keras.src.backend.common.masking import get_keras_mask

from keras_performer.ops import causal
from keras_performer.ops import favor
from keras_performer.ops import feature_maps
from keras_performer.ops.common import check_draw
from keras_performer.ops.common import check_positive_int
from keras_performer.ops.common import check_rate
from keras_performer.ops.common import check_seed
from keras_performer.ops.common import concrete_seed
from keras_performer.ops.exact import visible_keys
from keras_performer.ops.projection import PROJECTION_NORMS
from keras_performer.ops.projection import sample_projection_matrix


@keras.saving.register_keras_serializable(package="keras_performer")
class PerformerAttention(keras.layers.Layer):
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
        sliding_window: `None` only: a band of keys per query is a mask
            linear attention cannot apply exactly. Accepted so that
            `MultiHeadAttention` configs load. Defaults to `None`.
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
        feature_map: str. Random feature map: `"softmax"` (positive random
            features, FAVOR+), `"hyperbolic"` (positive +/- features, lower
            variance), `"trig"` (sin/cos features of the original FAVOR,
            can be unstable) or `"relu"` (generalized attention).
            Defaults to `"softmax"`.
        num_random_features: int. Rows `m` of the random projection; the
            feature map makes `m` features of them (`2m` for `"hyperbolic"`
            and `"trig"`). Defaults to `256`.
        orthogonal: bool. Whether projection rows are drawn in orthogonal
            blocks (lower variance) rather than i.i.d. Defaults to `True`.
        projection_norm: str. Row norms of the projection: `"chi"`
            (unbiased) or `"sqrt_d"` (lower variance). Defaults to `"chi"`.
        chunk_size: int. Tokens per chunk of the causal form (see
            `keras_performer.ops.causal_favor_attention`). Defaults to
            `128`.
        rotary_max_wavelength: int. When set, queries and keys get a rotary
            position embedding (`keras_hub.layers.RotaryEmbedding` with this
            maximum wavelength, e.g. `10000`) before the feature map; the
            key dimension must be even. Defaults to `None` (no rotary
            embedding).
        redraw: bool. Whether the projection may be redrawn
            (`redraw_features`, `FeatureRedraw`); `False` freezes the
            features. Defaults to `True`.
        seed: int. Seed of the projection and of dropout. With `None`, the
            layer picks a seed once and keeps it (in its config and its
            weights), so that every later draw can be made again. Defaults
            to `None`.
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
            source_length)`. Linear attention applies it exactly only when
            it is a padding pattern (an outer product of a query mask and a
            key mask, and lower triangular when causal). Any other mask
            raises `ValueError` when it is in host memory, or makes the
            output NaN when it is on an accelerator or inside a compiled
            function (reading it back would wait for the device).
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
        feature_map="softmax",
        num_random_features=256,
        orthogonal=True,
        projection_norm="chi",
        chunk_size=causal.DEFAULT_CHUNK_SIZE,
        rotary_max_wavelength=None,
        redraw=True,
        seed=None,
        **kwargs,
    ):
        check_positive_int("num_heads", num_heads)
        check_positive_int("key_dim", key_dim)
        if value_dim is not None:
            check_positive_int("value_dim", value_dim)
        check_rate("dropout", dropout)
        if isinstance(output_shape, (list, tuple)):
            for size in output_shape:
                check_positive_int("output_shape", size)
            output_shape = (
                output_shape[0]
                if len(output_shape) == 1
                else tuple(output_shape)
            )
        elif output_shape is not None:
            check_positive_int("output_shape", output_shape)
        if sliding_window is not None:
            raise ValueError(
                "`sliding_window` restricts each query to a band of keys, a "
                "mask that linear attention cannot apply exactly; use "
                "`keras.layers.MultiHeadAttention` for it. Received: "
                f"sliding_window={sliding_window}"
            )
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
        check_performer_options(
            feature_map=feature_map,
            num_random_features=num_random_features,
            orthogonal=orthogonal,
            projection_norm=projection_norm,
            chunk_size=chunk_size,
            rotary_max_wavelength=rotary_max_wavelength,
            redraw=redraw,
            seed=seed,
        )
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
        self.feature_map = feature_map
        self.num_random_features = num_random_features
        self.orthogonal = orthogonal
        self.projection_norm = projection_norm
        self.chunk_size = chunk_size
        self.rotary_max_wavelength = rotary_max_wavelength
        self.redraw = redraw
        self.seed = concrete_seed(seed)
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
        self.projection_matrix = self.add_weight(
            name="projection_matrix",
            shape=(self.num_random_features, self.key_dim),
            initializer=self._sample_projection,
            dtype="float32",
            trainable=False,
            autocast=False,
        )
        # What the projection is drawn from, kept with it in checkpoints so
        # that a restored layer redraws as the saved one would have.
        self.projection_seed = self.add_weight(
            name="projection_seed",
            shape=(),
            initializer=keras.initializers.Constant(self.seed),
            dtype="int64",
            trainable=False,
        )
        self.projection_draw = self.add_weight(
            name="projection_draw",
            shape=(),
            initializer="zeros",
            dtype="int64",
            trainable=False,
        )

    def set_weights(self, weights):
        """Sets the weights from a list of arrays: the layer's own
        (`get_weights()`), or a `MultiHeadAttention`'s of the same
        arguments, which has no random features: those stay as they are.
        """
        others = [
            w for w in self.weights if w.name not in RANDOM_FEATURE_WEIGHTS
        ]
        if len(weights) != len(others):
            return super().set_weights(weights)
        for variable, value in zip(others, weights, strict=True):
            if tuple(variable.shape) != tuple(ops.shape(value)):
                raise ValueError(
                    f"Weight {variable.path} has shape {variable.shape}. "
                    f"Received: a weight of shape {ops.shape(value)}"
                )
        for variable, value in zip(others, weights, strict=True):
            variable.assign(value)

    def load_own_variables(self, store):
        if len(store.keys()) == 0:
            # A file saved from a MultiHeadAttention of the same model: it
            # has no random features, which stay as drawn from the seed.
            _read_from_multi_head_attention(store)
            return
        super().load_own_variables(store)

    @property
    def query_dense(self):
        return self._query_dense

    @property
    def key_dense(self):
        return self._key_dense

    @property
    def value_dense(self):
        return self._value_dense

    @property
    def output_dense(self):
        return self._output_dense

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

    def _sample_projection(self, shape, dtype=None, seed=None, draw=0):
        return sample_projection_matrix(
            shape[0],
            shape[1],
            seed=self.seed if seed is None else seed,
            orthogonal=self.orthogonal,
            projection_norm=self.projection_norm,
            draw=draw,
        )

    def redraw_features(self, draw=None):
        """Replaces the random projection by draw number `draw` of the
        layer's seed.

        A draw is a pure function of the seed and the draw number, so every
        replica and worker that redraws gets the same matrix with no
        communication, and a restored layer gets the matrix it had. The
        redraw runs eagerly, between training steps; inference never
        redraws.

        Args:
            draw: int. The draw number. Defaults to the current one plus
                one.

        Returns:
            The draw number now in use.

        Raises:
            ValueError: when the layer is not built, or frozen
                (`redraw=False`).
            RuntimeError: when called inside a compiled function (a
                `tf.function`, a training step), where a matrix drawn on
                the host would be frozen into the graph.
        """
        if not self.built:
            raise ValueError(
                "The layer must be built (called once) before its features "
                f"are redrawn. Received: layer {self.name}, not built"
            )
        if not self.redraw:
            raise ValueError(
                f"The features of layer {self.name} are frozen. Set "
                "`layer.redraw = True` to redraw them. Received: redraw=False"
            )
        try:
            seed = int(ops.convert_to_numpy(self.projection_seed))
            current = int(ops.convert_to_numpy(self.projection_draw))
        except (NotImplementedError, TypeError, ValueError) as error:
            raise RuntimeError(
                "`redraw_features` runs eagerly, between training steps (as "
                "the FeatureRedraw callback does): inside a compiled "
                "function a matrix drawn on the host would be frozen into "
                f"the graph. Received: a call inside a compiled function "
                f"for layer {self.name}"
            ) from error
        draw = current + 1 if draw is None else draw
        check_draw(draw)
        self.projection_matrix.assign(
            self._sample_projection(
                self.projection_matrix.shape, seed=seed, draw=draw
            )
        )
        self.projection_draw.assign(draw)
        return draw

    def get_initial_cache(self, batch_size):
        """Returns the decoding state before any token: constant size
        `(batch_size, num_heads, num_features, value_dim + 3)`, float32."""
        return causal.empty_state(
            batch_size, self.num_heads, self._num_features(), self.value_dim
        )

    def _num_features(self):
        return feature_maps.num_features(
            self.feature_map, self.num_random_features
        )

    def _check_cache(self, cache):
        expected = (self.num_heads, self._num_features(), self.value_dim + 3)
        if len(cache.shape) != 4 or tuple(cache.shape[1:]) != expected:
            raise ValueError(
                "`cache` must have shape (batch, num_heads, num_features, "
                f"value_dim + 3) = (batch, {', '.join(map(str, expected))}) "
                "for this layer: pass the cache from its "
                "`get_initial_cache()` or an earlier call of the same layer. "
                f"Received: cache.shape={tuple(cache.shape)}"
            )

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
    ):
        # Keras passes implicit masks as `*_mask` only to a call with
        # several tensors; with the query alone, read its mask here.
        if query_mask is None:
            query_mask = get_keras_mask(query)
        for name, x in (("query", query), ("value", value), ("key", key)):
            if x is not None and len(x.shape) != 3:
                raise ValueError(
                    f"`{name}` must have rank 3 (batch, length, dim). "
                    f"Received: {name}.shape={tuple(x.shape)}"
                )
        _check_mask("query_mask", query_mask, query)
        _check_mask("value_mask", value_mask, value)
        _check_mask("key_mask", key_mask, key if key is not None else value)
        if value is None:
            value = query
            value_mask = query_mask if value_mask is None else value_mask
        if key is None:
            key = value
        if cache is not None and (
            return_attention_scores or attention_mask is not None
        ):
            raise ValueError(
                "With a `cache`, `return_attention_scores` and "
                "`attention_mask` are not supported: decoding keeps no "
                "attention matrix. Received: "
                f"return_attention_scores={return_attention_scores}, "
                f"attention_mask={attention_mask}"
            )
        if cache is not None:
            self._check_cache(cache)
        if self._rotary_embedding is not None and cache is not None:
            if cache_update_index is None:
                raise ValueError(
                    "With a rotary embedding, decoding with a `cache` needs "
                    "`cache_update_index`, the position of the first token. "
                    "Received: cache_update_index=None"
                )
        is_causal = use_causal_mask or cache is not None
        query_valid = _as_bool(query_mask)
        key_valid = _and(_as_bool(value_mask), _as_bool(key_mask))
        if cache is not None and cache_update_index is not None:
            # Positions the state already holds are not absorbed again.
            positions = ops.cast(cache_update_index, "float32") + ops.arange(
                ops.shape(key)[1], dtype="float32"
            )
            key_valid = _and(
                key_valid,
                positions[None, :] >= causal.state_length(cache)[:, None],
            )
        unsupported_mask = None
        if attention_mask is not None:
            padding = _padding_masks(attention_mask, is_causal, query, key)
            query_valid = _and(query_valid, padding[0])
            key_valid = _and(key_valid, padding[1])
            unsupported_mask = padding[2]

        source_length = key.shape[1]
        if is_causal and cache is None and source_length != query.shape[1]:
            key, value, key_valid = _causal_keys(
                key, value, key_valid, query.shape[1]
            )
        gate = None if self._gate_dense is None else self._gate_dense(query)
        query = self._query_dense(query)
        key = self._key_dense(key)
        value = self._value_dense(value)
        if self._rotary_embedding is not None:
            start = 0 if cache_update_index is None else cache_update_index
            query = self._rotary_embedding(query, start_index=start)
            key = self._rotary_embedding(key, start_index=start)
        if cache is not None:
            out, cache = causal.causal_favor_attention(
                query,
                key,
                value,
                self.projection_matrix,
                feature_map=self.feature_map,
                key_mask=key_valid,
                chunk_size=self.chunk_size,
                initial_state=cache,
            )
        else:
            out = favor.favor_attention(
                query,
                key,
                value,
                self.projection_matrix,
                feature_map=self.feature_map,
                is_causal=is_causal,
                key_mask=key_valid,
                chunk_size=self.chunk_size,
            )
        if query_valid is not None:
            out = ops.where(query_valid[:, :, None, None], out, 0.0)
        if unsupported_mask is not None:
            out = ops.where(unsupported_mask, float("nan"), out)
        out = self._dropout_layer(out, training=training)
        if gate is not None:
            out = out * ops.cast(gate, out.dtype)
        out = self._output_dense(out)
        if cache is not None:
            return out, cache
        if return_attention_scores:
            scores = favor.favor_attention_scores(
                query,
                key,
                self.projection_matrix,
                feature_map=self.feature_map,
                is_causal=is_causal,
                key_mask=key_valid,
            )
            if query_valid is not None:
                scores = ops.where(query_valid[:, None, :, None], scores, 0.0)
            if scores.shape[-1] != source_length:  # Causal, T != S.
                scores = _fit_columns(scores, source_length)
            return out, scores
        return out

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
                "kernel_initializer": keras.initializers.serialize(
                    self.kernel_initializer
                ),
                "bias_initializer": keras.initializers.serialize(
                    self.bias_initializer
                ),
                "kernel_regularizer": keras.regularizers.serialize(
                    self.kernel_regularizer
                ),
                "bias_regularizer": keras.regularizers.serialize(
                    self.bias_regularizer
                ),
                "activity_regularizer": keras.regularizers.serialize(
                    self._activity_regularizer
                ),
                "kernel_constraint": keras.constraints.serialize(
                    self.kernel_constraint
                ),
                "bias_constraint": keras.constraints.serialize(
                    self.bias_constraint
                ),
                "use_gate": self.use_gate,
                **performer_options(self),
            }
        )
        # Quantized sublayers (`model.quantize`) are rebuilt quantized from
        # a map of dtype policies by path, as keras-hub's backbones do; a
        # pattern on the sublayer's name, as the layer's own path may change
        # when a model is loaded (a Sequential builds it in its scope).
        policy = self.dtype_policy
        if not isinstance(policy, keras.dtype_policies.DTypePolicyMap):
            policy = keras.dtype_policies.DTypePolicyMap(default_policy=policy)
            for layer in self._flatten_layers(include_self=False):
                if layer.quantization_mode is not None:
                    policy[f".*/{re.escape(layer.name)}"] = layer.dtype_policy
            if len(policy):
                config["dtype"] = keras.dtype_policies.serialize(policy)
        return config


# The non-trainable weights PerformerAttention has and MultiHeadAttention
# lacks: the random features and what they are drawn from.
RANDOM_FEATURE_WEIGHTS = (
    "projection_matrix",
    "projection_seed",
    "projection_draw",
)

# The Performer arguments of the layers, under the same names in each.
PERFORMER_OPTIONS = (
    "feature_map",
    "num_random_features",
    "orthogonal",
    "projection_norm",
    "chunk_size",
    "rotary_max_wavelength",
    "redraw",
    "seed",
)


def performer_options(layer):
    """The Performer arguments of a layer, as a dict."""
    return {name: getattr(layer, name) for name in PERFORMER_OPTIONS}


def clone_initializer(initializer):
    """A fresh instance for each sublayer: one seeded initializer shared by
    several would give them all the same weights."""
    return initializer.__class__.from_config(initializer.get_config())


def check_performer_options(
    feature_map,
    num_random_features,
    orthogonal,
    projection_norm,
    chunk_size,
    rotary_max_wavelength,
    redraw,
    seed,
):
    """Validates the Performer arguments of the layers; raises
    `ValueError`."""
    feature_maps.check_feature_map(feature_map)
    check_positive_int("num_random_features", num_random_features)
    if not isinstance(orthogonal, bool):
        raise ValueError(
            f"`orthogonal` must be a bool. Received: orthogonal={orthogonal}"
        )
    if projection_norm not in PROJECTION_NORMS:
        raise ValueError(
            f"`projection_norm` must be one of {PROJECTION_NORMS}. "
            f"Received: projection_norm={projection_norm}"
        )
    check_positive_int("chunk_size", chunk_size)
    if rotary_max_wavelength is not None:
        check_positive_int("rotary_max_wavelength", rotary_max_wavelength)
    if not isinstance(redraw, bool):
        raise ValueError(f"`redraw` must be a bool. Received: redraw={redraw}")
    check_seed(seed)


def _read_from_multi_head_attention(store):
    """Points `store` at the weights a `MultiHeadAttention` in the same
    place saved, when the file has no group for this layer.

    Inside a Sequential or Functional model, Keras files a layer's weights
    under its class name (`layers/multi_head_attention_1/query_dense/...`),
    so a Performer model looks for `layers/performer_attention_1/...`. The
    sublayers are loaded after this call, from paths under the layer's own:
    they are read from the `MultiHeadAttention`'s group instead. This uses
    the path a Keras 3 weights store keeps (`_h5_entry_path`); the tests of
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


def _as_bool(mask):
    return None if mask is None else ops.cast(mask, "bool")


def _and(a, b):
    if a is None or b is None:
        return b if a is None else a
    return ops.logical_and(a, b)


def _check_mask(name, mask, sequence):
    """Raises `ValueError` unless `mask` (if any) has the shape `(batch,
    length)` of `sequence`."""
    if mask is None or sequence is None:
        return
    expected = tuple(sequence.shape[:2])
    shape = tuple(mask.shape)
    if not _same_shape(shape, expected):
        raise ValueError(
            f"`{name}` must have shape {expected}. Received: "
            f"{name}.shape={shape}"
        )


def _causal_keys(key, value, key_valid, query_length):
    """Keys, values and key mask cut or padded to the query length: with a
    causal mask, query `i` sees keys `j <= i` of the `(T, S)` matrix, as in
    MultiHeadAttention, so keys past `T` are never seen, and padded keys
    are masked."""
    if key.shape[1] is None or query_length is None:
        raise ValueError(
            "With `use_causal_mask`, query and key lengths that differ must "
            f"be known. Received: key.shape={tuple(key.shape)}, query length "
            f"{query_length}"
        )
    if key_valid is None:
        key_valid = ops.ones_like(key[:, :, 0], dtype="bool")
    if key.shape[1] > query_length:
        return (
            key[:, :query_length],
            value[:, :query_length],
            key_valid[:, :query_length],
        )
    extra = query_length - key.shape[1]
    return (
        ops.pad(key, [(0, 0), (0, extra), (0, 0)]),
        ops.pad(value, [(0, 0), (0, extra), (0, 0)]),
        ops.pad(key_valid, [(0, 0), (0, extra)], constant_values=False),
    )


def _fit_columns(scores, columns):
    """Scores `(..., T, T)` cut or padded with zeros to `columns` keys."""
    if scores.shape[-1] > columns:
        return scores[..., :columns]
    extra = columns - scores.shape[-1]
    return ops.pad(scores, [(0, 0), (0, 0), (0, 0), (0, extra)])


def _same_shape(shape, expected):
    return len(shape) == len(expected) and all(
        a is None or b is None or a == b
        for a, b in zip(shape, expected, strict=True)
    )


def _padding_masks(attention_mask, is_causal, query, key):
    """Splits a `(batch, T, S)` mask (or `(batch, 1 or heads, T, S)`, one
    pattern for all heads) into query and key padding masks.

    Returns `(query_valid, key_valid, unsupported)`. `unsupported` is a
    scalar, True when the mask is not the padding pattern the two masks
    make. A mask in host memory that is not raises `ValueError` at once;
    one on an accelerator is not read back to the host (a sync on every
    call): its `unsupported` makes the outputs NaN.
    """
    shape = tuple(attention_mask.shape)
    batch, rows, columns = query.shape[0], query.shape[1], key.shape[1]
    if not (
        _same_shape(shape, (batch, rows, columns))
        or _same_shape(shape, (batch, shape[1], rows, columns))
    ):
        raise ValueError(
            "`attention_mask` must have shape (batch, target_length, "
            f"source_length) = {(batch, rows, columns)}, or (batch, 1 or "
            "num_heads, target_length, source_length). Received: "
            f"attention_mask.shape={shape}"
        )
    query_valid, key_valid, unsupported = _padding_pattern(
        attention_mask, is_causal
    )
    if "cpu" not in str(getattr(attention_mask, "device", "")).lower():
        return query_valid, key_valid, unsupported  # Not read back.
    try:
        known = bool(ops.convert_to_numpy(unsupported))
    except (NotImplementedError, TypeError):  # Symbolic: known when run.
        return query_valid, key_valid, unsupported
    if known:
        raise ValueError(
            "`attention_mask` is not a padding pattern (an outer product of "
            "a query mask and a key mask, lower triangular when causal, the "
            "same for all heads): "
            "linear attention cannot apply it exactly. Use `query_mask` and "
            "`key_mask`, or `keras.layers.MultiHeadAttention`. Received: "
            f"attention_mask with shape {tuple(attention_mask.shape)}"
        )
    return query_valid, key_valid, None


def _padding_pattern(mask, is_causal):
    """The query and key masks of a `(batch, T, S)` or `(batch, heads, T,
    S)` mask and a scalar, True when the mask is not their padding
    pattern."""
    mask = ops.cast(mask, "bool")
    per_head = None
    if len(mask.shape) == 4:  # One pattern for all heads, or unsupported.
        per_head = ops.any(
            ops.not_equal(ops.any(mask, axis=1), ops.all(mask, axis=1))
        )
        mask = ops.any(mask, axis=1)
    visible = visible_keys(ops.shape(mask)[1], ops.shape(mask)[2], is_causal)
    mask = ops.logical_and(mask, visible[0])
    query_valid = ops.any(mask, axis=2)
    key_valid = ops.any(mask, axis=1)
    pattern = ops.logical_and(
        ops.logical_and(query_valid[:, :, None], key_valid[:, None, :]),
        visible[0],
    )
    unsupported = ops.any(ops.not_equal(mask, pattern))
    if per_head is not None:
        unsupported = ops.logical_or(unsupported, per_head)
    return query_valid, key_valid, unsupported
