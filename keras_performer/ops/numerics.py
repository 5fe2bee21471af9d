"""Numerics and layout shared by the attention forms: guarded maxima and
divisions, the column of ones that carries the denominator, heads first."""

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
    """Appends a column of ones on the last axis: multiplied with features,
    it gives the denominator of attention beside its numerator."""
    return ops.concatenate([x, ops.ones_like(x[..., :1])], axis=-1)


def heads_first(x):
    """`[B, L, H, D]` <-> `[B, H, L, D]`: the layout of the batched
    matrix products, where the heads are batch dimensions."""
    return ops.transpose(x, (0, 2, 1, 3))
