import keras
import keras_hub
import numpy as np
import pytest

import keras_performer
from keras_performer import transfer_weights
from tests.helpers import draw_weights_with_numpy
from tests.layers.test_performer_attention import inputs


def classifier(attention, block, num_features=None):
    """Embedding, an attention layer with a residual, two encoder blocks, a
    head; Performer layers when `num_features` is set."""
    keras.utils.set_random_seed(1)
    ids = keras.Input((24,), dtype="int32")
    x = keras.layers.Embedding(50, 16)(ids)
    options = (
        {} if num_features is None else {"num_random_features": num_features}
    )
    x = x + attention(num_heads=2, key_dim=8, **options)(x, x)
    for _ in range(2):
        x = block(intermediate_dim=32, num_heads=2, **options)(x)
    x = keras.layers.GlobalAveragePooling1D()(x)
    return keras.Model(ids, keras.layers.Dense(3)(x))


def exact_classifier():
    model = classifier(
        keras.layers.MultiHeadAttention, keras_hub.layers.TransformerEncoder
    )
    draw_weights_with_numpy(model, seed=1)
    return model


def performer_classifier(num_features):
    return classifier(
        keras_performer.PerformerAttention,
        keras_performer.PerformerEncoder,
        num_features,
    )


def test_transfer_reproduces_the_exact_model():
    exact = exact_classifier()
    ids = np.random.default_rng(0).integers(0, 50, (4, 24))
    expected = np.asarray(exact(ids))
    errors = []
    for num_features in (8, 4096):
        performer = performer_classifier(num_features)
        projections = [
            np.asarray(w)
            for w in performer.weights
            if "projection_matrix" in w.path
        ]
        transfer_weights(exact, performer)
        # Every trainable weight moved; the projections stayed.
        for ours, theirs in zip(
            performer.trainable_weights, exact.trainable_weights, strict=True
        ):
            np.testing.assert_array_equal(ours, theirs)
        kept = [
            np.asarray(w)
            for w in performer.weights
            if "projection_matrix" in w.path
        ]
        assert len(kept) == 3
        for before, after in zip(projections, kept, strict=True):
            np.testing.assert_array_equal(before, after)
        out = np.asarray(performer(ids))
        errors.append(np.mean((out - expected) ** 2) / np.var(expected))
    assert errors[1] < 0.01 and errors[1] < errors[0]


def test_transfer_of_decoder_blocks():
    x, memory = inputs(scale=0.3), inputs(1, length=24, scale=0.3)
    exact = keras_hub.layers.TransformerDecoder(32, 2)
    performer = keras_performer.PerformerDecoder(32, 2)
    exact(x, memory)
    performer(x, memory)
    transfer_weights(exact, performer)
    for ours, theirs in zip(
        performer.trainable_weights, exact.trainable_weights, strict=True
    ):
        np.testing.assert_array_equal(ours, theirs)


def test_mismatched_models():
    exact = exact_classifier()
    performer = performer_classifier(8)
    ids = keras.Input((24,), dtype="int32")
    shorter = keras.Model(ids, keras.layers.Embedding(50, 16)(ids))
    with pytest.raises(ValueError, match="same layers"):
        transfer_weights(exact, shorter)
    wider = keras.Sequential(
        [keras.Input((24, 16)), keras_hub.layers.TransformerEncoder(64, 2)]
    )
    narrower = keras.Sequential(
        [keras.Input((24, 16)), keras_performer.PerformerEncoder(32, 2)]
    )
    with pytest.raises(ValueError, match="different weights"):
        transfer_weights(wider, narrower)
    swapped = keras.Sequential(
        [keras.Input((24, 16)), keras_performer.PerformerDecoder(64, 2)]
    )
    with pytest.raises(ValueError, match="no counterpart"):
        transfer_weights(wider, swapped)
    with pytest.raises(ValueError, match="built"):
        transfer_weights(exact, keras_performer.PerformerEncoder(32, 2))
    transfer_weights(exact, performer)  # the matching pair still works
