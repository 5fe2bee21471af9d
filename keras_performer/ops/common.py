"""Input checks and layout helpers shared by the attention forms."""

import random

from keras import ops


def floored_max(x, axis, floor, keepdims=False):
    """`max(x, axis)`, at least `floor`, and `floor` where `x` is empty (an
    empty batch or sequence). Keras' `max` on PyTorch returns a scalar for
    an empty `x`; the other backends take `floor` as `initial`."""
    if 0 in x.shape:
        shape = list(ops.shape(x))
        if keepdims:
            shape[axis] = 1
        else:
            del shape[axis]
        return ops.full(shape, floor, dtype=x.dtype)
    return ops.max(x, axis=axis, keepdims=keepdims, initial=floor)


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
        if len(key_mask.shape) != 2 or not _compatible(
            tuple(key_mask.shape), expected
        ):
            raise ValueError(
                f"`key_mask` must have shape (batch, source_length) = "
                f"{expected}. Received: key_mask.shape="
                f"{tuple(key_mask.shape)}"
            )
    return query, key, value, key_mask


def _compatible(shape_a, shape_b):
    return all(
        a is None or b is None or a == b
        for a, b in zip(shape_a, shape_b, strict=True)
    )


def _check_equal(name_a, shape_a, axis, name_b, shape_b, what):
    a, b = shape_a[axis], shape_b[axis]
    if a is not None and b is not None and a != b:
        raise ValueError(
            f"`{name_a}` and `{name_b}` must have the same {what}. Received: "
            f"{name_a}.shape={tuple(shape_a)}, {name_b}.shape={tuple(shape_b)}"
        )


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


def check_seed(seed):
    if seed is not None and (
        not isinstance(seed, int) or isinstance(seed, bool) or seed < 0
    ):
        raise ValueError(
            f"`seed` must be a non-negative int or None. Received: seed={seed}"
        )


def check_draw(draw):
    if not isinstance(draw, int) or isinstance(draw, bool) or draw < 0:
        raise ValueError(
            f"`draw` must be a non-negative int. Received: draw={draw}"
        )


def concrete_seed(seed):
    """`seed`, or a new one when it is `None`: drawn from Python's `random`,
    so `keras.utils.set_random_seed` makes it reproducible. A layer keeps
    it, so that its later random draws can be made again."""
    return random.randint(0, 2**31 - 1) if seed is None else seed


def lower_triangle(rows, columns=None):
    """Boolean `(rows, columns)`, True where row index >= column index."""
    columns = rows if columns is None else columns
    return ops.greater_equal(
        ops.arange(rows)[:, None], ops.arange(columns)[None, :]
    )


def heads_first(x):
    """`[B, L, H, D]` <-> `[B, H, L, D]`: the layout of the batched
    matrix products, where the heads are batch dimensions."""
    return ops.transpose(x, (0, 2, 1, 3))


# Below it a denominator `q'.sum(k')` means the query met no key mass: only
# padding, or features that all underflow (inputs of extreme norms, where
# the random-feature estimate means nothing). Its gradient, out / den,
# stays far from float32 overflow, and its square stays a normal float32
# (JAX's gradient of x / y is x / y^2, and XLA on a CPU flushes squares
# below 1.2e-38 to zero).
TINY_DENOMINATOR = 1e-18


def normalize(numerator, denominator):
    """`numerator / denominator`, zero where the denominator is at most
    `TINY_DENOMINATOR` in magnitude, with finite gradients where the inputs
    are finite."""
    # The trigonometric feature map's denominators can be negative. Written with
    # `<=` so that a NaN denominator stays NaN.
    unseen = ops.abs(denominator) <= TINY_DENOMINATOR
    safe = ops.where(unseen, 1.0, denominator)
    return ops.where(unseen, 0.0, numerator / safe)


def with_ones(x):
    """Appends a column of ones on the last axis."""
    return ops.concatenate([x, ops.ones_like(x[..., :1])], axis=-1)
