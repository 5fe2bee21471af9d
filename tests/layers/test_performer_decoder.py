import keras_hub
import numpy as np
import pytest

import keras_performer
from keras_performer import PerformerDecoder
from tests.helpers import run_layer_test
from tests.layers.test_performer_attention import inputs


def decoder(**kwargs):
    return PerformerDecoder(intermediate_dim=32, num_heads=2, seed=0, **kwargs)


def decode(layer, x, start=0, cache=None):
    """Feeds `x[:, start:]` token by token; returns outputs and cache."""
    cache = layer.get_initial_cache(x.shape[0]) if cache is None else cache
    outputs = []
    for i in range(start, x.shape[1]):
        out, cache = layer(
            x[:, i : i + 1],
            self_attention_cache=cache,
            self_attention_cache_update_index=i,
        )
        outputs.append(np.asarray(out))
    return np.concatenate(outputs, axis=1), cache


@pytest.mark.parametrize(
    "kwargs",
    [
        {},
        {"feature_map": "hyperbolic", "normalize_first": True},
        {"feature_map": "relu", "chunk_size": 4},
        {"rotary_max_wavelength": 10000},
    ],
)
def test_cached_decoding_equals_full_pass(kwargs):
    x = inputs(length=20)
    layer = decoder(**kwargs)
    full = np.asarray(layer(x))
    out, cache = decode(layer, x)
    np.testing.assert_allclose(out, full, atol=1e-5, rtol=1e-5)
    # Constant size, whatever the position.
    assert tuple(cache.shape) == tuple(layer.get_initial_cache(2).shape)
    # A prompt in one call, then token by token.
    _, cache = layer(
        x[:, :7],
        self_attention_cache=layer.get_initial_cache(2),
        self_attention_cache_update_index=0,
    )
    out, _ = decode(layer, x, start=7, cache=cache)
    np.testing.assert_allclose(out, full[:, 7:], atol=1e-5, rtol=1e-5)


def test_token_fed_again_is_not_absorbed_twice():
    # keras-hub's generation loop seeds the cache with the prompt, then feeds
    # the prompt's last token again at its own index.
    x = inputs(length=10)
    layer = decoder()
    full = np.asarray(layer(x))
    _, cache = layer(
        x[:, :5],
        self_attention_cache=layer.get_initial_cache(2),
        self_attention_cache_update_index=0,
    )
    again, same_cache = layer(
        x[:, 4:5],
        self_attention_cache=cache,
        self_attention_cache_update_index=4,
    )
    np.testing.assert_allclose(again[:, 0], full[:, 4], atol=1e-5)
    np.testing.assert_allclose(same_cache, cache, atol=1e-6)
    out, _ = decode(layer, x, start=5, cache=same_cache)
    np.testing.assert_allclose(out, full[:, 5:], atol=1e-5, rtol=1e-5)


def test_prefill_with_padding_then_decode():
    x = inputs(length=12)
    layer = decoder()
    full = np.asarray(layer(x[:1, :8]))
    # Row 0: a prompt of 5 tokens padded to 8; row 1: 8 tokens.
    padded = x[:, :8].copy()
    padded[0, 5:] = 100.0  # junk at the padding
    mask = np.ones((2, 8), bool)
    mask[0, 5:] = False
    _, cache = layer(
        padded,
        decoder_padding_mask=mask,
        self_attention_cache=layer.get_initial_cache(2),
        self_attention_cache_update_index=0,
    )
    tokens = np.concatenate([x[:1, :8], x[1:, :8]])
    out, _ = decode(layer, tokens, start=4, cache=cache)
    # Row 0 re-feeds its last prompt token (position 4), then continues.
    np.testing.assert_allclose(out[0], full[0, 4:], atol=1e-5, rtol=1e-5)


def test_causal_and_non_causal():
    x = inputs(length=16)
    changed = x.copy()
    changed[:, 10:] = 5.0
    layer = decoder()
    np.testing.assert_allclose(
        np.asarray(layer(changed))[:, :10],
        np.asarray(layer(x))[:, :10],
        atol=1e-5,
    )
    non_causal = np.asarray(layer(changed, use_causal_mask=False))
    assert not np.allclose(non_causal[:, :10], np.asarray(layer(x))[:, :10])


@pytest.mark.parametrize("normalize_first", [False, True])
def test_matches_transformer_decoder_with_cross_attention(normalize_first):
    x, memory = inputs(scale=0.3), inputs(1, length=24, scale=0.3)
    exact = keras_hub.layers.TransformerDecoder(
        32, 2, normalize_first=normalize_first
    )
    expected = np.asarray(exact(x, memory))
    errors = []
    for num_features in (16, 4096):
        layer = decoder(
            normalize_first=normalize_first, num_random_features=num_features
        )
        layer(x, memory)
        keras_performer.transfer_weights(exact, layer)
        out = np.asarray(layer(x, memory))
        errors.append(np.mean((out - expected) ** 2) / np.var(expected))
    assert errors[1] < 0.05 and errors[1] < errors[0]


@pytest.mark.parametrize("encoder_padding", [False, True])
def test_cross_attention_cache_decodes_as_the_full_pass(encoder_padding):
    """keras-hub's protocol: update index 0 fills the cross-attention cache
    from the encoder sequence, `None` reuses it; with both caches the
    decoder returns three tensors."""
    x, memory = inputs(length=12), inputs(1, length=24)
    memory_mask = np.ones((2, 24), bool)
    if encoder_padding:
        memory_mask[0, 15:] = False
    layer = decoder()
    full = np.asarray(layer(x, memory, encoder_padding_mask=memory_mask))
    self_cache = layer.get_initial_cache(2)
    cross_cache = layer.get_initial_cross_attention_cache(2)
    outputs = []
    for i in range(12):
        out, self_cache, new_cross_cache = layer(
            x[:, i : i + 1],
            memory,
            encoder_padding_mask=memory_mask,
            self_attention_cache=self_cache,
            self_attention_cache_update_index=i,
            cross_attention_cache=cross_cache,
            cross_attention_cache_update_index=0 if i == 0 else None,
        )
        assert tuple(new_cross_cache.shape) == tuple(cross_cache.shape)
        if i > 0:  # Reused as it is.
            np.testing.assert_array_equal(new_cross_cache, cross_cache)
        cross_cache = new_cross_cache
        outputs.append(np.asarray(out))
    np.testing.assert_allclose(
        np.concatenate(outputs, axis=1), full, atol=1e-5, rtol=1e-5
    )


@pytest.mark.tensorflow
def test_cross_attention_cache_of_an_encoder_of_unknown_length():
    import tensorflow as tf

    x, memory = inputs(length=3), inputs(1, length=9)
    layer = decoder()
    layer(x, memory)

    @tf.function(
        input_signature=[
            tf.TensorSpec((2, 1, 16)),
            tf.TensorSpec((2, None, 16)),
        ]
    )
    def first_step(token, memory):
        return layer(
            token,
            memory,
            self_attention_cache=layer.get_initial_cache(2),
            self_attention_cache_update_index=0,
            cross_attention_cache=layer.get_initial_cross_attention_cache(2),
            cross_attention_cache_update_index=0,
        )

    out, _, cache = first_step(x[:, :1], memory)
    np.testing.assert_allclose(
        out, np.asarray(layer(x, memory))[:, :1], atol=1e-5, rtol=1e-5
    )
    assert np.all(np.asarray(cache)[..., -2] == 9)  # Keys counted.


def test_cross_attention_cache_does_not_grow_with_the_encoder():
    x = inputs(length=3)
    layer = decoder()
    layer(x, inputs(1, length=24))
    shapes = set()
    for length in (5, 60):
        _, _, cache = layer(
            x[:, :1],
            inputs(1, length=length),
            self_attention_cache=layer.get_initial_cache(2),
            self_attention_cache_update_index=0,
            cross_attention_cache=layer.get_initial_cross_attention_cache(2),
            cross_attention_cache_update_index=0,
        )
        shapes.add(tuple(cache.shape))
    assert shapes == {(2, 2, 256, 8 + 3)}


def test_bad_cross_attention_caches():
    x, memory = inputs(length=4), inputs(1, length=6)
    layer = decoder()
    layer(x, memory)
    caches = dict(
        self_attention_cache=layer.get_initial_cache(2),
        self_attention_cache_update_index=0,
        cross_attention_cache=layer.get_initial_cross_attention_cache(2),
    )
    with pytest.raises(ValueError, match="self_attention_cache=None"):
        layer(
            x[:, :1],
            memory,
            cross_attention_cache=caches["cross_attention_cache"],
            cross_attention_cache_update_index=0,
        )
    with pytest.raises(
        ValueError, match="cross_attention_cache_update_index=3"
    ):
        layer(x[:, :1], memory, **caches, cross_attention_cache_update_index=3)
    with pytest.raises(ValueError, match="encoder_attention_mask"):
        layer(
            x[:, :1],
            memory,
            encoder_attention_mask=np.ones((2, 1, 6), bool),
            **caches,
            cross_attention_cache_update_index=0,
        )
    other = decoder(num_random_features=32)
    other(x, memory)
    with pytest.raises(ValueError, match="cache"):
        layer(
            x[:, :1],
            memory,
            **{**caches, "cross_attention_cache": other.get_initial_cache(2)},
        )
    without = decoder()
    without(x)
    with pytest.raises(ValueError, match="no cross-attention"):
        without.get_initial_cross_attention_cache(2)


def test_cross_attention_must_stay_as_built():
    x, memory = inputs(), inputs(1, length=24)
    layer = decoder()
    layer(x)
    with pytest.raises(ValueError, match="without cross-attention"):
        layer(x, memory)
    layer = decoder()
    layer(x, memory)
    with pytest.raises(ValueError, match="with cross-attention"):
        layer(x)


def test_bad_cache():
    x = inputs(length=4)
    layer = decoder()
    layer(x)
    other = decoder(num_random_features=32)
    other(x)
    with pytest.raises(ValueError, match="cache"):
        layer(
            x[:, :1],
            self_attention_cache=other.get_initial_cache(2),
            self_attention_cache_update_index=0,
        )
    with pytest.raises(ValueError, match="use_causal_mask"):
        layer(
            x[:, :1],
            self_attention_cache=layer.get_initial_cache(2),
            use_causal_mask=False,
        )
    with pytest.raises(ValueError, match="Call the decoder once"):
        decoder().get_initial_cache(2)


def test_rotary_decoding_needs_the_position():
    x = inputs(length=4)
    layer = decoder(rotary_max_wavelength=10000)
    layer(x)
    with pytest.raises(ValueError, match="cache_update_index"):
        layer(x[:, :1], self_attention_cache=layer.get_initial_cache(2))
    with pytest.raises(ValueError, match="even"):
        PerformerDecoder(8, num_heads=2, rotary_max_wavelength=100)(
            inputs(dim=6)
        )


@pytest.mark.parametrize("lengths", [[16], [16, 24]])
def test_layer_behaves_as_a_keras_layer(tmp_path, lengths):
    run_layer_test(
        lambda: decoder(
            feature_map="hyperbolic", num_random_features=32, dropout=0.1
        ),
        [inputs(i, length=length) for i, length in enumerate(lengths)],
        tmp_path=tmp_path,
    )


@pytest.mark.parametrize(
    "mixed_policy", ["mixed_float16", "mixed_bfloat16"], indirect=True
)
def test_mixed_precision_decoding(mixed_policy):
    x = inputs(length=8)
    layer = decoder()
    full = np.asarray(layer(x), "float32")
    out, _ = decode(layer, x)
    assert np.all(np.isfinite(out.astype("float32")))
    tolerance = 0.05 if mixed_policy == "mixed_bfloat16" else 5e-3
    np.testing.assert_allclose(out.astype("float32"), full, atol=tolerance)
