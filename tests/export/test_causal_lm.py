"""`export_causal_lm`: `prefill` and `step` signatures served in a fresh
process stream a sequence to the Keras model's full-pass logits, with a
state of constant size; bad states are errors, not crashes."""

import os

import numpy as np
import pytest
import tensorflow as tf

import keras_performer
from tests.export.fresh_process import saved_model_cli
from tests.export.fresh_process import saved_model_cli_run
from tests.export.fresh_process import serve_in_fresh_process

PROMPT = 8


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    model = keras_performer.PerformerCausalLM(
        vocabulary_size=32,
        num_layers=2,
        num_heads=2,
        hidden_dim=16,
        intermediate_dim=32,
        max_sequence_length=64,
        num_random_features=16,
        seed=0,
    )
    # A model that has generated exports too (its compiled loops are not
    # saved).
    model.generate(np.ones((1, 1), "int32"), 4, sampler="random", seed=0)
    path = str(tmp_path_factory.mktemp("lm") / "lm")
    keras_performer.export.export_causal_lm(model, path)
    return model, path


def test_prefill_and_steps_stream_the_full_pass(tmp_path, exported):
    model, path = exported
    tokens = np.random.default_rng(0).integers(0, 32, (2, 24)).astype("int32")
    expected = np.asarray(model(tokens))
    inputs = {"prompt": tokens[:, :PROMPT]}
    calls = [{"signature": "prefill", "inputs": {"token_ids": "prompt"}}]
    # One token per step, then two at once.
    for start, stop in [(i, i + 1) for i in range(PROMPT, 22)] + [(22, 24)]:
        inputs[f"tokens_{start}"] = tokens[:, start:stop]
        calls.append(
            {
                "signature": "step",
                "inputs": {"token_ids": f"tokens_{start}", "state": "$state"},
            }
        )
    calls.append(
        {"signature": "serving_default", "inputs": {"token_ids": "prompt"}}
    )
    outputs, ops = serve_in_fresh_process(tmp_path, path, inputs, calls)
    last = len(calls) - 1
    logits = np.stack([outputs[f"{i}/logits"] for i in range(last)], axis=1)
    positions = list(range(PROMPT - 1, 22)) + [23]
    np.testing.assert_allclose(logits, expected[:, positions], atol=1e-4)
    np.testing.assert_array_equal(
        outputs[f"{last}/logits"], outputs["0/logits"]
    )
    state_shapes = {outputs[f"{i}/state"].shape for i in range(last)}
    assert state_shapes == {(2, 2, 2, 16, 11)}
    assert ops["not_in_tensorflow"] == []

    shown = saved_model_cli("show", "--dir", path, "--all")
    for name in ("prefill", "step", "serving_default"):
        assert f"signature_def['{name}']" in shown
    assert "shape: (-1, 2, 2, 16, 11)" in shown


def test_rest_request_body_fits_the_signature(tmp_path, exported):
    """The README's `{"inputs": {"token_ids": [[...]]}}` for `prefill`."""
    model, path = exported
    outdir = os.path.join(tmp_path, "cli")
    outputs = saved_model_cli_run(
        path, "prefill", "--input_exprs", "token_ids=[[5, 17, 2]]", outdir
    )
    expected = np.asarray(model(np.array([[5, 17, 2]])))[:, -1]
    np.testing.assert_allclose(outputs["logits"], expected, atol=1e-4)
    assert outputs["state"].shape == (1, 2, 2, 16, 11)


def test_bad_requests_are_errors(exported):
    _, path = exported
    served = tf.saved_model.load(path)
    prefill, step = served.signatures["prefill"], served.signatures["step"]
    state = prefill(token_ids=tf.constant([[1, 2, 3]]))["state"]
    with pytest.raises(tf.errors.InvalidArgumentError, match="state"):
        step(token_ids=tf.constant([[4]]), state=state[:, :, :, :8])
    longer = prefill(token_ids=tf.constant([[1, 2, 3, 4]]))["state"]
    with pytest.raises(tf.errors.InvalidArgumentError, match="same length"):
        step(
            token_ids=tf.constant([[4], [5]]),
            state=tf.concat([state, longer], axis=0),
        )
    with pytest.raises(tf.errors.InvalidArgumentError, match="max_sequence"):
        step(token_ids=tf.zeros((1, 62), tf.int32), state=state)
    # The server goes on answering.
    assert step(token_ids=tf.constant([[4]]), state=state)["logits"].shape == (
        1,
        32,
    )
