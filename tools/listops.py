"""ListOps (Long Range Arena): Performer encoder against exact attention.

Generates the ListOps task of the Long Range Arena (Tay et al. 2020,
following Nangia and Bowman 2018): nested expressions of the operators MAX,
MIN, MED (median) and SM (sum modulo 10) over digits, at most `max_depth`
levels deep and `max_args` arguments per operator, whose value (a digit) is
the label. Then trains the same small encoder classifier with
`PerformerEncoder` blocks and with `keras_hub.layers.TransformerEncoder`
blocks, and prints both test accuracies, the majority-class baseline and
the time per training step. Finally it moves the trained exact model's
weights into a Performer model (`keras_performer.transfer_weights`) and
fine-tunes it for a fraction of the original steps (`--fine_tune_epochs`
of `--epochs`).

    python tools/listops.py [--train_size=4000] [--max_length=1000] \
        [--epochs=8] [--output=docs/listops.json]
"""

import json
import os
import time

from absl import app
from absl import flags

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402
import keras_hub  # noqa: E402
import numpy as np  # noqa: E402

import keras_performer  # noqa: E402

FLAGS = flags.FLAGS
flags.DEFINE_integer("train_size", 4000, "Training expressions.")
flags.DEFINE_integer("test_size", 1000, "Test expressions.")
flags.DEFINE_integer("min_length", 100, "Fewest tokens per expression.")
flags.DEFINE_integer("max_length", 1000, "Most tokens per expression.")
flags.DEFINE_integer("max_depth", 10, "Deepest nesting of operators.")
flags.DEFINE_integer("max_args", 10, "Most arguments of an operator.")
flags.DEFINE_integer("epochs", 8, "Training epochs of each model.")
flags.DEFINE_integer(
    "fine_tune_epochs", 1, "Epochs of fine-tuning after the weight transfer."
)
flags.DEFINE_integer("batch_size", 32, "Training batch size.")
flags.DEFINE_integer("hidden_dim", 64, "Model width.")
flags.DEFINE_integer("num_heads", 4, "Attention heads.")
flags.DEFINE_integer("num_layers", 2, "Encoder blocks.")
flags.DEFINE_integer("num_random_features", 256, "FAVOR+ features.")
flags.DEFINE_float("learning_rate", 1e-3, "Adam learning rate.")
flags.DEFINE_integer("seed", 0, "Seed of the data and the models.")
flags.DEFINE_integer("verbose", 1, "Keras verbosity (1: progress bar).")
flags.DEFINE_string("output", None, "JSON file for the results.")

OPERATORS = {
    "[MAX": max,
    "[MIN": min,
    "[MED": lambda args: int(np.median(args)),
    "[SM": lambda args: sum(args) % 10,
}
# Token ids: 0 is padding, then the digits, the operators and "]".
VOCABULARY = ["<pad>"] + [str(d) for d in range(10)] + list(OPERATORS) + ["]"]
TOKEN_IDS = {token: i for i, token in enumerate(VOCABULARY)}
# Chance that a node below the maximum depth is an operator (as in LRA's
# generator, where a node is a value with probability 0.75).
OPERATOR_PROBABILITY = 0.25


def random_expression(rng, max_depth, max_args, depth=0):
    """A random expression as `(tokens, value)`."""
    if depth >= max_depth or rng.random() >= OPERATOR_PROBABILITY:
        digit = int(rng.integers(0, 10))
        return [str(digit)], digit
    operator = list(OPERATORS)[rng.integers(0, len(OPERATORS))]
    tokens, values = [operator], []
    for _ in range(rng.integers(2, max_args + 1)):
        child_tokens, child_value = random_expression(
            rng, max_depth, max_args, depth + 1
        )
        tokens += child_tokens
        values.append(child_value)
    return tokens + ["]"], OPERATORS[operator](values)


def listops(size, rng, min_length, max_length, max_depth, max_args):
    """`size` expressions with `min_length` to `max_length` tokens: token
    ids `(size, max_length)` padded with 0, and their values `(size,)`."""
    ids = np.zeros((size, max_length), "int32")
    labels = np.zeros(size, "int32")
    count = 0
    while count < size:
        tokens, value = random_expression(rng, max_depth, max_args)
        if min_length <= len(tokens) <= max_length:
            ids[count, : len(tokens)] = [TOKEN_IDS[t] for t in tokens]
            labels[count] = value
            count += 1
    return ids, labels


def build_classifier(block, max_length):
    """Embeddings, two encoder blocks, masked mean pooling, 10 classes."""
    ids = keras.Input((max_length,), dtype="int32")
    x = keras_hub.layers.TokenAndPositionEmbedding(
        len(VOCABULARY), max_length, FLAGS.hidden_dim, mask_zero=True
    )(ids)
    for _ in range(FLAGS.num_layers):
        x = block(
            intermediate_dim=2 * FLAGS.hidden_dim, num_heads=FLAGS.num_heads
        )(x)
    x = keras.layers.GlobalAveragePooling1D()(x)
    outputs = keras.layers.Dense(10)(x)
    model = keras.Model(ids, outputs)
    model.compile(
        keras.optimizers.Adam(FLAGS.learning_rate),
        keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        metrics=["accuracy"],
    )
    return model


def performer_block(**kwargs):
    return keras_performer.PerformerEncoder(
        num_random_features=FLAGS.num_random_features, **kwargs
    )


class StepTimer(keras.callbacks.Callback):
    """Median seconds per training step (the first epoch's compile left
    out)."""

    def __init__(self):
        super().__init__()
        self.times = []

    def on_train_batch_begin(self, batch, logs=None):
        self._start = time.perf_counter()

    def on_train_batch_end(self, batch, logs=None):
        self.times.append(time.perf_counter() - self._start)

    def seconds_per_step(self):
        return float(np.median(self.times[1:]))


def train(model, data, epochs, name):
    print(f"\n== {name}: {epochs} epochs")
    timer = StepTimer()
    model.fit(
        *data["train"],
        epochs=epochs,
        batch_size=FLAGS.batch_size,
        callbacks=[timer],
        verbose=FLAGS.verbose,
    )
    _, accuracy = model.evaluate(*data["test"], batch_size=64, verbose=0)
    print(f"{name}: test accuracy {accuracy:.4f}")
    return {
        "test_accuracy": accuracy,
        "seconds_per_step": timer.seconds_per_step(),
        "steps": len(timer.times),
    }


def main(argv):
    del argv
    rng = np.random.default_rng(FLAGS.seed)
    start = time.perf_counter()
    data = {
        split: listops(
            size,
            rng,
            FLAGS.min_length,
            FLAGS.max_length,
            FLAGS.max_depth,
            FLAGS.max_args,
        )
        for split, size in (
            ("train", FLAGS.train_size),
            ("test", FLAGS.test_size),
        )
    }
    lengths = np.sum(data["train"][0] > 0, axis=1)
    majority = np.bincount(data["train"][1], minlength=10).argmax()
    baseline = float(np.mean(data["test"][1] == majority))
    print(
        f"generated {FLAGS.train_size} + {FLAGS.test_size} expressions in "
        f"{time.perf_counter() - start:.1f} s; lengths {lengths.min()} to "
        f"{lengths.max()} (median {int(np.median(lengths))}); "
        f"majority class {majority}: {baseline:.4f} of the test set"
    )

    results = {"majority_class_accuracy": baseline}
    keras.utils.set_random_seed(FLAGS.seed)
    exact = build_classifier(
        keras_hub.layers.TransformerEncoder, FLAGS.max_length
    )
    results["exact"] = train(exact, data, FLAGS.epochs, "exact attention")
    keras.utils.set_random_seed(FLAGS.seed)
    performer = build_classifier(performer_block, FLAGS.max_length)
    results["performer"] = train(
        performer, data, FLAGS.epochs, "Performer (FAVOR+)"
    )

    keras.utils.set_random_seed(FLAGS.seed + 1)
    transferred = build_classifier(performer_block, FLAGS.max_length)
    keras_performer.transfer_weights(exact, transferred)
    _, accuracy = transferred.evaluate(*data["test"], batch_size=64, verbose=0)
    print(
        f"\nexact weights in the Performer, before fine-tuning: {accuracy:.4f}"
    )
    results["transfer"] = {
        "accuracy_before_fine_tuning": accuracy,
        **train(
            transferred,
            data,
            FLAGS.fine_tune_epochs,
            "exact weights in the Performer, fine-tuned",
        ),
    }

    print(f"\n{'model':<34} {'test accuracy':>13} {'s / step':>9} {'steps':>6}")
    rows = (
        ("majority class", {"test_accuracy": baseline}),
        ("exact (TransformerEncoder)", results["exact"]),
        ("Performer (PerformerEncoder)", results["performer"]),
        ("exact -> Performer, fine-tuned", results["transfer"]),
    )
    for name, row in rows:
        seconds = row.get("seconds_per_step")
        print(
            f"{name:<34} {row['test_accuracy']:>13.4f} "
            + (f"{seconds:>9.3f} {row['steps']:>6}" if seconds else "")
        )
    if FLAGS.output:
        results["flags"] = {
            name: FLAGS[name].value
            for name in (
                "train_size",
                "test_size",
                "min_length",
                "max_length",
                "max_depth",
                "max_args",
                "epochs",
                "fine_tune_epochs",
                "batch_size",
                "hidden_dim",
                "num_heads",
                "num_layers",
                "num_random_features",
                "learning_rate",
                "seed",
            )
        }
        with open(FLAGS.output, "w") as f:
            json.dump(results, f, indent=2)
        print(f"wrote {FLAGS.output}")


if __name__ == "__main__":
    app.run(main)
