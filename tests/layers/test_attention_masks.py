"""Every mask `MultiHeadAttention` takes, applied exactly to the FAVOR
estimate: padding patterns by the linear forms, any other mask by the
quadratic form (`masked_favor_attention`), decided on the device when the
mask is not in host memory."""

import keras
import numpy as np
import pytest

from keras_performer import PerformerAttention
from keras_performer.ops import favor
from tests.helpers import jit_compile
from tests.ops import reference

LENGTH = 16
POSITIONS = np.arange(LENGTH)
SEGMENTS = np.searchsorted([6, 11], POSITIONS, side="right")
BLOCKS = SEGMENTS[:, None] == SEGMENTS[None, :]
BAND = np.abs(POSITIONS[:, None] - POSITIONS[None, :]) < 4
CAUSAL = np.tril(np.ones((LENGTH, LENGTH), bool))


def random_mask(seed=0):
    rng = np.random.default_rng(seed)
    return (rng.random((2, LENGTH, LENGTH)) < 0.4) | np.eye(LENGTH, dtype=bool)


# name: (attention_mask, use_causal_mask, sliding_window)
MASKS = {
    "prefix_lm": (CAUSAL | (POSITIONS[None, :] < 5), False, None),
    "block_diagonal": (BLOCKS, False, None),
    "band": (BAND, False, None),
    "random": (random_mask(), False, None),
    "per_head": (np.stack([BAND, BLOCKS])[None], False, None),
    "causal_blocks": (BLOCKS, True, None),
    "sliding_window": (None, False, 4),
    "causal_sliding_window": (None, True, 4),
}


def inputs(seed=0, scale=1.0):
    rng = np.random.default_rng(seed)
    return (scale * rng.normal(size=(2, LENGTH, 16))).astype("float32")


def batch_mask(mask):
    """`mask` `(T, S)`, `(2, T, S)` or `(1, heads, T, S)` for a batch of 2."""
    if mask is None:
        return None
    mask = mask[None] if mask.ndim == 2 else mask
    return np.broadcast_to(mask, (2,) + mask.shape[1:])


def whole_mask(name):
    """The mask `MultiHeadAttention` applies, `(2, 1 or heads, T, S)`."""
    mask, causal, window = MASKS[name]
    whole = np.ones((2, 1, LENGTH, LENGTH), bool)
    if mask is not None:
        mask = batch_mask(mask)
        whole = whole & (mask[:, None] if mask.ndim == 3 else mask)
    if causal:
        whole = whole & CAUSAL
    if window is not None:
        whole = whole & (np.abs(POSITIONS[:, None] - POSITIONS) < window)
    return whole


def layer_and_call(name, **kwargs):
    mask, causal, window = MASKS[name]
    layer = PerformerAttention(
        num_heads=2, key_dim=8, sliding_window=window, seed=0, **kwargs
    )
    call = {"use_causal_mask": causal}
    if mask is not None:
        call["attention_mask"] = batch_mask(mask)
    return layer, call


def quadratic_form(layer, x, mask):
    """The layer's output by the float64 quadratic form of the features of
    its own projection, under `mask`."""
    heads = reference.favor(
        np.asarray(layer.query_dense(x)),
        np.asarray(layer.key_dense(x)),
        np.asarray(layer.value_dense(x)),
        np.asarray(layer.projection_matrix),
        layer.feature_map,
        mask=mask,
    )
    return np.asarray(layer.output_dense(heads.astype("float32")))


@pytest.mark.parametrize("name", MASKS)
@pytest.mark.parametrize("feature_map", ["softmax", "hyperbolic", "relu"])
def test_any_mask_equals_the_quadratic_form(name, feature_map):
    layer, call = layer_and_call(name, feature_map=feature_map)
    x = inputs()
    out = np.asarray(layer(x, **call))
    assert np.all(np.isfinite(out))
    np.testing.assert_allclose(
        out, quadratic_form(layer, x, whole_mask(name)), atol=2e-5, rtol=1e-4
    )


@pytest.mark.parametrize("name", MASKS)
def test_compiled_calls_decide_on_the_device(name):
    """In a compiled function the mask is not read back: the conditional
    runs on the device and gives the eager outputs, never NaN."""
    layer, call = layer_and_call(name)
    x = inputs()
    expected = np.asarray(layer(x, **call))
    sequence = keras.Input((LENGTH, 16))
    model_inputs, model_call = [sequence], dict(call)
    if "attention_mask" in call:
        shape = call["attention_mask"].shape[1:]
        model_call["attention_mask"] = keras.Input(shape, dtype="bool")
        model_inputs.append(model_call["attention_mask"])
    model = keras.Model(model_inputs, layer(sequence, **model_call))
    model.compile(jit_compile=jit_compile())
    data = [x] + ([call["attention_mask"]] if len(model_inputs) > 1 else [])
    out = model.predict(data, verbose=0)
    assert np.all(np.isfinite(out))
    np.testing.assert_allclose(out, expected, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("name", MASKS)
def test_error_against_multi_head_attention_falls_with_features(name):
    mask, causal, window = MASKS[name]
    x = inputs(scale=0.5)
    call = {"use_causal_mask": causal}
    if mask is not None:
        call["attention_mask"] = batch_mask(mask)
    mha = keras.layers.MultiHeadAttention(
        num_heads=2, key_dim=8, sliding_window=window, seed=0
    )
    expected = np.asarray(mha(x, x, **call))
    errors = []
    for num_features in (16, 4096):
        layer = PerformerAttention(
            num_heads=2,
            key_dim=8,
            sliding_window=window,
            num_random_features=num_features,
            seed=1,
        )
        layer(x)
        layer.set_weights(mha.get_weights())
        out = np.asarray(layer(x, x, **call))
        errors.append(np.mean((out - expected) ** 2) / np.mean(expected**2))
    assert errors[1] < errors[0] / 4
    assert errors[1] < 0.01


def test_padding_patterns_keep_the_linear_path(monkeypatch):
    calls = []
    quadratic = favor.masked_favor_attention
    monkeypatch.setattr(
        favor,
        "masked_favor_attention",
        lambda *a, **k: calls.append(1) or quadratic(*a, **k),
    )
    layer = PerformerAttention(num_heads=2, key_dim=8, seed=0)
    x = inputs()
    valid = POSITIONS < 12
    pattern = np.broadcast_to(
        valid[:, None] & valid[None, :], (2,) + BAND.shape
    )
    layer(x, attention_mask=pattern)
    layer(x, attention_mask=pattern & CAUSAL, use_causal_mask=True)
    assert calls == []
    layer(x, attention_mask=batch_mask(BAND))
    assert calls == [1]


def test_a_query_that_sees_no_key_outputs_zero_attention():
    layer = PerformerAttention(num_heads=2, key_dim=8, seed=0)
    mask = random_mask()
    mask[0, 3] = False  # Query 3 of the first sequence sees nothing.
    out = np.asarray(layer(inputs(), attention_mask=mask))
    assert np.all(np.isfinite(out))
    np.testing.assert_allclose(out[0, 3], np.asarray(layer.output_dense.bias))


def test_a_hidden_key_of_large_norm_changes_nothing():
    layer = PerformerAttention(num_heads=2, key_dim=8, seed=0)
    x = inputs()
    out = np.asarray(layer(x, attention_mask=batch_mask(BAND)))
    far = x.copy()
    far[:, -1] *= 100.0  # A key only the last queries see.
    changed = np.asarray(layer(far, attention_mask=batch_mask(BAND)))
    np.testing.assert_allclose(changed[:, :-4], out[:, :-4], atol=1e-5)


@pytest.mark.parametrize("name", ["band", "sliding_window"])
def test_training_under_a_mask_is_finite(name):
    layer, call = layer_and_call(name)
    sequence = keras.Input((LENGTH, 16))
    model_call = dict(call)
    model_inputs = [sequence]
    if "attention_mask" in call:
        model_call["attention_mask"] = keras.Input(BAND.shape, dtype="bool")
        model_inputs.append(model_call["attention_mask"])
    model = keras.Model(model_inputs, layer(sequence, **model_call))
    model.compile("adam", "mse", jit_compile=jit_compile())
    data = [inputs()] + (
        [call["attention_mask"]] if len(model_inputs) > 1 else []
    )
    history = model.fit(data, inputs(1), epochs=2, verbose=0)
    assert np.all(np.isfinite(history.history["loss"]))
