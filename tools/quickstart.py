"""End-to-end run on generated data: Performer against exact attention.

Trains the same small model twice, once with `PerformerAttention` and once
with `keras.layers.MultiHeadAttention`, on a task only attention solves:
does the sequence hold a complementary pair of tokens (`t` and
`t + vocabulary / 2`)? Then saves the Performer model, reloads it and
predicts. Needs no download.

    python tools/quickstart.py [--length=256] [--epochs=6]
"""

import os
import tempfile
import time

from absl import app
from absl import flags

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402
import numpy as np  # noqa: E402

import keras_performer  # noqa: E402

FLAGS = flags.FLAGS
flags.DEFINE_integer("length", 256, "Tokens per sequence.")
flags.DEFINE_integer("vocabulary", 16, "Vocabulary size (even).")
flags.DEFINE_integer("train_size", 4096, "Training sequences.")
flags.DEFINE_integer("test_size", 1024, "Test sequences.")
flags.DEFINE_integer("epochs", 6, "Training epochs.")
flags.DEFINE_integer("num_random_features", 64, "FAVOR+ features.")
flags.DEFINE_integer("seed", 0, "Seed of the data and the models.")
flags.DEFINE_integer("verbose", 1, "Keras verbosity (1: progress bar).")


def complementary_pairs(size, length, vocabulary, rng):
    """Sequences and labels: 1 when some `t` and `t + vocabulary // 2` both
    occur. Negatives draw one token of each pair only; positives then plant
    the partner of a token present. Balanced."""
    half = vocabulary // 2
    sides = rng.integers(0, 2, size=(size, half))
    allowed = np.arange(half)[None, :] + half * sides  # one token per pair
    picks = rng.integers(0, half, size=(size, length))
    tokens = np.take_along_axis(allowed, picks, axis=1)
    labels = rng.integers(0, 2, size=size)
    rows = np.flatnonzero(labels)
    source = rng.integers(0, length, size=len(rows))
    target = (source + rng.integers(1, length, size=len(rows))) % length
    partner = (tokens[rows, source] + half) % vocabulary
    tokens[rows, target] = partner
    return tokens.astype("int32"), labels.astype("float32")


def build_model(attention, length, vocabulary):
    tokens = keras.Input((length,), dtype="int32")
    x = keras.layers.Embedding(vocabulary, 32)(tokens)
    x = keras.layers.LayerNormalization()(x + attention(x, x))
    x = keras.layers.Dense(64, activation="relu")(x)
    x = keras.layers.GlobalMaxPooling1D()(x)
    outputs = keras.layers.Dense(1, activation="sigmoid")(x)
    model = keras.Model(tokens, outputs)
    model.compile(
        keras.optimizers.Adam(3e-3),
        "binary_crossentropy",
        metrics=["accuracy"],
    )
    return model


def main(argv):
    del argv
    rng = np.random.default_rng(FLAGS.seed)
    data = {
        split: complementary_pairs(size, FLAGS.length, FLAGS.vocabulary, rng)
        for split, size in (
            ("train", FLAGS.train_size),
            ("test", FLAGS.test_size),
        )
    }
    attentions = {
        "PerformerAttention (FAVOR+)": keras_performer.PerformerAttention(
            num_heads=2,
            key_dim=16,
            num_random_features=FLAGS.num_random_features,
            seed=FLAGS.seed,
        ),
        "MultiHeadAttention (exact)": keras.layers.MultiHeadAttention(
            num_heads=2, key_dim=16, seed=FLAGS.seed
        ),
    }
    results = {}
    for name, attention in attentions.items():
        print(f"\n== {name}")
        keras.utils.set_random_seed(FLAGS.seed)
        model = build_model(attention, FLAGS.length, FLAGS.vocabulary)
        start = time.perf_counter()
        model.fit(
            *data["train"],
            epochs=FLAGS.epochs,
            batch_size=64,
            verbose=FLAGS.verbose,
        )
        seconds = time.perf_counter() - start
        _, accuracy = model.evaluate(*data["test"], verbose=0)
        results[name] = (accuracy, seconds, model)

    print(f"\n{'model':<30} {'test accuracy':>14} {'train seconds':>14}")
    for name, (accuracy, seconds, _) in results.items():
        print(f"{name:<30} {accuracy:>14.3f} {seconds:>14.1f}")

    model = results["PerformerAttention (FAVOR+)"][2]
    with tempfile.TemporaryDirectory() as directory:
        path = os.path.join(directory, "performer.keras")
        model.save(path)
        reloaded = keras.saving.load_model(path)
    tokens, labels = data["test"]
    before = model.predict(tokens[:8], verbose=0)
    after = reloaded.predict(tokens[:8], verbose=0)
    np.testing.assert_allclose(before, after, atol=1e-6)
    print(f"\nsaved, reloaded and predicted: {np.round(after[:, 0], 2)}")
    print(f"labels:                        {labels[:8]}")


if __name__ == "__main__":
    app.run(main)
