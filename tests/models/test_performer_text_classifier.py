"""PerformerTextClassifier: fit and predict on raw strings, presets."""

import keras
import keras_hub
import numpy as np
import pytest

from keras_performer.models import PerformerBackbone
from keras_performer.models import PerformerTextClassifier
from keras_performer.models import PerformerTextClassifierPreprocessor

TEXTS = ["a fine film", "a dull film", "fine, fine", "dull and slow"] * 8
LABELS = np.array([1, 0, 1, 0] * 8)


def classifier(vocabulary_size=258, **kwargs):
    backbone = PerformerBackbone(
        vocabulary_size=vocabulary_size,
        num_layers=1,
        num_heads=2,
        hidden_dim=16,
        intermediate_dim=32,
        max_sequence_length=64,
        causal=False,
        num_random_features=16,
        seed=0,
    )
    preprocessor = PerformerTextClassifierPreprocessor(
        keras_hub.tokenizers.ByteTokenizer(),
        sequence_length=24,
        start_token_id=256,
        end_token_id=257,
    )
    return PerformerTextClassifier(backbone, 2, preprocessor, **kwargs)


def test_learns_from_raw_strings():
    model = classifier()
    model.compile(optimizer=keras.optimizers.Adam(3e-3))
    model.fit(TEXTS, LABELS, batch_size=8, epochs=10, verbose=0)
    scores = model.predict(TEXTS[:4], verbose=0)
    assert scores.shape == (4, 2)
    np.testing.assert_array_equal(np.argmax(scores, -1), LABELS[:4])


def test_the_preprocessor_packs_between_the_special_tokens():
    model = classifier()
    x, y = model.preprocessor(["hi", ""], [1, 0])
    ids = np.asarray(x["token_ids"])
    assert ids[0, :4].tolist() == [256, 104, 105, 257]
    assert np.asarray(x["padding_mask"]).sum(axis=1).tolist() == [4, 2]
    assert np.asarray(y).tolist() == [1, 0]
    with pytest.raises(ValueError, match="one text"):
        model.preprocessor(x=(["a"], ["b"]))


def test_a_text_with_no_token_gets_finite_scores():
    backbone = classifier().backbone
    model = PerformerTextClassifier(
        PerformerBackbone.from_config(
            {**backbone.get_config(), "vocabulary_size": 256}
        ),
        3,
        PerformerTextClassifierPreprocessor(
            keras_hub.tokenizers.ByteTokenizer(), sequence_length=8
        ),
        activation="softmax",
    )
    scores = model.predict(["", "text"], verbose=0)
    assert np.all(np.isfinite(scores)) and scores.shape == (2, 3)


def test_presets_round_trip_through_keras_hub_base_classes(tmp_path):
    model = classifier()
    expected = model.predict(TEXTS[:4], verbose=0)
    directory = str(tmp_path / "preset")
    model.save_to_preset(directory)
    loaded = keras_hub.models.TextClassifier.from_preset(directory)
    assert type(loaded) is PerformerTextClassifier
    np.testing.assert_allclose(
        loaded.predict(TEXTS[:4], verbose=0), expected, atol=1e-5
    )
    preprocessor = keras_hub.models.TextClassifierPreprocessor.from_preset(
        directory
    )
    assert type(preprocessor) is PerformerTextClassifierPreprocessor


def test_bad_arguments():
    with pytest.raises(ValueError, match="vocabulary_size=300"):
        classifier(vocabulary_size=300)
    with pytest.raises(ValueError, match="num_classes"):
        PerformerTextClassifier(classifier().backbone, 0)
    with pytest.raises(ValueError, match="PerformerBackbone"):
        PerformerTextClassifier(keras.layers.Dense(2), 2)
