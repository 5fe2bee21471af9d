"""`export_text_classifier`: a keras-hub text classifier as a SavedModel
that takes raw strings, its preprocessor inside, served in a fresh process
with the probabilities of `classifier.predict`."""

import json
import os

import keras
import keras_hub
import numpy as np
import pytest
import tensorflow as tf

import keras_performer
from keras_performer.models import PerformerBackbone
from keras_performer.models import PerformerCausalLM
from keras_performer.models import PerformerTextClassifier
from keras_performer.models import PerformerTextClassifierPreprocessor
from tests.export.fresh_process import saved_model_cli
from tests.export.fresh_process import saved_model_cli_run
from tests.export.fresh_process import serve_in_fresh_process

LENGTH = 16
# Known words, an unknown word, no text at all, a text four times longer
# than the sequence, and one of several bytes per character.
TEXTS = [
    "a wonderful film",
    "a waste of time",
    "zebra",
    "",
    "a wonderful film " * 4,
    "un film merveilleux, très réussi",
]
WORDPIECES = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "a", "wonder"]
WORDPIECES += ["##ful", "film", "waste", "of", "time"]


def performer_classifier():
    """Ours, on bytes, returning logits."""
    backbone = PerformerBackbone(
        vocabulary_size=258,
        num_layers=1,
        num_heads=2,
        hidden_dim=16,
        intermediate_dim=32,
        max_sequence_length=LENGTH,
        causal=False,
        num_random_features=16,
        seed=0,
    )
    preprocessor = PerformerTextClassifierPreprocessor(
        keras_hub.tokenizers.ByteTokenizer(),
        sequence_length=LENGTH,
        start_token_id=256,
        end_token_id=257,
    )
    return PerformerTextClassifier(backbone, 3, preprocessor=preprocessor)


def bert_classifier():
    """keras-hub's own, on word pieces (tf.text ops), returning
    probabilities."""
    backbone = keras_hub.models.BertBackbone(
        vocabulary_size=len(WORDPIECES),
        num_layers=1,
        num_heads=2,
        hidden_dim=8,
        intermediate_dim=16,
        max_sequence_length=LENGTH,
    )
    preprocessor = keras_hub.models.BertTextClassifierPreprocessor(
        keras_hub.models.BertTokenizer(vocabulary=WORDPIECES),
        sequence_length=LENGTH,
    )
    return keras_hub.models.BertTextClassifier(
        backbone, 3, preprocessor=preprocessor, activation="softmax"
    )


@pytest.fixture(scope="module")
def performer(tmp_path_factory):
    classifier = performer_classifier()
    path = str(tmp_path_factory.mktemp("classifier") / "performer")
    keras_performer.export.export_text_classifier(classifier, path)
    return classifier, path


def keras_probabilities(classifier, texts):
    """What the signature must return, computed by Keras."""
    scores = classifier.predict(texts, verbose=0)
    if classifier.activation == keras.activations.softmax:
        return scores
    return np.asarray(keras.ops.softmax(scores))


@pytest.mark.parametrize("kind", ["performer", "bert"])
def test_served_probabilities_are_the_keras_ones(tmp_path, performer, kind):
    if kind == "performer":
        classifier, path = performer
    else:
        classifier = bert_classifier()
        path = os.path.join(tmp_path, "bert")
        keras_performer.export.export_text_classifier(classifier, path)
    expected = keras_probabilities(classifier, TEXTS)
    outputs, ops = serve_in_fresh_process(
        tmp_path,
        path,
        {
            "texts": np.array(TEXTS),
            "empty": np.array([""]),
            "none": np.array([], dtype=str),
        },
        calls=[
            {"signature": "serving_default", "inputs": {"text": key}}
            for key in ("texts", "empty", "none")
        ],
        tfsm_layer=True,
    )
    probabilities = outputs["0/probabilities"]
    assert probabilities.dtype == np.float32
    np.testing.assert_allclose(probabilities, expected, atol=1e-5)
    np.testing.assert_allclose(probabilities.sum(axis=1), 1.0, atol=1e-5)
    np.testing.assert_allclose(
        outputs["1/probabilities"], expected[3:4], atol=1e-5
    )
    assert outputs["2/probabilities"].shape == (0, 3)
    np.testing.assert_allclose(
        outputs["tfsm_layer/probabilities"], expected, atol=1e-5
    )
    # TensorFlow's ops, and tf.text's, which TF Serving links.
    assert ops["not_in_tensorflow_text"] == []
    tf_text_op = {
        "performer": "CaseFoldUTF8",
        "bert": "FastWordpieceTokenizeWithOffsets",
    }[kind]
    assert tf_text_op in ops["not_in_tensorflow"]
    shown = saved_model_cli("show", "--dir", path, "--all")
    assert "signature_def['serving_default']" in shown
    assert "dtype: DT_STRING" in shown and "shape: (-1)" in shown
    assert "outputs['probabilities']" in shown
    assert "shape: (-1, 3)" in shown


def test_rest_request_body_fits_the_signature(tmp_path, performer):
    """The README's request, `{"instances": [...]}`: TF Serving stacks the
    instances of the one input into a batch, as `--input_exprs` does."""
    classifier, path = performer
    body = json.loads('{"instances": ["a wonderful film", "a waste of time"]}')
    outputs = saved_model_cli_run(
        path,
        "serving_default",
        "--input_exprs",
        f"text={json.dumps(body['instances'])}",
        os.path.join(tmp_path, "cli"),
    )
    np.testing.assert_allclose(
        outputs["probabilities"],
        keras_probabilities(classifier, body["instances"]),
        atol=1e-5,
    )


def test_bad_requests_are_errors(performer):
    _, path = performer
    served = tf.saved_model.load(path).signatures["serving_default"]
    for text in (tf.constant("a text"), tf.constant([["a"], ["b"]])):
        with pytest.raises(tf.errors.InvalidArgumentError, match="shape"):
            served(text=text)
    with pytest.raises(tf.errors.InvalidArgumentError, match="string"):
        served(text=tf.constant([1, 2]))
    # The server goes on answering.
    assert served(text=tf.constant(["a"]))["probabilities"].shape == (1, 3)


def test_export_takes_a_text_classifier_with_a_preprocessor(
    tmp_path, performer
):
    classifier, _ = performer
    path = os.path.join(tmp_path, "classifier")
    bare = PerformerTextClassifier(classifier.backbone, 3)
    with pytest.raises(ValueError, match="preprocessor=None"):
        keras_performer.export.export_text_classifier(bare, path)
    causal = PerformerBackbone(
        vocabulary_size=8,
        num_layers=1,
        num_heads=2,
        hidden_dim=8,
        intermediate_dim=16,
    )
    for bad in (classifier.backbone, PerformerCausalLM(causal), "model"):
        with pytest.raises(ValueError, match="classifier="):
            keras_performer.export.export_text_classifier(bad, path)
    assert not os.path.exists(path)
