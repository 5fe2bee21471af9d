"""A small training job under a tf.distribute strategy, with redraws.

Trains a small `keras_performer.models.PerformerCausalLM` (on a
`PerformerBackbone`) on generated sequences (each token follows from the
one before by a fixed random table, with some noise; token ids and padding
masks in, the next tokens as targets) under the chosen strategy, with
`keras_performer.callbacks.FeatureRedraw`, and prints the steps per
second, the time of a step with a redraw against a plain step, and how
well the replicas agree: the largest difference between any two replicas'
projections after each redraw, and between their weights at the end.
One command checks a set-up:

    # GPUs of this machine (or, on a CPU, --cpu_devices=2 logical devices)
    python tools/train_distributed.py --strategy=mirrored
    # several machines: run on each, with its own TF_CONFIG
    python tools/train_distributed.py --strategy=multi_worker
    # or 2 worker processes on this machine (127.0.0.1, free ports)
    python tools/train_distributed.py --strategy=multi_worker --workers=2
    # a TPU (Colab, or --tpu=NAME on Cloud TPU)
    python tools/train_distributed.py --strategy=tpu

`--weights_output` writes the final weights (NumPy `.npz`); the same
`--seed`, `--steps` and `--batch_size` (the global batch) give the same
weights, to round-off, under every strategy. The step is XLA-compiled with
one replica (`--jit_compile`). With several workers, the steps run through
`fit_multi_worker` below, since Keras 3's `fit` fails there.
"""

import hashlib
import json
import os
import socket
import subprocess
import sys
import tempfile
import time

from absl import app
from absl import flags

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402
import measurement  # noqa: E402
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

import keras_performer  # noqa: E402
from keras_performer.callbacks import feature_redraw  # noqa: E402

FLAGS = flags.FLAGS
STRATEGIES = ("default", "mirrored", "multi_worker", "tpu")
flags.DEFINE_enum("strategy", "mirrored", STRATEGIES, "tf.distribute strategy.")
flags.DEFINE_integer(
    "cpu_devices",
    0,
    "Split the CPU into this many logical devices (to try mirrored or "
    "multi_worker on a machine without GPUs); 0 keeps the devices as they are.",
)
flags.DEFINE_integer(
    "workers",
    0,
    "multi_worker only: launch this many worker processes on this machine. "
    "0: this process is one worker, described by the TF_CONFIG variable.",
)
flags.DEFINE_string("tpu", "", "TPU name or address ('' in Colab).")
flags.DEFINE_integer("steps", 40, "Training steps.")
flags.DEFINE_integer("batch_size", 16, "Global batch size.")
flags.DEFINE_integer("sequence_length", 128, "Tokens per sequence.")
flags.DEFINE_integer("vocabulary_size", 64, "Token ids.")
flags.DEFINE_integer("num_layers", 2, "Decoder blocks.")
flags.DEFINE_integer("num_heads", 4, "Attention heads.")
flags.DEFINE_integer("hidden_dim", 64, "Model width.")
flags.DEFINE_integer("num_random_features", 64, "FAVOR+ features.")
flags.DEFINE_enum(
    "feature_map", "softmax", keras_performer.ops.FEATURE_MAPS, "Feature map."
)
flags.DEFINE_integer("interval", 5, "Training steps between redraws.")
flags.DEFINE_integer("steps_per_execution", 1, "Steps per compiled call.")
flags.DEFINE_bool(
    "jit_compile",
    None,
    "Compile the training step with XLA. Default: with one replica only "
    "(Keras cannot compile a MirroredStrategy step that spans devices, "
    "keras-team/keras#19005; a TPU compiles its step with XLA anyway).",
)
flags.DEFINE_float("learning_rate", 1e-3, "Adam learning rate.")
flags.DEFINE_integer("seed", 0, "Seed of the data and the model.")
flags.DEFINE_string("weights_output", None, ".npz file of the final weights.")
flags.DEFINE_string("output", None, "JSON file for the results.")


def make_strategy():
    if FLAGS.cpu_devices:
        (cpu,) = tf.config.list_physical_devices("CPU")
        tf.config.set_logical_device_configuration(
            cpu, [tf.config.LogicalDeviceConfiguration()] * FLAGS.cpu_devices
        )
    if FLAGS.strategy == "default":
        return tf.distribute.get_strategy()
    if FLAGS.strategy == "mirrored":
        devices = tf.config.list_logical_devices("GPU") or (
            tf.config.list_logical_devices("CPU")
        )
        return tf.distribute.MirroredStrategy([d.name for d in devices])
    if FLAGS.strategy == "multi_worker":
        return tf.distribute.MultiWorkerMirroredStrategy()
    resolver = tf.distribute.cluster_resolver.TPUClusterResolver(FLAGS.tpu)
    tf.config.experimental_connect_to_cluster(resolver)
    tf.tpu.experimental.initialize_tpu_system(resolver)
    return tf.distribute.TPUStrategy(resolver)


def make_dataset():
    """Sequences where each token follows from the one before by a fixed
    random table, one token in ten replaced by noise: a language model
    can learn it, and the loss shows whether it does. Batches of
    `{"token_ids", "padding_mask"}` (no padding) and the next tokens."""
    rng = np.random.default_rng(FLAGS.seed)
    table = rng.permutation(FLAGS.vocabulary_size)
    size = FLAGS.steps * FLAGS.batch_size
    tokens = np.empty((size, FLAGS.sequence_length + 1), "int32")
    tokens[:, 0] = rng.integers(0, FLAGS.vocabulary_size, size)
    for i in range(1, tokens.shape[1]):
        tokens[:, i] = table[tokens[:, i - 1]]
        noise = rng.random(size) < 0.1
        tokens[noise, i] = rng.integers(0, FLAGS.vocabulary_size, noise.sum())
    inputs = {
        "token_ids": tokens[:, :-1],
        "padding_mask": np.ones((size, FLAGS.sequence_length), "int32"),
    }
    dataset = tf.data.Dataset.from_tensor_slices((inputs, tokens[:, 1:])).batch(
        FLAGS.batch_size, drop_remainder=True
    )
    # Each worker keeps its share of every global batch, in order.
    options = tf.data.Options()
    options.experimental_distribute.auto_shard_policy = (
        tf.data.experimental.AutoShardPolicy.DATA
    )
    return dataset.with_options(options)


def make_model(strategy):
    keras.utils.set_random_seed(FLAGS.seed)  # Same initial weights.
    backbone = keras_performer.models.PerformerBackbone(
        vocabulary_size=FLAGS.vocabulary_size,
        num_layers=FLAGS.num_layers,
        num_heads=FLAGS.num_heads,
        hidden_dim=FLAGS.hidden_dim,
        intermediate_dim=2 * FLAGS.hidden_dim,
        max_sequence_length=FLAGS.sequence_length,
        num_random_features=FLAGS.num_random_features,
        feature_map=FLAGS.feature_map,
        seed=FLAGS.seed,
    )
    model = keras_performer.models.PerformerCausalLM(backbone)
    model.compile(
        optimizer=keras.optimizers.Adam(FLAGS.learning_rate),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        weighted_metrics=[],
        steps_per_execution=FLAGS.steps_per_execution,
        jit_compile=jit_compile(strategy),
    )
    return model


def jit_compile(strategy):
    several = strategy.num_replicas_in_sync > 1 or isinstance(
        strategy, tf.distribute.TPUStrategy
    )
    if FLAGS.jit_compile and several:
        raise app.UsageError(
            "--jit_compile needs a single replica: Keras compiles the "
            "training step of all replicas as one XLA cluster, which cannot "
            "span devices (keras-team/keras#19005), and a TPU compiles its "
            "step with XLA anyway. Received: --jit_compile with "
            f"{strategy.num_replicas_in_sync} replicas"
        )
    return not several if FLAGS.jit_compile is None else FLAGS.jit_compile


def fit_multi_worker(model, strategy, dataset, callbacks):
    """What `model.fit(dataset, callbacks=callbacks)` does, for several
    workers: Keras 3's `fit` fails there before the first step, in its own
    code (it reduces the first batch and the scalar logs across workers with
    calls that `MultiWorkerMirroredStrategy` rejects; tensorflow/tensorflow
    #72388), so the steps run as `strategy.run(model.train_step)` and the
    callbacks are called as `fit` calls them."""

    @tf.function
    def train_step(batch):
        logs = strategy.run(model.train_step, args=(batch,))
        return strategy.reduce("MEAN", logs["loss"], axis=None)

    callbacks = keras.callbacks.CallbackList(callbacks, model=model)
    callbacks.on_train_begin()
    callbacks.on_epoch_begin(0)
    for step, batch in enumerate(
        strategy.experimental_distribute_dataset(dataset)
    ):
        callbacks.on_train_batch_begin(step)
        loss = train_step(batch)
        callbacks.on_train_batch_end(step, {"loss": float(loss)})
    callbacks.on_epoch_end(0)
    callbacks.on_train_end()


def replica_values(strategy, variable):
    """The value of a variable on each replica of this worker."""
    return [
        np.asarray(value)
        for value in strategy.experimental_local_results(variable.value)
    ]


def replica_spread(strategy, variables):
    """Largest difference between two replicas' values of any variable."""
    spread = 0.0
    for variable in variables:
        values = replica_values(strategy, variable)
        spread = max(
            spread, max(float(np.max(np.abs(v - values[0]))) for v in values)
        )
    return spread


def fingerprint(arrays):
    digest = hashlib.sha256()
    for array in arrays:
        digest.update(np.ascontiguousarray(array).tobytes())
    return digest.hexdigest()[:16]


class StepRecorder(keras.callbacks.Callback):
    """Times each compiled call and, after each redraw, records how far
    apart the replicas' projections are and a fingerprint of them (equal
    on every worker when the workers agree)."""

    def __init__(self, strategy, layers):
        super().__init__()
        self.strategy = strategy
        self.layers = layers
        self.times, self.redrawn, self.losses, self.draws = [], [], [], []

    def on_train_batch_begin(self, batch, logs=None):
        self._draw = _read(self.layers[0].projection_draw)
        self._start = time.perf_counter()

    def on_train_batch_end(self, batch, logs=None):
        self.losses.append(float(logs["loss"]))  # Waits for the step.
        self.times.append(time.perf_counter() - self._start)
        draw = _read(self.layers[0].projection_draw)
        self.redrawn.append(draw != self._draw)
        if draw != self._draw:
            projections = [layer.projection_matrix for layer in self.layers]
            self.draws.append(
                {
                    "draw": draw,
                    "iterations": _read(self.model.optimizer.iterations),
                    "replica_spread": replica_spread(
                        self.strategy, projections
                    ),
                    "fingerprint": fingerprint(
                        [np.asarray(p) for p in projections]
                    ),
                }
            )


def train():
    strategy = make_strategy()
    with strategy.scope():
        model = make_model(strategy)
    layers = feature_redraw.redrawable_layers(model)
    recorder = StepRecorder(strategy, layers)
    callbacks = [
        keras_performer.callbacks.FeatureRedraw(FLAGS.interval),
        recorder,
    ]
    start = time.perf_counter()
    if strategy.extended._in_multi_worker_mode():
        fit_multi_worker(model, strategy, make_dataset(), callbacks)
    else:
        model.fit(make_dataset(), callbacks=callbacks, shuffle=False, verbose=0)
    total = time.perf_counter() - start
    times = np.array(recorder.times[1:])  # The first call compiles.
    redrawn = np.array(recorder.redrawn[1:])
    per_call = FLAGS.steps_per_execution
    results = {
        "strategy": FLAGS.strategy,
        "replicas": strategy.num_replicas_in_sync,
        "devices": [d.name for d in tf.config.list_logical_devices()],
        "jit_compile": model.jit_compile,
        "steps": FLAGS.steps,
        "global_batch_size": FLAGS.batch_size,
        "interval": FLAGS.interval,
        "fit_seconds": total,
        "steps_per_second": per_call * len(times) / float(times.sum()),
        "plain_step_seconds": _median(times[~redrawn]) / per_call,
        "redraw_step_seconds": _median(times[redrawn]) / per_call,
        "first_loss": recorder.losses[0],
        "last_loss": recorder.losses[-1],
        "draws": recorder.draws,
        "weights_replica_spread": replica_spread(strategy, model.weights),
        "weights_fingerprint": fingerprint(
            [np.asarray(w) for w in model.weights]
        ),
    }
    if FLAGS.weights_output and _is_chief():
        np.savez(
            FLAGS.weights_output,
            **{w.path: np.asarray(w) for w in model.weights},
        )
    return results


def _read(scalar):
    return int(keras.ops.convert_to_numpy(scalar))


def _median(values):
    return float(np.median(values)) if len(values) else float("nan")


def _is_chief():
    task = json.loads(os.environ.get("TF_CONFIG", "{}")).get("task", {})
    return task.get("index", 0) == 0


def launch_local_workers():
    """Runs this tool as `--workers` processes on 127.0.0.1, each with its
    own TF_CONFIG, and gathers their results."""
    ports = []
    for _ in range(FLAGS.workers):
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            ports.append(s.getsockname()[1])
    cluster = {"worker": [f"127.0.0.1:{port}" for port in ports]}
    directory = tempfile.mkdtemp()
    arguments = [
        a for a in sys.argv[1:] if not a.startswith(("--workers", "--output"))
    ]
    processes = []
    for index in range(FLAGS.workers):
        env = dict(os.environ)
        env["TF_CONFIG"] = json.dumps(
            {"cluster": cluster, "task": {"type": "worker", "index": index}}
        )
        output = os.path.join(directory, f"worker_{index}.json")
        processes.append(
            subprocess.Popen(
                [sys.executable, __file__, *arguments, f"--output={output}"],
                env=env,
            )
        )
    codes = [process.wait() for process in processes]
    if any(codes):
        raise RuntimeError(f"A worker failed. Received: exit codes {codes}")
    workers = []
    for index in range(FLAGS.workers):
        with open(os.path.join(directory, f"worker_{index}.json")) as f:
            workers.append(json.load(f))
    chief = dict(workers[0])
    chief["workers"] = workers
    chief["workers_agree"] = all(
        w["weights_fingerprint"] == chief["weights_fingerprint"]
        and [d["fingerprint"] for d in w["draws"]]
        == [d["fingerprint"] for d in chief["draws"]]
        for w in workers
    )
    return chief


def report(results):
    print(
        f"{results['strategy']}: {results['replicas']} replicas, global "
        f"batch {results['global_batch_size']}, jit_compile="
        f"{results['jit_compile']}"
    )
    print(
        f"  {results['steps_per_second']:.2f} steps/s; a step with a redraw "
        f"{1e3 * results['redraw_step_seconds']:.1f} ms against "
        f"{1e3 * results['plain_step_seconds']:.1f} ms for a plain step"
    )
    print(f"  loss {results['first_loss']:.3f} -> {results['last_loss']:.3f}")
    spread = max([d["replica_spread"] for d in results["draws"]] + [0.0])
    print(
        f"  {len(results['draws'])} redraws; largest difference between "
        f"replicas: projections {spread:.1e}, weights at the end "
        f"{results['weights_replica_spread']:.1e}"
    )
    if "workers_agree" in results:
        print(
            f"  workers agree (projections and weights): "
            f"{results['workers_agree']}"
        )


def main(argv):
    del argv
    if FLAGS.strategy == "multi_worker" and FLAGS.workers:
        results = launch_local_workers()
    else:
        results = train()
    if FLAGS.output:
        measurement.write_json(
            FLAGS.output, dict(results, machine=measurement.machine())
        )
    if not FLAGS.workers and "TF_CONFIG" in os.environ:
        return  # A worker launched by this tool: the launcher reports.
    report(results)


if __name__ == "__main__":
    app.run(main)
