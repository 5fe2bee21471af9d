"""Test helpers that run on every Keras backend."""

import os

import keras
import numpy as np
import pytest
from keras import ops


def jit_compile():
    """`jit_compile` for `Model.compile` in the tests: XLA on TensorFlow and
    JAX; on PyTorch, `torch.compile` takes minutes per model on 2 cores, so
    it has its own test (tests/layers/test_performer_attention.py)."""
    return keras.backend.backend() != "torch"


# For tests of XLA-compiled training and nothing else.
needs_xla = pytest.mark.skipif(
    keras.backend.backend() == "torch",
    reason="compiles with XLA; torch.compile has its own test",
)


def draw_weights_with_numpy(model, seed):
    """Replaces the model's weights by NumPy draws, uniform within each
    weight's initial range (constants, as zero biases, stay): the same
    weights on every backend, where Keras's initial draws differ."""
    rng = np.random.default_rng(seed)
    for weight in model.weights:
        values = np.asarray(weight)
        if np.ptp(values) > 0:
            limit = np.max(np.abs(values))
            weight.assign(rng.uniform(-limit, limit, values.shape))


def outputs_and_gradients(layer, call, inputs):
    """`call(*inputs)` (a call of the built `layer`) and the gradients of
    the sum of its squared outputs with respect to `inputs` and the layer's
    trainable weights, all as float32 NumPy arrays, on any backend."""
    backend = keras.backend.backend()
    variables = layer.trainable_variables

    def loss(out):
        return ops.sum(ops.square(ops.cast(out, "float32")))

    if backend == "tensorflow":
        import tensorflow as tf

        inputs = [tf.convert_to_tensor(x) for x in inputs]
        with tf.GradientTape() as tape:
            tape.watch(inputs)
            out = call(*inputs)
            value = loss(out)
        gradients = tape.gradient(value, inputs + list(variables))
    elif backend == "jax":
        import jax

        def value_of(inputs, values):
            mapping = list(zip(variables, values, strict=True))
            with keras.StatelessScope(state_mapping=mapping):
                out = call(*inputs)
            return loss(out), out

        values = [v.value for v in variables]
        (_, out), (input_gradients, variable_gradients) = jax.value_and_grad(
            value_of, argnums=(0, 1), has_aux=True
        )(list(inputs), values)
        gradients = list(input_gradients) + list(variable_gradients)
    else:
        import torch

        inputs = [
            torch.tensor(np.asarray(x), requires_grad=True) for x in inputs
        ]
        out = call(*inputs)
        gradients = torch.autograd.grad(
            loss(out), inputs + [v.value for v in variables]
        )
    return _numpy(out), [_numpy(g) for g in gradients]


def _numpy(x):
    return np.asarray(ops.convert_to_numpy(ops.cast(x, "float32")))


def run_layer_test(make_layer, inputs, call_kwargs=None, tmp_path=None):
    """Checks what every Keras layer is expected to do, on any backend.

    `make_layer()` returns a new layer; it is called as
    `layer(*inputs, **call_kwargs)` on float32 NumPy `inputs`. Checked:
    the config round trip; a symbolic call in a Functional model (batch
    size unknown) with the shape of the eager call, which
    `compute_output_shape` also gives; `fit` (jit-compiled where the backend
    compiles) moves every trainable weight and no other; a `.keras` file
    gives the same outputs; under `mixed_bfloat16` the outputs are
    bfloat16, finite and within bfloat16 round-off of float32.
    """
    call_kwargs = call_kwargs or {}
    layer = make_layer()
    config = layer.get_config()
    assert type(layer).from_config(config).get_config() == config

    symbols = [keras.Input(x.shape[1:]) for x in inputs]
    model = keras.Model(symbols, layer(*symbols, **call_kwargs))
    expected = _numpy(layer(*inputs, **call_kwargs))
    assert model.output.shape == (None,) + expected.shape[1:]
    assert tuple(layer.compute_output_shape(*[x.shape for x in inputs])) == (
        expected.shape
    )
    assert np.all(np.isfinite(expected))
    np.testing.assert_allclose(_numpy(model(inputs)), expected, atol=1e-6)

    if tmp_path is not None:
        path = os.path.join(tmp_path, "layer_test.keras")
        model.save(path)
        loaded = keras.saving.load_model(path, safe_mode=True)
        np.testing.assert_allclose(_numpy(loaded(inputs)), expected, atol=1e-6)

    model.compile("adam", "mse", jit_compile=jit_compile())
    before = [np.array(w) for w in layer.weights]
    history = model.fit(
        inputs, np.ones_like(expected), epochs=2, batch_size=2, verbose=0
    )
    assert np.all(np.isfinite(history.history["loss"]))
    for weight, old in zip(layer.weights, before, strict=True):
        if weight.trainable:
            assert not np.array_equal(old, np.array(weight)), weight.path
        else:
            np.testing.assert_array_equal(old, np.array(weight))

    keras.config.set_dtype_policy("mixed_bfloat16")
    try:
        half = make_layer()
        out = half(*inputs, **call_kwargs)
    finally:
        keras.config.set_dtype_policy("float32")
    assert keras.backend.standardize_dtype(out.dtype) == "bfloat16"
    half.set_weights(layer.get_weights())
    out = _numpy(half(*inputs, **call_kwargs))
    reference = _numpy(layer(*inputs, **call_kwargs))
    assert np.all(np.isfinite(out))
    assert np.max(np.abs(out - reference)) < 0.05 * np.max(np.abs(reference))
