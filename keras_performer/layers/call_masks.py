"""How `PerformerAttention`'s call arguments become its masks.

`keras.layers.MultiHeadAttention`'s conventions (a missing `value` is the
query, a missing `key` the value; `*_mask` and `attention_mask`;
`use_causal_mask`; a sliding window) and decoding's (a state already holds
some positions) combine into one validity per query and per key token, and
the choice of form: linear where what is left is a padding pattern,
quadratic where it is not (`keras_performer.ops.masks`).
"""

import collections

from keras import ops

from keras_performer.ops import causal
from keras_performer.ops import masks

CallMasks = collections.namedtuple(
    "CallMasks",
    [
        "value",  # The value tensor (the query where none was given).
        "key",  # The key tensor (the value where none was given).
        "query_valid",  # `(batch, T)` booleans, or `None`: all valid.
        "key_valid",  # `(batch, S)` booleans, or `None`: all valid.
        # The attention mask with the sliding window's band, if any.
        "attention_mask",
        "is_causal",
        # `True`: the quadratic form; `None`: the linear one; a boolean
        # tensor: decided on the device (the mask is not on the host).
        "quadratic",
    ],
)


def call_masks(
    query,
    value,
    key,
    query_mask,
    value_mask,
    key_mask,
    attention_mask,
    use_causal_mask,
    sliding_window,
    cache,
    cache_update_index,
):
    """Checks the inputs and masks of a call and combines them into a
    `CallMasks`."""
    for name, x in (("query", query), ("value", value), ("key", key)):
        if x is not None and len(x.shape) != 3:
            raise ValueError(
                f"`{name}` must have rank 3 (batch, length, dim). "
                f"Received: {name}.shape={tuple(x.shape)}"
            )
    masks.check_sequence_mask("query_mask", query_mask, query)
    masks.check_sequence_mask("value_mask", value_mask, value)
    masks.check_sequence_mask(
        "key_mask", key_mask, key if key is not None else value
    )
    if value is None:
        value = query
        value_mask = query_mask if value_mask is None else value_mask
    if key is None:
        key = value
    is_causal = use_causal_mask or cache is not None
    key_masks = [value_mask, key_mask]
    if cache is not None and cache_update_index is not None:
        # Positions the state already holds are not absorbed again.
        key_masks.append(
            causal.unseen_positions(
                cache, cache_update_index, ops.shape(key)[1]
            )
        )
    # A band narrower than the sequences is no padding pattern.
    band = sliding_window is not None and not masks.band_is_full(
        sliding_window, query.shape[1], key.shape[1]
    )
    if sliding_window is not None:
        attention_mask = masks.with_band(
            attention_mask, sliding_window, query, key
        )
    query_valid, key_valid, quadratic = masks.combined_masks(
        query_mask,
        key_masks,
        None if band else attention_mask,
        is_causal,
        (query.shape[0], query.shape[1], key.shape[1]),
    )
    return CallMasks(
        value,
        key,
        query_valid,
        key_valid,
        attention_mask,
        is_causal,
        True if band else quadratic,
    )
