"""Argument checks shared by the ops, the layers and the models: each
raises `ValueError` with what was expected and what was received."""

from keras import ops


def check_positive_int(name, value):
    if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
        raise ValueError(
            f"`{name}` must be a positive integer. Received: {name}={value}"
        )


def check_rate(name, value):
    if not isinstance(value, (int, float)) or not 0 <= value < 1:
        raise ValueError(
            f"`{name}` must be a float in [0, 1). Received: {name}={value}"
        )


def check_non_negative_int(name, value, allow_none=False):
    if allow_none and value is None:
        return
    if not isinstance(value, int) or isinstance(value, bool) or value < 0:
        expected = "a non-negative int" + (" or None" if allow_none else "")
        raise ValueError(
            f"`{name}` must be {expected}. Received: {name}={value}"
        )


def compatible_shapes(shape, expected):
    """Whether two shapes have the same rank and agree where both are
    known."""
    return len(shape) == len(expected) and all(
        a is None or b is None or a == b
        for a, b in zip(shape, expected, strict=True)
    )


def host_value(x):
    """`x` as a NumPy array when it is in host memory and concrete (not
    symbolic, not inside a compiled function), else `None`: what may be read
    with no wait for an accelerator."""
    try:
        if "cpu" not in str(getattr(x, "device", "cpu")).lower():
            return None
        return ops.convert_to_numpy(x)
    except (
        AttributeError,
        NotImplementedError,
        RuntimeError,
        TypeError,
        ValueError,
    ):
        return None  # Symbolic or traced: known when run.


def check_mask_shape(name, mask, expected):
    """Raises `ValueError` unless `mask` (if any) has one of the shapes
    `expected` (tuples, `None` where any size goes)."""
    if mask is None:
        return
    shape = tuple(mask.shape)
    if not any(compatible_shapes(shape, e) for e in expected):
        shapes = " or ".join(str(e) for e in expected)
        raise ValueError(
            f"`{name}` must have shape {shapes}. Received: {name}.shape={shape}"
        )


def check_same_batch(name, x, other_name, other):
    """Raises `ValueError` when `x` and `other` have known batch sizes
    that differ (a state per sequence, a mask per sequence)."""
    sizes = (x.shape[0], other.shape[0])
    if None not in sizes and sizes[0] != sizes[1]:
        raise ValueError(
            f"`{name}` must have the batch size of `{other_name}`. "
            f"Received: {name}.shape={tuple(x.shape)}, "
            f"{other_name}.shape={tuple(other.shape)}"
        )


def check_attention_inputs(
    query, key, value, key_mask, is_causal, projection_matrix=None
):
    """Checks shapes; returns the inputs cast to float32 (mask to bool)."""
    query, key, value = (
        ops.cast(ops.convert_to_tensor(x), "float32")
        for x in (query, key, value)
    )
    for name, x in (("query", query), ("key", key), ("value", value)):
        if len(x.shape) != 4:
            raise ValueError(
                f"`{name}` must have rank 4 (batch, length, heads, dim). "
                f"Received: {name}.shape={tuple(x.shape)}"
            )
    _check_equal("key", key.shape, 1, "value", value.shape, "length")
    _check_equal("query", query.shape, -1, "key", key.shape, "dim")
    for name, x in (("key", key), ("value", value)):
        _check_equal("query", query.shape, 0, name, x.shape, "batch size")
        _check_equal("query", query.shape, 2, name, x.shape, "heads")
    if projection_matrix is not None:
        shape = tuple(projection_matrix.shape)
        if len(shape) != 2 or shape[1] != query.shape[-1]:
            raise ValueError(
                "`projection_matrix` must have shape (num_random_features, "
                f"dim) with dim={query.shape[-1]}, the head size of `query`. "
                f"Received: projection_matrix.shape={shape}"
            )
    if is_causal:
        _check_equal("query", query.shape, 1, "key", key.shape, "length")
    if key_mask is not None:
        key_mask = ops.cast(ops.convert_to_tensor(key_mask), "bool")
        expected = tuple(key.shape[:2])
        if not compatible_shapes(tuple(key_mask.shape), expected):
            raise ValueError(
                f"`key_mask` must have shape (batch, source_length) = "
                f"{expected}. Received: key_mask.shape="
                f"{tuple(key_mask.shape)}"
            )
    return query, key, value, key_mask


def _check_equal(name_a, shape_a, axis, name_b, shape_b, what):
    a, b = shape_a[axis], shape_b[axis]
    if a is not None and b is not None and a != b:
        raise ValueError(
            f"`{name_a}` and `{name_b}` must have the same {what}. Received: "
            f"{name_a}.shape={tuple(shape_a)}, {name_b}.shape={tuple(shape_b)}"
        )
