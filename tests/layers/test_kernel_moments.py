"""FAVOR++ and FAVOR# in PerformerAttention and the decoder: which moments
each form takes, their running average, and causality with it."""

import keras
import numpy as np
import pytest

from keras_performer import PerformerAttention
from keras_performer import PerformerDecoder
from keras_performer.layers.kernel_moments import MOMENTUM
from keras_performer.ops import MOMENT_FEATURE_MAPS
from keras_performer.ops import favor_attention
from keras_performer.ops import query_key_moments
from tests.layers.test_performer_attention import inputs


def make_layer(feature_map, **kwargs):
    layer = PerformerAttention(
        num_heads=2, key_dim=8, feature_map=feature_map, seed=0, **kwargs
    )
    layer(inputs())
    return layer


def projected(layer, x):
    return layer._query_dense(x), layer._key_dense(x)


def moments_of(layer):
    # A copy: on PyTorch an array view would follow later updates.
    return np.array(layer.query_key_moments)


@pytest.mark.parametrize("feature_map", MOMENT_FEATURE_MAPS)
def test_running_moments_learn_from_training_calls_only(feature_map):
    layer = make_layer(feature_map)
    assert [w.name for w in layer.non_trainable_weights][-1] == (
        "query_key_moments"
    )
    np.testing.assert_array_equal(moments_of(layer), 0.0)
    x = inputs(1)
    valid = np.ones((2, 32), bool)
    valid[1, 20:] = False
    junk = x.copy()
    junk[~valid] = 1e3
    layer(junk, query_mask=valid, use_causal_mask=True)  # Inference.
    np.testing.assert_array_equal(moments_of(layer), 0.0)
    # The first training batch replaces the zeros: the pooled moments of
    # its valid queries and keys; the padding enters nothing.
    layer(junk, query_mask=valid, use_causal_mask=True, training=True)
    q, k = projected(layer, x)
    first = np.asarray(query_key_moments(q, k, valid, valid, pooled=True))[0]
    np.testing.assert_allclose(moments_of(layer), first, rtol=1e-5, atol=1e-6)
    # Then an average with momentum, from every form (here bidirectional).
    y = inputs(2)
    layer(y, training=True)
    q, k = projected(layer, y)
    second = np.asarray(query_key_moments(q, k, pooled=True))[0]
    np.testing.assert_allclose(
        moments_of(layer),
        MOMENTUM * first + (1 - MOMENTUM) * second,
        rtol=1e-5,
        atol=1e-6,
    )


@pytest.mark.parametrize("feature_map", MOMENT_FEATURE_MAPS)
def test_a_training_call_uses_the_moments_from_before_it(feature_map):
    layer = make_layer(feature_map)
    layer(inputs(1, scale=0.3), training=True)
    before = moments_of(layer)
    x = inputs(2, scale=0.3)  # Mild logits: FAVOR++'s A is not 0.
    inference = np.asarray(layer(x, use_causal_mask=True))
    training = np.asarray(layer(x, use_causal_mask=True, training=True))
    assert not np.allclose(moments_of(layer), before)
    np.testing.assert_allclose(training, inference, atol=1e-6)
    # And the moments matter: FAVOR+'s features (zero moments) differ.
    layer.query_key_moments.assign(np.zeros_like(before))
    assert not np.allclose(
        np.asarray(layer(x, use_causal_mask=True)), inference, atol=1e-4
    )


@pytest.mark.parametrize("training", [False, True])
@pytest.mark.parametrize("feature_map", MOMENT_FEATURE_MAPS)
def test_later_tokens_change_no_earlier_output(feature_map, training):
    layer = make_layer(feature_map)
    layer(inputs(1, scale=0.3), training=True)
    start = moments_of(layer)
    x = inputs(2)
    changed = x.copy()
    changed[:, 20:] = 5.0 * inputs(3)[:, 20:]
    outputs = []
    for sequence in (x, changed):
        layer.query_key_moments.assign(start)
        outputs.append(
            np.asarray(layer(sequence, use_causal_mask=True, training=training))
        )
    np.testing.assert_allclose(
        outputs[0][:, :20], outputs[1][:, :20], atol=1e-5, rtol=1e-5
    )


@pytest.mark.parametrize("feature_map", MOMENT_FEATURE_MAPS)
def test_cached_decoding_equals_the_full_pass(feature_map):
    layer = make_layer(feature_map, chunk_size=8)
    layer(inputs(1, scale=0.3), training=True)
    x = inputs(2, length=12)
    full = np.asarray(layer(x, use_causal_mask=True))
    cache = layer.get_initial_cache(2)
    steps = []
    for i in range(12):
        out, cache = layer(x[:, i : i + 1], cache=cache, cache_update_index=i)
        steps.append(np.asarray(out))
    np.testing.assert_allclose(
        np.concatenate(steps, axis=1), full, atol=1e-5, rtol=1e-5
    )


@pytest.mark.parametrize("feature_map", MOMENT_FEATURE_MAPS)
def test_bidirectional_moments_are_each_sequences_own(feature_map):
    layer = make_layer(feature_map)
    x = inputs(4)
    valid = np.ones((2, 32), bool)
    valid[0, 24:] = False
    out = np.asarray(layer(x, query_mask=valid))
    # Another sequence beside it, or junk in its padding, changes nothing.
    other = x.copy()
    other[1] = 3.0 * inputs(5)[1]
    other[0, 24:] = 50.0
    changed = np.asarray(layer(other, query_mask=valid))
    np.testing.assert_allclose(changed[0], out[0], atol=1e-5, rtol=1e-5)
    # A sequence's own moments, not the running average (zero here).
    np.testing.assert_array_equal(moments_of(layer), 0.0)
    q, k = projected(layer, x)
    v = layer._value_dense(x)
    expected = favor_attention(
        q,
        k,
        v,
        layer.projection_matrix,
        feature_map,
        key_mask=valid,
        moments=query_key_moments(q, k, valid, valid),
    )
    scores = layer(x, query_mask=valid, return_attention_scores=True)[1]
    np.testing.assert_allclose(
        np.einsum("bhts,bshd->bthd", np.asarray(scores), np.asarray(v)),
        np.where(valid[:, :, None, None], np.asarray(expected), 0.0),
        atol=1e-5,
    )


@pytest.mark.parametrize("feature_map", MOMENT_FEATURE_MAPS)
def test_moments_survive_a_keras_file(tmp_path, feature_map):
    layer = make_layer(feature_map)
    model = keras.Sequential([keras.Input((32, 16)), layer])
    layer(inputs(1, scale=0.3), training=True)
    path = str(tmp_path / "model.keras")
    model.save(path)
    loaded = keras.models.load_model(path)
    np.testing.assert_array_equal(
        moments_of(loaded.layers[0]), moments_of(layer)
    )


def test_decoder_cross_attention_decodes_as_its_full_pass():
    decoder = PerformerDecoder(
        intermediate_dim=32,
        num_heads=2,
        feature_map="dense_exponential",
        seed=0,
    )
    x, encoded = inputs(6, length=10), inputs(7, length=14)
    decoder(x, encoded, training=True)  # Running moments of both layers.
    cross = decoder._cross_attention_layer
    assert cross.ordered_queries
    assert np.any(moments_of(cross) != 0)
    full = np.asarray(decoder(x, encoded))
    # Later decoder tokens change no earlier output, cross-attention too.
    changed = x.copy()
    changed[:, 6:] = 4.0
    np.testing.assert_allclose(
        np.asarray(decoder(changed, encoded))[:, :6],
        full[:, :6],
        atol=1e-5,
        rtol=1e-5,
    )
    cache = decoder.get_initial_cache(2)
    cross_cache = decoder.get_initial_cross_attention_cache(2)
    steps = []
    for i in range(10):
        out, cache, cross_cache = decoder(
            x[:, i : i + 1],
            encoded,
            self_attention_cache=cache,
            self_attention_cache_update_index=i,
            cross_attention_cache=cross_cache,
            cross_attention_cache_update_index=0 if i == 0 else None,
        )
        steps.append(np.asarray(out))
    np.testing.assert_allclose(
        np.concatenate(steps, axis=1), full, atol=1e-5, rtol=1e-5
    )


def test_fit_learns_the_running_moments():
    sequence = keras.Input((16, 16))
    decoder = PerformerDecoder(
        intermediate_dim=32,
        num_heads=2,
        feature_map="optimal_positive",
        num_random_features=16,
        seed=0,
    )
    model = keras.Model(sequence, keras.layers.Dense(4)(decoder(sequence)))
    model.compile(optimizer="adam", loss="mse")  # Compiled: "auto".
    x = inputs(8, batch=8, length=16)
    attention = decoder._self_attention_layer
    history = model.fit(x, x[..., :4], batch_size=4, epochs=2, verbose=0)
    assert np.all(np.isfinite(history.history["loss"]))
    moments = moments_of(attention)
    assert np.all(np.isfinite(moments)) and np.any(moments != 0)
    # Frozen in inference.
    model.predict(x, verbose=0)
    np.testing.assert_array_equal(moments_of(attention), moments)


def test_multi_head_attention_weights_load_beside_the_moments():
    x = inputs(9, scale=0.3)
    mha = keras.layers.MultiHeadAttention(num_heads=2, key_dim=8, seed=0)
    expected = np.asarray(mha(x, x))
    layer = make_layer("dense_exponential", num_random_features=2048)
    layer.set_weights(mha.get_weights())
    np.testing.assert_array_equal(moments_of(layer), 0.0)
    np.testing.assert_allclose(np.asarray(layer(x)), expected, atol=0.02)


@pytest.mark.parametrize("feature_map", MOMENT_FEATURE_MAPS)
def test_until_trained_causal_layers_compute_favor_plus(feature_map):
    # Zero running moments: A = 0 and scales of 1, FAVOR+'s features (what
    # a converted causal model computes before any training call).
    layer = make_layer(feature_map)
    favor_plus = make_layer("softmax")
    favor_plus.set_weights(
        [w for w in layer.get_weights() if w.shape != (2, 4, 8)]
    )
    x = inputs(10)
    np.testing.assert_allclose(
        np.asarray(layer(x, use_causal_mask=True)),
        np.asarray(favor_plus(x, use_causal_mask=True)),
        atol=1e-6,
    )
