"""FAVOR attention: softmax attention through random features, linear in
the sequence length (Choromanski et al. 2021, Sec. 2)."""

from keras import ops

from keras_performer.ops import causal
from keras_performer.ops import feature_maps
from keras_performer.ops.checks import check_attention_inputs
from keras_performer.ops.masks import visible_keys
from keras_performer.ops.numerics import heads_first
from keras_performer.ops.numerics import normalize
from keras_performer.ops.numerics import with_ones


def favor_attention(
    query,
    key,
    value,
    projection_matrix,
    feature_map="softmax",
    is_causal=False,
    key_mask=None,
    chunk_size=causal.DEFAULT_CHUNK_SIZE,
):
    """Approximate softmax attention in linear time and memory (FAVOR+).

    Uses the layout of `keras.ops.dot_product_attention`. Features and sums
    are computed in float32. Padded keys (`key_mask` False) are removed
    exactly: whatever their values, they change nothing. A query that sees
    no key gets a zero output.

    Both forms compute the same estimator: features are stabilized by
    maxima that cancel exactly (per query; over the keys a query sees) and
    nothing is added to them, so the causal output at position `i` equals
    the bidirectional output over positions `0..i`, a key of large norm does
    not flush the others, and no causal output depends on a later key (see
    `causal_favor_attention`).

    Args:
        query: tensor of shape `(batch, target_length, heads, dim)`.
        key: tensor of shape `(batch, source_length, heads, dim)`.
        value: tensor of shape `(batch, source_length, heads, value_dim)`.
        projection_matrix: tensor `(num_random_features, dim)`, e.g. from
            `keras_performer.ops.sample_projection_matrix`.
        feature_map: str. `"softmax"` (positive features, FAVOR+),
            `"hyperbolic"` (positive +/- features), `"trig"` (sin/cos, the
            original FAVOR) or `"relu"` (generalized attention). Defaults to
            `"softmax"`.
        is_causal: bool. Whether query `i` sees only keys `j <= i`.
            Defaults to `False`.
        key_mask: optional boolean tensor `(batch, source_length)`, `False`
            at padded keys. Defaults to `None`.
        chunk_size: int. Tokens per chunk of the causal form. Defaults to
            `128`.

    Returns:
        Tensor of shape `(batch, target_length, heads, value_dim)`, in the
        dtype of `query`.

    Example:

    >>> x = keras.random.normal((2, 128, 4, 32))
    >>> w = keras_performer.ops.sample_projection_matrix(64, 32, seed=0)
    >>> out = keras_performer.ops.favor_attention(x, x, x, w)
    >>> tuple(out.shape)
    (2, 128, 4, 32)

    References:
        - [Choromanski et al., 2021](https://arxiv.org/abs/2009.14794)
    """
    if is_causal:
        out, _ = causal.causal_favor_attention(
            query,
            key,
            value,
            projection_matrix,
            feature_map=feature_map,
            key_mask=key_mask,
            chunk_size=chunk_size,
        )
        return out
    dtype = query.dtype
    query, key, value, key_mask = check_attention_inputs(
        query, key, value, key_mask, is_causal, projection_matrix
    )
    query_features, key_features = _stabilized_features(
        query, key, projection_matrix, feature_map, key_mask
    )
    # A column of ones after the values gives the denominator with the
    # numerator: out = Q' (K'^T [V, 1]). The products keep the [L, F]
    # features untransposed, also in their gradients: ([V, 1]^T K')^T.
    value_dim = value.shape[-1]
    values_keys = ops.matmul(
        ops.swapaxes(with_ones(heads_first(value)), 2, 3), key_features
    )
    numerator, denominator = ops.split(
        ops.matmul(query_features, ops.swapaxes(values_keys, 2, 3)),
        [value_dim],
        axis=-1,
    )
    out = normalize(numerator, denominator)
    return ops.cast(heads_first(out), dtype)


def favor_attention_scores(
    query,
    key,
    projection_matrix,
    feature_map="softmax",
    is_causal=False,
    key_mask=None,
):
    """The attention matrix implied by FAVOR features, normalized by row.

    Quadratic in the sequence length: for inspecting short sequences. Its
    product with the values is the output of `favor_attention`.

    Args:
        query: tensor of shape `(batch, target_length, heads, dim)`.
        key: tensor of shape `(batch, source_length, heads, dim)`.
        projection_matrix: tensor `(num_random_features, dim)`.
        feature_map: str. As in `favor_attention`. Defaults to `"softmax"`.
        is_causal: bool. Defaults to `False`.
        key_mask: optional boolean tensor `(batch, source_length)`.
            Defaults to `None`.

    Returns:
        Tensor of shape `(batch, heads, target_length, source_length)`, in
        the dtype of `query`.
    """
    dtype = query.dtype
    query, key, _, key_mask = check_attention_inputs(
        query, key, key, key_mask, is_causal, projection_matrix
    )
    query_features, key_features = _stabilized_features(
        query, key, projection_matrix, feature_map, key_mask
    )
    scores = ops.matmul(query_features, ops.swapaxes(key_features, 2, 3))
    mask = visible_keys(ops.shape(query)[1], ops.shape(key)[1], is_causal)
    scores = ops.where(mask, scores, 0.0)
    total = ops.sum(scores, axis=-1, keepdims=True)
    return ops.cast(normalize(scores, total), dtype)


def _stabilized_features(query, key, projection_matrix, feature_map, key_mask):
    """Features `[B, H, L, F]` of queries and keys `[B, L, H, D]`, stabilized
    exactly: per query, and over the valid keys of each sequence by the max
    of their whole log-features (`w.k - |k|^2 / 2`), so that a key of large
    norm does not flush the others to zero. Nothing is added to the
    features, so the stabilizers cancel (for the causal attention matrix
    too: the max over all keys is a common factor of each row)."""
    query_parts = feature_maps.feature_parts(
        heads_first(query), projection_matrix, feature_map
    )
    key_parts = feature_maps.feature_parts(
        heads_first(key), projection_matrix, feature_map
    )
    mask = None if key_mask is None else key_mask[:, None, :]
    key_stabilizer = feature_maps.sequence_log_max(key_parts, mask)
    key_features = feature_maps.features(key_parts, key_stabilizer, mask)
    return feature_maps.query_features(query_parts), key_features
