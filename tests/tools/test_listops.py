"""The ListOps generator against an independent evaluator, and the
tool's command line at tiny sizes."""

import json
import os
import sys

import numpy as np
import pytest

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


def test_the_two_classifiers_take_the_same_inputs():
    ids = np.random.default_rng(0).integers(
        1, SIZES["vocabulary_size"], (3, 12)
    )
    ids[1, 5:] = 0
    inputs = listops.model_inputs(ids)
    np.testing.assert_array_equal(inputs["padding_mask"], ids != 0)
    exact = listops.build_exact(SIZES, seed=0)
    performer = listops.build_performer(SIZES, 8, seed=0)
    assert exact(inputs).shape == performer(inputs).shape == (3, 10)


def test_transfer_moves_every_trained_weight():
    """Every trainable weight of the Performer classifier gets the exact
    one's of the same path; its random projections stay its own."""
    exact = listops.build_exact(SIZES, seed=0)
    performer = listops.build_performer(SIZES, 8, seed=1)
    for weight in exact.trainable_weights:  # Apart from any initial value.
        weight.assign(np.random.default_rng(2).normal(size=weight.shape))
    projections = {w.path: np.array(w) for w in performer.non_trainable_weights}
    assert projections  # One per block.
    listops.transfer(exact, performer)
    exact_weights = {w.path: np.array(w) for w in exact.trainable_weights}
    performer_weights = {
        w.path: np.array(w) for w in performer.trainable_weights
    }
    assert performer_weights.keys() == exact_weights.keys()
    for path, value in performer_weights.items():
        np.testing.assert_array_equal(value, exact_weights[path], path)
    for weight in performer.non_trainable_weights:
        np.testing.assert_array_equal(
            np.array(weight), projections[weight.path]
        )


def test_transfer_names_a_missing_layer():
    exact = listops.build_exact({**SIZES, "num_layers": 3}, seed=0)
    performer = listops.build_performer(SIZES, 8, seed=0)
    with pytest.raises(ValueError, match="transformer_layer_2"):
        listops.transfer(exact, performer)


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
        "--num_random_features=8",
        "--verbose=0",
        f"--output={output}",
    )
    assert "exact -> Performer, fine-tuned" in stdout
    with open(output) as file:
        report = json.load(file)
    for name in ("exact", "performer", "transfer"):
        assert 0 <= report[name]["test_accuracy"] <= 1
        assert report[name]["seconds_per_step"] > 0
    assert report["flags"]["max_length"] == 64
