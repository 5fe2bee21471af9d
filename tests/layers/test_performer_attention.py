import os

import keras
import numpy as np
import pytest
import tensorflow as tf

import keras_performer
from keras_performer import PerformerAttention
from keras_performer.ops import FEATURE_MAPS
from keras_performer.ops import POSITIVE_FEATURE_MAPS
from tests.helpers import jit_compile
from tests.helpers import outputs_and_gradients
from tests.helpers import run_layer_test


def inputs(seed=0, batch=2, length=32, dim=16, scale=1.0):
    rng = np.random.default_rng(seed)
    return (scale * rng.normal(size=(batch, length, dim))).astype("float32")


def test_sequential_self_attention():
    model = keras.Sequential(
        [
            keras.Input((32, 16)),
            PerformerAttention(num_heads=2, key_dim=8, seed=0),
        ]
    )
    x = inputs()
    out = model(x)
    assert out.shape == (2, 32, 16)
    layer = model.layers[0]
    np.testing.assert_allclose(out, layer(x, x, x), atol=1e-6)


def test_output_shape_and_value_dim():
    layer = PerformerAttention(
        num_heads=3, key_dim=4, value_dim=5, output_shape=7, seed=0
    )
    query, value = inputs(length=10), inputs(1, length=12, dim=6)
    out = layer(query, value)
    assert out.shape == (2, 10, 7)
    assert layer.compute_output_shape((2, 10, 16), (2, 12, 6)) == (2, 10, 7)
    assert layer.projection_matrix.shape == (256, 4)


@pytest.mark.parametrize(
    "use_bias, use_gate", [(True, False), (False, False), (True, True)]
)
def test_loads_trained_multi_head_attention_weights(use_bias, use_gate):
    x = inputs(scale=0.5, length=48, dim=32)
    mha = keras.layers.MultiHeadAttention(
        num_heads=4, key_dim=8, use_bias=use_bias, use_gate=use_gate, seed=0
    )
    expected = np.asarray(mha(x, x))
    errors = []
    for num_features in (16, 256, 4096):
        layer = PerformerAttention(
            num_heads=4,
            key_dim=8,
            use_bias=use_bias,
            use_gate=use_gate,
            num_random_features=num_features,
            seed=1,
        )
        layer(x)
        assert len(layer.trainable_weights) == len(mha.trainable_weights)
        for ours, theirs in zip(
            layer.trainable_weights, mha.trainable_weights, strict=True
        ):
            assert ours.shape == theirs.shape
            ours.assign(theirs)
        out = np.asarray(layer(x))
        errors.append(np.mean((out - expected) ** 2) / np.mean(expected**2))
    assert errors[0] > errors[1] > errors[2]
    assert errors[2] < 0.01


def test_projection_is_a_fixed_non_trainable_weight():
    layer = PerformerAttention(num_heads=2, key_dim=8, seed=3)
    layer(inputs())
    assert layer.projection_matrix.trainable is False
    assert layer.projection_matrix.dtype == "float32"
    assert any(
        w is layer.projection_matrix for w in layer.non_trainable_weights
    )
    assert all(
        w is not layer.projection_matrix for w in layer.trainable_weights
    )
    expected = keras_performer.ops.sample_projection_matrix(256, 8, seed=3)
    np.testing.assert_array_equal(layer.projection_matrix, expected)


def test_config_round_trip():
    layer = PerformerAttention(
        num_heads=2,
        key_dim=8,
        value_dim=4,
        dropout=0.1,
        use_bias=False,
        output_shape=5,
        feature_map="hyperbolic",
        num_random_features=64,
        projection_coupling="simplex",
        projection_norm="sqrt_d",
        chunk_size=32,
        seed=7,
        kernel_regularizer="l2",
    )
    config = layer.get_config()
    restored = PerformerAttention.from_config(config)
    assert restored.get_config() == config
    for name in (
        "feature_map",
        "num_random_features",
        "projection_coupling",
        "projection_norm",
        "chunk_size",
        "seed",
    ):
        assert getattr(restored, name) == getattr(layer, name)


@pytest.mark.parametrize("use_causal_mask", [False, True])
def test_keras_file_round_trip(tmp_path, use_causal_mask):
    inp = keras.Input((32, 16))
    x = PerformerAttention(num_heads=2, key_dim=8, feature_map="hyperbolic")(
        inp, use_causal_mask=use_causal_mask
    )
    model = keras.Model(inp, keras.layers.Dense(3)(x))
    path = os.path.join(tmp_path, "model.keras")
    model.save(path)
    loaded = keras.saving.load_model(path, safe_mode=True)
    x = inputs()
    np.testing.assert_allclose(model(x), loaded(x), atol=1e-6)
    np.testing.assert_array_equal(
        model.layers[1].projection_matrix, loaded.layers[1].projection_matrix
    )


@pytest.mark.parametrize(
    "kwargs, call_kwargs, shapes",
    [
        ({}, {}, [(2, 32, 16)]),
        ({"dropout": 0.1}, {"use_causal_mask": True}, [(2, 32, 16)]),
        ({"value_dim": 4, "output_shape": 5}, {}, [(2, 8, 16), (2, 12, 6)]),
        (
            {"use_gate": True},
            {"use_causal_mask": True},
            [(2, 8, 16), (2, 12, 6)],
        ),
    ],
)
def test_layer_behaves_as_a_keras_layer(tmp_path, kwargs, call_kwargs, shapes):
    run_layer_test(
        lambda: PerformerAttention(num_heads=2, key_dim=8, seed=0, **kwargs),
        [inputs(i, *shape) for i, shape in enumerate(shapes)],
        call_kwargs,
        tmp_path,
    )


@pytest.mark.parametrize(
    "mixed_policy", ["mixed_float16", "mixed_bfloat16"], indirect=True
)
@pytest.mark.parametrize("use_causal_mask", [False, True])
@pytest.mark.parametrize("feature_map", POSITIVE_FEATURE_MAPS)
def test_mixed_precision(mixed_policy, feature_map, use_causal_mask):
    layer = PerformerAttention(
        num_heads=2, key_dim=8, feature_map=feature_map, seed=0
    )
    kwargs = {"use_causal_mask": use_causal_mask}
    # Inputs of large norm: exp features would overflow in half precision.
    out = layer(inputs(scale=100.0), **kwargs)
    assert keras.backend.standardize_dtype(out.dtype) == mixed_policy[6:]
    assert layer.projection_matrix.dtype == "float32"
    assert np.all(np.isfinite(np.asarray(out, np.float32)))
    # Ordinary inputs: float32 results within half precision.
    x = inputs()
    reference = PerformerAttention.from_config(
        {**layer.get_config(), "dtype": "float32"}
    )
    reference(x)
    reference.set_weights(layer.get_weights())
    expected = np.asarray(reference(x, **kwargs))
    error = np.abs(np.asarray(layer(x, **kwargs), np.float32) - expected)
    assert np.max(error) < 0.05 * np.max(np.abs(expected))


@pytest.mark.parametrize("use_causal_mask", [False, True])
@pytest.mark.parametrize("feature_map", FEATURE_MAPS)
def test_padding_masks(feature_map, use_causal_mask):
    layer = PerformerAttention(
        num_heads=2, key_dim=8, feature_map=feature_map, seed=0
    )
    x = inputs()
    valid = np.ones((2, 32), bool)
    valid[0, 20:] = False
    valid[1, 25:] = False
    junk = x.copy()
    junk[~valid] = 1e3
    kwargs = {"use_causal_mask": use_causal_mask}
    out = np.asarray(layer(x, query_mask=valid, value_mask=valid, **kwargs))
    np.testing.assert_array_equal(
        out, layer(junk, query_mask=valid, value_mask=valid, **kwargs)
    )
    # Outputs at valid positions are those of the unpadded sequence.
    short = np.asarray(layer(x[:1, :20], **kwargs))
    np.testing.assert_allclose(out[:1, :20], short, atol=1e-5, rtol=1e-5)
    # The same mask as `key_mask`, and as an `attention_mask` pattern.
    from_key_mask = layer(x, query_mask=valid, key_mask=valid, **kwargs)
    np.testing.assert_allclose(out, from_key_mask, atol=1e-6)
    pattern = valid[:, :, None] & valid[:, None, :]
    if use_causal_mask:
        pattern &= np.tril(np.ones((32, 32), bool))
    from_pattern = layer(x, attention_mask=pattern, **kwargs)
    np.testing.assert_allclose(out, from_pattern, atol=1e-6)
    # A plain key padding pattern (query rows all equal) also works.
    keys_only = np.broadcast_to(valid[:, None, :], (2, 32, 32))
    expected = layer(x, key_mask=valid, **kwargs)
    np.testing.assert_allclose(
        layer(x, attention_mask=keys_only, **kwargs), expected, atol=1e-6
    )


def test_implicit_keras_masks():
    tokens = np.array([[3, 5, 7, 2, 0, 0], [4, 4, 0, 0, 0, 0]])
    embedding = keras.layers.Embedding(10, 8, mask_zero=True)
    layer = PerformerAttention(num_heads=2, key_dim=4, seed=0)
    out = np.asarray(layer(embedding(tokens)))
    short = np.asarray(layer(embedding(tokens[:1, :4])))
    np.testing.assert_allclose(out[:1, :4], short, atol=1e-6)
    np.testing.assert_array_equal(
        out[0, 4:], np.broadcast_to(layer._output_dense.bias, (2, 8))
    )


@pytest.mark.parametrize("use_causal_mask", [False, True])
def test_attention_scores(use_causal_mask):
    layer = PerformerAttention(num_heads=2, key_dim=8, seed=0)
    x = inputs(length=12)
    out, scores = layer(
        x, return_attention_scores=True, use_causal_mask=use_causal_mask
    )
    scores = np.asarray(scores)
    assert scores.shape == (2, 2, 12, 12)
    np.testing.assert_allclose(scores.sum(-1), 1.0, atol=1e-5)
    assert np.all(scores >= 0)
    if use_causal_mask:
        assert np.all(np.triu(scores, k=1) == 0)
    np.testing.assert_allclose(
        out, layer(x, use_causal_mask=use_causal_mask), atol=1e-6
    )


@pytest.mark.parametrize("feature_map", FEATURE_MAPS)
def test_causal_output_ignores_the_future(feature_map):
    layer = PerformerAttention(
        num_heads=2, key_dim=8, feature_map=feature_map, seed=0
    )
    x = inputs()
    changed = x.copy()
    changed[:, 20:] = 50.0
    a = np.asarray(layer(x, use_causal_mask=True))
    b = np.asarray(layer(changed, use_causal_mask=True))
    np.testing.assert_allclose(a[:, :20], b[:, :20], atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("feature_map", FEATURE_MAPS)
def test_cached_decoding_equals_full_pass(feature_map):
    layer = PerformerAttention(
        num_heads=2, key_dim=8, feature_map=feature_map, chunk_size=8, seed=0
    )
    # Moderate norms: trig denominators near zero amplify round-off.
    x = inputs(length=20, scale=0.5)
    full = np.asarray(layer(x, use_causal_mask=True))
    cache = layer.get_initial_cache(2)
    steps = []
    for i in range(20):
        out, cache = layer(x[:, i : i + 1], cache=cache, cache_update_index=i)
        steps.append(np.asarray(out))
    np.testing.assert_allclose(
        np.concatenate(steps, axis=1), full, atol=1e-5, rtol=1e-5
    )
    assert tuple(cache.shape) == tuple(layer.get_initial_cache(2).shape)
    # A prompt at once, then tokens: the same.
    out, cache = layer(x[:, :15], cache=layer.get_initial_cache(2))
    rest, _ = layer(x[:, 15:], cache=cache)
    np.testing.assert_allclose(
        np.concatenate([out, rest], axis=1), full, atol=1e-5, rtol=1e-5
    )


@pytest.mark.tensorflow
def test_decoding_in_a_compiled_while_loop():
    layer = PerformerAttention(num_heads=2, key_dim=8, seed=0)
    x = inputs(length=10)
    full = np.asarray(layer(x, use_causal_mask=True))

    @tf.function(jit_compile=True)
    def decode(x):
        def body(i, outputs, cache):
            token = keras.ops.slice(x, (0, i, 0), (2, 1, 16))
            out, cache = layer(token, cache=cache, cache_update_index=i)
            outputs = keras.ops.slice_update(outputs, (0, i, 0), out)
            return i + 1, outputs, cache

        _, outputs, _ = keras.ops.while_loop(
            lambda i, outputs, cache: i < 10,
            body,
            (0, keras.ops.zeros((2, 10, 16)), layer.get_initial_cache(2)),
        )
        return outputs

    np.testing.assert_allclose(decode(x), full, atol=1e-5, rtol=1e-5)


def test_dropout_only_in_training():
    layer = PerformerAttention(num_heads=2, key_dim=8, dropout=0.5, seed=0)
    x = inputs()
    np.testing.assert_array_equal(layer(x), layer(x, training=False))
    assert not np.allclose(layer(x, training=True), layer(x))


def test_key_value_cache_equals_attention_to_the_source():
    query, source = inputs(length=5), inputs(1, length=20)
    layer = PerformerAttention(num_heads=2, key_dim=8, seed=0)
    with pytest.raises(ValueError, match="must be built"):
        layer.key_value_cache(source)
    expected = np.asarray(layer(query, source))
    cache = layer.key_value_cache(source)
    assert tuple(cache.shape) == tuple(layer.get_initial_cache(2).shape)
    np.testing.assert_allclose(
        layer.attend_to_cache(query, cache), expected, atol=1e-5, rtol=1e-5
    )
    rotary = PerformerAttention(2, 8, rotary_max_wavelength=100)
    rotary(query)
    with pytest.raises(ValueError, match="no positions"):
        rotary.attend_to_cache(query, cache)


def test_cache_rejects_scores_and_attention_mask():
    layer = PerformerAttention(num_heads=2, key_dim=8, seed=0)
    x = inputs(length=1)
    cache = layer.get_initial_cache(2)
    with pytest.raises(ValueError, match="return_attention_scores"):
        layer(x, cache=cache, return_attention_scores=True)
    with pytest.raises(ValueError, match="attention_mask"):
        layer(x, cache=cache, attention_mask=np.ones((2, 1, 1), bool))
    band = PerformerAttention(num_heads=2, key_dim=8, sliding_window=4)
    band(inputs())
    with pytest.raises(ValueError, match="sliding_window=4"):
        band(x, cache=band.get_initial_cache(2))


@pytest.mark.parametrize(
    "kwargs,name",
    [
        ({"num_heads": 0}, "num_heads"),
        ({"key_dim": 2.0}, "key_dim"),
        ({"value_dim": -1}, "value_dim"),
        ({"dropout": 1.0}, "dropout"),
        ({"output_shape": (3, 0)}, "output_shape"),
        ({"attention_axes": (1, 2)}, "attention_axes"),
        ({"feature_map": "cosine"}, "feature_map"),
        ({"num_random_features": 0}, "num_random_features"),
        ({"orthogonal": "yes"}, "orthogonal"),
        ({"projection_norm": "unit"}, "projection_norm"),
        ({"chunk_size": 0}, "chunk_size"),
        ({"seed": 1.5}, "seed"),
    ],
)
def test_bad_arguments(kwargs, name):
    with pytest.raises(ValueError, match=f"Received: {name}="):
        PerformerAttention(**{"num_heads": 2, "key_dim": 8, **kwargs})


def test_bad_shapes():
    layer = PerformerAttention(num_heads=2, key_dim=8)
    with pytest.raises(ValueError, match="rank 3"):
        layer(np.zeros((2, 4, 4, 8), "float32"))
    layer = PerformerAttention(num_heads=2, key_dim=8)
    with pytest.raises(ValueError, match="same length"):
        layer(inputs(length=4), inputs(length=5), inputs(length=6))


EXTREME_CASES = [
    "large",
    "zeros",
    "all_masked",
    "length_1",
    "odd_length",
    "batch_0",
]


def extreme_inputs(case):
    """Inputs `(batch, 37, 16)` (chunks of 16: not a multiple) and a mask."""
    x = inputs(7, length=37)
    mask = None
    if case == "large":
        x = 100 * x
    elif case == "zeros":
        x = np.zeros_like(x)
    elif case == "all_masked":
        mask = np.zeros(x.shape[:2], bool)
    elif case == "length_1":
        x = x[:, :1]
    elif case == "batch_0":
        x = x[:0]
    return x, mask


def extreme_outputs_and_gradients(feature_map, is_causal):
    """For each of EXTREME_CASES, its name, inputs, and the outputs and
    gradients of one layer (the cases share it: only the shapes differ)."""
    layer = PerformerAttention(
        num_heads=2, key_dim=8, feature_map=feature_map, chunk_size=16, seed=0
    )
    for case in EXTREME_CASES:
        x, mask = extreme_inputs(case)

        def call(x, mask=mask):
            return layer(
                x,
                x,
                query_mask=mask,
                value_mask=mask,
                use_causal_mask=is_causal,
            )

        call(x)
        yield (case, x, *outputs_and_gradients(layer, call, [x]))


@pytest.mark.parametrize("is_causal", [False, True])
@pytest.mark.parametrize("feature_map", FEATURE_MAPS)
def test_extreme_inputs_give_finite_outputs_and_gradients(
    feature_map, is_causal
):
    for case, x, out, gradients in extreme_outputs_and_gradients(
        feature_map, is_causal
    ):
        assert out.shape == tuple(x.shape), case
        assert np.all(np.isfinite(out)), case
        for gradient in gradients:
            assert np.all(np.isfinite(gradient)), case


@pytest.mark.parametrize(
    "mixed_policy",
    # bfloat16 has float32's range: float16 is the harder case.
    [
        "mixed_float16",
        pytest.param("mixed_bfloat16", marks=pytest.mark.slow_off_tensorflow),
    ],
    indirect=True,
)
@pytest.mark.parametrize("is_causal", [False, True])
@pytest.mark.parametrize(
    "feature_map", ["softmax", "hyperbolic", "relu", "dense_exponential"]
)
def test_extreme_inputs_under_mixed_precision(
    mixed_policy, feature_map, is_causal
):
    for case, _, out, gradients in extreme_outputs_and_gradients(
        feature_map, is_causal
    ):
        assert np.all(np.isfinite(out)), case
        if mixed_policy == "mixed_float16" and case == "large":
            # float16 gradients of a loss this large overflow without loss
            # scaling (keras.optimizers.LossScaleOptimizer, which fit
            # uses); MultiHeadAttention's outputs already overflow here.
            continue
        for gradient in gradients:
            assert np.all(np.isfinite(gradient)), case


def test_a_nan_input_spoils_its_own_sequence_only():
    x = inputs(8, length=12)
    layer = PerformerAttention(num_heads=2, key_dim=8, seed=0)
    clean = np.asarray(layer(x))
    x[0, 3, 0] = np.nan
    out = np.asarray(layer(x))
    assert np.all(np.isnan(out[0]))
    np.testing.assert_array_equal(out[1], clean[1])


@pytest.mark.parametrize(
    "arguments, match",
    [
        ({"query_mask": np.ones((2, 5), bool)}, "query_mask"),
        ({"value_mask": np.ones((2, 5), bool)}, "value_mask"),
        ({"key_mask": np.ones((2, 32, 1), bool)}, "key_mask"),
        ({"attention_mask": np.ones((2, 32, 5), bool)}, "attention_mask"),
    ],
)
def test_a_mask_of_the_wrong_shape_is_named(arguments, match):
    x = inputs()
    layer = PerformerAttention(num_heads=2, key_dim=8, seed=0)
    with pytest.raises(ValueError, match=match):
        layer(x, x, **arguments)
    layer(x)
    with pytest.raises(ValueError, match="`query` must have rank 3"):
        layer(x[0])


def test_configs_are_checked_and_never_executed(tmp_path):
    config = PerformerAttention(num_heads=2, key_dim=8, seed=0).get_config()
    # Keras wraps the layer's ValueError into a TypeError naming the class.
    with pytest.raises((TypeError, ValueError), match="feature_map=gaussian"):
        PerformerAttention.from_config({**config, "feature_map": "gaussian"})
    model = keras.Sequential(
        [
            keras.Input((8, 16)),
            keras_performer.PerformerEncoder(16, 2, activation=lambda x: x),
        ]
    )
    path = os.path.join(tmp_path, "lambda.keras")
    with pytest.warns(UserWarning, match="lambda"):
        model.save(path)
    # The lambda's bytecode in the file is refused, not run.
    with pytest.raises((TypeError, ValueError), match="activation"):
        keras.saving.load_model(path, safe_mode=True)


@pytest.mark.slow_off_tensorflow  # The draws are NumPy's on every backend.
def test_a_seed_gives_the_same_outputs_in_every_process():
    import random
    import subprocess
    import sys

    code = (
        "import numpy as np, keras, keras_performer;"
        "layer = keras_performer.PerformerAttention(2, 8, seed=3, "
        "kernel_initializer=keras.initializers.GlorotUniform(seed=1));"
        "x = np.random.default_rng(0).normal(size=(2, 32, 16));"
        "out = keras.ops.convert_to_numpy(layer(x.astype('float32')));"
        "print(repr(out.tobytes().hex()))"
    )
    runs = [
        subprocess.run(
            [sys.executable, "-c", code], capture_output=True, text=True
        ).stdout
        for _ in range(2)
    ]
    assert runs[0] and runs[0] == runs[1]
    # Here too, and with Python's and NumPy's global random states left as
    # they were.
    python_state, numpy_state = random.getstate(), np.random.get_state()
    layer = PerformerAttention(
        2,
        8,
        seed=3,
        kernel_initializer=keras.initializers.GlorotUniform(seed=1),
    )
    x = np.random.default_rng(0).normal(size=(2, 32, 16)).astype("float32")
    here = np.asarray(layer(x)).tobytes().hex()
    assert repr(here) == runs[0].strip()
    assert random.getstate() == python_state
    np.testing.assert_array_equal(np.random.get_state()[1], numpy_state[1])


def test_a_multi_head_attention_config_loads():
    mha = keras.layers.MultiHeadAttention(
        num_heads=2, key_dim=4, use_gate=True, dropout=0.1, seed=0
    )
    layer = PerformerAttention.from_config(mha.get_config())
    assert (layer.num_heads, layer.key_dim, layer.use_gate) == (2, 4, True)
    assert PerformerAttention(2, 4, flash_attention=True).flash_attention
    assert PerformerAttention(2, 4, sliding_window=3).sliding_window == 3
    with pytest.raises(ValueError, match="sliding_window=0"):
        PerformerAttention(2, 4, sliding_window=0)


def test_activity_regularizer_losses_as_multi_head_attention():
    x = inputs()
    losses = []
    for cls in (keras.layers.MultiHeadAttention, PerformerAttention):
        layer = cls(num_heads=2, key_dim=8, activity_regularizer="l2")
        layer(x, x)
        losses.append(len(layer.losses))
    assert losses[0] == losses[1] == 4


def test_lora_on_the_public_dense_sublayers(tmp_path):
    x = inputs()
    model = keras.Sequential(
        [keras.Input((32, 16)), PerformerAttention(2, 8, seed=0)]
    )
    layer = model.layers[0]
    for dense in (layer.query_dense, layer.key_dense, layer.value_dense):
        dense.enable_lora(2)
    # Bias, LoRA A and B of each projection; the output's kernel and bias.
    assert len(layer.trainable_weights) == 3 * 3 + 2
    model.compile("adam", "mse")
    before = np.asarray(model(x))
    model.fit(x, np.zeros_like(x), epochs=2, verbose=0)
    after = np.asarray(model(x))
    assert np.abs(after - before).max() > 1e-4
    path = os.path.join(tmp_path, "lora.keras")
    model.save(path)
    np.testing.assert_allclose(
        keras.saving.load_model(path)(x), after, atol=1e-6
    )


def test_int8_quantization_trains_and_survives_a_keras_file(tmp_path):
    # (MultiHeadAttention's .keras round trip of an int8 model fails in
    # Keras 3.15: its sublayers are rebuilt in float.)
    x = inputs()
    model = keras.Sequential(
        [keras.Input((32, 16)), PerformerAttention(2, 8, seed=0)]
    )
    expected = np.asarray(model(x))
    model.quantize("int8")
    layer = model.layers[0]
    for dense in (
        layer.query_dense,
        layer.key_dense,
        layer.value_dense,
        layer.output_dense,
    ):
        assert dense.quantization_mode == "int8"
    out = np.asarray(model(x))
    assert np.abs(out - expected).max() < 0.05 * np.abs(expected).max()
    model.compile("adam", "mse")
    model.fit(x, np.zeros_like(x), epochs=2, verbose=0)
    trained = np.asarray(model(x))
    assert np.abs(trained - out).max() > 1e-4  # The biases train.
    for round_trip in range(2):  # A loaded model saves again.
        path = os.path.join(tmp_path, f"int8_{round_trip}.keras")
        model.save(path)
        model = keras.saving.load_model(path)
        assert model.layers[0].query_dense.quantization_mode == "int8"
        np.testing.assert_array_equal(model(x), trained)


class AttentionModel(keras.Model):
    """A subclassed model: its layer's weights are filed under `attention`
    whatever the layer's class."""

    def __init__(self, attention):
        super().__init__()
        self.attention = attention

    def call(self, x):
        return self.attention(x, x)


def attention_model(kind, attention_class, **kwargs):
    def attention():
        return attention_class(num_heads=2, key_dim=8, **kwargs)

    if kind == "subclassed":
        model = AttentionModel(attention())
        model(inputs())
        return model
    x = keras.Input((32, 16))
    y = attention()(x, x)
    y = keras.layers.Dense(16)(y)
    return keras.Model(x, attention()(y, y))


@pytest.mark.parametrize("kind", ["functional", "subclassed"])
@pytest.mark.parametrize("use_gate", [False, True])
@pytest.mark.parametrize("skip_mismatch", [False, True])
def test_load_weights_of_the_same_model_with_multi_head_attention(
    tmp_path, kind, use_gate, skip_mismatch
):
    mha_model = attention_model(
        kind, keras.layers.MultiHeadAttention, use_gate=use_gate, seed=0
    )
    path = os.path.join(tmp_path, "mha.weights.h5")
    mha_model.save_weights(path)
    model = attention_model(kind, PerformerAttention, use_gate=use_gate, seed=1)
    projections = [
        np.asarray(w) for w in model.weights if w.name == "projection_matrix"
    ]
    model.load_weights(path, skip_mismatch=skip_mismatch)
    trainable = model.trainable_weights
    assert len(trainable) == len(mha_model.trainable_weights)
    for ours, theirs in zip(
        trainable, mha_model.trainable_weights, strict=True
    ):
        np.testing.assert_array_equal(ours, theirs)
    kept = [w for w in model.weights if w.name == "projection_matrix"]
    for ours, drawn in zip(kept, projections, strict=True):
        np.testing.assert_array_equal(ours, drawn)
    # Its own file still holds its projections.
    own = os.path.join(tmp_path, "performer.weights.h5")
    model.save_weights(own)
    again = attention_model(kind, PerformerAttention, use_gate=use_gate, seed=2)
    again.load_weights(own)
    for ours, theirs in zip(again.weights, model.weights, strict=True):
        np.testing.assert_array_equal(ours, theirs)


def test_set_weights_takes_a_multi_head_attention_list():
    x = inputs()
    mha = keras.layers.MultiHeadAttention(num_heads=2, key_dim=8, seed=0)
    mha(x, x)
    layer = PerformerAttention(num_heads=2, key_dim=8, seed=1)
    layer(x)
    projection = np.asarray(layer.projection_matrix)
    layer.set_weights(mha.get_weights())
    for ours, theirs in zip(
        layer.trainable_weights, mha.trainable_weights, strict=True
    ):
        np.testing.assert_array_equal(ours, theirs)
    np.testing.assert_array_equal(layer.projection_matrix, projection)
    layer.set_weights(layer.get_weights())  # Its own list still works.
    with pytest.raises(ValueError):
        layer.set_weights(mha.get_weights()[::-1])


@pytest.mark.parametrize("source_length", [20, 32, 45])
def test_causal_cross_attention_with_other_key_lengths(source_length):
    """Query i sees keys j <= i of the (T, S) matrix, as in
    MultiHeadAttention; the estimate tends to it with many features."""
    query = inputs(1, length=32, scale=0.5)
    value = inputs(2, length=source_length, scale=0.5)
    mha = keras.layers.MultiHeadAttention(num_heads=2, key_dim=8, seed=0)
    expected = np.asarray(mha(query, value, use_causal_mask=True))
    layer = PerformerAttention(
        num_heads=2, key_dim=8, num_random_features=4096, seed=0
    )
    layer(query, value)
    layer.set_weights(mha.get_weights())
    out, scores = layer(
        query, value, use_causal_mask=True, return_attention_scores=True
    )
    assert scores.shape == (2, 2, 32, source_length)
    later = np.triu(np.ones((32, source_length), bool), k=1)  # j > i
    assert np.all(np.asarray(scores)[..., later] == 0)
    error = np.mean((np.asarray(out) - expected) ** 2) / np.mean(expected**2)
    assert error < 0.01


def test_four_dimensional_padding_masks():
    x = inputs()
    key_mask = np.ones((2, 32), bool)
    key_mask[0, 20:] = False
    mask = np.broadcast_to(key_mask[:, None, :], (2, 32, 32))
    layer = PerformerAttention(num_heads=2, key_dim=8, seed=0)
    expected = np.asarray(layer(x, x, attention_mask=mask))
    for heads in (1, 2):
        mask4 = np.broadcast_to(mask[:, None], (2, heads, 32, 32))
        np.testing.assert_array_equal(
            layer(x, x, attention_mask=mask4), expected
        )


def test_multi_axis_output_shape_as_multi_head_attention(tmp_path):
    x = inputs(scale=0.5)
    mha = keras.layers.MultiHeadAttention(
        num_heads=2, key_dim=8, output_shape=(2, 4), seed=0
    )
    expected = np.asarray(mha(x, x))
    layer = PerformerAttention(
        num_heads=2,
        key_dim=8,
        output_shape=(2, 4),
        num_random_features=4096,
        seed=0,
    )
    layer(x)
    layer.set_weights(mha.get_weights())
    out = np.asarray(layer(x))
    assert out.shape == expected.shape == (2, 32, 2, 4)
    assert layer.compute_output_shape(x.shape) == (2, 32, 2, 4)
    assert np.mean((out - expected) ** 2) / np.mean(expected**2) < 0.01
    restored = PerformerAttention.from_config(layer.get_config())
    assert restored.compute_output_shape(x.shape) == (2, 32, 2, 4)


def test_compute_output_shape_checks_key_and_value():
    layer = PerformerAttention(num_heads=2, key_dim=8)
    for other in (keras.layers.MultiHeadAttention(num_heads=2, key_dim=8),):
        with pytest.raises(ValueError):
            other.compute_output_shape((2, 8, 16), (2, 10, 16), (2, 12, 16))
    with pytest.raises(ValueError, match="same length"):
        layer.compute_output_shape((2, 8, 16), (2, 10, 16), (2, 12, 16))
    assert layer.compute_output_shape((2, 8, 16), (2, 10, 4)) == (2, 8, 16)


def test_long_causal_sequences_train_in_segments(monkeypatch):
    """Past 64 chunks the causal form runs in rematerialized segments: the
    layer gives the one-pass outputs and gradients, and trains with XLA."""
    from keras_performer.ops import causal

    x = inputs(length=200)
    layer = PerformerAttention(num_heads=2, key_dim=8, chunk_size=2, seed=0)

    def call(x):
        return layer(x, use_causal_mask=True)

    call(x)
    segmented = outputs_and_gradients(layer, call, [x])
    with monkeypatch.context() as patch:
        patch.setattr(causal, "_ONE_PASS_CHUNKS", 10**6)
        one_pass = outputs_and_gradients(layer, call, [x])
    for ours, expected in zip(
        [segmented[0]] + segmented[1], [one_pass[0]] + one_pass[1], strict=True
    ):
        np.testing.assert_allclose(ours, expected, atol=1e-4, rtol=1e-4)
    sequence = keras.Input((200, 16))
    model = keras.Model(
        sequence,
        PerformerAttention(2, 8, chunk_size=2, seed=0)(
            sequence, sequence, use_causal_mask=True
        ),
    )
    model.compile("adam", "mse", jit_compile=jit_compile())
    history = model.fit(x, np.zeros_like(x), epochs=3, verbose=0)
    assert history.history["loss"][-1] < history.history["loss"][0]


@pytest.mark.slow
@pytest.mark.skipif(
    keras.backend.backend() != "torch", reason="torch.compile is PyTorch's"
)
@pytest.mark.parametrize("use_causal_mask", [False, True])
def test_torch_compile_trains_as_eager(use_causal_mask):
    """`jit_compile=True` on PyTorch: about a minute of compiling a model."""
    losses = []
    for jit in (False, True):
        keras.utils.set_random_seed(0)
        sequence = keras.Input((32, 16))
        out = PerformerAttention(2, 8, seed=0)(
            sequence, use_causal_mask=use_causal_mask
        )
        model = keras.Model(sequence, keras.layers.Dense(1)(out))
        model.compile("adam", "mse", jit_compile=jit)
        history = model.fit(
            inputs(batch=4),
            np.ones((4, 32, 1)),
            epochs=3,
            batch_size=2,
            shuffle=False,
            verbose=0,
        )
        losses.append(history.history["loss"])
    np.testing.assert_allclose(losses[1], losses[0], rtol=1e-4)
