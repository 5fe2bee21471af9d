import keras
import keras_hub
import numpy as np
import pytest

import keras_performer
from keras_performer import PerformerEncoder
from tests.helpers import draw_weights_with_numpy
from tests.helpers import run_layer_test
from tests.layers.test_performer_attention import inputs


def encoder(**kwargs):
    return PerformerEncoder(intermediate_dim=32, num_heads=2, seed=0, **kwargs)


# Pre-LN feeds the attention unit-variance inputs (the post-LN block gets
# x * 0.5): larger q.k, so a higher variance of the softmax estimator.
@pytest.mark.parametrize("normalize_first,bound", [(False, 0.01), (True, 0.05)])
def test_shape_and_matches_transformer_encoder(normalize_first, bound):
    x = inputs(scale=0.5)
    exact = keras_hub.layers.TransformerEncoder(
        32, 2, normalize_first=normalize_first
    )
    exact(x)
    draw_weights_with_numpy(exact, seed=0)
    expected = np.asarray(exact(x))
    errors = []
    for num_features in (16, 256, 4096):
        layer = encoder(
            normalize_first=normalize_first, num_random_features=num_features
        )
        layer(x)
        keras_performer.transfer_weights(
            keras.Sequential([keras.Input(x.shape[1:]), exact]),
            keras.Sequential([keras.Input(x.shape[1:]), layer]),
        )
        out = np.asarray(layer(x))
        assert out.shape == x.shape
        errors.append(np.mean((out - expected) ** 2) / np.var(expected))
    # Same block as keras-hub's: the error is the attention's alone and
    # falls with the number of features.
    assert errors[2] < bound and errors[2] < errors[1] < errors[0]


def test_sequential_honors_embedding_mask():
    def model():
        keras.utils.set_random_seed(0)
        return keras.Sequential(
            [
                keras.layers.Embedding(20, 16, mask_zero=True),
                encoder(),
                encoder(),
            ]
        )

    ids = np.array([[3, 5, 7, 9, 11, 0, 0, 0]], "int32")
    padded = np.asarray(model()(ids))
    unpadded = np.asarray(model()(ids[:, :5]))
    np.testing.assert_allclose(padded[:, :5], unpadded, atol=1e-5)


def test_explicit_padding_mask_equals_keras_mask():
    x = inputs()
    mask = np.ones((2, 32), bool)
    mask[0, 20:] = False
    layer = encoder()
    explicit = np.asarray(layer(x, padding_mask=mask))
    masked = keras.layers.Masking(mask_value=0.0)(
        np.where(mask[..., None], x, 0)
    )
    implicit = np.asarray(layer(masked))
    np.testing.assert_allclose(implicit[mask], explicit[mask], atol=1e-5)
    # A padding pattern as an attention mask means the same.
    pattern = mask[:, :, None] & mask[:, None, :]
    np.testing.assert_allclose(
        np.asarray(layer(x, attention_mask=pattern))[mask],
        explicit[mask],
        atol=1e-5,
    )


def test_attention_scores():
    out, scores = encoder()(inputs(length=12), return_attention_scores=True)
    assert out.shape == (2, 12, 16)
    assert scores.shape == (2, 2, 12, 12)
    np.testing.assert_allclose(
        np.sum(np.asarray(scores), axis=-1), 1.0, atol=1e-5
    )


def test_layer_behaves_as_a_keras_layer(tmp_path):
    run_layer_test(
        lambda: encoder(
            feature_map="hyperbolic",
            num_random_features=32,
            rotary_max_wavelength=100,
            normalize_first=True,
            activation="gelu",
            dropout=0.1,
        ),
        [inputs()],
        tmp_path=tmp_path,
    )


def test_rotary_embedding_makes_it_order_aware():
    x = inputs(length=8)
    swapped = x[:, ::-1]
    plain, rotary = encoder(), encoder(rotary_max_wavelength=10000)
    # Without positions, self-attention commutes with permutations.
    np.testing.assert_allclose(
        np.asarray(plain(swapped))[:, ::-1], plain(x), atol=1e-5
    )
    assert not np.allclose(
        np.asarray(rotary(swapped))[:, ::-1], rotary(x), atol=1e-3
    )


@pytest.mark.parametrize(
    "kwargs,match",
    [
        ({"intermediate_dim": 0}, "intermediate_dim"),
        ({"num_heads": 1.5}, "num_heads"),
        ({"dropout": 1.0}, "dropout"),
        ({"feature_map": "gauss"}, "feature_map"),
        ({"num_random_features": -1}, "num_random_features"),
        ({"projection_norm": "unit"}, "projection_norm"),
        ({"rotary_max_wavelength": 0}, "rotary_max_wavelength"),
    ],
)
def test_bad_arguments(kwargs, match):
    arguments = {"intermediate_dim": 32, "num_heads": 2, **kwargs}
    with pytest.raises(ValueError, match=match):
        PerformerEncoder(**arguments)


def test_hidden_size_not_a_multiple_of_heads():
    with pytest.raises(ValueError, match="num_heads=3"):
        PerformerEncoder(intermediate_dim=32, num_heads=3)(inputs())
