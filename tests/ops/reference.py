"""NumPy (float64) oracles: unstabilized features and quadratic attention."""

import numpy as np

MOMENT_FEATURE_MAPS = ("optimal_positive", "dense_exponential")


def moments(query, key, key_mask=None, query_mask=None):
    """Means of `x = q d^-1/4`, `y = k d^-1/4` and of their squares over
    the valid tokens, per sequence and head: `[B, H, 4, d]`."""

    def means(x, mask):
        x = np.asarray(x, np.float64) * x.shape[-1] ** -0.25
        weights = np.ones(x.shape[:2]) if mask is None else mask * 1.0
        weights = weights[:, :, None, None]
        count = np.maximum(weights.sum(1), 1)
        return (weights * x).sum(1) / count, (weights * x**2).sum(1) / count

    (mx, sx), (my, sy) = means(query, query_mask), means(key, key_mask)
    return np.stack([mx, my, sx, sy], axis=2)


def fixed_moments(feature_map, query, key):
    """Moments of whole inputs (float32) for FAVOR++ and FAVOR#, `None` for
    the other maps: one value that a test passes to every form it compares
    (the causal forms need one; a prefix's own would differ)."""
    if feature_map not in MOMENT_FEATURE_MAPS:
        return None
    return moments(query, key).astype("float32")


def kernel(moments, feature_map):
    """FAVOR++ / FAVOR# parameters from `moments` `[B, H, 4, d]`: the query
    scale `[B, 1, H, d]` and `A` `[B, 1, H, 1]` (the papers' formulas, `A`
    tapered where attention is peaked)."""
    mx, my, sx, sy = np.moveaxis(np.asarray(moments, np.float64), 2, 0)
    psi = np.ones_like(mx)
    if feature_map == "dense_exponential":
        psi = np.where((sx > 0) & (sy > 0), (sy / sx) ** 0.25, 1.0)
        psi = np.clip(psi, 0.01, 100.0)
    # mean over pairs of |psi x + y / psi|^2, divided by d.
    rho = np.sum(sx * psi**2 + sy / psi**2 + 2 * mx * my, -1) / mx.shape[-1]
    a = (1 - 2 * rho - np.sqrt((2 * rho + 1) ** 2 + 8 * rho)) / 16
    # Tapered to 0 as the logits' RMS (independent dimensions) grows from
    # 0.4 to 0.8.
    logit_square = (
        np.sum(sx * sy, -1)
        + np.sum(mx * my, -1) ** 2
        - np.sum(mx**2 * my**2, -1)
    )
    a = a * np.clip((0.8 - np.sqrt(logit_square)) / 0.4, 0, 1)
    return psi[:, None], a[:, None, :, None]


def features(x, w, feature_map, kernel=None, is_key=False):
    """phi(x) of `x` `[..., d]` with no stabilizer, as in the paper; FAVOR++
    and FAVOR# take `kernel` (from `kernel`)."""
    x = np.asarray(x, np.float64)
    w = np.asarray(w, np.float64)
    m, d = w.shape
    if feature_map == "relu":
        return np.maximum(x @ w.T / np.sqrt(m), 0) + 1e-3
    if feature_map in MOMENT_FEATURE_MAPS:
        psi, a = kernel
        x = x / psi if is_key else x * psi
    x = x * d**-0.25
    wx = x @ w.T
    half_norm = 0.5 * np.sum(x**2, axis=-1, keepdims=True)
    if feature_map in MOMENT_FEATURE_MAPS:
        # D exp(A |w|^2 + B w.x - |x|^2 / 2) / sqrt(m).
        log_d = d / 4 * np.log(1 - 4 * a)
        log_f = a * np.sum(w**2, -1) + np.sqrt(1 - 4 * a) * wx - half_norm
        return np.exp(log_d + log_f) / np.sqrt(m)
    if feature_map == "softmax":
        return np.exp(wx - half_norm) / np.sqrt(m)
    if feature_map == "hyperbolic":
        both = np.concatenate([wx, -wx], axis=-1)
        return np.exp(both - half_norm) / np.sqrt(2 * m)
    if feature_map == "trig":
        both = np.concatenate([np.sin(wx), np.cos(wx)], axis=-1)
        return np.exp(half_norm) * both / np.sqrt(m)
    raise ValueError(feature_map)


def quadratic_attention(query_features, key_features, value, mask):
    """`(A V) / (A 1)` with `A = (Q' K'^T) * mask`; layout [B, L, H, F]."""
    scores = np.einsum("bthf,bshf->bhts", query_features, key_features)
    scores = scores * mask
    out = np.einsum("bhts,bshd->bthd", scores, value)
    total = np.transpose(scores.sum(-1), (0, 2, 1))[..., None]
    return np.divide(out, total, out=np.zeros_like(out), where=total != 0)


def favor(query, key, value, w, feature_map, mask=1.0, moments=None):
    """FAVOR attention as the quadratic form of the unstabilized features
    of `query` and `key` (float64); `mask` `[B or 1, 1, T, S]`. FAVOR++ and
    FAVOR# take their parameters from `moments` (see `moments`)."""
    parameters = None
    if feature_map in MOMENT_FEATURE_MAPS:
        parameters = kernel(moments, feature_map)
    return quadratic_attention(
        features(query, w, feature_map, parameters),
        features(key, w, feature_map, parameters, is_key=True),
        value,
        mask,
    )


def causal_mask(length, key_mask=None):
    """`[B or 1, 1, L, L]` mask of the keys each query sees."""
    mask = np.tril(np.ones((length, length)))[None, None]
    if key_mask is not None:
        mask = mask * np.asarray(key_mask, np.float64)[:, None, None, :]
    return mask
