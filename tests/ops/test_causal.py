import numpy as np
import pytest
import tensorflow as tf

from keras_performer.ops import FEATURE_MAPS
from keras_performer.ops import causal
from keras_performer.ops import causal_favor_attention
from keras_performer.ops import empty_state
from keras_performer.ops import exact_attention
from keras_performer.ops import favor_attention
from keras_performer.ops import num_features
from keras_performer.ops import sample_projection_matrix
from keras_performer.ops.causal import state_length
from tests.ops import reference
from tests.ops.test_favor import random_inputs


# Every map in chunks of 16 (the last one partial); chunks of one token, of
# the whole length and longer than it for a map of each stabilizer (one
# max; the two halves' maxes).
@pytest.mark.parametrize(
    "feature_map, chunk_size",
    [(feature_map, 16) for feature_map in FEATURE_MAPS]
    + [
        (feature_map, chunk_size)
        for feature_map in ("softmax", "hyperbolic")
        for chunk_size in (1, 50, 128)
    ],
)
def test_equals_masked_quadratic_form(feature_map, chunk_size):
    q, k, v = random_inputs(10, length=50)
    w = sample_projection_matrix(32, 16, seed=0)
    key_mask = np.ones((2, 50), bool)
    key_mask[1, 7:19] = False
    out = favor_attention(
        q,
        k,
        v,
        w,
        feature_map=feature_map,
        is_causal=True,
        key_mask=key_mask,
        chunk_size=chunk_size,
        moments=reference.fixed_moments(feature_map, q, k),
    )
    expected = reference.favor(
        q,
        k,
        v,
        w,
        feature_map,
        reference.causal_mask(50, key_mask),
        moments=reference.fixed_moments(feature_map, q, k),
    )
    np.testing.assert_allclose(np.asarray(out), expected, atol=1e-5, rtol=1e-4)


@pytest.mark.parametrize("case", ["small", "medium"])
def test_relu_matches_authors_implementation(golden, case):
    q, k, v, w = (
        golden[f"{case}/{name}"]
        for name in ("query", "key", "value", "projection")
    )
    out = favor_attention(q, k, v, w, feature_map="relu", is_causal=True)
    np.testing.assert_allclose(
        np.asarray(out), golden[f"{case}/relu_causal"], atol=1e-5, rtol=0
    )


@pytest.mark.parametrize("case,error", [("small", 0.3), ("medium", 0.07)])
def test_softmax_close_to_exact_causal(golden, case, error):
    q, k, v, w = (
        golden[f"{case}/{name}"]
        for name in ("query", "key", "value", "projection")
    )
    exact = np.asarray(exact_attention(q, k, v, is_causal=True))
    np.testing.assert_allclose(exact, golden[f"{case}/exact_causal"], atol=1e-5)
    out = np.asarray(favor_attention(q, k, v, w, is_causal=True))
    assert np.mean(np.abs(out - exact)) < error


def outlier_keys(k, w, position):
    """Keys with, at `position`, a huge key and a key along a projection
    row at the norm that maximizes its feature (the two ways a later key
    can raise a max-based stabilizer)."""
    huge, aligned = k.copy(), k.copy()
    huge[:, position] = 1e3
    dim = k.shape[-1]
    row = np.asarray(w)[np.argmax(np.linalg.norm(np.asarray(w), axis=1))]
    aligned[:, position] = row * dim**0.25
    return huge, aligned


@pytest.mark.parametrize("scale", [0.7, 3.0])
@pytest.mark.parametrize("chunk_size", [8, 128])
@pytest.mark.parametrize("feature_map", FEATURE_MAPS)
def test_a_later_outlier_key_changes_no_earlier_output(
    feature_map, chunk_size, scale
):
    # scale=3: the earlier keys have large norms and small features, which
    # a stabilizer shared with the outlier would flush to zero.
    q, k, v = random_inputs(11, length=40, scale=scale)
    w = sample_projection_matrix(32, 16, seed=0)
    position = 21  # inside a chunk, not at its start
    options = dict(
        feature_map=feature_map,
        is_causal=True,
        chunk_size=chunk_size,
        moments=reference.fixed_moments(feature_map, q, k),
    )
    base = np.asarray(favor_attention(q, k, v, w, **options))
    for outlier in outlier_keys(k, w, position):
        v_outlier = v.copy()
        v_outlier[:, position] = 1e4
        out = np.asarray(favor_attention(q, outlier, v_outlier, w, **options))
        assert np.all(np.isfinite(out))
        np.testing.assert_allclose(
            out[:, :position], base[:, :position], rtol=1e-5, atol=1e-6
        )


@pytest.mark.tensorflow
@pytest.mark.parametrize("feature_map", FEATURE_MAPS)
def test_no_gradient_from_the_future(feature_map):
    q, k, v = (tf.constant(x) for x in random_inputs(12, length=24))
    w = sample_projection_matrix(16, 16, seed=0)
    position = 9
    with tf.GradientTape(persistent=True) as tape:
        tape.watch([q, k, v])
        out = favor_attention(
            q,
            k,
            v,
            w,
            feature_map=feature_map,
            is_causal=True,
            chunk_size=8,
            moments=reference.fixed_moments(feature_map, q, k),
        )
        loss = tf.reduce_sum(out[:, position] ** 2)
    for grad in tape.gradient(loss, [q, k, v]):
        grad = grad.numpy()
        assert np.all(np.isfinite(grad))
        np.testing.assert_array_equal(grad[:, position + 1 :], 0.0)
        assert np.any(grad[:, : position + 1] != 0)


@pytest.mark.tensorflow
@pytest.mark.parametrize("feature_map", FEATURE_MAPS)
def test_gradients_finite_with_padding_and_outliers(feature_map):
    q, k, v = (tf.constant(x) for x in random_inputs(13, length=24))
    w = sample_projection_matrix(16, 16, seed=0)
    key_mask = np.ones((2, 24), bool)
    key_mask[0, :10] = False
    with tf.GradientTape() as tape:
        tape.watch([q, k, v])
        out = favor_attention(
            q,
            k * 30.0,
            v,
            w,
            feature_map=feature_map,
            is_causal=True,
            key_mask=key_mask,
            chunk_size=8,
            moments=reference.fixed_moments(feature_map, q, k),
        )
        loss = tf.reduce_sum(out**2)
    for grad in tape.gradient(loss, [q, k, v]):
        assert np.all(np.isfinite(grad.numpy()))


@pytest.mark.parametrize("feature_map", FEATURE_MAPS)
def test_state_continues_the_sequence(feature_map):
    q, k, v = random_inputs(14, length=45)
    w = sample_projection_matrix(32, 16, seed=0)
    moments = reference.fixed_moments(feature_map, q, k)
    full, full_state = causal_favor_attention(
        q, k, v, w, feature_map=feature_map, chunk_size=16, moments=moments
    )
    state = empty_state(2, 2, num_features(feature_map, 32), 16)
    pieces = []
    for start, stop in ((0, 1), (1, 20), (20, 21), (21, 45)):
        out, state = causal_favor_attention(
            q[:, start:stop],
            k[:, start:stop],
            v[:, start:stop],
            w,
            feature_map=feature_map,
            chunk_size=16,
            initial_state=state,
            moments=moments,
        )
        pieces.append(np.asarray(out))
    np.testing.assert_allclose(
        np.concatenate(pieces, axis=1), np.asarray(full), atol=1e-5, rtol=1e-5
    )
    # Same state up to the common scale exp(-R) of its sums.
    full_state, state = np.asarray(full_state), np.asarray(state)
    np.testing.assert_allclose(full_state[..., -1], state[..., -1], atol=1e-5)
    np.testing.assert_allclose(
        full_state[..., :-1], state[..., :-1], atol=1e-4, rtol=1e-4
    )


@pytest.mark.parametrize("feature_map", FEATURE_MAPS)
def test_token_by_token_decoding_equals_full_pass(feature_map):
    q, k, v = random_inputs(15, length=33)
    w = sample_projection_matrix(32, 16, seed=0)
    moments = reference.fixed_moments(feature_map, q, k)
    full = np.asarray(
        favor_attention(
            q, k, v, w, feature_map=feature_map, is_causal=True, moments=moments
        )
    )
    state = empty_state(2, 2, num_features(feature_map, 32), 16)
    outputs = []
    for i in range(33):
        out, state = causal_favor_attention(
            q[:, i : i + 1],
            k[:, i : i + 1],
            v[:, i : i + 1],
            w,
            feature_map=feature_map,
            initial_state=state,
            moments=moments,
        )
        outputs.append(np.asarray(out))
    np.testing.assert_allclose(
        np.concatenate(outputs, axis=1), full, atol=1e-5, rtol=1e-5
    )
    assert state.shape == (2, 2, num_features(feature_map, 32), 19)


def test_decoding_with_a_left_padded_prompt():
    # Keys of large norm after a masked chunk: the empty chunk's stabilizer
    # must not wash them out.
    q, k, v = random_inputs(16, length=20, scale=4.0)
    w = sample_projection_matrix(32, 16, seed=0)
    key_mask = np.ones((2, 20), bool)
    key_mask[:, :8] = False
    out = np.asarray(
        favor_attention(
            q, k, v, w, is_causal=True, key_mask=key_mask, chunk_size=8
        )
    )
    expected = reference.favor(
        q, k, v, w, "softmax", reference.causal_mask(20, key_mask)
    )
    np.testing.assert_allclose(out, expected, atol=1e-4, rtol=1e-3)
    assert np.all(np.abs(out[:, 8:]) > 0)


def test_bad_chunk_size():
    q, k, v = random_inputs(0, length=8)
    w = sample_projection_matrix(8, 16, seed=0)
    with pytest.raises(ValueError, match="chunk_size"):
        causal_favor_attention(q, k, v, w, chunk_size=0)


def test_state_counts_its_keys():
    q, k, v = random_inputs(17, length=30)
    w = sample_projection_matrix(16, 16, seed=0)
    key_mask = np.ones((2, 30), bool)
    key_mask[1, 20:] = False
    _, state = causal_favor_attention(
        q, k, v, w, key_mask=key_mask, chunk_size=8
    )
    np.testing.assert_array_equal(state_length(state), [30, 20])
    _, state = causal_favor_attention(
        q[:, :5], k[:, :5], v[:, :5], w, initial_state=state
    )
    np.testing.assert_array_equal(state_length(state), [35, 25])


def test_symbolic_inputs_with_an_unknown_batch_size():
    import keras

    sequence = keras.Input((10, 2, 4))
    w = sample_projection_matrix(8, 4, seed=0)
    out, state = causal_favor_attention(sequence, sequence, sequence, w)
    assert tuple(out.shape) == (None, 10, 2, 4)
    assert tuple(state.shape) == (None, 2, 8, 7)
    model = keras.Model(sequence, out)
    x = np.random.default_rng(0).normal(size=(3, 10, 2, 4)).astype("float32")
    np.testing.assert_allclose(
        model(x), causal_favor_attention(x, x, x, w)[0], atol=1e-6
    )


@pytest.mark.tensorflow
@pytest.mark.parametrize("length", [64, 50])
def test_compiled_equals_eager(length):
    """Traced with unknown lengths inside the scans (a TensorFlow graph, an
    XLA program), the form gives the eager result."""
    q, k, v = random_inputs(0, length=length)
    w = sample_projection_matrix(32, 16, seed=0)
    eager = causal_favor_attention(q, k, v, w, chunk_size=8)
    for jit_compile in (False, True):
        compiled = tf.function(
            lambda q, k, v: causal_favor_attention(q, k, v, w, chunk_size=8),
            jit_compile=jit_compile,
        )(q, k, v)
        for ours, expected in zip(compiled, eager, strict=True):
            np.testing.assert_allclose(ours, expected, atol=1e-5)


@pytest.mark.parametrize(
    "length, chunk_size, feature_map",
    [
        (300, 2, "softmax"),
        (300, 2, "dense_exponential"),
        (1100, 1, "softmax"),
        (1100, 32, "softmax"),
    ],
)
def test_many_chunks_equal_the_quadratic_form(length, chunk_size, feature_map):
    """Hundreds of chunks in segments that carry the state, and one pass of
    1,100 tokens in 35 chunks, with keys of growing norm (a log-scale that
    rises along the sequence) and padded keys across segment and chunk
    edges."""
    q, k, v = random_inputs(11, batch=1, length=length, heads=1)
    k = k * np.linspace(0.2, 3.0, length)[None, :, None, None]
    w = sample_projection_matrix(16, 16, seed=0)
    key_mask = np.ones((1, length), bool)
    key_mask[0, 30:90] = False
    moments = reference.fixed_moments(feature_map, q, k)
    out, state = causal_favor_attention(
        q,
        k,
        v,
        w,
        feature_map,
        key_mask=key_mask,
        chunk_size=chunk_size,
        moments=moments,
    )
    expected = reference.favor(
        q,
        k,
        v,
        w,
        feature_map,
        reference.causal_mask(length, key_mask),
        moments=moments,
    )
    np.testing.assert_allclose(np.asarray(out), expected, atol=1e-5, rtol=1e-4)
    assert float(state_length(state)[0]) == length - 60


@pytest.mark.tensorflow
@pytest.mark.parametrize(
    "masked, feature_map",
    [(False, "softmax"), (True, "softmax"), (True, "dense_exponential")],
)
def test_segments_equal_one_pass_with_gradients(
    monkeypatch, masked, feature_map
):
    """Past 64 chunks the form runs in rematerialized segments: outputs,
    state and gradients are those of one pass, eager and compiled."""
    q, k, v = random_inputs(12, length=300)
    w = sample_projection_matrix(32, 16, seed=0)
    key_mask = np.ones((2, 300), bool)
    if masked:
        key_mask[1, 100:180] = False
    moments = reference.fixed_moments(feature_map, q, k)

    def outputs_and_gradients(q, k, v):
        with tf.GradientTape() as tape:
            tape.watch([q, k, v])
            out, state = causal_favor_attention(
                q,
                k,
                v,
                w,
                key_mask=key_mask if masked else None,
                chunk_size=2,
                initial_state=None,
                feature_map=feature_map,
                moments=moments,
            )
            loss = tf.reduce_sum(out**2) + tf.reduce_sum(state[..., :-2])
        return [out, state] + tape.gradient(loss, [q, k, v])

    q, k, v = (tf.constant(x) for x in (q, k, v))
    segmented = [
        outputs_and_gradients(q, k, v),
        tf.function(outputs_and_gradients)(q, k, v),
        tf.function(outputs_and_gradients, jit_compile=True)(q, k, v),
    ]
    monkeypatch.setattr(causal, "_ONE_PASS_CHUNKS", 10**6)
    one_pass = outputs_and_gradients(q, k, v)
    for result in segmented:
        for ours, expected in zip(result, one_pass, strict=True):
            np.testing.assert_allclose(ours, expected, atol=1e-4, rtol=1e-4)


def test_segments_with_symbolic_inputs():
    import keras

    sequence = keras.Input((200, 2, 4))
    w = sample_projection_matrix(8, 4, seed=0)
    out, state = causal_favor_attention(
        sequence, sequence, sequence, w, chunk_size=2
    )
    assert tuple(out.shape) == (None, 200, 2, 4)
    assert tuple(state.shape) == (None, 2, 8, 7)
    model = keras.Model(sequence, out)
    x = np.random.default_rng(0).normal(size=(3, 200, 2, 4)).astype("float32")
    np.testing.assert_allclose(
        model(x),
        causal_favor_attention(x, x, x, w, chunk_size=2)[0],
        atol=1e-6,
    )
