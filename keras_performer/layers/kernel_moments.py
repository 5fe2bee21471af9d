"""The moments a Performer layer's FAVOR++ and FAVOR# features are chosen
from: those of each batch where every query sees every key, a running
average where queries must not see later tokens."""

from keras import ops

from keras_performer.ops.feature_statistics import MOMENT_FEATURE_MAPS
from keras_performer.ops.feature_statistics import NUM_MOMENTS
from keras_performer.ops.feature_statistics import query_key_moments

# Weight of the past in the running average, as batch normalization's
# moving statistics.
MOMENTUM = 0.99


class KernelMoments:
    """Mixin of `PerformerAttention`: the moments of its queries and keys.

    Bidirectional attention (no causal mask, no cache, a padding pattern)
    takes its parameters from the moments of each sequence's own valid
    queries and keys: every query sees every key, so nothing is leaked.
    Causal attention, decoding, the quadratic form of other masks and a
    decoder's cross-attention (`ordered_queries`) take them from
    `query_key_moments`, a non-trainable weight: a running average of the
    training batches' moments, updated after each training call (the call
    itself uses the value from before, the same on every replica), frozen
    in inference and saved with the model. Until a first training call it
    is zero, which gives FAVOR+'s features.
    """

    # Set by a decoder on its cross-attention: queries come in order, so
    # they must not share statistics with the later ones.
    ordered_queries = False

    def _build_kernel_moments(self, num_heads, dim):
        self.query_key_moments = None
        if self.feature_map not in MOMENT_FEATURE_MAPS:
            return
        self.query_key_moments = self.add_weight(
            name="query_key_moments",
            shape=(num_heads, NUM_MOMENTS, dim),
            initializer="zeros",
            dtype="float32",
            trainable=False,
            autocast=False,
            aggregation="mean",
        )

    def _running_moments(self):
        """The running average `(1, heads, 4, dim)`, a copy (an update must
        not change what a call has read), or `None`."""
        if self.query_key_moments is None:
            return None
        return ops.copy(ops.convert_to_tensor(self.query_key_moments))[None]

    def _batch_moments(self, query, key, query_valid, key_valid):
        """The moments of each sequence's valid queries and keys, or
        `None` when the feature map takes none (or queries are ordered)."""
        if self.query_key_moments is None:
            return None
        if self.ordered_queries:
            return self._running_moments()
        return query_key_moments(query, key, query_valid, key_valid)

    def _scores_moments(
        self, query, key, query_valid, key_valid, is_causal, quadratic
    ):
        """The moments of the form the output takes, for its attention
        scores: `quadratic` is whether the mask takes the quadratic form
        (`True`, `None` for no, or a boolean tensor decided on the
        device)."""
        if is_causal or quadratic is True or self.query_key_moments is None:
            return self._running_moments()
        batch = self._batch_moments(query, key, query_valid, key_valid)
        if quadratic is None:
            return batch
        return ops.where(quadratic, self._running_moments(), batch)

    def _update_running_moments(self, query, key, query_valid, key_valid):
        """Moves the running average towards the moments of this batch
        (the first batch replaces the zeros)."""
        if self.query_key_moments is None:
            return
        batch = query_key_moments(
            query, key, query_valid, key_valid, pooled=True
        )[0]
        old = ops.convert_to_tensor(self.query_key_moments)
        rate = ops.where(ops.all(old == 0), 1.0, 1.0 - MOMENTUM)
        self.query_key_moments.assign(old + rate * (batch - old))
