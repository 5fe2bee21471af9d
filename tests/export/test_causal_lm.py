"""`export_causal_lm`: a prompt in (text with a preprocessor, token ids
without), `prefill` and `step` signatures served in a fresh process stream
a sequence to the Keras model's full-pass logits with a state of constant
size, `detokenize` gives Keras's text back; bad requests are errors, not
crashes."""

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
from keras_performer.models import PerformerCausalLMPreprocessor
from tests.export.fresh_process import saved_model_cli
from tests.export.fresh_process import saved_model_cli_run
from tests.export.fresh_process import serve_in_fresh_process

START, END = 256, 257
# Five bytes each, six tokens with the start; the tokenizer lowercases.
PROMPTS = ["hello", "World"]
STATE_SHAPE = (2, 2, 16, 11)  # num_layers, num_heads, features, head_dim + 3


def preprocessor(start_token_id=START):
    return PerformerCausalLMPreprocessor(
        keras_hub.tokenizers.ByteTokenizer(),
        sequence_length=16,
        add_start_token=start_token_id is not None,
        start_token_id=start_token_id,
        end_token_id=END,
    )


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    """The same backbone exported with a preprocessor (text in) and
    without (token ids in)."""
    backbone = PerformerBackbone(
        vocabulary_size=258,
        num_layers=2,
        num_heads=2,
        hidden_dim=16,
        intermediate_dim=32,
        max_sequence_length=32,
        num_random_features=16,
        seed=0,
    )
    lm = PerformerCausalLM(backbone, preprocessor())
    lm.compile(sampler="greedy")
    # A model that has generated exports too (its compiled loops are not
    # saved).
    lm.generate("hi", max_length=6)
    directory = tmp_path_factory.mktemp("lm")
    paths = {"text": str(directory / "text"), "ids": str(directory / "ids")}
    keras_performer.export.export_causal_lm(lm, paths["text"])
    keras_performer.export.export_causal_lm(
        PerformerCausalLM(backbone), paths["ids"]
    )
    return lm, paths


def full_pass(lm, token_ids):
    token_ids = np.asarray(token_ids)
    return np.asarray(
        lm({"token_ids": token_ids, "padding_mask": np.ones_like(token_ids)})
    )


def test_prefill_and_steps_stream_the_full_pass(tmp_path, exported):
    lm, paths = exported
    prompt = np.asarray(
        lm.preprocessor.generate_preprocess(PROMPTS, sequence_length=6)[
            "token_ids"
        ]
    )
    assert prompt[:, 0].tolist() == [START, START]
    rest = np.random.default_rng(0).integers(32, 127, (2, 14)).astype("int32")
    rest[:, -1] = END
    tokens = np.concatenate([prompt, rest], axis=1)  # 20 tokens.
    expected = full_pass(lm, tokens)
    inputs = {"text": np.array(PROMPTS), "prompt": prompt, "tokens": tokens}
    # On both exports: the prompt, one token per step, then two at once.
    steps = [(i, i + 1) for i in range(6, 18)] + [(18, 20)]
    for start, stop in steps:
        inputs[f"tokens_{start}"] = tokens[:, start:stop]
    calls = []
    for path, prompt_inputs in (
        (paths["text"], {"text": "text"}),
        (paths["ids"], {"token_ids": "prompt"}),
    ):
        calls.append(
            {"path": path, "signature": "prefill", "inputs": prompt_inputs}
        )
        for start, _ in steps:
            calls.append(
                {
                    "path": path,
                    "signature": "step",
                    "inputs": {
                        "token_ids": f"tokens_{start}",
                        "state": "$state",
                    },
                }
            )
    calls.append({"signature": "detokenize", "inputs": {"token_ids": "tokens"}})
    calls.append({"signature": "serving_default", "inputs": {"text": "text"}})
    calls.append(
        {
            "path": paths["ids"],
            "signature": "serving_default",
            "inputs": {"token_ids": "prompt"},
        }
    )
    outputs, ops = serve_in_fresh_process(
        tmp_path, paths["text"], inputs, calls
    )
    positions = list(range(5, 18)) + [19]
    per_export = len(steps) + 1
    for first in (0, per_export):  # Text in, token ids in.
        logits = np.stack(
            [outputs[f"{first + i}/logits"] for i in range(per_export)], axis=1
        )
        np.testing.assert_allclose(logits, expected[:, positions], atol=1e-4)
        shapes = {
            outputs[f"{first + i}/state"].shape for i in range(per_export)
        }
        assert shapes == {(2,) + STATE_SHAPE}
    # `detokenize` drops the start and end tokens as `generate` does.
    last = 2 * per_export
    text = [t.decode() for t in outputs[f"{last}/text"]]
    assert text == lm.preprocessor.generate_postprocess(
        {"token_ids": tokens, "padding_mask": np.ones_like(tokens, bool)}
    )
    assert text[0].startswith("hello") and "\x00" not in text[0]
    for i in (1, 2):  # `serving_default` is `prefill`.
        np.testing.assert_array_equal(
            outputs[f"{last + i}/logits"], outputs["0/logits"]
        )
    # TensorFlow's ops, and tf.text's (the byte tokenizer's case folding),
    # which TF Serving links.
    assert "CaseFoldUTF8" in ops["not_in_tensorflow"]
    assert ops["not_in_tensorflow_text"] == []

    shown = saved_model_cli("show", "--dir", paths["text"], "--all")
    for name in ("prefill", "step", "detokenize", "serving_default"):
        assert f"signature_def['{name}']" in shown
    assert "shape: (-1, 2, 2, 16, 11)" in shown
    assert "inputs['text'] tensor_info:\n        dtype: DT_STRING" in shown
    shown = saved_model_cli("show", "--dir", paths["ids"], "--all")
    assert "signature_def['detokenize']" not in shown
    assert "inputs['token_ids'] tensor_info:\n        dtype: DT_INT32" in shown


def test_a_client_streams_the_greedy_generation_from_a_string(exported):
    """What a client of the server does: `prefill` the prompt, pick each
    next token from the logits, `step` it, `detokenize` what it has. It
    gets the tokens of the Keras model's greedy `generate`."""
    lm, paths = exported
    served = tf.saved_model.load(paths["text"]).signatures
    out = served["prefill"](text=tf.constant(["Hello"]))
    tokens = [START] + [ord(c) for c in "hello"]
    for _ in range(6):
        tokens.append(int(np.argmax(out["logits"][0])))
        out = served["step"](
            token_ids=tf.constant([tokens[-1:]]), state=out["state"]
        )
    text = served["detokenize"](token_ids=tf.constant([tokens]))["text"]
    assert text.numpy()[0].startswith(b"hello")

    ids_lm = PerformerCausalLM(lm.backbone)
    ids_lm.compile(sampler="greedy")
    prompt = np.zeros((1, 12), "int32")
    prompt[0, :6] = tokens[:6]
    generated = ids_lm.generate(
        {"token_ids": prompt, "padding_mask": prompt != 0},
        stop_token_ids=None,
    )
    assert generated["token_ids"][0].tolist() == tokens


def test_rest_request_bodies_fit_the_signatures(tmp_path, exported):
    """TF Serving's `{"signature_name": "prefill", "instances": [...]}`
    stacks the instances of the one input into a batch, as `--input_exprs`
    does; `{"inputs": {"token_ids": [[...]]}}` for token ids."""
    lm, paths = exported
    body = json.loads('{"signature_name": "prefill", "instances": ["hello"]}')
    outputs = saved_model_cli_run(
        paths["text"],
        body["signature_name"],
        "--input_exprs",
        f"text={json.dumps(body['instances'])}",
        os.path.join(tmp_path, "text"),
    )
    expected = full_pass(lm, [[START] + [ord(c) for c in "hello"]])[:, -1]
    np.testing.assert_allclose(outputs["logits"], expected, atol=1e-4)
    assert outputs["state"].shape == (1,) + STATE_SHAPE

    body = json.loads('{"inputs": {"token_ids": [[5, 17, 2]]}}')
    outputs = saved_model_cli_run(
        paths["ids"],
        "prefill",
        "--input_exprs",
        f"token_ids={body['inputs']['token_ids']}",
        os.path.join(tmp_path, "ids"),
    )
    expected = full_pass(lm, [[5, 17, 2]])[:, -1]
    np.testing.assert_allclose(outputs["logits"], expected, atol=1e-4)


def test_bad_requests_are_errors(exported):
    _, paths = exported
    served = tf.saved_model.load(paths["text"]).signatures
    prefill, step = served["prefill"], served["step"]
    state = prefill(text=tf.constant(["abc"]))["state"]
    with pytest.raises(tf.errors.InvalidArgumentError, match="same number"):
        prefill(text=tf.constant(["abc", "abcd"]))
    with pytest.raises(tf.errors.InvalidArgumentError, match="shape"):
        prefill(text=tf.constant("abc"))
    with pytest.raises(tf.errors.InvalidArgumentError, match="state"):
        step(token_ids=tf.constant([[4]]), state=state[:, :, :, :8])
    with pytest.raises(tf.errors.InvalidArgumentError, match="token_ids"):
        step(token_ids=tf.constant([4]), state=state)
    longer = prefill(text=tf.constant(["abcd"]))["state"]
    with pytest.raises(tf.errors.InvalidArgumentError, match="same length"):
        step(
            token_ids=tf.constant([[4], [5]]),
            state=tf.concat([state, longer], axis=0),
        )
    with pytest.raises(tf.errors.InvalidArgumentError, match="batch size"):
        step(token_ids=tf.constant([[4], [5]]), state=state)
    with pytest.raises(tf.errors.InvalidArgumentError, match="at least one"):
        step(token_ids=tf.zeros((1, 0), tf.int32), state=state)
    with pytest.raises(tf.errors.InvalidArgumentError, match="max_sequence"):
        step(token_ids=tf.zeros((1, 29), tf.int32), state=state)
    for ids in ([[258]], [[-1]]):
        with pytest.raises(tf.errors.InvalidArgumentError, match="token_ids"):
            step(token_ids=tf.constant(ids), state=state)
        with pytest.raises(tf.errors.InvalidArgumentError, match="token_ids"):
            served["detokenize"](token_ids=tf.constant(ids))
    # The server goes on answering.
    out = step(token_ids=tf.constant([[4]]), state=state)
    assert out["logits"].shape == (1, 258)
    assert prefill(text=tf.constant([], tf.string))["logits"].shape == (0, 258)


def test_a_prompt_with_no_token_is_an_error(tmp_path, exported):
    lm, _ = exported
    path = os.path.join(tmp_path, "no_start")
    keras_performer.export.export_causal_lm(
        PerformerCausalLM(lm.backbone, preprocessor(start_token_id=None)),
        path,
    )
    prefill = tf.saved_model.load(path).signatures["prefill"]
    out = prefill(text=tf.constant(["hello"]))
    expected = full_pass(lm, [[ord(c) for c in "hello"]])[:, -1]
    np.testing.assert_allclose(out["logits"], expected, atol=1e-4)
    with pytest.raises(tf.errors.InvalidArgumentError, match="at least one"):
        prefill(text=tf.constant([""]))


def test_export_takes_a_performer_causal_lm(tmp_path, exported):
    lm, _ = exported
    path = os.path.join(tmp_path, "lm")
    for bad in (lm.backbone, keras.Sequential([keras.layers.Dense(2)])):
        with pytest.raises(ValueError, match="causal_lm="):
            keras_performer.export.export_causal_lm(bad, path)
    assert not os.path.exists(path)
