"""A text classifier as a SavedModel that takes raw strings."""

import keras
import tensorflow as tf

from keras_performer.ops.checks import check_positive_int


def export_text_classifier(
    model, tokenizer, path, sequence_length, from_logits=False
):
    """Exports a text classifier whose serving signature takes raw text.

    The SavedModel's `serving_default` signature takes `text`, a batch of
    strings `(batch,)`, and returns `probabilities`, `(batch,
    num_classes)` float32. The tokenizer runs inside the graph, so a client
    sends text (TF Serving's REST API: `{"instances": ["a review", ...]}`).
    Token ids are cut or padded with `0` to `sequence_length`: a longer
    text is classified by its first `sequence_length` tokens. Every answer
    is the Keras model's, but where the model's is undefined: a text with
    no token (an empty string) for which the model's answer is not finite
    (a mean over its tokens masked by `Embedding(mask_zero=True)` is
    0 / 0) gets uniform probabilities, `1 / num_classes` each (`0.5` for a
    single sigmoid output). An empty batch gets an empty result.

    Args:
        model: a built Keras model from token ids `(batch,
            sequence_length)` to class scores `(batch, num_classes)`.
        tokenizer: a Keras layer or a callable that maps a batch of strings
            to token ids, dense `(batch, length)` or ragged, with TensorFlow
            ops: `keras.layers.TextVectorization`, or a keras-hub tokenizer
            (tf.text ops, which TF Serving links). It is saved with the
            model, vocabulary included.
        path: str. Directory to write the SavedModel to.
        sequence_length: int. Token ids the model takes per text.
        from_logits: bool. Whether the model returns logits, to which the
            signature applies a softmax (a sigmoid for a single output),
            rather than probabilities. Defaults to `False`.

    Example:

    >>> vectorizer = keras.layers.TextVectorization(max_tokens=100)
    >>> vectorizer.adapt(["a fine film", "a dull film"])
    >>> classifier = keras.Sequential([
    ...     keras.Input((16,), dtype="int32"),
    ...     keras.layers.Embedding(100, 8),
    ...     keras_performer.PerformerEncoder(intermediate_dim=16, num_heads=2),
    ...     keras.layers.GlobalAveragePooling1D(),
    ...     keras.layers.Dense(2, activation="softmax"),
    ... ])
    >>> path = os.path.join(tempfile.mkdtemp(), "classifier")
    >>> keras_performer.export.export_text_classifier(
    ...     classifier, vectorizer, path, sequence_length=16)
    >>> served = tf.saved_model.load(path)
    >>> out = served.signatures["serving_default"](
    ...     text=tf.constant(["a fine film"]))
    >>> tuple(out["probabilities"].shape)
    (1, 2)
    """
    check_positive_int("sequence_length", sequence_length)
    if not model.built:
        raise ValueError(
            "`model` must be built (called once) before it is exported. "
            f"Received: model={model.name} (not built)"
        )
    if not callable(tokenizer):
        raise ValueError(
            "`tokenizer` must be a Keras layer or a callable from strings to "
            f"token ids. Received: tokenizer={tokenizer!r}"
        )

    def serve(text):
        ids = fixed_length(tokenizer(text), sequence_length)
        scores = tf.cast(model(ids, training=False), "float32")
        binary = scores.shape[-1] == 1
        if from_logits:
            scores = tf.sigmoid(scores) if binary else tf.nn.softmax(scores)
        # The model's answer wherever it is finite; for a text with no
        # token it may be undefined (a masked mean over no token is 0 / 0),
        # and then the text says nothing about its class.
        uniform = (
            0.5 if binary else 1.0 / tf.cast(tf.shape(scores)[1], "float32")
        )
        has_tokens = tf.reduce_any(ids != 0, axis=1, keepdims=True)
        finite = tf.reduce_all(tf.math.is_finite(scores), axis=1, keepdims=True)
        answer = tf.logical_or(has_tokens, finite)
        return {"probabilities": tf.where(answer, scores, uniform)}

    archive = keras.export.ExportArchive()
    archive.track(model)
    if isinstance(tokenizer, keras.layers.Layer):
        if not tokenizer.built:
            tokenizer(tf.constant([""]))
        archive.track(tokenizer)  # Its vocabulary tables.
    archive.add_endpoint(
        "serving_default",
        serve,
        input_signature=[tf.TensorSpec([None], tf.string, name="text")],
    )
    archive.write_out(path, verbose=False)


def fixed_length(ids, length):
    """Token ids `(batch, length)` int32: cut, or padded with 0."""
    if isinstance(ids, tf.RaggedTensor):
        return tf.cast(ids.to_tensor(0, shape=[None, length]), "int32")
    ids = tf.convert_to_tensor(ids)[:, :length]
    ids = tf.pad(ids, [[0, 0], [0, length - tf.shape(ids)[1]]])
    return tf.cast(tf.ensure_shape(ids, [None, length]), "int32")
