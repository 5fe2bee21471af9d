"""Causal (unidirectional) FAVOR attention, chunked, with a carried state.

Query `i` sees keys `j <= i` (paper, Sec. 2.3):

    out_i = q'_i S_i / (q'_i . z_i),  S_i = sum_{j<=i} k'_j v_j^T,
    z_i = sum_{j<=i} k'_j.

The sequence is cut into chunks of `C` tokens: inside a chunk the masked
quadratic form, between chunks the state `(S, z)`. That is exact and needs
`O(L C + (L / C) m d)` memory, never an `[L, m, d]` tensor. Decoding feeds
the state from call to call: constant memory and time per token.

Stabilizer: the keys of chunk `c` are scaled by `exp(-R_c)`, where `R_c` is
the running max of their log-features over chunks `<= c` (and the incoming
state). The state of chunk `c'` enters chunk `c` rescaled by
`exp(R_c' - R_c) <= 1`, so the common factor cancels exactly and nothing
depends on a later chunk. The log-features include `-|x|^2/2`, which bounds
them above (by `|w|^2/2` for softmax features): a key of large norm cannot
raise the max and wash out the earlier keys.
"""

from keras import ops

from keras_performer.ops import feature_maps
from keras_performer.ops.validation import check_attention_inputs

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
        value_dim + 2)`: `[..., :value_dim]` holds `S`, `[..., value_dim]`
        holds `z` and `[..., value_dim + 1]` the log-scale `R` of both
        (equal along the feature axis).
    """
    sums = ops.zeros((batch_size, num_heads, num_features, value_dim + 1))
    log_scale = ops.full(
        (batch_size, num_heads, num_features, 1), feature_maps.NO_KEYS
    )
    return ops.concatenate([sums, log_scale], axis=-1)


def causal_favor_attention(
    query,
    key,
    value,
    projection_matrix,
    kernel="softmax",
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
        kernel: str. As in `favor_attention`. Defaults to `"softmax"`.
        key_mask: optional boolean tensor `(batch, length)`, `False` at
            padded keys. Defaults to `None`.
        chunk_size: int. Tokens per chunk. Defaults to `128`.
        initial_state: optional state of the tokens before these, from
            `empty_state()` or an earlier call. Defaults to `None` (none).

    Returns:
        Tuple `(output, state)`: output of shape `(batch, length, heads,
        value_dim)` in the dtype of `query`, and the float32 state.
    """
    if not isinstance(chunk_size, int) or chunk_size <= 0:
        raise ValueError(
            "`chunk_size` must be a positive integer. "
            f"Received: chunk_size={chunk_size}"
        )
    dtype = query.dtype
    query, key, value, key_mask = check_attention_inputs(
        query, key, value, key_mask, is_causal=True
    )
    batch_size, length, num_heads, _ = ops.shape(key)
    value_dim = value.shape[-1]
    if initial_state is None:
        initial_state = empty_state(
            batch_size,
            num_heads,
            feature_maps.num_features(kernel, projection_matrix.shape[0]),
            value_dim,
        )
    state_sums = initial_state[..., :value_dim]
    state_key_sum = initial_state[..., value_dim]
    state_log_scale = initial_state[:, :, 0, value_dim + 1]

    # Pad the length to whole chunks; padded keys are masked out.
    if isinstance(length, int):
        chunk_size = min(chunk_size, length)
    if key_mask is None:
        key_mask = ops.ones((batch_size, length), dtype="bool")
    padding = (-length) % chunk_size
    query, key, value = (
        ops.pad(x, [(0, 0), (0, padding), (0, 0), (0, 0)])
        for x in (query, key, value)
    )
    key_mask = ops.pad(key_mask, [(0, 0), (0, padding)], constant_values=False)
    num_chunks = (length + padding) // chunk_size

    query_parts = feature_maps.feature_parts(query, projection_matrix, kernel)
    key_parts = feature_maps.feature_parts(key, projection_matrix, kernel)
    query_features = _query_features(query_parts)
    key_log = feature_maps.log_magnitude(key_parts, full=True)

    def to_chunks(x):  # [B, L, ...] -> [B, N, C, ...]
        return ops.reshape(
            x, (batch_size, num_chunks, chunk_size) + tuple(x.shape[2:])
        )

    chunk_mask = to_chunks(key_mask)
    if key_log is None:
        log_scale = ops.zeros((batch_size, num_chunks + 1, num_heads))
    else:
        chunk_max = feature_maps.stabilizer(
            to_chunks(key_log), (2, 4), chunk_mask[:, :, :, None, None]
        )[:, :, 0, :, 0]
        log_scale = _running_max(
            ops.concatenate([state_log_scale[:, None], chunk_max], axis=1)
        )
        log_scale = ops.stop_gradient(log_scale)
    # Scale each key by exp(-R) of its chunk: [B, N, H] -> [B, L, H, 1].
    key_stabilizer = ops.reshape(
        ops.repeat(log_scale[:, 1:, None], chunk_size, axis=2),
        (batch_size, num_chunks * chunk_size, num_heads, 1),
    )
    key_features = feature_maps.features(
        key_parts, key_stabilizer, mask=key_mask[:, :, None]
    )
    query_chunks = to_chunks(query_features)
    key_chunks = to_chunks(key_features)
    value_chunks = to_chunks(value)

    # Inside each chunk: the masked quadratic form.
    scores = ops.einsum("bnihf,bnjhf->bnhij", query_chunks, key_chunks)
    scores = ops.where(_lower_triangle(chunk_size), scores, 0.0)
    numerator = ops.einsum("bnhij,bnjhd->bnihd", scores, value_chunks)
    denominator = ops.transpose(ops.sum(scores, axis=-1), (0, 1, 3, 2))

    # Between chunks: the state of all earlier chunks (and of the incoming
    # state), each rescaled from its log-scale to the current chunk's.
    chunk_sums = ops.einsum("bnjhf,bnjhd->bnhfd", key_chunks, value_chunks)
    chunk_key_sum = ops.sum(key_chunks, axis=2)
    sums = ops.concatenate([state_sums[:, None], chunk_sums], axis=1)
    key_sums = ops.concatenate([state_key_sum[:, None], chunk_key_sum], axis=1)
    rescale = ops.exp(log_scale[:, None, :, :] - log_scale[:, :, None, :])
    earlier = _lower_triangle(num_chunks + 1, strict=True)[:, :, None]
    rescale = ops.where(earlier, rescale, 0.0)[:, 1:]  # [B, N, N + 1, H]
    prefix_sums = ops.einsum("bcgh,bghfd->bchfd", rescale, sums)
    prefix_key_sum = ops.einsum("bcgh,bghf->bchf", rescale, key_sums)
    numerator += ops.einsum("bnihf,bnhfd->bnihd", query_chunks, prefix_sums)
    denominator += ops.einsum("bnihf,bnhf->bnih", query_chunks, prefix_key_sum)

    out = ops.divide_no_nan(numerator, denominator[..., None])
    out = ops.reshape(out, (batch_size, -1, num_heads, value_dim))[:, :length]
    final_state = ops.concatenate(
        [
            prefix_sums[:, -1] + chunk_sums[:, -1],
            (prefix_key_sum[:, -1] + chunk_key_sum[:, -1])[..., None],
            ops.zeros_like(chunk_key_sum[:, -1])[..., None]
            + log_scale[:, -1, :, None, None],
        ],
        axis=-1,
    )
    return ops.cast(out, dtype), final_state


def causal_features(query, key, projection_matrix, kernel, key_mask):
    """Query and key features of the causal form with one stabilizer over
    all keys (for inspecting the attention matrix, not for outputs)."""
    query_parts = feature_maps.feature_parts(query, projection_matrix, kernel)
    key_parts = feature_maps.feature_parts(key, projection_matrix, kernel)
    key_log = feature_maps.log_magnitude(key_parts, full=True)
    mask = None if key_mask is None else key_mask[:, :, None]
    key_stabilizer = None
    if key_log is not None:
        key_stabilizer = feature_maps.stabilizer(
            key_log, (1, 3), None if mask is None else mask[..., None]
        )
    key_features = feature_maps.features(key_parts, key_stabilizer, mask=mask)
    return _query_features(query_parts), key_features


def _query_features(parts):
    # A per-query stabilizer cancels exactly: no constant is added.
    log = feature_maps.log_magnitude(parts, full=True)
    stabilizer = None if log is None else feature_maps.stabilizer(log, -1)
    return feature_maps.features(parts, stabilizer)


def _running_max(x):
    """Max over `x[:, :i + 1]` for each `i`, for `x` of shape `[B, N, H]`."""
    size = ops.shape(x)[1]
    earlier_or_same = _lower_triangle(size)[None, :, :, None]
    candidates = ops.where(earlier_or_same, x[:, None, :, :], float("-inf"))
    return ops.max(candidates, axis=2)


def _lower_triangle(size, strict=False):
    rows = ops.arange(size)[:, None]
    columns = ops.arange(size)[None, :]
    if strict:
        return ops.greater(rows, columns)
    return ops.greater_equal(rows, columns)
