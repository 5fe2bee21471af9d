"""NumPy (float64) oracles: unstabilized features and quadratic attention."""

import numpy as np


def features(x, w, feature_map):
    """phi(x) of `x` `[..., d]` with no stabilizer, as in the paper."""
    x = np.asarray(x, np.float64)
    w = np.asarray(w, np.float64)
    m, d = w.shape
    if feature_map == "relu":
        return np.maximum(x @ w.T / np.sqrt(m), 0) + 1e-3
    x = x * d**-0.25
    wx = x @ w.T
    half_norm = 0.5 * np.sum(x**2, axis=-1, keepdims=True)
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


def favor(query, key, value, w, feature_map, mask=1.0):
    """FAVOR attention as the quadratic form of the unstabilized features
    of `query` and `key` (float64); `mask` `[B or 1, 1, T, S]`."""
    return quadratic_attention(
        features(query, w, feature_map),
        features(key, w, feature_map),
        value,
        mask,
    )


def causal_mask(length, key_mask=None):
    """`[B or 1, 1, L, L]` mask of the keys each query sees."""
    mask = np.tril(np.ones((length, length)))[None, None]
    if key_mask is not None:
        mask = mask * np.asarray(key_mask, np.float64)[:, None, None, :]
    return mask
