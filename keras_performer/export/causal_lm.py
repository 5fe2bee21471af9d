"""A PerformerCausalLM as a SavedModel for streaming generation."""

import keras
import numpy as np
import tensorflow as tf

from keras_performer.export.strings import apply_to_strings
from keras_performer.models.performer_causal_lm import PerformerCausalLM
from keras_performer.ops.causal import state_length


def export_causal_lm(causal_lm, path):
    """Exports a `PerformerCausalLM` for token-by-token serving.

    The SavedModel's decoding state has a constant size, `(batch,
    num_layers, num_heads, num_features, head_dim + 3)` float32, whatever
    the position, so a server streams a generation one request at a time.
    The state counts the tokens it holds: the client keeps no position, it
    sends back the state it received, and samples the next token from the
    `logits` itself. Its signatures:

    - `prefill`: a prompt → `logits`, float32 `(batch, vocabulary_size)`,
      the next-token scores after its last token, and `state`. With a
      preprocessor the prompt is `text`, strings `(batch,)`, tokenized in
      the graph by the preprocessor's tokenizer after its start token, as
      `generate` reads a prompt (no end token). Without one it is
      `token_ids`, int32 `(batch, length)`.
    - `step`: `token_ids`, int32 `(batch, length)`, the next token(s), and
      the `state` of the call before → `logits` after the last of them and
      the new `state`.
    - `detokenize` (with a preprocessor only): `token_ids`, int32 `(batch,
      length)` → `text`, strings `(batch,)`, the preprocessor's special
      tokens (start, end, padding) left out as `generate` leaves them out.
      A client detokenizes the tokens it has so far (a character may take
      several tokens) and stops at the preprocessor's end token.

    `serving_default` is `prefill`. The rows of a batch hold the same
    number of tokens: prompts of different token counts, a prompt with no
    token, a state of the wrong shape or of rows of different lengths, a
    token id outside the vocabulary, or (with learned positions) a
    position past `max_sequence_length` are errors (TF Serving answers
    them with `INVALID_ARGUMENT`). The random projections are frozen as
    they are at export.

    Args:
        causal_lm: a `keras_performer.models.PerformerCausalLM`, with or
            without a preprocessor.
        path: str. Directory to write the SavedModel to.

    Example:

    >>> backbone = keras_performer.models.PerformerBackbone(
    ...     vocabulary_size=258, num_layers=1, num_heads=2, hidden_dim=16,
    ...     intermediate_dim=32, max_sequence_length=64,
    ...     num_random_features=16, seed=0,
    ... )
    >>> preprocessor = keras_performer.models.PerformerCausalLMPreprocessor(
    ...     keras_hub.tokenizers.ByteTokenizer(), sequence_length=16,
    ...     start_token_id=256, end_token_id=257,
    ... )
    >>> lm = keras_performer.models.PerformerCausalLM(backbone, preprocessor)
    >>> path = os.path.join(tempfile.mkdtemp(), "lm")
    >>> keras_performer.export.export_causal_lm(lm, path)
    >>> served = tf.saved_model.load(path)
    >>> out = served.signatures["prefill"](text=tf.constant(["hi"]))
    >>> out = served.signatures["step"](
    ...     token_ids=tf.constant([[33]]), state=out["state"])
    >>> tuple(out["logits"].shape)
    (1, 258)
    >>> served.signatures["detokenize"](
    ...     token_ids=tf.constant([[256, 104, 105, 33]]))["text"].numpy()
    array([b'hi!'], dtype=object)
    """
    if not isinstance(causal_lm, PerformerCausalLM):
        raise ValueError(
            "`causal_lm` must be a keras_performer.models.PerformerCausalLM. "
            f"Received: causal_lm={type(causal_lm).__name__}"
        )
    backbone = causal_lm.backbone
    vocabulary_size = backbone.vocabulary_size
    state_shape = (None,) + tuple(causal_lm.get_initial_cache(1).shape[1:])

    def step(token_ids, state):
        # A clear error for a state of another model, or token ids of
        # another rank (a signature alone lets the shape through).
        state = tf.ensure_shape(state, state_shape)
        token_ids = tf.ensure_shape(token_ids, [None, None])
        lengths = tf.cast(state_length(state[:, 0]), "int32")
        position = tf.reduce_max(tf.concat([lengths, [0]], axis=0))
        checks = token_id_checks(token_ids, vocabulary_size) + [
            tf.debugging.assert_greater(
                tf.shape(token_ids)[1],
                0,
                message="`token_ids` must hold at least one token per row",
            ),
            tf.debugging.assert_equal(
                tf.shape(token_ids)[0],
                tf.shape(state)[0],
                message="`token_ids` and `state` must have the same batch size",
            ),
            tf.debugging.assert_equal(
                lengths,
                position,
                message="the rows of `state` hold different numbers of "
                "tokens: a batch must hold prompts of the same length",
            ),
        ]
        if backbone.learned_positions:
            checks.append(
                tf.debugging.assert_less_equal(
                    position + tf.shape(token_ids)[1],
                    backbone.max_sequence_length,
                    message="the sequence would pass the model's "
                    f"max_sequence_length ({backbone.max_sequence_length})",
                )
            )
        with tf.control_dependencies(checks):
            logits, _, state = causal_lm.call_with_cache(
                token_ids, state, position
            )
        return {"logits": tf.cast(logits[:, -1], "float32"), "state": state}

    def prefill_token_ids(token_ids):
        batch_size = tf.shape(token_ids)[0]
        return step(token_ids, causal_lm.get_initial_cache(batch_size))

    token_ids_spec = tf.TensorSpec([None, None], tf.int32, name="token_ids")
    state_spec = tf.TensorSpec(state_shape, tf.float32, name="state")
    archive = keras.export.ExportArchive()
    archive.track(causal_lm)
    preprocessor = causal_lm.preprocessor
    if preprocessor is None:
        prefill, prefill_spec = prefill_token_ids, token_ids_spec
    else:
        if not preprocessor.built:
            preprocessor.build(None)
        archive.track(preprocessor)  # Its tokenizer's tables, if any.
        prefill = text_prefill(preprocessor, prefill_token_ids)
        prefill_spec = tf.TensorSpec([None], tf.string, name="text")
        archive.add_endpoint(
            "detokenize",
            detokenizer(preprocessor, vocabulary_size),
            input_signature=[token_ids_spec],
        )
    for name in ("prefill", "serving_default"):
        archive.add_endpoint(name, prefill, input_signature=[prefill_spec])
    archive.add_endpoint(
        "step", step, input_signature=[token_ids_spec, state_spec]
    )
    archive.write_out(path, verbose=False)


def text_prefill(preprocessor, prefill_token_ids):
    """`prefill` on strings: the prompts' token ids as `generate_preprocess`
    makes them (the tokenizer's, after the packer's start token)."""
    start = preprocessor.packer.start_value
    start = [] if start is None else np.reshape(start, [-1]).tolist()

    def prefill(text):
        token_ids = apply_to_strings(preprocessor.tokenizer, text)
        if not isinstance(token_ids, tf.RaggedTensor):
            token_ids = tf.RaggedTensor.from_tensor(token_ids)
        token_ids = tf.cast(token_ids, "int32")
        if start:
            starts = tf.tile(
                tf.constant([start], tf.int32), [token_ids.nrows(), 1]
            )
            token_ids = tf.concat(
                [tf.RaggedTensor.from_tensor(starts), token_ids], axis=1
            )
        lengths = tf.cast(token_ids.row_lengths(), "int32")
        length = tf.reduce_max(tf.concat([lengths, [0]], axis=0))
        checks = [
            tf.debugging.assert_equal(
                lengths,
                length,
                message="the texts of a batch must make the same number of "
                "tokens (one prompt per request, or prompts of the same "
                "length)",
            ),
            tf.debugging.assert_positive(
                lengths, message="a prompt must make at least one token"
            ),
        ]
        with tf.control_dependencies(checks):
            token_ids = token_ids.to_tensor()
        # An empty batch gets an empty answer, from one (absent) position.
        width = tf.shape(token_ids)[1]
        token_ids = tf.pad(token_ids, [[0, 0], [0, tf.maximum(1 - width, 0)]])
        return prefill_token_ids(token_ids)

    return prefill


def token_id_checks(token_ids, vocabulary_size):
    """Assertions that token ids are in `[0, vocabulary_size)`: an id past
    the embedding would be an error on CPUs and a silent zero on GPUs."""
    return [
        tf.debugging.assert_non_negative(
            token_ids, message="`token_ids` must be non-negative"
        ),
        tf.debugging.assert_less(
            token_ids,
            tf.constant(vocabulary_size, token_ids.dtype),
            message="`token_ids` must be less than the model's "
            f"vocabulary_size ({vocabulary_size})",
        ),
    ]


def detokenizer(preprocessor, vocabulary_size):
    """`detokenize`: token ids to strings, special tokens left out."""
    if hasattr(preprocessor, "special_token_ids"):
        special = preprocessor.special_token_ids
    else:
        special = getattr(preprocessor.tokenizer, "special_token_ids", [])
    special = sorted({int(i) for i in special})
    special = tf.constant(special, tf.int32, shape=[len(special)])

    def detokenize(token_ids):
        token_ids = tf.ensure_shape(token_ids, [None, None])
        checks = token_id_checks(token_ids, vocabulary_size)
        with tf.control_dependencies(checks):
            keep = tf.reduce_all(token_ids[..., None] != special, axis=-1)
        token_ids = tf.ragged.boolean_mask(token_ids, keep)
        text = preprocessor.tokenizer.detokenize(token_ids)
        return {"text": tf.reshape(text, [-1])}

    return detokenize
