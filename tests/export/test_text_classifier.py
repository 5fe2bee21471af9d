"""`export_text_classifier`: a SavedModel that takes raw strings, with the
tokenizer inside, served in a fresh process."""

import json
import os

import keras
import keras_hub
import numpy as np
import pytest
import tensorflow as tf

import keras_performer
from keras_performer import PerformerEncoder
from tests.export.fresh_process import saved_model_cli
from tests.export.fresh_process import saved_model_cli_run
from tests.export.fresh_process import serve_in_fresh_process

LENGTH = 32
CORPUS = ["a wonderful film", "a waste of time", "the acting is wonderful"]
# A known text, an unknown word, no text at all, and a text four times
# longer than the model's length.
TEXTS = CORPUS[:2] + ["zebra", "", "a wonderful film " * 40]
WORDPIECES = ["[PAD]", "[UNK]", "a", "wonder", "##ful", "film", "waste"]


def text_vectorization():
    tokenizer = keras.layers.TextVectorization(max_tokens=50)
    tokenizer.adapt(CORPUS)
    return tokenizer


def wordpiece():
    return keras_hub.tokenizers.WordPieceTokenizer(
        vocabulary=WORDPIECES, lowercase=True
    )


def classifier(mask_zero=True):
    model = keras.Sequential(
        [
            keras.Input((LENGTH,), dtype="int32"),
            keras.layers.Embedding(50, 16, mask_zero=mask_zero),
            PerformerEncoder(32, 2, num_random_features=32, seed=0),
            keras.layers.GlobalAveragePooling1D(),
            keras.layers.Dense(3),
        ]
    )
    return model


def keras_probabilities(model, tokenizer, texts):
    """What the signature must return, computed without it."""
    rows = [list(np.asarray(tokenizer([text]))[0])[:LENGTH] for text in texts]
    ids = np.array([row + [0] * (LENGTH - len(row)) for row in rows])
    probabilities = np.array(keras.ops.softmax(model(ids)))
    # Where the model's answer is undefined (0 / 0), the export's is uniform.
    undefined = ~ids.any(axis=1) & ~np.isfinite(probabilities).all(axis=1)
    probabilities[undefined] = 1 / 3
    return probabilities


@pytest.mark.parametrize("make_tokenizer", [text_vectorization, wordpiece])
def test_string_input_classifier(tmp_path, make_tokenizer):
    tokenizer, model = make_tokenizer(), classifier()
    path = os.path.join(tmp_path, "classifier")
    keras_performer.export.export_text_classifier(
        model, tokenizer, path, sequence_length=LENGTH, from_logits=True
    )
    expected = keras_probabilities(model, tokenizer, TEXTS)
    assert np.all(np.isfinite(expected))
    outputs, ops = serve_in_fresh_process(
        tmp_path,
        path,
        {"texts": np.array(TEXTS), "none": np.array([], dtype=str)},
        calls=[
            {"signature": "serving_default", "inputs": {"text": "texts"}},
            {"signature": "serving_default", "inputs": {"text": "none"}},
        ],
        tfsm_layer=True,
    )
    probabilities = outputs["0/probabilities"]
    np.testing.assert_allclose(probabilities, expected, atol=1e-5)
    np.testing.assert_allclose(probabilities.sum(axis=1), 1.0, atol=1e-6)
    np.testing.assert_array_equal(probabilities[3], np.float32(1 / 3))
    np.testing.assert_allclose(
        outputs["tfsm_layer/probabilities"], expected, atol=1e-5
    )
    assert outputs["1/probabilities"].shape == (0, 3)
    # Standard TensorFlow ops, and tf.text's for keras-hub's tokenizers.
    assert ops["not_in_tensorflow_text"] == []
    if make_tokenizer is text_vectorization:
        assert ops["not_in_tensorflow"] == []
    else:
        assert "FastWordpieceTokenizeWithOffsets" in ops["not_in_tensorflow"]
    shown = saved_model_cli("show", "--dir", path, "--all")
    assert "signature_def['serving_default']" in shown
    assert "dtype: DT_STRING" in shown and "shape: (-1)" in shown
    assert "outputs['probabilities']" in shown


def test_a_text_with_no_token_gets_the_keras_answer_where_it_is_finite(
    tmp_path,
):
    tokenizer = text_vectorization()
    for mask_zero in (True, False):
        model = classifier(mask_zero=mask_zero)
        path = os.path.join(tmp_path, f"classifier_{mask_zero}")
        keras_performer.export.export_text_classifier(
            model, tokenizer, path, sequence_length=LENGTH, from_logits=True
        )
        served = tf.saved_model.load(path).signatures["serving_default"]
        out = served(text=tf.constant(["", "a wonderful film"]))
        keras_answer = np.asarray(
            keras.ops.softmax(model(np.zeros((1, LENGTH), "int32")))
        )[0]
        if mask_zero:  # A mean over no token: 0 / 0.
            assert not np.isfinite(keras_answer).all()
            expected = np.full(3, 1 / 3, "float32")
        else:
            assert np.isfinite(keras_answer).all()
            assert not np.allclose(keras_answer, 1 / 3)
            expected = keras_answer
        np.testing.assert_allclose(out["probabilities"][0], expected, atol=1e-6)
        np.testing.assert_allclose(
            out["probabilities"][1:],
            keras_probabilities(model, tokenizer, ["a wonderful film"]),
            atol=1e-5,
        )


def test_rest_request_body_fits_the_signature(tmp_path):
    """The README's request, `{"instances": [...]}`: TF Serving stacks the
    instances of the one input into a batch, as `--input_exprs` does."""
    tokenizer, model = text_vectorization(), classifier()
    path = os.path.join(tmp_path, "classifier")
    keras_performer.export.export_text_classifier(
        model, tokenizer, path, sequence_length=LENGTH, from_logits=True
    )
    body = json.loads('{"instances": ["a wonderful film", "a waste of time"]}')
    outdir = os.path.join(tmp_path, "cli")
    outputs = saved_model_cli_run(
        path,
        "serving_default",
        "--input_exprs",
        f"text={json.dumps(body['instances'])}",
        outdir,
    )
    np.testing.assert_allclose(
        outputs["probabilities"],
        keras_probabilities(model, tokenizer, body["instances"]),
        atol=1e-5,
    )
