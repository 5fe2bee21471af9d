"""The same weights give the same outputs on every installed backend."""

import importlib.util
import os
import subprocess
import sys

import keras
import numpy as np

import keras_performer

BACKENDS = [
    name
    for name in ("tensorflow", "jax", "torch")
    if importlib.util.find_spec(name) is not None
]
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def models():
    """A causal language model and a bidirectional encoder stack; their
    projections come from their seeds, their other weights from a file."""
    backbone = keras_performer.PerformerBackbone(
        vocabulary_size=20,
        num_layers=2,
        num_heads=2,
        hidden_dim=16,
        intermediate_dim=32,
        max_sequence_length=48,
        feature_map="hyperbolic",
        num_random_features=32,
        chunk_size=8,
        seed=3,
    )
    lm = keras_performer.PerformerCausalLM(backbone)
    lm.compile(sampler="greedy")
    encoder = keras.Sequential(
        [
            keras.Input((40, 16)),
            keras_performer.PerformerEncoder(
                32, 2, rotary_max_wavelength=100, seed=4
            ),
            keras_performer.PerformerAttention(2, 8, seed=5),
        ]
    )
    return lm, encoder


def inputs():
    rng = np.random.default_rng(0)
    return rng.integers(0, 20, (2, 48)), rng.normal(size=(2, 40, 16))


def outputs(directory):
    """The two models' outputs with the weights saved in `directory`."""
    lm, encoder = models()
    lm.load_weights(os.path.join(directory, "lm.weights.h5"))
    encoder.load_weights(os.path.join(directory, "encoder.weights.h5"))
    ids, x = inputs()
    ids = ids.astype("int32")
    prompt = np.pad(ids[:, :4], [(0, 0), (0, 20)])
    prompt_mask = np.arange(24)[None, :].repeat(2, 0) < 4
    mask = np.ones(ids.shape, bool)
    return {
        "logits": keras.ops.convert_to_numpy(
            lm({"token_ids": ids, "padding_mask": mask})
        ),
        "generated": lm.generate(
            {"token_ids": prompt, "padding_mask": prompt_mask},
            stop_token_ids=None,
        )["token_ids"],
        "encoded": keras.ops.convert_to_numpy(encoder(x.astype("float32"))),
        "projection": keras.ops.convert_to_numpy(
            encoder.layers[1].projection_matrix
        ),
    }


def test_same_weights_give_the_same_outputs_on_every_backend(tmp_path):
    keras.utils.set_random_seed(0)
    lm, encoder = models()
    lm.save_weights(os.path.join(tmp_path, "lm.weights.h5"))
    encoder.save_weights(os.path.join(tmp_path, "encoder.weights.h5"))
    expected = outputs(tmp_path)
    code = (
        "import sys, numpy as np; from tests import test_backends; "
        "np.savez(sys.argv[2], **test_backends.outputs(sys.argv[1]))"
    )
    others = [name for name in BACKENDS if name != keras.backend.backend()]
    assert others, "only one backend is installed"
    for backend in others:
        path = os.path.join(tmp_path, f"{backend}.npz")
        run = subprocess.run(
            [sys.executable, "-c", code, str(tmp_path), path],
            cwd=ROOT,
            env={**os.environ, "KERAS_BACKEND": backend},
            capture_output=True,
            text=True,
        )
        assert run.returncode == 0, run.stderr[-3000:]
        with np.load(path) as theirs:
            np.testing.assert_array_equal(
                theirs["projection"], expected["projection"], err_msg=backend
            )
            for name in ("logits", "encoded"):
                np.testing.assert_allclose(
                    theirs[name], expected[name], atol=2e-5, err_msg=backend
                )
            np.testing.assert_array_equal(
                theirs["generated"], expected["generated"], err_msg=backend
            )
