"""tools/conversion.py at tiny sizes: a trained GPT-2 converted at two
numbers of features, each fine-tuned to two checkpoints."""

import json
import os

import numpy as np

from tests.tools.test_tools import run_tool


def test_conversion_experiment(tmp_path):
    output = os.path.join(tmp_path, "conversion")
    run_tool(
        "conversion.py",
        "--train_size=32",
        "--test_size=16",
        "--epochs=1",
        "--batch_size=8",
        "--num_layers=1",
        "--num_heads=2",
        "--hidden_dim=16",
        "--num_random_features=8,16",
        "--fractions=0.25,1",
        "--verbose=0",
        f"--output={output}",
    )
    with open(output + ".json") as file:
        results = json.load(file)
    assert results["exact"]["steps"] == 4
    assert 0 < results["exact"]["bits_per_dim"] < 2
    assert set(results["converted"]) == {
        "softmax, 8 features",
        "softmax, 16 features",
    }
    for run in results["converted"].values():
        steps, bits = zip(*run["bits_per_dim"], strict=True)
        assert steps == (0, 1, 4)
        assert np.all(np.isfinite(bits)) and min(bits) > 0
    assert os.path.getsize(output + ".png") > 0
