"""The ListOps generator against an independent evaluator, and the
tool's command line at tiny sizes."""

import json
import os
import sys

import numpy as np
import pytest

import keras_performer
from tests.tools.test_tools import ROOT
from tests.tools.test_tools import run_tool

sys.path.insert(0, os.path.join(ROOT, "tools"))
import listops  # noqa: E402


def evaluate(tokens):
    """Value and depth of a token list, by a stack machine."""
    stack, depth, deepest, widest = [[]], 0, 0, 0
    for token in tokens:
        if token.startswith("["):
            stack.append([token])
            depth += 1
            deepest = max(deepest, depth)
        elif token == "]":
            operator, *args = stack.pop()
            widest = max(widest, len(args))
            value = {
                "[MAX": max(args),
                "[MIN": min(args),
                "[MED": int(np.median(args)),
                "[SM": sum(args) % 10,
            }[operator]
            stack[-1].append(value)
            depth -= 1
        else:
            stack[-1].append(int(token))
    (value,) = stack[0]
    return value, deepest, widest


def test_expressions_follow_the_specification():
    rng = np.random.default_rng(0)
    ids, labels = listops.listops(
        200, rng, min_length=20, max_length=300, max_depth=4, max_args=5
    )
    assert ids.shape == (200, 300) and labels.shape == (200,)
    depths = []
    for row, label in zip(ids, labels, strict=True):
        tokens = [listops.VOCABULARY[i] for i in row if i]
        assert 20 <= len(tokens) <= 300
        assert np.all(row[len(tokens) :] == 0)  # padded at the end
        value, depth, width = evaluate(tokens)
        assert value == label
        assert depth <= 4 and width <= 5
        depths.append(depth)
    assert max(depths) == 4
    assert len(set(labels.tolist())) == 10
    # Seeded.
    again, _ = listops.listops(
        200, np.random.default_rng(0), 20, 300, max_depth=4, max_args=5
    )
    np.testing.assert_array_equal(ids, again)


@pytest.mark.parametrize(
    "name,value", [("[MAX", 9), ("[MIN", 0), ("[MED", 4), ("[SM", 9)]
)
def test_operators(name, value):
    assert listops.OPERATORS[name]([4, 1, 9, 5, 0, 2, 8]) == value


SIZES = dict(
    vocabulary_size=len(listops.VOCABULARY),
    num_layers=2,
    num_heads=2,
    hidden_dim=8,
    intermediate_dim=16,
    max_sequence_length=12,
)
ESTIMATOR = {"feature_map": "softmax", "num_random_features": 8}


def test_the_two_classifiers_take_the_same_inputs():
    ids = np.random.default_rng(0).integers(
        1, SIZES["vocabulary_size"], (3, 12)
    )
    ids[1, 5:] = 0
    inputs = listops.model_inputs(ids)
    np.testing.assert_array_equal(inputs["padding_mask"], ids != 0)
    exact = listops.build_exact(SIZES, seed=0)
    performer = listops.build_performer(SIZES, ESTIMATOR, seed=0)
    assert exact(inputs).shape == performer(inputs).shape == (3, 10)


def test_the_exact_classifier_converts_with_every_trained_weight():
    exact = listops.build_exact(SIZES, seed=0)
    for weight in exact.trainable_weights:  # Apart from any initial value.
        weight.assign(np.random.default_rng(2).normal(size=weight.shape))
    converted = keras_performer.convert_to_performer(exact, **ESTIMATOR)
    assert len(converted.trainable_weights) == len(exact.trainable_weights)
    for ours, theirs in zip(
        converted.trainable_weights, exact.trainable_weights, strict=True
    ):
        np.testing.assert_array_equal(np.array(ours), np.array(theirs))
    assert any(
        "projection_matrix" in w.path for w in converted.non_trainable_weights
    )


def test_command_line(tmp_path):
    output = os.path.join(tmp_path, "listops.json")
    stdout = run_tool(
        "listops.py",
        "--train_size=64",
        "--test_size=32",
        "--min_length=10",
        "--max_length=64",
        "--max_depth=3",
        "--epochs=1",
        "--hidden_dim=16",
        "--num_heads=2",
        "--estimators=softmax:8,dense_exponential:4",
        "--verbose=0",
        f"--output={output}",
    )
    assert "exact weights in the Performer (dense_exponential:4)" in stdout
    with open(output) as file:
        report = json.load(file)
    assert 0 <= report["exact"]["test_accuracy"] <= 1
    runs = report["performers"]
    assert [(r["feature_map"], r["num_random_features"]) for r in runs] == [
        ("softmax", 8),
        ("dense_exponential", 4),
    ]
    for run in runs:
        for name in ("test_accuracy", "converted_accuracy"):
            assert 0 <= run[name] <= 1
        assert run["seconds_per_step"] > 0
    assert report["flags"]["max_length"] == 64
