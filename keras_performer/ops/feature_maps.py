"""Random feature maps `phi` with `phi(q) . phi(k)` estimating a kernel.

Every feature map returns its features in parts, so that the attention forms can
stabilize them without knowing the feature map:

    phi(x) = factor * exp(logits + log_norm - stabilizer)

`logits`, `log_norm` and `factor` may be `None`. A stabilizer shared by all
the keys a query sees cancels between the numerator and the denominator of
attention, and so does a per-query one. Constant normalizations such as
`m ** -0.5` live in `log_norm`, so that they cost no pass over the features.
"""

import collections
import math

from keras import ops

from keras_performer.ops.feature_statistics import MOMENT_FEATURE_MAPS
from keras_performer.ops.numerics import floored_max

FeatureParts = collections.namedtuple(
    "FeatureParts", ["logits", "log_norm", "factor"]
)
FeatureParts.__doc__ = """Parts of `phi(x)`; see the module docstring.

`logits` is `[..., F]` or `[..., 1]`. `log_norm` is a per-row term
`[..., 1]` or a float. `factor` is a `[..., F]` tensor.
"""

# Constant of the authors' implementation (google-research/performer).
RELU_EPSILON = 1e-3


def _project(x, projection_matrix):
    # One 2-D matmul over all rows, not an einsum: its gradient needs no
    # transposed copies. Reshaped here rather than by Keras's TensorFlow
    # matmul (a tensordot, whose gradient XLA fails to build inside a
    # conditional: the masked attention's choice of form).
    leading = ops.shape(x)[:-1]
    if sum(size is None for size in leading) > 1:  # Symbolic: shapes only.
        return ops.matmul(x, ops.transpose(projection_matrix))
    leading = [-1 if size is None else size for size in leading]
    rows = ops.reshape(x, (-1, x.shape[-1]))
    projected = ops.matmul(rows, ops.transpose(projection_matrix))
    return ops.reshape(projected, (*leading, projection_matrix.shape[0]))


def _scaled(x, projection_matrix):
    """`W x'` and `|x'|^2 / 2` for `x' = x d^-1/4`: `q' . k'` must estimate
    `exp(q . k / sqrt(d))`. The scale goes to the small operands, not `x`."""
    dim = x.shape[-1]
    projected = _project(x, projection_matrix * dim**-0.25)
    half_squared_norm = ops.sum(ops.square(x), axis=-1, keepdims=True)
    return projected, half_squared_norm * (0.5 * dim**-0.5)


def _softmax_parts(x, projection_matrix):
    # Positive random features, Lemma 1 of the paper:
    # exp(q.k) = E[exp(w.q - |q|^2/2) exp(w.k - |k|^2/2)], w ~ N(0, I).
    wx, half_squared_norm = _scaled(x, projection_matrix)
    scale = projection_matrix.shape[0] ** -0.5
    return FeatureParts(
        logits=wx,
        log_norm=math.log(scale) - half_squared_norm,
        factor=None,
    )


def _hyperbolic_parts(x, projection_matrix):
    # Hyperbolic positive features (paper, Lemma 1, the cosh estimator):
    # exp(-|x|^2/2) [exp(w.x), exp(-w.x)] / sqrt(2m).
    wx, half_squared_norm = _scaled(x, projection_matrix)
    scale = (2 * projection_matrix.shape[0]) ** -0.5
    return FeatureParts(
        logits=ops.concatenate([wx, -wx], axis=-1),
        log_norm=math.log(scale) - half_squared_norm,
        factor=None,
    )


def _trig_parts(x, projection_matrix):
    # Trigonometric features of the original FAVOR (paper, Eq. 5):
    # exp(|x|^2/2) [sin(w.x), cos(w.x)] / sqrt(m); unbiased, not positive.
    wx, half_squared_norm = _scaled(x, projection_matrix)
    return FeatureParts(
        logits=half_squared_norm,
        log_norm=-0.5 * math.log(projection_matrix.shape[0]),
        factor=ops.concatenate([ops.sin(wx), ops.cos(wx)], axis=-1),
    )


def _optimal_positive_parts(x, projection_matrix, kernel, is_key):
    # FAVOR++ (Likhosherstov et al. 2022, Sec. 3), after FAVOR#'s per-dim
    # rescaling (ones for FAVOR++): D exp(A |w|^2 + B w.x - |x|^2 / 2) / sqrt(m)
    # with B = sqrt(1 - 4A), D = (1 - 4A)^(d / 4); see feature_statistics.
    if kernel is None:
        raise ValueError(
            "The feature maps of FAVOR++ and FAVOR# take parameters chosen "
            "from the queries and keys. Received: kernel=None"
        )
    scale = ops.cast(kernel.query_scale, x.dtype)
    x = ops.divide(x, scale) if is_key else ops.multiply(x, scale)
    wx, half_squared_norm = _scaled(x, projection_matrix)
    a = ops.cast(kernel.a, x.dtype)
    num_rows, dim = projection_matrix.shape
    squared_norms = ops.sum(ops.square(projection_matrix), axis=-1)
    return FeatureParts(
        logits=ops.sqrt(1 - 4 * a) * wx + a * squared_norms,
        log_norm=(
            -0.5 * math.log(num_rows)
            + 0.25 * dim * ops.log(1 - 4 * a)
            - half_squared_norm
        ),
        factor=None,
    )


def _relu_parts(x, projection_matrix):
    # Generalized attention (paper, Sec. 2.2) with f = relu, on unscaled x.
    scaled_projection = projection_matrix / math.sqrt(
        projection_matrix.shape[0]
    )
    features = ops.relu(_project(x, scaled_projection))
    return FeatureParts(
        logits=None,
        log_norm=None,
        factor=features + RELU_EPSILON,
    )


# name: (parts function, features per row of the projection matrix).
_FEATURE_MAPS = {
    "softmax": (_softmax_parts, 1),
    "hyperbolic": (_hyperbolic_parts, 2),
    "trig": (_trig_parts, 2),
    "relu": (_relu_parts, 1),
    "optimal_positive": (_optimal_positive_parts, 1),
    "dense_exponential": (_optimal_positive_parts, 1),
}
FEATURE_MAPS = tuple(_FEATURE_MAPS)
# Kernels whose features are positive, so attention weights are too.
POSITIVE_FEATURE_MAPS = (
    "softmax",
    "hyperbolic",
    "relu",
    "optimal_positive",
    "dense_exponential",
)


def check_feature_map(feature_map):
    if feature_map not in _FEATURE_MAPS:
        raise ValueError(
            f"`feature_map` must be one of {FEATURE_MAPS}. "
            f"Received: feature_map={feature_map}"
        )


def feature_parts(x, projection_matrix, feature_map, kernel=None, is_key=False):
    """Returns the `FeatureParts` of `x` `[B, H, L, d]` for `feature_map`;
    FAVOR++ and FAVOR# also take their `KernelParameters` (`kernel`) and
    whether `x` holds keys (`is_key`), which they scale the other way."""
    check_feature_map(feature_map)
    projection_matrix = ops.cast(projection_matrix, x.dtype)
    parts = _FEATURE_MAPS[feature_map][0]
    if feature_map in MOMENT_FEATURE_MAPS:
        return parts(x, projection_matrix, kernel, is_key)
    return parts(x, projection_matrix)


def num_features(feature_map, num_random_features):
    """Length of `phi(x)` for `num_random_features` projection rows."""
    check_feature_map(feature_map)
    return _FEATURE_MAPS[feature_map][1] * num_random_features


def row_log_max(parts):
    """Max over the feature axis of the log-features, `[..., 1]`: `logits`
    with the row term, which bounds it (for the softmax kernel
    `w.x - |x|^2/2 <= |w|^2/2`). `None` for feature maps with no exponential
    factor. No gradient flows through it: stabilizers cancel."""
    if parts.logits is None:
        return None
    # The floor only lets an empty batch through; no log value is below it.
    log_max = floored_max(parts.logits, -1, NO_KEYS, keepdims=True)
    if parts.log_norm is not None:
        log_max = log_max + parts.log_norm
    return ops.stop_gradient(log_max)


def features(parts, stabilizer, mask=None):
    """Computes `phi(x)`, stabilized, with rows where `mask` is False zero.

    Args:
        parts: `FeatureParts`.
        stabilizer: tensor broadcastable to `parts.logits`, or `None` when
            the feature map has no exponential factor.
        mask: optional boolean tensor broadcastable to the features' rows
            (without the feature axis).
    """
    if parts.logits is None:
        phi = parts.factor
    else:
        shift = -stabilizer
        if parts.log_norm is not None:
            shift = parts.log_norm + shift  # [..., 1]: cheap
        log = parts.logits + shift
        if mask is not None:
            # exp(-inf) = 0 keeps the gradients of masked rows finite.
            log = ops.where(mask[..., None], log, float("-inf"))
        phi = ops.exp(log)
        if parts.factor is not None:
            phi = parts.factor * phi
    if mask is not None and parts.logits is None:
        phi = ops.where(mask[..., None], phi, 0.0)
    return phi


# Stabilizer of a set of keys that holds none: far below any real log value,
# finite so that differences with it stay finite.
NO_KEYS = -1e30


def sequence_log_max(parts, mask=None):
    """Max of the log-features (see `row_log_max`) over the feature axis and
    the rows of each sequence `[B, H, L, F]` where `mask` (`[B, 1, L]`) is
    True: `[B, H, 1, 1]`, `NO_KEYS` where no row is valid. `None` for
    feature maps with no exponential factor."""
    log_max = row_log_max(parts)
    if log_max is None:
        return None
    if mask is not None:
        log_max = ops.where(mask[..., None], log_max, NO_KEYS)
    return floored_max(log_max, 2, NO_KEYS, keepdims=True)


def query_features(parts):
    """`phi(q)` with a per-query stabilizer, which cancels exactly."""
    return features(parts, row_log_max(parts))
