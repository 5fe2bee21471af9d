"""Causal (unidirectional) FAVOR attention, chunked, with a carried state.

Query `i` sees keys `j <= i` (paper, Sec. 2.3):

    out_i = q'_i S_i / (q'_i . z_i),  S_i = sum_{j<=i} k'_j v_j^T,
    z_i = sum_{j<=i} k'_j.

The sequence is cut into chunks of `C` tokens: inside a chunk the masked
quadratic form, between chunks the state `(S, z)`. That is exact and needs
`O(L C + (L / C) m d)` memory, never an `[L, m, d]` tensor. Decoding feeds
the state from call to call: constant memory and time per token.

Stabilizer, exact and causal: `R_i`, the running max of the keys'
log-features over positions `<= i` (and the incoming state). Key `j` is
scaled by `exp(-R_j)` and its product with query `i >= j` by
`exp(R_j - R_i) <= 1`: every term query `i` sums carries the same factor
`exp(-R_i)`, which cancels, and nothing depends on a later key. Features are
never added a constant that would not cancel.
"""

from keras import ops

from keras_performer.ops import feature_maps
from keras_performer.ops.common import check_attention_inputs
from keras_performer.ops.common import check_positive_int
from keras_performer.ops.common import heads_first
from keras_performer.ops.common import lower_triangle
from keras_performer.ops.common import normalize
from keras_performer.ops.common import with_ones

DEFAULT_CHUNK_SIZE = 128


def empty_state(batch_size, num_heads, num_features, value_dim):
    """The empty state of `causal_favor_attention`: no keys seen yet.

    Args:
        batch_size: int.
        num_heads: int.
        num_features: int. Length of the feature vectors, e.g. from
            `keras_performer.ops.num_features`.
        value_dim: int.

    Returns:
        A float32 tensor `(batch_size, num_heads, num_features,
        value_dim + 3)`: `[..., :value_dim]` holds `S`, `[..., value_dim]`
        holds `z`, `[..., value_dim + 1]` the number of keys absorbed and
        `[..., value_dim + 2]` the log-scale `R` of `S` and `z` (the last
        two equal along the feature axis).
    """
    sums = ops.zeros((batch_size, num_heads, num_features, value_dim + 2))
    log_scale = ops.full(
        (batch_size, num_heads, num_features, 1), feature_maps.NO_KEYS
    )
    return ops.concatenate([sums, log_scale], axis=-1)


def state_length(state):
    """Number of keys a state of `causal_favor_attention` has absorbed,
    `(batch,)` float32."""
    return state[:, 0, 0, -2]


def causal_favor_attention(
    query,
    key,
    value,
    projection_matrix,
    feature_map="softmax",
    key_mask=None,
    chunk_size=DEFAULT_CHUNK_SIZE,
    initial_state=None,
):
    """Causal FAVOR attention that also returns the state after the inputs.

    Passing the returned state as `initial_state` of the next call continues
    the sequence: one call over `L` tokens equals any split of them into
    consecutive calls (to float32 round-off).

    Args:
        query: tensor of shape `(batch, length, heads, dim)`.
        key: tensor of shape `(batch, length, heads, dim)`.
        value: tensor of shape `(batch, length, heads, value_dim)`.
        projection_matrix: tensor `(num_random_features, dim)`.
        feature_map: str. As in `favor_attention`. Defaults to `"softmax"`.
        key_mask: optional boolean tensor `(batch, length)`, `False` at
            padded keys. Defaults to `None`.
        chunk_size: int. Tokens per chunk. Defaults to `128`.
        initial_state: optional state of the tokens before these, from
            `empty_state()` or an earlier call. Defaults to `None` (none).

    Returns:
        Tuple `(output, state)`: output of shape `(batch, length, heads,
        value_dim)` in the dtype of `query`, and the float32 state.
    """
    check_positive_int("chunk_size", chunk_size)
    dtype = query.dtype
    query, key, value, key_mask = check_attention_inputs(
        query, key, value, key_mask, True, projection_matrix
    )
    batch_size, length, num_heads, _ = ops.shape(key)
    if batch_size is None:  # Symbolic inputs: the reshapes infer it.
        batch_size = -1
    value_dim = value.shape[-1]
    if initial_state is None:
        # Broadcast over the batch from `key`: its size may be unknown
        # (symbolic inputs).
        initial_state = (
            empty_state(
                1,
                key.shape[2],
                feature_maps.num_features(
                    feature_map, projection_matrix.shape[0]
                ),
                value_dim,
            )
            + ops.zeros_like(key[:, :1, :, :1])[:, 0, :, :, None]
        )
    initial_state = ops.cast(initial_state, "float32")

    # Pad the length to whole chunks; padded keys are masked out.
    if isinstance(length, int):
        chunk_size = min(chunk_size, length)
    padding = (-length) % chunk_size
    # Without padding of any kind, no mask: it would cost passes.
    masked = key_mask is not None or not isinstance(padding, int) or padding
    if key_mask is None:
        key_mask = ops.ones_like(key[:, :, 0, 0], dtype="bool")
    query, key, value = (
        heads_first(ops.pad(x, [(0, 0), (0, padding), (0, 0), (0, 0)]))
        for x in (query, key, value)
    )
    key_mask = ops.pad(key_mask, [(0, 0), (0, padding)], constant_values=False)
    key_mask = key_mask[:, None, :]  # [B, 1, L]: rows of [B, H, L, F]
    padded_length = length + padding
    num_chunks = padded_length // chunk_size

    def to_chunks(x):  # [B, H, L, ...] -> [B, H, N, C, ...]
        return ops.reshape(
            x,
            (batch_size, num_heads, num_chunks, chunk_size)
            + tuple(x.shape[3:]),
        )

    query_parts = feature_maps.feature_parts(
        query, projection_matrix, feature_map
    )
    key_parts = feature_maps.feature_parts(key, projection_matrix, feature_map)
    query_features = feature_maps.query_features(query_parts)

    # Running max R_i of the keys' log-features over positions <= i (and
    # the incoming state): key j is scaled by exp(-R_j), and its product
    # with query i >= j by exp(R_j - R_i) <= 1. E_c: R at chunk ends.
    key_max = feature_maps.row_log_max(key_parts)
    if key_max is None:
        key_max = ops.zeros_like(key[..., 0])  # [B, H, padded length]
    else:
        key_max = ops.where(key_mask, key_max[..., 0], feature_maps.NO_KEYS)
    inner_max = _running_max(to_chunks(key_max))  # [B, H, N, C]
    state_log_scale = initial_state[:, :, :1, value_dim + 2]  # [B, H, 1]
    chunk_end_max = _running_max(
        ops.concatenate([state_log_scale, inner_max[..., -1]], axis=2)
    )  # [B, H, N + 1]: E before chunk 0, after chunk 0, ..., after N - 1.
    running_max = ops.maximum(chunk_end_max[..., :-1, None], inner_max)
    key_features = feature_maps.features(
        key_parts,
        ops.reshape(running_max, (batch_size, num_heads, padded_length, 1)),
        mask=key_mask if masked else None,
    )
    query_chunks = to_chunks(query_features)
    key_chunks = to_chunks(key_features)
    # A column of ones after the values carries the denominator along.
    value_chunks = to_chunks(with_ones(value))

    # Inside each chunk: the masked quadratic form.
    rescale = running_max[..., None, :] - running_max[..., :, None]
    rescale = ops.where(lower_triangle(chunk_size), rescale, float("-inf"))
    scores = ops.matmul(query_chunks, ops.swapaxes(key_chunks, 3, 4))
    out = ops.matmul(scores * ops.exp(rescale), value_chunks)

    # Between chunks: each chunk's sums, scaled to its end, and the
    # incoming state, summed up to each chunk start rescaled to it.
    to_chunk_end = ops.exp(running_max - chunk_end_max[..., 1:, None])
    sums = ops.concatenate(
        [
            initial_state[:, :, None, :, : value_dim + 1],
            ops.matmul(
                ops.swapaxes(key_chunks, 3, 4),
                value_chunks * to_chunk_end[..., None],
            ),
        ],
        axis=2,
    )  # [B, H, N + 1, F, value_dim + 1]
    up_to = chunk_end_max[..., None, :] - chunk_end_max[..., :, None]
    up_to = ops.exp(
        ops.where(lower_triangle(num_chunks + 1), up_to, float("-inf"))
    )  # [B, H, N + 1, N + 1]: rows are chunk starts, then the end.
    sums_shape = tuple(sums.shape[3:])  # (F, value_dim + 1)
    flat_sums = ops.reshape(
        sums,
        (batch_size, num_heads, num_chunks + 1, sums_shape[0] * sums_shape[1]),
    )
    prefix_sums = ops.reshape(
        ops.matmul(up_to[:, :, :-1], flat_sums),
        (batch_size, num_heads, num_chunks) + sums_shape,
    )  # Slicing the small matrix, not the product, keeps gradients cheap.
    from_chunk_start = ops.exp(chunk_end_max[..., :-1, None] - running_max)
    out += from_chunk_start[..., None] * ops.matmul(query_chunks, prefix_sums)

    numerator, denominator = ops.split(out, [value_dim], axis=-1)
    out = normalize(numerator, denominator)
    out = ops.reshape(out, (batch_size, num_heads, padded_length, value_dim))
    out = heads_first(out[:, :, :length])
    final_sums = ops.reshape(
        ops.matmul(up_to[:, :, -1:], flat_sums),
        (batch_size, num_heads) + sums_shape,
    )
    new_keys = ops.sum(ops.cast(key_mask, "float32"), axis=-1)  # [B, 1]
    absorbed = (
        initial_state[..., value_dim + 1 : value_dim + 2]
        + new_keys[:, :, None, None]
    )  # [B, H, F, 1]: keys counted, as the log-scale, along features
    final_state = ops.concatenate(
        [
            final_sums,
            absorbed,
            ops.zeros_like(absorbed) + chunk_end_max[..., -1, None, None],
        ],
        axis=-1,
    )
    return ops.cast(out, dtype), final_state


def _running_max(x):
    """Max over `x[..., :i + 1]` for each `i`, for `x` of shape `[..., N]`."""
    earlier_or_same = lower_triangle(ops.shape(x)[-1])  # [i, j]
    candidates = ops.where(earlier_or_same, x[..., None, :], float("-inf"))
    return ops.max(candidates, axis=-1, initial=feature_maps.NO_KEYS)
