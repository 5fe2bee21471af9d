"""A keras-hub text classifier as a SavedModel that takes raw strings."""

import keras
import keras_hub
import tensorflow as tf

from keras_performer.export.strings import apply_to_strings


def export_text_classifier(classifier, path):
    """Exports a text classifier whose serving signature takes raw text.

    The SavedModel's `serving_default` signature takes `text`, a batch of
    strings `(batch,)`, and returns `probabilities`, float32 `(batch,
    num_classes)`. The classifier's preprocessor (its tokenizer, special
    tokens and packing to `sequence_length`) runs inside the graph, so a
    client sends text (TF Serving's REST API: `{"instances": ["a review",
    ...]}`) and gets what `classifier.predict` gives on the same texts: a
    longer text is classified by its first tokens, an empty text is
    answered as the classifier answers it, an empty batch gets an empty
    answer. The probabilities are the softmax of the classifier's
    outputs, or those outputs when its `activation` is already
    `"softmax"` (the reading of keras-hub's `compile`). Tokenizers that
    use tf.text ops (WordPiece, SentencePiece, ...) need a model server
    that links them, as TF Serving's does.

    Args:
        classifier: a `keras_hub.models.TextClassifier` with a preprocessor
            that runs in a TensorFlow graph, such as a
            `keras_performer.models.PerformerTextClassifier` with its
            `PerformerTextClassifierPreprocessor`.
        path: str. Directory to write the SavedModel to.

    Example:

    >>> backbone = keras_performer.models.PerformerBackbone(
    ...     vocabulary_size=256, num_layers=1, num_heads=2, hidden_dim=16,
    ...     intermediate_dim=32, max_sequence_length=16, causal=False,
    ...     num_random_features=16,
    ... )
    >>> preprocessor = (
    ...     keras_performer.models.PerformerTextClassifierPreprocessor(
    ...         keras_hub.tokenizers.ByteTokenizer(), sequence_length=16,
    ...     )
    ... )
    >>> classifier = keras_performer.models.PerformerTextClassifier(
    ...     backbone, num_classes=2, preprocessor=preprocessor,
    ... )
    >>> path = os.path.join(tempfile.mkdtemp(), "classifier")
    >>> keras_performer.export.export_text_classifier(classifier, path)
    >>> served = tf.saved_model.load(path)
    >>> out = served.signatures["serving_default"](
    ...     text=tf.constant(["a fine film"]))
    >>> tuple(out["probabilities"].shape)
    (1, 2)
    """
    if not isinstance(classifier, keras_hub.models.TextClassifier):
        raise ValueError(
            "`classifier` must be a keras_hub.models.TextClassifier (such as "
            "keras_performer.models.PerformerTextClassifier). Received: "
            f"classifier={type(classifier).__name__}"
        )
    preprocessor = classifier.preprocessor
    if preprocessor is None:
        raise ValueError(
            "`classifier` must have a preprocessor, whose tokenizer the "
            "SavedModel runs on the texts it receives: build it with "
            "`preprocessor=` (e.g. a keras_performer.models."
            "PerformerTextClassifierPreprocessor). Received: "
            f"classifier={classifier.name} with preprocessor=None"
        )
    activation = keras.activations.get(getattr(classifier, "activation", None))
    from_logits = activation != keras.activations.softmax
    if not preprocessor.built:
        preprocessor.build(None)

    def serve(text):
        x = apply_to_strings(preprocessor, text)
        scores = tf.cast(classifier(x, training=False), "float32")
        if from_logits:
            scores = tf.nn.softmax(scores)
        return {"probabilities": scores}

    archive = keras.export.ExportArchive()
    archive.track(classifier)
    archive.track(preprocessor)  # Its tokenizer's tables, if any.
    archive.add_endpoint(
        "serving_default",
        serve,
        input_signature=[tf.TensorSpec([None], tf.string, name="text")],
    )
    archive.write_out(path, verbose=False)
