"""Masks: which keys each query sees, and the padding patterns that
linear attention applies exactly.

A padding pattern, an outer product of a query mask and a key mask (lower
triangular when causal, the same for all heads), is applied by the linear
forms: padded keys' features are zeroed and outputs at padded queries are
zero. Masks are `(batch, length)` booleans, `True` where a token is valid.
"""

from keras import ops

from keras_performer.ops.checks import compatible_shapes


def lower_triangle(rows, columns=None):
    """Boolean `(rows, columns)`, True where row index >= column index."""
    columns = rows if columns is None else columns
    return ops.greater_equal(
        ops.arange(rows)[:, None], ops.arange(columns)[None, :]
    )


def visible_keys(target_length, source_length, is_causal):
    """Boolean `(1, 1, T, S)`: which keys each query sees (mask shape)."""
    if not is_causal:
        return ops.ones((1, 1, target_length, source_length), dtype="bool")
    return lower_triangle(target_length, source_length)[None, None]


def as_bool(mask):
    return None if mask is None else ops.cast(mask, "bool")


def both(a, b):
    """The logical and of two masks, either of which may be `None`."""
    if a is None or b is None:
        return b if a is None else a
    return ops.logical_and(a, b)


def combined_masks(query_mask, key_masks, attention_mask, is_causal, sizes):
    """The padding masks of an attention call, `(query_valid, key_valid,
    unsupported)`: `query_mask` and the logical and of `key_masks` (any may
    be `None`), each with the padding pattern of `attention_mask` (see
    `padding_masks`; `sizes` is `(batch, T, S)`)."""
    query_valid = as_bool(query_mask)
    key_valid = None
    for mask in key_masks:
        key_valid = both(key_valid, as_bool(mask))
    if attention_mask is None:
        return query_valid, key_valid, None
    query_pattern, key_pattern, unsupported = padding_masks(
        attention_mask, is_causal, *sizes
    )
    return (
        both(query_valid, query_pattern),
        both(key_valid, key_pattern),
        unsupported,
    )


def check_sequence_mask(name, mask, sequence):
    """Raises `ValueError` unless `mask` (if any) has the shape `(batch,
    length)` of `sequence`."""
    if mask is None or sequence is None:
        return
    expected = tuple(sequence.shape[:2])
    shape = tuple(mask.shape)
    if not compatible_shapes(shape, expected):
        raise ValueError(
            f"`{name}` must have shape {expected}. Received: "
            f"{name}.shape={shape}"
        )


def causal_keys(key, value, key_valid, query_length):
    """Keys, values and key mask `[B, S, ...]` cut or padded to the query
    length: with a causal mask, query `i` sees keys `j <= i` of the `(T, S)`
    matrix, as in `MultiHeadAttention`, so keys past `T` are never seen,
    and padded keys are masked."""
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


def fit_columns(scores, columns):
    """Scores `(..., T, T)` cut or padded with zeros to `columns` keys."""
    if scores.shape[-1] > columns:
        return scores[..., :columns]
    extra = columns - scores.shape[-1]
    return ops.pad(scores, [(0, 0), (0, 0), (0, 0), (0, extra)])


def padding_masks(
    attention_mask, is_causal, batch_size, target_length, source_length
):
    """Splits an attention mask into query and key padding masks.

    Args:
        attention_mask: boolean `(batch, T, S)`, or `(batch, 1 or heads, T,
            S)` with one pattern for all heads.
        is_causal: bool. Whether the mask is applied with a causal one.
        batch_size, target_length, source_length: the sizes it must have,
            or `None` where unknown.

    Returns:
        `(query_valid, key_valid, unsupported)`: `(batch, T)` and `(batch,
        S)` masks, and a scalar, True when the mask is not the padding
        pattern the two make, or `None` when it is known to be one. A mask
        in host memory that is not raises `ValueError` at once; one on an
        accelerator is not read back to the host (a sync on every call):
        its `unsupported` is returned, for the caller to act on the device.
    """
    shape = tuple(attention_mask.shape)
    expected = (batch_size, target_length, source_length)
    if not (
        compatible_shapes(shape, expected)
        or len(shape) == 4
        and compatible_shapes(
            shape, (batch_size, shape[1], target_length, source_length)
        )
    ):
        raise ValueError(
            "`attention_mask` must have shape (batch, target_length, "
            f"source_length) = {expected}, or (batch, 1 or "
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
            f"attention_mask with shape {shape}"
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
