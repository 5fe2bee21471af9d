"""Serves a SavedModel in a fresh process, as TF Serving would: with
TensorFlow (and tensorflow-text, whose ops TF Serving links), without
keras_performer.

    python tests/export/fresh_process.py JOB.json

The job (JSON) names the SavedModel `path`, an `.npz` of `inputs`, and
`calls`: each `{"signature": name, "inputs": {input name: npz key, or
"$name" for that output of the call before}}`, and optionally `"path"`,
another SavedModel to call. The script writes, to the `.npz` at `outputs`,
each call's outputs as `"<call index>/<output name>"` (and, with
`"tfsm_layer": true`, the first call again through
`keras.layers.TFSMLayer` as `"tfsm_layer/<output name>"`), and to `ops`
(JSON) the op types of the graphs that TensorFlow alone does not register
and which of them tensorflow-text registers.
"""

import json
import os
import subprocess
import sys

TOOL = os.path.abspath(__file__)


def serve_in_fresh_process(tmp_path, path, inputs, calls, tfsm_layer=False):
    """Runs this script on a job; returns `(outputs, ops)`."""
    import numpy as np

    files = {
        name: os.path.join(tmp_path, f"fresh_{name}")
        for name in ("job.json", "inputs.npz", "outputs.npz", "ops.json")
    }
    np.savez(files["inputs.npz"], **inputs)
    job = {
        "path": path,
        "inputs": files["inputs.npz"],
        "calls": calls,
        "outputs": files["outputs.npz"],
        "ops": files["ops.json"],
        "tfsm_layer": tfsm_layer,
    }
    with open(files["job.json"], "w") as f:
        json.dump(job, f)
    done = subprocess.run(
        [sys.executable, TOOL, files["job.json"]],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    with np.load(files["outputs.npz"]) as data:
        outputs = dict(data)
    with open(files["ops.json"]) as f:
        return outputs, json.load(f)


# TensorFlow's `saved_model_cli`, with tensorflow-text's ops registered
# (as in TF Serving's model server).
SAVED_MODEL_CLI = (
    "import sys, tensorflow_text; "
    "from tensorflow.python.tools import saved_model_cli; "
    "sys.argv[0] = 'saved_model_cli'; saved_model_cli.main()"
)


def saved_model_cli(*args):
    """Runs TensorFlow's `saved_model_cli`; returns its standard output."""
    done = subprocess.run(
        [sys.executable, "-c", SAVED_MODEL_CLI] + list(args),
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    return done.stdout


def saved_model_cli_run(path, signature, option, inputs, outdir):
    """`saved_model_cli run` of one signature, `option` `--inputs` (`.npy`
    files) or `--input_exprs` (Python literals); returns its outputs."""
    import numpy as np

    saved_model_cli(
        "run",
        "--dir",
        path,
        "--tag_set",
        "serve",
        "--signature_def",
        signature,
        option,
        inputs,
        "--outdir",
        outdir,
    )
    return {
        name[: -len(".npy")]: np.load(os.path.join(outdir, name))
        for name in os.listdir(outdir)
    }


def graph_ops(path):
    from tensorflow.core.protobuf import saved_model_pb2

    saved_model = saved_model_pb2.SavedModel()
    with open(os.path.join(path, "saved_model.pb"), "rb") as f:
        saved_model.ParseFromString(f.read())
    ops = set()
    for graph in saved_model.meta_graphs:
        ops |= {node.op for node in graph.graph_def.node}
        for function in graph.graph_def.library.function:
            ops |= {node.op for node in function.node_def}
    return ops


def main(job_path):
    import numpy as np
    import tensorflow as tf
    from tensorflow.python.framework import op_def_registry

    assert "keras_performer" not in sys.modules
    with open(job_path) as f:
        job = json.load(f)
    paths = {job["path"]} | {
        call.get("path", job["path"]) for call in job["calls"]
    }
    not_in_tensorflow = sorted(
        {
            op
            for path in paths
            for op in graph_ops(path)
            if op_def_registry.get(op) is None
        }
    )
    import tensorflow_text  # noqa: F401  Registers its ops.

    ops = {
        "not_in_tensorflow": not_in_tensorflow,
        "not_in_tensorflow_text": [
            op for op in not_in_tensorflow if op_def_registry.get(op) is None
        ],
    }
    with open(job["ops"], "w") as f:
        json.dump(ops, f)
    with np.load(job["inputs"]) as data:
        inputs = dict(data)
    served = {path: tf.saved_model.load(path) for path in paths}
    outputs, previous = {}, {}
    for i, call in enumerate(job["calls"]):
        arguments = {
            name: previous[key[1:]] if key.startswith("$") else inputs[key]
            for name, key in call["inputs"].items()
        }
        signatures = served[call.get("path", job["path"])].signatures
        previous = signatures[call["signature"]](
            **{name: tf.constant(value) for name, value in arguments.items()}
        )
        for name, value in previous.items():
            value = value.numpy()
            if value.dtype == object:  # Strings: bytes, stored unpickled.
                value = value.astype(bytes)
            outputs[f"{i}/{name}"] = value
    if job["tfsm_layer"]:
        import keras

        first = job["calls"][0]
        layer = keras.layers.TFSMLayer(
            job["path"], call_endpoint=first["signature"]
        )
        (key,) = first["inputs"].values()
        result = layer(tf.constant(inputs[key]))
        for name, value in result.items():
            outputs[f"tfsm_layer/{name}"] = np.asarray(value)
    np.savez(job["outputs"], **outputs)


if __name__ == "__main__":
    main(sys.argv[1])
