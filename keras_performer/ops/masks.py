"""Masks: which keys each query sees, the padding patterns that linear
attention applies, and the whole masks of the quadratic form.

A padding pattern, an outer product of a query mask and a key mask (lower
triangular when causal, the same for all heads), is applied by the linear
forms: padded keys' features are zeroed and outputs at padded queries are
zero. Any other mask (a band, a block diagonal, per-head masks) goes whole
to the quadratic form (`favor.masked_favor_attention`). Sequence masks are
`(batch, length)` booleans, `True` where a token is valid.
"""

from keras import ops

from keras_performer.ops.checks import check_mask_shape
from keras_performer.ops.checks import host_value


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
    be `None`), each with the padding pattern of `attention_mask`, and
    whether that is not a padding pattern (`None` where there is none; see
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
    if sequence is not None:
        check_mask_shape(name, mask, [tuple(sequence.shape[:2])])


def check_attention_mask(name, mask, batch_size, target_length, source_length):
    """Raises `ValueError` unless `mask` (if any) has the shape `(batch, T,
    S)` or `(batch, 1 or heads, T, S)` (`None` where any size goes)."""
    sizes = (target_length, source_length)
    check_mask_shape(
        name, mask, [(batch_size, *sizes), (batch_size, None, *sizes)]
    )


def causal_keys(key, value, key_valid, query_length):
    """Keys, values `[B, S, ...]` and key mask `(B, S)` cut or padded to
    the query length: with a causal mask, query `i` sees keys `j <= i` of
    the `(T, S)` matrix, as in `MultiHeadAttention`, so keys past `T` are
    never seen, and padded keys are masked."""
    if key.shape[1] is None or query_length is None:
        raise ValueError(
            "With `use_causal_mask`, query and key lengths that differ must "
            f"be known. Received: key.shape={tuple(key.shape)}, query length "
            f"{query_length}"
        )
    if key_valid is None:
        key_valid = ops.ones(ops.shape(key)[:2], dtype="bool")
    if key.shape[1] > query_length:
        return (
            key[:, :query_length],
            value[:, :query_length],
            key_valid[:, :query_length],
        )
    extra = [(0, 0), (0, query_length - key.shape[1])]

    def pad(x):
        return ops.pad(x, extra + [(0, 0)] * (len(x.shape) - 2))

    return (
        pad(key),
        pad(value),
        ops.pad(key_valid, extra, constant_values=False),
    )


def band(target_length, source_length, width):
    """Boolean `(T, S)`: True where `|i - j| < width`, the band of
    `MultiHeadAttention(sliding_window=width)`."""
    distance = ops.arange(target_length)[:, None] - ops.arange(source_length)
    return ops.abs(distance) < width


def band_is_full(width, target_length, source_length):
    """Whether the band of `width` holds every key of every query: only
    when both lengths are known and neither exceeds `width`."""
    lengths = (target_length, source_length)
    return all(isinstance(n, int) for n in lengths) and width >= max(lengths)


def with_band(attention_mask, width, query, key):
    """`attention_mask` (or none) and the band of `width` around the
    diagonal, `(batch, T, S)` or `(batch, heads, T, S)`."""
    sizes = ops.shape(query)[:2] + ops.shape(key)[1:2]
    mask = ops.logical_and(
        band(sizes[1], sizes[2], width)[None],
        ops.ones((sizes[0], 1, 1), dtype="bool"),
    )
    if attention_mask is None:
        return mask
    attention_mask = ops.cast(attention_mask, "bool")
    if len(attention_mask.shape) == 4:
        mask = mask[:, None]
    return ops.logical_and(attention_mask, mask)


def dense_mask(attention_mask, query_valid, key_valid, is_causal, lengths):
    """The whole mask of an attention call, `(batch or 1, heads or 1, T,
    S)`: `attention_mask` (or none), the query and key masks, the causal
    triangle; `lengths` is `(T, S)`."""
    mask = visible_keys(*lengths, is_causal)
    if attention_mask is not None:
        attention_mask = ops.cast(attention_mask, "bool")
        if len(attention_mask.shape) == 3:
            attention_mask = attention_mask[:, None]
        mask = ops.logical_and(mask, attention_mask)
    if query_valid is not None:
        mask = ops.logical_and(mask, query_valid[:, None, :, None])
    if key_valid is not None:
        mask = ops.logical_and(mask, key_valid[:, None, None, :])
    return mask


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
        S)` masks, and whether the mask is not the padding pattern the two
        make: `True` or `None` (it is one) for a mask in host memory, which
        is read at once; a boolean scalar tensor for one on an accelerator
        or inside a compiled function, which is not read back to the host
        (a sync on every call), for the caller to decide on the device.
    """
    check_attention_mask(
        "attention_mask",
        attention_mask,
        batch_size,
        target_length,
        source_length,
    )
    query_valid, key_valid, unsupported = _padding_pattern(
        attention_mask, is_causal
    )
    known = host_value(unsupported)  # Where the mask is.
    if known is None:  # Not read back: decided on the device.
        return query_valid, key_valid, unsupported
    return query_valid, key_valid, True if known else None


def _padding_pattern(mask, is_causal):
    """The query and key masks of a `(batch, T, S)` or `(batch, heads, T,
    S)` mask and a scalar, True when the mask is not their padding
    pattern."""
    mask = ops.cast(mask, "bool")
    visible = visible_keys(ops.shape(mask)[-2], ops.shape(mask)[-1], is_causal)
    per_head = None
    if len(mask.shape) == 4:  # One pattern for all heads, or per head.
        mask = ops.logical_and(mask, visible)
        per_head = ops.any(
            ops.not_equal(ops.any(mask, axis=1), ops.all(mask, axis=1))
        )
        mask = ops.any(mask, axis=1)
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
