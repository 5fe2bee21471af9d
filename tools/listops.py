"""ListOps (Long Range Arena): Performer encoder against exact attention.

Generates the ListOps task of the Long Range Arena (Tay et al. 2020,
following Nangia and Bowman 2018): nested expressions of the operators MAX,
MIN, MED (median) and SM (sum modulo 10) over digits, at most `max_depth`
levels deep and `max_args` arguments per operator, whose value (a digit) is
the label. Then trains a `keras_performer.models.PerformerTextClassifier`
on a `PerformerBackbone(causal=False)` (token and position embeddings,
pre-LN `PerformerEncoder` blocks, a final layer norm, the mean over the
tokens that are not padding, 10 classes), and the same classifier with
keras-hub `TransformerEncoder` blocks, both on token ids and their padding
mask, and prints both test accuracies, the majority-class baseline and the
time per training step. The Performer is trained once per estimator
(`feature_map:num_random_features` of `--estimators`). Finally the trained
exact model becomes a Performer for each estimator
(`keras_performer.convert_to_performer`), evaluated with no fine-tuning and
then fine-tuned for a fraction of the original steps (`--fine_tune_epochs`
of `--epochs`; 0 for none).

    python tools/listops.py [--train_size=4000] [--max_length=1000] \
        [--epochs=8] [--estimators=softmax:256,dense_exponential:64] \
        [--output=docs/listops.json]
"""

import json
import os
import time

from absl import app
from absl import flags

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402
import keras_hub  # noqa: E402
import measurement  # noqa: E402
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

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
flags.DEFINE_list(
    "estimators",
    ["softmax:256"],
    "Performer estimators, feature_map:num_random_features.",
)
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
NUM_CLASSES = 10  # An expression's value is a digit.
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


def model_sizes():
    """The sizes both classifiers share, from the flags."""
    return dict(
        vocabulary_size=len(VOCABULARY),
        num_layers=FLAGS.num_layers,
        num_heads=FLAGS.num_heads,
        hidden_dim=FLAGS.hidden_dim,
        intermediate_dim=2 * FLAGS.hidden_dim,
        max_sequence_length=FLAGS.max_length,
    )


def build_performer(sizes, estimator, seed):
    """The Performer classifier: a `PerformerBackbone` (`causal=False`:
    `PerformerEncoder` blocks) in a `PerformerTextClassifier` (mean over
    the tokens that are not padding, then 10 classes), on token ids."""
    backbone = keras_performer.models.PerformerBackbone(
        **sizes, causal=False, **estimator, seed=seed
    )
    return keras_performer.models.PerformerTextClassifier(
        backbone, num_classes=NUM_CLASSES
    )


def build_exact(sizes, seed):
    """The exact classifier: the Performer classifier's layers, under the
    same names, with keras-hub `TransformerEncoder` blocks in place of the
    `PerformerEncoder`s (which `convert_to_performer` replaces)."""
    embeddings_initializer = keras.initializers.RandomNormal(
        stddev=0.02, seed=seed
    )
    token_ids = keras.Input((None,), dtype="int32", name="token_ids")
    padding_mask = keras.Input((None,), dtype="int32", name="padding_mask")
    x = keras_hub.layers.ReversibleEmbedding(
        sizes["vocabulary_size"],
        sizes["hidden_dim"],
        embeddings_initializer=embeddings_initializer,
        name="token_embedding",
    )(token_ids)
    x = x + keras_hub.layers.PositionEmbedding(
        sizes["max_sequence_length"],
        initializer=keras.initializers.RandomNormal(stddev=0.02, seed=seed + 1),
        name="position_embedding",
    )(x)
    for i in range(sizes["num_layers"]):
        x = keras_hub.layers.TransformerEncoder(
            intermediate_dim=sizes["intermediate_dim"],
            num_heads=sizes["num_heads"],
            activation="gelu",
            normalize_first=True,
            name=f"transformer_layer_{i}",
        )(x, padding_mask=padding_mask)
    x = keras.layers.LayerNormalization(epsilon=1e-5, name="layer_norm")(x)
    # The mean over the tokens that are not padding.
    weights = keras.ops.cast(padding_mask, x.dtype)[..., None]
    pooled = keras.ops.sum(x * weights, axis=1) / keras.ops.maximum(
        keras.ops.sum(weights, axis=1), 1.0
    )
    outputs = keras.layers.Dense(NUM_CLASSES, name="logits")(pooled)
    return keras.Model(
        {"token_ids": token_ids, "padding_mask": padding_mask}, outputs
    )


def compile_classifier(model):
    model.compile(
        optimizer=keras.optimizers.Adam(FLAGS.learning_rate),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        metrics=["accuracy"],
    )
    return model


def model_inputs(ids):
    """The classifiers' inputs: the token ids and their padding mask."""
    return {"token_ids": ids, "padding_mask": (ids != 0).astype("int32")}


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


def batches(data, split):
    """The split as a `tf.data.Dataset` of batches; the training split
    shuffled anew each epoch, in the same orders for every model (keras-hub
    tasks take a dataset as it comes: `fit(shuffle=True)` shuffles only
    arrays)."""
    dataset = tf.data.Dataset.from_tensor_slices(data[split])
    if split == "train":
        dataset = dataset.shuffle(
            len(data[split][1]), seed=FLAGS.seed, reshuffle_each_iteration=True
        )
        return dataset.batch(FLAGS.batch_size)
    return dataset.batch(64)


def train(model, data, epochs, name):
    print(f"\n== {name}: {epochs} epochs")
    timer = StepTimer()
    model.fit(
        batches(data, "train"),
        epochs=epochs,
        shuffle=False,
        callbacks=[timer],
        verbose=FLAGS.verbose,
    )
    _, accuracy = model.evaluate(batches(data, "test"), verbose=0)
    print(f"{name}: test accuracy {accuracy:.4f}")
    return {
        "test_accuracy": accuracy,
        "seconds_per_step": timer.seconds_per_step(),
        "steps": len(timer.times),
    }


def parse_estimator(text):
    feature_map, num_random_features = text.split(":")
    return {
        "feature_map": feature_map,
        "num_random_features": int(num_random_features),
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
    data = {
        split: (model_inputs(ids), labels)
        for split, (ids, labels) in data.items()
    }
    sizes = model_sizes()
    keras.utils.set_random_seed(FLAGS.seed)
    exact = compile_classifier(build_exact(sizes, FLAGS.seed))
    results["exact"] = train(exact, data, FLAGS.epochs, "exact attention")
    results["performers"] = []
    for text in FLAGS.estimators:
        estimator = parse_estimator(text)
        keras.utils.set_random_seed(FLAGS.seed)
        performer = compile_classifier(
            build_performer(sizes, estimator, FLAGS.seed)
        )
        run = train(performer, data, FLAGS.epochs, f"Performer ({text})")
        converted = compile_classifier(
            keras_performer.convert_to_performer(
                exact, **estimator, seed=FLAGS.seed + 1
            )
        )
        _, accuracy = converted.evaluate(batches(data, "test"), verbose=0)
        print(f"exact weights in the Performer ({text}): {accuracy:.4f}")
        run["converted_accuracy"] = accuracy
        if FLAGS.fine_tune_epochs:
            fine_tuned = train(
                converted,
                data,
                FLAGS.fine_tune_epochs,
                f"exact weights in the Performer ({text}), fine-tuned",
            )
            run["converted_fine_tuned_accuracy"] = fine_tuned["test_accuracy"]
        results["performers"].append({**estimator, **run})

    print(
        f"\n{'model':<36} {'test accuracy':>13} {'s / step':>9} {'steps':>6}"
        f" {'converted':>9} {'fine-tuned':>10}"
    )
    rows = [
        ("majority class", {"test_accuracy": baseline}),
        ("exact (TransformerEncoder)", results["exact"]),
    ] + [
        (f"Performer {r['feature_map']}:{r['num_random_features']}", r)
        for r in results["performers"]
    ]
    for name, row in rows:
        line = f"{name:<36} {row['test_accuracy']:>13.4f}"
        if "seconds_per_step" in row:
            line += f" {row['seconds_per_step']:>9.3f} {row['steps']:>6}"
        if "converted_accuracy" in row:
            line += f" {row['converted_accuracy']:>9.4f}"
        if "converted_fine_tuned_accuracy" in row:
            line += f" {row['converted_fine_tuned_accuracy']:>10.4f}"
        print(line)
    if FLAGS.output:
        results["machine"] = measurement.machine()
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
                "estimators",
                "learning_rate",
                "seed",
            )
        }
        with open(FLAGS.output, "w") as f:
            json.dump(results, f, indent=2)
        print(f"wrote {FLAGS.output}")


if __name__ == "__main__":
    app.run(main)
