"""Bad inputs to the blocks: each a clear `ValueError` that names the
argument and the value received."""

import numpy as np
import pytest

from keras_performer import PerformerDecoder
from keras_performer import PerformerEncoder

X = np.random.default_rng(0).normal(size=(2, 8, 8)).astype("float32")
MEMORY = np.random.default_rng(1).normal(size=(2, 5, 8)).astype("float32")


def encoder():
    layer = PerformerEncoder(16, 2, num_random_features=16, seed=0)
    layer(X)
    return layer


def decoder():
    layer = PerformerDecoder(16, 2, num_random_features=16, seed=0)
    layer(X, MEMORY)
    return layer


def decode_step(layer, **kwargs):
    arguments = dict(
        self_attention_cache=layer.get_initial_cache(2),
        self_attention_cache_update_index=0,
        cross_attention_cache=layer.get_initial_cross_attention_cache(2),
        cross_attention_cache_update_index=0,
    )
    return layer(X[:, :1], MEMORY, **{**arguments, **kwargs})


ENCODER_CASES = {
    "rank": (lambda e: e(X[:, :, 0]), r"inputs.shape=\(2, 8\)"),
    "dtype": (lambda e: e(X.astype("int32")), "inputs.dtype=int32"),
    "padding_mask": (
        lambda e: e(X, padding_mask=np.ones((2, 7), bool)),
        r"padding_mask.shape=\(2, 7\)",
    ),
    "attention_mask": (
        lambda e: e(X, attention_mask=np.ones((2, 8, 7), bool)),
        r"attention_mask.shape=\(2, 8, 7\)",
    ),
}

DECODER_CASES = {
    "rank": (lambda d: d(X[0], MEMORY), r"decoder_sequence.shape=\(8, 8\)"),
    "encoder_rank": (
        lambda d: d(X, MEMORY[:, 0]),
        r"encoder_sequence.shape=\(2, 8\)",
    ),
    "dtype": (
        lambda d: d(X.astype("int32"), MEMORY),
        "decoder_sequence.dtype=int32",
    ),
    "decoder_padding_mask": (
        lambda d: d(X, MEMORY, decoder_padding_mask=np.ones((2, 3), bool)),
        r"decoder_padding_mask.shape=\(2, 3\)",
    ),
    "encoder_padding_mask": (
        lambda d: d(X, MEMORY, encoder_padding_mask=np.ones((2, 8), bool)),
        r"encoder_padding_mask.shape=\(2, 8\)",
    ),
    "decoder_attention_mask": (
        lambda d: d(X, MEMORY, decoder_attention_mask=np.ones((2, 8), bool)),
        r"decoder_attention_mask.shape=\(2, 8\)",
    ),
    "encoder_attention_mask": (
        lambda d: d(X, MEMORY, encoder_attention_mask=np.ones((2, 8, 8), bool)),
        r"encoder_attention_mask.shape=\(2, 8, 8\)",
    ),
    "self_cache_batch": (
        lambda d: decode_step(d, self_attention_cache=d.get_initial_cache(3)),
        r"cache.shape=\(3, 2, 16, 7\), query.shape=\(2, 1, 8\)",
    ),
    "cross_cache_batch": (
        lambda d: decode_step(
            d,
            cross_attention_cache=d.get_initial_cross_attention_cache(3),
            cross_attention_cache_update_index=None,
        ),
        r"cache.shape=\(3, 2, 16, 7\)",
    ),
    "self_cache_configuration": (  # 256 features, not 16.
        lambda d: decode_step(
            d, self_attention_cache=np.zeros((2, 2, 256, 7), "float32")
        ),
        r"cache.shape=\(2, 2, 256, 7\)",
    ),
}


@pytest.mark.parametrize("case", ENCODER_CASES)
def test_bad_encoder_inputs(case):
    call, match = ENCODER_CASES[case]
    with pytest.raises(ValueError, match=match):
        call(encoder())


@pytest.mark.parametrize("case", DECODER_CASES)
def test_bad_decoder_inputs(case):
    call, match = DECODER_CASES[case]
    with pytest.raises(ValueError, match=match):
        call(decoder())
