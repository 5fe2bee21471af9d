"""The caches of a Performer attention layer: the causal decoding state,
and the key/value sums of a source sequence (cross-attention). Both have
a size that does not depend on the length."""

from keras_performer.ops import causal
from keras_performer.ops import favor
from keras_performer.ops import feature_maps
from keras_performer.ops import masks
from keras_performer.ops.checks import check_same_batch


class AttentionCache:
    """Mixin of `PerformerAttention`: its caches, their checks, and
    attention to a source sequence's cache."""

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

    def _check_decoding(
        self,
        cache,
        query,
        cache_update_index,
        return_attention_scores,
        attention_mask,
    ):
        """Checks a call that decodes with a `cache`."""
        if (
            return_attention_scores
            or attention_mask is not None
            or self.sliding_window is not None
        ):
            raise ValueError(
                "With a `cache`, `return_attention_scores`, `attention_mask` "
                "and `sliding_window` are not supported: decoding keeps no "
                "attention matrix, and its state all the keys. Received: "
                f"return_attention_scores={return_attention_scores}, "
                f"attention_mask={attention_mask}, "
                f"sliding_window={self.sliding_window}"
            )
        self._check_cache(cache, query)
        if self._rotary_embedding is not None and cache_update_index is None:
            raise ValueError(
                "With a rotary embedding, decoding with a `cache` needs "
                "`cache_update_index`, the position of the first token. "
                "Received: cache_update_index=None"
            )

    def _check_cache(self, cache, query):
        """Checks that `cache` is a state of this layer for `query`'s
        batch."""
        expected = (self.num_heads, self._num_features(), self.value_dim + 3)
        if len(cache.shape) != 4 or tuple(cache.shape[1:]) != expected:
            raise ValueError(
                "`cache` must have shape (batch, num_heads, num_features, "
                f"value_dim + 3) = (batch, {', '.join(map(str, expected))}) "
                "for this layer: pass the cache from its "
                "`get_initial_cache()` or an earlier call of the same layer. "
                f"Received: cache.shape={tuple(cache.shape)}"
            )
        check_same_batch("cache", cache, "query", query)

    def _check_key_value_cache_layer(self):
        if not self.built:
            raise ValueError(
                "The layer must be built (called once) before it makes or "
                f"reads a key/value cache. Received: layer {self.name}, not "
                "built"
            )
        if self._rotary_embedding is not None or self.sliding_window:
            raise ValueError(
                "A key/value cache holds no positions: it is for attention "
                "without a rotary embedding or a sliding window. Received: "
                f"rotary_max_wavelength={self.rotary_max_wavelength}, "
                f"sliding_window={self.sliding_window}"
            )

    def key_value_cache(self, value, key=None, value_mask=None, key_mask=None):
        """Returns the cache of attention to a source sequence, for
        `attend_to_cache`: the sums `phi(K)^T [V, 1]` of its keys and values
        per head, `(batch, num_heads, num_features, value_dim + 3)` float32,
        a size that does not depend on the source length (a decoder's
        cross-attention cache). FAVOR++ and FAVOR# features take the
        running moments (the queries are not known yet).

        Args:
            value: tensor `(batch, source_length, dim)`.
            key: tensor `(batch, source_length, dim)`. Defaults to `value`.
            value_mask: boolean `(batch, source_length)`, `False` at
                padding. Defaults to `None`.
            key_mask: boolean `(batch, source_length)`. Defaults to `None`.
        """
        key = value if key is None else key
        for name, x in (("value", value), ("key", key)):
            if len(x.shape) != 3:
                raise ValueError(
                    f"`{name}` must have rank 3 (batch, length, dim). "
                    f"Received: {name}.shape={tuple(x.shape)}"
                )
        self._check_key_value_cache_layer()
        masks.check_sequence_mask("value_mask", value_mask, value)
        masks.check_sequence_mask("key_mask", key_mask, key)
        return favor.key_value_state(
            self._key_dense(key),
            self._value_dense(value),
            self.projection_matrix,
            feature_map=self.feature_map,
            key_mask=masks.both(
                masks.as_bool(value_mask), masks.as_bool(key_mask)
            ),
            moments=self._running_moments(),
        )

    def attend_to_cache(self, query, cache, query_mask=None, training=None):
        """Attention of `query` `(batch, target_length, dim)` to every key of
        a `key_value_cache`: the output of calling the layer on the source
        sequence, in a time that does not depend on its length.

        Args:
            query: tensor `(batch, target_length, dim)`.
            cache: from `key_value_cache()` of this layer.
            query_mask: boolean `(batch, target_length)`; outputs at masked
                queries are zero before the output projection. Defaults to
                `None`.
            training: bool. Whether dropout is active. Defaults to `None`.

        Returns:
            The attention output `(batch, target_length, output_dim)`.
        """
        if len(query.shape) != 3:
            raise ValueError(
                "`query` must have rank 3 (batch, length, dim). Received: "
                f"query.shape={tuple(query.shape)}"
            )
        masks.check_sequence_mask("query_mask", query_mask, query)
        self._check_key_value_cache_layer()
        self._check_cache(cache, query)
        gate = None if self._gate_dense is None else self._gate_dense(query)
        out = favor.attend_to_state(
            self._query_dense(query),
            cache,
            self.projection_matrix,
            feature_map=self.feature_map,
            moments=self._running_moments(),
        )
        return self._output(out, masks.as_bool(query_mask), gate, training)
