"""Strings through a keras-hub tokenizer or preprocessor in a serving
graph."""

import tensorflow as tf

# A text tokenizers make a token of (a byte, a word piece, an unknown
# word). Some tokenizers fail on a batch with no character at all
# (`keras_hub.tokenizers.ByteTokenizer` on `[""]` or on an empty batch): a
# request of one empty text is valid, so each batch goes through with this
# row added, then taken off.
SENTINEL = "a"


def apply_to_strings(layer, text):
    """`layer(text)` for a batch of strings `(batch,)`, whatever the batch
    holds (empty texts, no text): each output keeps its `batch` rows."""
    # A clear error for a request of another shape (a signature alone lets
    # it through).
    text = tf.ensure_shape(text, [None])
    batch_size = tf.shape(text)[0]
    outputs = layer(tf.concat([text, [SENTINEL]], axis=0))
    return tf.nest.map_structure(lambda x: x[:batch_size], outputs)
