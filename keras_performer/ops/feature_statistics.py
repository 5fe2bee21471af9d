"""The data-dependent parameters of FAVOR++ and FAVOR#: moments of the
queries and keys, and the feature map parameters chosen from them.

FAVOR++ (optimal positive random features, Likhosherstov et al. 2022,
Sec. 3) estimates `exp(x . y)` with

    f(w, x) = D exp(A |w|^2 + B w.x - |x|^2 / 2),  w ~ N(0, I),
    B = sqrt(1 - 4A),  D = (1 - 4A)^(d / 4),

unbiased for any `A < 1/4` (`A = 0` is FAVOR+), and picks the `A` that
minimizes the log second moment averaged over the query/key pairs, which
depends on the data through `rho = mean over pairs |x_i + y_j|^2 / d`
alone (their Theorem 3.1):

    A = (1 - 2 rho - sqrt((2 rho + 1)^2 + 8 rho)) / 16,

here tapered to 0 where attention is peaked, where that choice raises the
error of the attention output (see `TAPER_START`).

FAVOR# (dense-exponential random features, Likhosherstov et al. 2023, the
simplified asymmetric form) first rescales each dimension, queries by
`psi_l = (sum_j y_jl^2 / sum_i x_il^2)^(1/4)` and keys by `1 / psi_l`,
which leaves every `x . y` unchanged and equalizes their second moments,
then applies FAVOR++.

Both need the same parameters for the queries and the keys of a pair, so
one value per sequence and head, never per token. The moments are four
vectors per head: the means of `x` and `y` and of their squares, over the
valid tokens, with `x = q d^-1/4` and `y = k d^-1/4`: enough for both
maps, and an average of them over batches is still valid moments (the
running statistic of causal layers).

References:
    - [Likhosherstov et al., 2022](https://arxiv.org/abs/2205.15317)
    - [Likhosherstov et al., 2023](https://arxiv.org/abs/2302.00787)
"""

import collections
import math

from keras import ops

from keras_performer.ops.checks import check_mask_shape

# Feature maps whose parameters come from the moments of queries and keys.
MOMENT_FEATURE_MAPS = ("optimal_positive", "dense_exponential")

# Number of moment vectors per head: means of x, y, x^2, y^2.
NUM_MOMENTS = 4

# FAVOR# scales are kept within [1 / MAX_SCALE, MAX_SCALE]: any positive
# scale keeps the kernel exact; the bound keeps a dimension that is zero in
# the queries or the keys from sending the other to zero or infinity.
MAX_SCALE = 100.0

KernelParameters = collections.namedtuple(
    "KernelParameters", ["query_scale", "a"]
)
KernelParameters.__doc__ = """FAVOR++ / FAVOR# parameters of a batch.

`query_scale` `[B or 1, H, 1, d]` multiplies the queries and divides the
keys (ones for FAVOR++); `a` `[B or 1, H, 1, 1]` is `A`.
"""


def query_key_moments(query, key, query_mask=None, key_mask=None, pooled=False):
    """The moments FAVOR++ and FAVOR# choose their parameters from.

    Args:
        query: tensor of shape `(batch, target_length, heads, dim)`.
        key: tensor of shape `(batch, source_length, heads, dim)`.
        query_mask: optional boolean tensor `(batch, target_length)`,
            `False` at padded queries, which enter no moment. Defaults to
            `None`.
        key_mask: optional boolean tensor `(batch, source_length)`, the same
            for keys. Defaults to `None`.
        pooled: bool. Whether to pool the batch (one set of moments for all
            its sequences) rather than one per sequence. Defaults to
            `False`.

    Returns:
        A float32 tensor `(batch or 1, heads, 4, dim)`: the means of
        `q d^-1/4`, of `k d^-1/4` and of their squares, over the valid
        tokens of each sequence (zero where there are none). No gradient
        flows through it.

    Example:

    >>> q = keras.random.normal((2, 10, 4, 8))
    >>> tuple(keras_performer.ops.query_key_moments(q, q).shape)
    (2, 4, 4, 8)
    """
    query, key = (
        ops.cast(ops.convert_to_tensor(x), "float32") for x in (query, key)
    )
    check_mask_shape("query_mask", query_mask, [tuple(query.shape[:2])])
    check_mask_shape("key_mask", key_mask, [tuple(key.shape[:2])])
    query_means = _masked_means(query, query_mask, pooled)
    key_means = _masked_means(key, key_mask, pooled)
    moments = ops.stack(
        [query_means[0], key_means[0], query_means[1], key_means[1]], axis=2
    )
    return ops.stop_gradient(moments)


def _masked_means(x, mask, pooled):
    """Means of `x d^-1/4` and of its square over the valid tokens of `x`
    `[B, L, H, d]`: two `[B or 1, H, d]` tensors."""
    x = x * x.shape[-1] ** -0.25
    if mask is None:
        weights = ops.ones_like(x[:, :, :1, :1])
    else:
        weights = ops.cast(ops.convert_to_tensor(mask), "float32")
        weights = weights[:, :, None, None]
    axes = (0, 1) if pooled else 1
    count = ops.maximum(ops.sum(weights, axis=axes, keepdims=True), 1.0)
    return [
        (ops.sum(weights * power, axis=axes, keepdims=True) / count)[:, 0]
        for power in (x, ops.square(x))
    ]


def kernel_of(feature_map, moments, query, key=None, key_mask=None):
    """The `KernelParameters` of float32 inputs `[B, L, H, d]` for
    `feature_map`: from `moments` if given, else from `query` and the valid
    keys (`key=None`: none may be computed here; raises `ValueError`).
    `None` for the feature maps that take none."""
    if feature_map not in MOMENT_FEATURE_MAPS:
        return None
    if moments is None:
        if key is None:
            raise ValueError(
                f"feature_map={feature_map!r} takes its parameters from the "
                "moments of the queries and keys, which this form cannot "
                "compute from its inputs (causal attention, or a state): pass "
                "`moments` (from `keras_performer.ops.query_key_moments`). "
                "Received: moments=None"
            )
        moments = query_key_moments(query, key, key_mask=key_mask)
    moments = check_moments(moments, query.shape[2], query.shape[3])
    return kernel_parameters(moments, feature_map)


def check_moments(moments, num_heads, dim):
    """Returns `moments` as float32, checked: `(batch or 1, heads, 4, dim)`;
    raises `ValueError`."""
    moments = ops.cast(ops.convert_to_tensor(moments), "float32")
    shape = tuple(moments.shape)
    if len(shape) != 4 or shape[1:] != (num_heads, NUM_MOMENTS, dim):
        raise ValueError(
            "`moments` must have shape (batch or 1, heads, 4, dim) = "
            f"(batch or 1, {num_heads}, {NUM_MOMENTS}, {dim}), e.g. from "
            "`keras_performer.ops.query_key_moments`. Received: "
            f"moments.shape={shape}"
        )
    return moments


def kernel_parameters(moments, feature_map):
    """The `KernelParameters` of `feature_map` from `moments` `[B or 1, H,
    4, d]` (see `query_key_moments`); `None` for the feature maps that take
    none."""
    if feature_map not in MOMENT_FEATURE_MAPS:
        return None
    moments = ops.stop_gradient(ops.convert_to_tensor(moments))
    query_mean, key_mean, query_square, key_square = (
        moments[:, :, i] for i in range(NUM_MOMENTS)
    )
    dim = moments.shape[-1]
    if feature_map == "dense_exponential":
        # psi^2 = sqrt(E y^2 / E x^2) per dimension; 1 where either is 0.
        present = ops.logical_and(query_square > 0, key_square > 0)
        log_ratio = ops.log(ops.where(present, key_square, 1.0)) - ops.log(
            ops.where(present, query_square, 1.0)
        )
        bound = 4 * math.log(MAX_SCALE)  # psi = ratio^(1/4) within bounds
        square_scale = ops.exp(0.5 * ops.clip(log_ratio, -bound, bound))
        query_square = query_square * square_scale
        key_square = key_square / square_scale
        query_scale = ops.sqrt(square_scale)
    else:
        query_scale = ops.ones_like(query_mean)
    # rho = mean over pairs |x_i + y_j|^2 / d: the pairs are all (i, j), so
    # E|x|^2 + E|y|^2 + 2 E[x] . E[y], each sum over the dimensions.
    rho = ops.sum(query_square + key_square + 2 * query_mean * key_mean, -1)
    rho = ops.maximum(rho / dim, 0.0)
    a = optimal_a(rho) * _peak_taper(moments)
    return KernelParameters(
        query_scale=query_scale[:, :, None, :], a=a[:, :, None, None]
    )


# The paper's `A` minimizes the kernel's log second moment averaged over
# pairs, not the error of the attention output, which the pairs of largest
# weight dominate. Measured (docs/approximation.json, tools/approximation.py):
# up to a root mean square of the logits `q.k / sqrt(d)` of 0.73 it cuts the
# output error (to 0.66 to 0.87 of FAVOR+'s); from 1.0, where attention is
# peaked, it raises it (1.27 to 1.57 times FAVOR+'s up to 2.25). So `A` is
# tapered to 0 (FAVOR+) as the root mean square grows from 0.4 to 0.8, early
# enough never to lose to FAVOR+ there; any `A` keeps the estimate unbiased.
TAPER_START = 0.4
TAPER_END = 0.8


def _peak_taper(moments):
    """`1` up to `TAPER_START`, `0` from `TAPER_END`, linear between, of
    the logits' root mean square `sqrt(E[(x . y)^2])` `[B, H]`, estimated
    from the moments as if the dimensions were independent (the same
    before and after FAVOR#'s rescaling)."""
    query_mean, key_mean, query_square, key_square = (
        moments[:, :, i] for i in range(NUM_MOMENTS)
    )
    mean_product = query_mean * key_mean
    logit_square = (
        ops.sum(query_square * key_square, -1)
        + ops.square(ops.sum(mean_product, -1))
        - ops.sum(ops.square(mean_product), -1)
    )
    logit_rms = ops.sqrt(ops.maximum(logit_square, 0.0))
    return ops.clip(
        (TAPER_END - logit_rms) / (TAPER_END - TAPER_START), 0.0, 1.0
    )


def optimal_a(rho):
    """FAVOR++'s `A` for `rho` (Likhosherstov et al. 2022, Theorem 3.1):
    at most 0, 0 where `rho` is 0 (FAVOR+)."""
    return (1 - 2 * rho - ops.sqrt(ops.square(2 * rho + 1) + 8 * rho)) / 16
