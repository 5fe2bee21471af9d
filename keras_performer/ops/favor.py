"""FAVOR attention: softmax attention through random features
(Choromanski et al. 2021, Sec. 2), linear in the sequence length, the
key/value state of a sequence, and the quadratic form for masks that are
not padding patterns."""

from keras import ops

from keras_performer.ops import causal
from keras_performer.ops import feature_maps
from keras_performer.ops import feature_statistics
from keras_performer.ops.checks import check_attention_inputs
from keras_performer.ops.masks import check_attention_mask
from keras_performer.ops.masks import visible_keys
from keras_performer.ops.numerics import floored_max
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
    moments=None,
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
            `"hyperbolic"` (positive +/- features), `"optimal_positive"`
            (FAVOR++), `"dense_exponential"` (FAVOR#), `"trig"` (sin/cos,
            the original FAVOR) or `"relu"` (generalized attention).
            Defaults to `"softmax"`.
        is_causal: bool. Whether query `i` sees only keys `j <= i`.
            Defaults to `False`.
        key_mask: optional boolean tensor `(batch, source_length)`, `False`
            at padded keys. Defaults to `None`.
        chunk_size: int. Tokens per chunk of the causal form. Defaults to
            `128`.
        moments: optional float32 tensor `(batch or 1, heads, 4, dim)`,
            from `query_key_moments`: what `"optimal_positive"` and
            `"dense_exponential"` choose their parameters from. Defaults to
            `None`: the bidirectional form takes those of `query` and the
            valid keys; the causal form needs them given (moments of the
            whole sequence would let later tokens change earlier outputs).

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
            moments=moments,
        )
        return out
    dtype = query.dtype
    query, key, value, key_mask = check_attention_inputs(
        query, key, value, key_mask, is_causal, projection_matrix
    )
    kernel = feature_statistics.kernel_of(
        feature_map, moments, query, key, key_mask
    )
    values_keys, _ = _values_keys(
        key, value, projection_matrix, feature_map, key_mask, kernel
    )
    out = _attend(
        query,
        ops.swapaxes(values_keys, 2, 3),
        projection_matrix,
        feature_map,
        kernel,
    )
    return ops.cast(out, dtype)


def key_value_state(
    key,
    value,
    projection_matrix,
    feature_map="softmax",
    key_mask=None,
    moments=None,
):
    """The sums `phi(K)^T [V, 1]` of a sequence's keys and values, per head:
    what bidirectional attention to it needs, in a size that does not
    depend on its length.

    The state has the layout of the one `causal_favor_attention` returns
    after the same keys, so `attend_to_state` attends to it (a decoder's
    cross-attention cache: the encoder's keys, once).

    Args:
        key: tensor of shape `(batch, source_length, heads, dim)`.
        value: tensor of shape `(batch, source_length, heads, value_dim)`.
        projection_matrix: tensor `(num_random_features, dim)`.
        feature_map: str. As in `favor_attention`. Defaults to `"softmax"`.
        key_mask: optional boolean tensor `(batch, source_length)`, `False`
            at padded keys. Defaults to `None`.
        moments: float32 tensor `(batch or 1, heads, 4, dim)`, needed by
            `"optimal_positive"` and `"dense_exponential"` (the queries
            come later): the one `attend_to_state` gets. Defaults to
            `None`.

    Returns:
        A float32 tensor `(batch, heads, num_features, value_dim + 3)`, as
        `empty_state`.

    Example:

    >>> k = keras.random.normal((2, 100, 4, 8))
    >>> w = keras_performer.ops.sample_projection_matrix(16, 8, seed=0)
    >>> state = keras_performer.ops.key_value_state(k, k, w)
    >>> q = keras.random.normal((2, 5, 4, 8))
    >>> out = keras_performer.ops.attend_to_state(q, state, w)
    >>> tuple(state.shape), tuple(out.shape)
    ((2, 4, 16, 11), (2, 5, 4, 8))
    """
    key, _, value, key_mask = check_attention_inputs(
        key, key, value, key_mask, False, projection_matrix
    )
    values_keys, log_scale = _values_keys(
        key,
        value,
        projection_matrix,
        feature_map,
        key_mask,
        feature_statistics.kernel_of(feature_map, moments, key),
    )
    if key_mask is None:  # Counted, for lengths unknown until run.
        num_keys = ops.sum(ops.ones_like(key[:, :, :1, :1]), axis=1)
    else:
        num_keys = ops.sum(ops.cast(key_mask, "float32"), axis=1)
    num_keys = ops.reshape(num_keys, (-1, 1, 1, 1))
    if log_scale is None:  # Features with no exponential factor.
        log_scale = ops.zeros_like(values_keys[:, :, :1, :1])
    return causal.state_from_sums(
        ops.swapaxes(values_keys, 2, 3), num_keys, log_scale[..., 0, 0]
    )


def attend_to_state(
    query, state, projection_matrix, feature_map="softmax", moments=None
):
    """Bidirectional FAVOR attention of queries to the keys a state holds
    (from `key_value_state`, or `causal_favor_attention`).

    Args:
        query: tensor of shape `(batch, target_length, heads, dim)`.
        state: float32 tensor `(batch, heads, num_features, value_dim +
            3)`.
        projection_matrix: tensor `(num_random_features, dim)`, the one of
            the state.
        feature_map: str. The feature map of the state. Defaults to
            `"softmax"`.
        moments: float32 tensor `(batch or 1, heads, 4, dim)`, those of
            the state, needed by `"optimal_positive"` and
            `"dense_exponential"`. Defaults to `None`.

    Returns:
        Tensor of shape `(batch, target_length, heads, value_dim)`, in the
        dtype of `query`.
    """
    dtype = query.dtype
    query = ops.cast(ops.convert_to_tensor(query), "float32")
    state = ops.cast(state, "float32")
    out = _attend(
        query,
        state[..., :-2],
        projection_matrix,
        feature_map,
        feature_statistics.kernel_of(feature_map, moments, query),
    )
    return ops.cast(out, dtype)


def _values_keys(key, value, projection_matrix, feature_map, key_mask, kernel):
    """`[V, 1]^T K'` `[B, H, D + 1, F]` of float32 inputs `[B, L, H, ...]`,
    and the keys' stabilizer `[B, H, 1, 1]` (`None` for feature maps with
    no exponential factor).

    Keys are stabilized over the valid keys of each sequence by the max of
    their whole log-features (`w.k - |k|^2 / 2`), so that a key of large
    norm does not flush the others to zero; queries per query. Nothing is
    added to the features, so the stabilizers cancel. A column of ones
    after the values gives the denominator with the numerator: out =
    Q' (K'^T [V, 1]). The products keep the `[L, F]` features
    untransposed, also in their gradients: `([V, 1]^T K')^T`."""
    key_parts = feature_maps.feature_parts(
        heads_first(key), projection_matrix, feature_map, kernel, is_key=True
    )
    mask = None if key_mask is None else key_mask[:, None, :]
    stabilizer = feature_maps.sequence_log_max(key_parts, mask)
    key_features = feature_maps.features(key_parts, stabilizer, mask)
    values_keys = ops.matmul(
        ops.swapaxes(with_ones(heads_first(value)), 2, 3), key_features
    )
    return values_keys, stabilizer


def _attend(query, sums, projection_matrix, feature_map, kernel):
    """`Q' S / Q' z` of float32 queries `[B, T, H, d]` and sums `[B, H, F,
    D + 1]` (`S` beside `z`): `[B, T, H, D]`."""
    query_features = feature_maps.query_features(
        feature_maps.feature_parts(
            heads_first(query), projection_matrix, feature_map, kernel
        )
    )
    numerator, denominator = ops.split(
        ops.matmul(query_features, sums), [sums.shape[-1] - 1], axis=-1
    )
    return heads_first(normalize(numerator, denominator))


def favor_attention_scores(
    query,
    key,
    projection_matrix,
    feature_map="softmax",
    is_causal=False,
    key_mask=None,
    mask=None,
    moments=None,
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
        mask: optional boolean tensor `(batch, target_length,
            source_length)` or `(batch, 1 or heads, target_length,
            source_length)`, any mask (see `masked_favor_attention`), with
            `is_causal` and `key_mask`. Defaults to `None`.
        moments: optional float32 tensor `(batch or 1, heads, 4, dim)`
            (see `favor_attention`). Defaults to `None`: those of `query`
            and the valid keys, unless `is_causal` (then needed).

    Returns:
        Tensor of shape `(batch, heads, target_length, source_length)`, in
        the dtype of `query`.
    """
    dtype = query.dtype
    query, key, _, key_mask = check_attention_inputs(
        query, key, key, key_mask, is_causal, projection_matrix
    )
    visible = visible_keys(ops.shape(query)[1], ops.shape(key)[1], is_causal)
    if key_mask is not None:
        visible = ops.logical_and(visible, key_mask[:, None, None, :])
    if mask is not None:
        mask = ops.cast(ops.convert_to_tensor(mask), "bool")
        visible = ops.logical_and(
            visible, mask[:, None] if len(mask.shape) == 3 else mask
        )
    kernel = feature_statistics.kernel_of(
        feature_map, moments, query, None if is_causal else key, key_mask
    )
    scores = _masked_scores(
        query, key, projection_matrix, feature_map, visible, kernel
    )
    total = ops.sum(scores, axis=-1, keepdims=True)
    return ops.cast(normalize(scores, total), dtype)


def masked_favor_attention(
    query,
    key,
    value,
    projection_matrix,
    mask,
    feature_map="softmax",
    moments=None,
):
    """FAVOR attention under any mask, applied exactly to the estimate.

    The attention matrix the features imply, `phi(Q) phi(K)^T`, masked and
    normalized by its masked row sums, times the values: for a padding
    pattern the output of `favor_attention`, for any other mask (a prefix
    LM, packed sequences, a band, per-head masks) what linear attention
    cannot give. Quadratic in time and memory, `O(T S)`, as the mask
    itself. A query that sees no key gets a zero output.

    Each key's features are stabilized by their own max and each product
    `phi(q_i) . phi(k_j)` rescaled by `exp(m_j - M_i)`, `M_i` the largest
    key max row `i` sees: a common factor of the row, which cancels, so a
    key that a query does not see changes nothing in its output.

    Args:
        query: tensor of shape `(batch, target_length, heads, dim)`.
        key: tensor of shape `(batch, source_length, heads, dim)`.
        value: tensor of shape `(batch, source_length, heads, value_dim)`.
        projection_matrix: tensor `(num_random_features, dim)`.
        mask: boolean tensor `(batch, target_length, source_length)` or
            `(batch, 1 or heads, target_length, source_length)`, `True`
            where a query sees a key.
        feature_map: str. As in `favor_attention`. Defaults to `"softmax"`.
        moments: optional float32 tensor `(batch or 1, heads, 4, dim)`
            (see `favor_attention`). Defaults to `None`: those of all the
            queries and keys, which a query may not see: pass them for a
            mask whose outputs must not depend on hidden tokens (a prefix
            LM).

    Returns:
        Tensor of shape `(batch, target_length, heads, value_dim)`, in the
        dtype of `query`.

    Example:

    >>> x = keras.random.normal((1, 16, 2, 8))
    >>> w = keras_performer.ops.sample_projection_matrix(32, 8, seed=0)
    >>> band = np.abs(np.arange(16)[:, None] - np.arange(16)) < 4
    >>> out = keras_performer.ops.masked_favor_attention(x, x, x, w, band[None])
    >>> tuple(out.shape)
    (1, 16, 2, 8)
    """
    dtype = query.dtype
    query, key, value, _ = check_attention_inputs(
        query, key, value, None, False, projection_matrix
    )
    mask = ops.cast(ops.convert_to_tensor(mask), "bool")
    check_attention_mask(
        "mask", mask, query.shape[0], query.shape[1], key.shape[1]
    )
    if len(mask.shape) == 3:
        mask = mask[:, None]
    scores = _masked_scores(
        query,
        key,
        projection_matrix,
        feature_map,
        mask,
        feature_statistics.kernel_of(feature_map, moments, query, key),
    )
    numerator = ops.matmul(scores, heads_first(value))
    denominator = ops.sum(scores, axis=-1, keepdims=True)
    return ops.cast(heads_first(normalize(numerator, denominator)), dtype)


def _masked_scores(query, key, projection_matrix, feature_map, mask, kernel):
    """`phi(q_i) . phi(k_j)` where `mask` `[B, 1 or H, T, S]` is True, zero
    elsewhere, `[B, H, T, S]`, row `i` scaled by the largest stabilizer of
    the keys it sees (see `masked_favor_attention`)."""
    query_parts = feature_maps.feature_parts(
        heads_first(query), projection_matrix, feature_map, kernel
    )
    key_parts = feature_maps.feature_parts(
        heads_first(key), projection_matrix, feature_map, kernel, is_key=True
    )
    key_max = feature_maps.row_log_max(key_parts)  # [B, H, S, 1] or None
    key_features = feature_maps.features(key_parts, key_max)
    scores = ops.matmul(
        feature_maps.query_features(query_parts),
        ops.swapaxes(key_features, 2, 3),
    )
    if key_max is None:  # Features with no exponential factor.
        return ops.where(mask, scores, 0.0)
    key_max = ops.swapaxes(key_max, 2, 3)  # [B, H, 1, S]
    row_max = floored_max(
        ops.where(mask, key_max, feature_maps.NO_KEYS),
        -1,
        feature_maps.NO_KEYS,
        keepdims=True,
    )
    rescale = ops.exp(ops.where(mask, key_max - row_max, float("-inf")))
    return scores * rescale
