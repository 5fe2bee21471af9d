"""Where the time of one PerformerAttention forward+backward goes.

Runs the layer's forward and backward pass once in a TensorFlow graph with
full tracing and prints the time of each kind of op (summed over the
threads that ran them) and of the costliest ops, so that optimizations aim
at what dominates. TensorFlow only.

    python tools/profile_ops.py --length=8192 --causal
"""

import collections
import os

from absl import app
from absl import flags

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

import keras_performer  # noqa: E402

FLAGS = flags.FLAGS
flags.DEFINE_integer("length", 8192, "Sequence length.")
flags.DEFINE_integer("batch", 1, "Batch size.")
flags.DEFINE_integer("heads", 8, "Attention heads.")
flags.DEFINE_integer("dim", 64, "Head size.")
flags.DEFINE_integer("features", 256, "Random features.")
flags.DEFINE_string("feature_map", "softmax", "Random feature map.")
flags.DEFINE_bool("causal", False, "Causal attention.")
flags.DEFINE_bool("layer", True, "Whole layer (else the attention op).")
flags.DEFINE_integer("top", 15, "Rows to print per table.")


def main(argv):
    del argv
    tf.compat.v1.disable_eager_execution()
    width = FLAGS.heads * FLAGS.dim
    if FLAGS.layer:
        shape = (FLAGS.batch, FLAGS.length, width)
        layer = keras_performer.PerformerAttention(
            num_heads=FLAGS.heads,
            key_dim=FLAGS.dim,
            feature_map=FLAGS.feature_map,
            num_random_features=FLAGS.features,
            seed=0,
        )
    else:
        shape = (FLAGS.batch, FLAGS.length, FLAGS.heads, FLAGS.dim)
        projection = keras_performer.ops.sample_projection_matrix(
            FLAGS.features, FLAGS.dim, seed=0
        )
    x = tf.compat.v1.placeholder(tf.float32, shape)
    if FLAGS.layer:
        out = layer(x, use_causal_mask=FLAGS.causal)
    else:
        out = keras_performer.ops.favor_attention(
            x,
            x,
            x,
            projection,
            feature_map=FLAGS.feature_map,
            is_causal=FLAGS.causal,
        )
    gradients = tf.gradients(tf.reduce_sum(out), [x])
    session = tf.compat.v1.Session()
    session.run(tf.compat.v1.global_variables_initializer())
    feed = {x: np.random.default_rng(0).normal(size=shape)}
    session.run(gradients, feed)  # warm up
    metadata = tf.compat.v1.RunMetadata()
    options = tf.compat.v1.RunOptions(
        trace_level=tf.compat.v1.RunOptions.FULL_TRACE
    )
    session.run(gradients, feed, options=options, run_metadata=metadata)

    by_type, by_node = collections.Counter(), collections.Counter()
    for device in metadata.step_stats.dev_stats:
        for node in device.node_stats:
            milliseconds = node.all_end_rel_micros / 1e3
            label = node.timeline_label
            op_type = label.split("=")[-1].split("(")[0].strip()
            by_type[op_type or node.node_name] += milliseconds
            by_node[node.node_name] += milliseconds
    total = sum(by_type.values())
    what = "layer" if FLAGS.layer else "op"
    print(
        f"{what} forward+backward, length {FLAGS.length}, "
        f"{'causal' if FLAGS.causal else 'bidirectional'}: "
        f"{total:.1f} ms of op time (summed over threads)\n"
    )
    for title, counter in (("op type", by_type), ("op", by_node)):
        print(f"{'ms':>8} {'share':>6}  {title}")
        for name, milliseconds in counter.most_common(FLAGS.top):
            print(f"{milliseconds:8.1f} {milliseconds / total:6.1%}  {name}")
        print()


if __name__ == "__main__":
    app.run(main)
