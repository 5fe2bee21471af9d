"""Keras 3's `model.export` on the Performer layers and blocks: a
SavedModel served in a fresh process (`tf.saved_model.load`,
`keras.layers.TFSMLayer`, `saved_model_cli`) gives the Keras model's
outputs, with dynamic batch and length, and the projections frozen as they
were at export. `keras_performer.export` loads on first use."""

import importlib
import os
import subprocess
import sys

import keras
import numpy as np
import pytest

from keras_performer import PerformerAttention
from keras_performer import PerformerDecoder
from keras_performer import PerformerEncoder
from keras_performer.callbacks import redraw_features
from tests.export.fresh_process import saved_model_cli
from tests.export.fresh_process import saved_model_cli_run
from tests.export.fresh_process import serve_in_fresh_process


def attention_model():
    sequence = keras.Input((None, 16), name="sequence")
    x = PerformerAttention(2, 8, seed=0)(sequence, use_causal_mask=True)
    encoded = PerformerEncoder(32, 2, num_random_features=64, seed=1)(x)
    x = PerformerDecoder(32, 2, num_random_features=64, seed=2)(
        x, encoder_sequence=encoded
    )
    return keras.Model(sequence, x)


def test_model_export_serves_the_keras_outputs(tmp_path):
    model = attention_model()
    path = os.path.join(tmp_path, "attention")
    model.export(path, format="tf_saved_model", verbose=False)
    rng = np.random.default_rng(0)
    # Batch sizes and lengths the model never saw.
    x = rng.normal(size=(3, 40, 16)).astype("float32")
    y = rng.normal(size=(1, 7, 16)).astype("float32")
    expected_x, expected_y = np.asarray(model(x)), np.asarray(model(y))
    # A redraw after the export changes the Keras model, not the export.
    redraw_features(model)
    assert np.abs(np.asarray(model(x)) - expected_x).max() > 1e-3

    outputs, ops = serve_in_fresh_process(
        tmp_path,
        path,
        {"x": x, "y": y},
        calls=[
            {"signature": "serving_default", "inputs": {"sequence": "x"}},
            {"signature": "serving_default", "inputs": {"sequence": "y"}},
        ],
        tfsm_layer=True,
    )
    np.testing.assert_allclose(outputs["0/output_0"], expected_x, atol=1e-5)
    np.testing.assert_allclose(outputs["1/output_0"], expected_y, atol=1e-5)
    np.testing.assert_allclose(
        outputs["tfsm_layer/output_0"], expected_x, atol=1e-5
    )
    assert ops["not_in_tensorflow"] == []

    shown = saved_model_cli("show", "--dir", path, "--all")
    assert "signature_def['serving_default']" in shown
    assert "shape: (-1, -1, 16)" in shown
    outdir = os.path.join(tmp_path, "cli")
    np.save(os.path.join(tmp_path, "x.npy"), x)
    outputs = saved_model_cli_run(
        path,
        "serving_default",
        "--inputs",
        f"sequence={os.path.join(tmp_path, 'x.npy')}",
        outdir,
    )
    np.testing.assert_allclose(outputs["output_0"], expected_x, atol=1e-5)


def test_export_is_loaded_on_first_use_and_needs_tensorflow(monkeypatch):
    done = subprocess.run(
        [
            sys.executable,
            "-c",
            "import sys, keras_performer; "
            "print('keras_performer.export' in sys.modules); "
            "keras_performer.export; "
            "print('keras_performer.export' in sys.modules)",
        ],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.stdout.split() == ["False", "True"], done.stderr[-2000:]
    monkeypatch.setattr(keras.config, "backend", lambda: "jax")
    monkeypatch.delitem(sys.modules, "keras_performer.export", raising=False)
    with pytest.raises(ImportError, match="TensorFlow backend"):
        importlib.import_module("keras_performer.export")
