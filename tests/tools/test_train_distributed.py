"""Training with redraws under tf.distribute, through
tools/train_distributed.py in fresh processes (a process splits its CPU
into logical devices before TensorFlow starts): MirroredStrategy on 2
logical CPU devices and MultiWorkerMirroredStrategy with 2 worker processes
on 127.0.0.1 give every replica the same projections after every redraw,
and the weights (the running moments of FAVOR# too) of a single-device run
on the same global batch."""

import json
import os

import numpy as np
import pytest

from tests.tools.test_tools import run_tool

SMALL = (
    "--steps=8",
    "--interval=3",
    "--batch_size=8",
    "--sequence_length=32",
    "--hidden_dim=32",
    "--num_random_features=16",
    # FAVOR#: its running moments, like the projections, must agree
    # across replicas and with one device.
    "--feature_map=dense_exponential",
    "--nojit_compile",
)


def train(tmp_path, name, *args):
    output = os.path.join(tmp_path, f"{name}.json")
    weights = os.path.join(tmp_path, f"{name}.npz")
    stdout = run_tool(
        "train_distributed.py",
        *SMALL,
        *args,
        f"--output={output}",
        f"--weights_output={weights}",
    )
    assert "steps/s" in stdout
    with open(output) as f:
        results = json.load(f)
    with np.load(weights) as data:
        return results, dict(data)


@pytest.fixture(scope="module")
def single_device(tmp_path_factory):
    return train(
        tmp_path_factory.mktemp("single"), "single", "--strategy=default"
    )


def check_against_single_device(results, weights, single_device):
    single_results, single_weights = single_device
    assert results["replicas"] == 2
    # Redraws after steps 3 and 6, the same on every replica.
    assert [d["iterations"] for d in results["draws"]] == [3, 6]
    assert [d["draw"] for d in results["draws"]] == [1, 2]
    assert all(d["replica_spread"] == 0.0 for d in results["draws"])
    assert results["weights_replica_spread"] == 0.0
    assert [d["fingerprint"] for d in results["draws"]] == [
        d["fingerprint"] for d in single_results["draws"]
    ]
    assert weights.keys() == single_weights.keys()
    for name, value in weights.items():
        np.testing.assert_allclose(
            value, single_weights[name], rtol=1e-4, atol=1e-5, err_msg=name
        )
    assert results["last_loss"] < results["first_loss"]


def test_mirrored_on_two_logical_cpus(tmp_path, single_device):
    results, weights = train(
        tmp_path, "mirrored", "--strategy=mirrored", "--cpu_devices=2"
    )
    assert sum("CPU" in device for device in results["devices"]) == 2
    check_against_single_device(results, weights, single_device)


def test_multi_worker_with_two_local_processes(tmp_path, single_device):
    results, weights = train(
        tmp_path, "multi_worker", "--strategy=multi_worker", "--workers=2"
    )
    assert len(results["workers"]) == 2 and results["workers_agree"]
    check_against_single_device(results, weights, single_device)
