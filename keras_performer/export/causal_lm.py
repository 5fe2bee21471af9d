"""A PerformerCausalLM as a SavedModel for streaming generation."""

import keras
import tensorflow as tf

from keras_performer.models.performer_causal_lm import PerformerCausalLM
from keras_performer.ops.causal import state_length


def export_causal_lm(model, path):
    """Exports a `PerformerCausalLM` for token-by-token serving.

    The SavedModel has two signatures, whose decoding state has a constant
    size, so a server streams a generation one request at a time:

    - `prefill`: `token_ids`, int32 `(batch, length)`, a prompt →
      `logits`, float32 `(batch, vocabulary_size)`, at its last token, and
      `state`, float32 `(batch, num_layers, num_heads, num_features,
      head_dim + 3)`.
    - `step`: `token_ids`, int32 `(batch, length)`, the next token(s), and
      the `state` of the call before → `logits` at the last of them and the
      new `state`.

    `serving_default` is `prefill`. The state counts the tokens it holds,
    so the client keeps no position: it sends back the state it received.
    The rows of a batch hold the same number of tokens. A state of the
    wrong shape, rows of different lengths, or a position past
    `max_sequence_length` are errors (TF Serving answers them with
    `INVALID_ARGUMENT`). The random projections are frozen as they are at
    export.

    Args:
        model: a `keras_performer.PerformerCausalLM`.
        path: str. Directory to write the SavedModel to.

    Example:

    >>> lm = keras_performer.PerformerCausalLM(
    ...     vocabulary_size=16, num_layers=1, num_heads=2, hidden_dim=16,
    ...     intermediate_dim=32, max_sequence_length=64)
    >>> path = os.path.join(tempfile.mkdtemp(), "lm")
    >>> keras_performer.export.export_causal_lm(lm, path)
    >>> served = tf.saved_model.load(path)
    >>> out = served.signatures["prefill"](token_ids=tf.constant([[1, 2]]))
    >>> out = served.signatures["step"](
    ...     token_ids=tf.constant([[3]]), state=out["state"])
    >>> tuple(out["logits"].shape)
    (1, 16)
    """
    if not isinstance(model, PerformerCausalLM):
        raise ValueError(
            "`model` must be a keras_performer.PerformerCausalLM. Received: "
            f"model={type(model).__name__}"
        )
    if not model.built:
        model.build((None, None))
    state_shape = (None,) + tuple(model.get_initial_cache(1).shape[1:])

    def step(token_ids, state):
        # A clear error for a state of another model (a signature alone
        # lets the shape through).
        state = tf.ensure_shape(state, state_shape)
        lengths = tf.cast(state_length(state[:, 0]), "int32")
        position = tf.reduce_max(tf.concat([lengths, [0]], axis=0))
        checks = [
            tf.debugging.assert_equal(
                lengths,
                position,
                message="the rows of `state` hold different numbers of "
                "tokens: a batch must hold prompts of the same length",
            ),
            tf.debugging.assert_less_equal(
                position + tf.shape(token_ids)[1],
                model.max_sequence_length,
                message="the sequence would pass the model's "
                f"max_sequence_length ({model.max_sequence_length})",
            ),
        ]
        with tf.control_dependencies(checks):
            logits, _, state = model.call_with_cache(token_ids, state, position)
        return {"logits": tf.cast(logits[:, -1], "float32"), "state": state}

    def prefill(token_ids):
        return step(token_ids, model.get_initial_cache(tf.shape(token_ids)[0]))

    token_ids = tf.TensorSpec([None, None], tf.int32, name="token_ids")
    archive = keras.export.ExportArchive()
    archive.track(model)
    for name in ("prefill", "serving_default"):
        archive.add_endpoint(name, prefill, input_signature=[token_ids])
    archive.add_endpoint(
        "step",
        step,
        input_signature=[
            token_ids,
            tf.TensorSpec(state_shape, tf.float32, name="state"),
        ],
    )
    archive.write_out(path, verbose=False)
