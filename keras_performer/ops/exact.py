"""Exact softmax attention, the reference FAVOR approximates."""

from keras import ops

from keras_performer.ops.checks import check_attention_inputs
from keras_performer.ops.masks import visible_keys
from keras_performer.ops.numerics import floored_max


def exact_attention(query, key, value, is_causal=False, key_mask=None):
    """Softmax attention `softmax(q k^T / sqrt(d)) v`, computed in float32.

    Uses the layout of `keras.ops.dot_product_attention`. A query that sees
    no key (all masked) gets a zero output.

    Args:
        query: tensor of shape `(batch, target_length, heads, dim)`.
        key: tensor of shape `(batch, source_length, heads, dim)`.
        value: tensor of shape `(batch, source_length, heads, value_dim)`.
        is_causal: bool. Whether query `i` sees only keys `j <= i`.
            Defaults to `False`.
        key_mask: optional boolean tensor `(batch, source_length)`, `False`
            at padded keys. Defaults to `None`.

    Returns:
        Tensor of shape `(batch, target_length, heads, value_dim)`, in the
        dtype of `query`.

    Example:

    >>> x = keras.random.normal((1, 8, 2, 4))
    >>> out = keras_performer.ops.exact_attention(x, x, x, is_causal=True)
    """
    dtype = query.dtype
    query, key, value, key_mask = check_attention_inputs(
        query, key, value, key_mask, is_causal
    )
    scores = ops.einsum("bthd,bshd->bhts", query, key)
    scores = scores * (ops.shape(query)[-1] ** -0.5)
    mask = visible_keys(ops.shape(query)[1], ops.shape(key)[1], is_causal)
    if key_mask is not None:
        mask = ops.logical_and(mask, key_mask[:, None, None, :])
    scores = ops.where(mask, scores, -1e30)
    largest = floored_max(scores, -1, float("-inf"), keepdims=True)
    weights = ops.exp(scores - largest)
    weights = ops.where(mask, weights, 0.0)
    out = ops.einsum("bhts,bshd->bthd", weights, value)
    total = ops.transpose(ops.sum(weights, axis=-1), (0, 2, 1))
    return ops.cast(ops.divide_no_nan(out, total[..., None]), dtype)
