"""benchmark.py's layer and op timings, in the child process.

At `--level=layer`, PerformerAttention against keras.layers.MultiHeadAttention
(projections included), and the four projections alone; at `--level=op`,
keras_performer.ops.favor_attention against keras.ops.dot_product_attention.
Run through benchmark.py, whose flags these measurements read.
"""

import measurement
from absl import flags

FLAGS = flags.FLAGS


def make_layer(config):
    """PerformerAttention or MultiHeadAttention, as `config` says."""
    import keras

    import keras_performer

    keras.config.set_dtype_policy(FLAGS.dtype)
    common = {"num_heads": FLAGS.heads, "key_dim": FLAGS.dim}
    if config["method"] == "mha":
        return keras.layers.MultiHeadAttention(
            flash_attention=FLAGS.flash_attention, **common
        )
    return keras_performer.PerformerAttention(
        feature_map=config["feature_map"],
        num_random_features=FLAGS.features,
        chunk_size=FLAGS.chunk_size,
        seed=0,
        **common,
    )


def _timed_function(config):
    """The function to time, of one input `x`, and the input's shape."""
    import keras

    import keras_performer

    causal = config["mode"] == "causal"
    if config["method"] == "projections":
        return _projections()
    if FLAGS.level == "layer":
        layer = make_layer(config)
        width = FLAGS.heads * FLAGS.dim
        layer(keras.ops.zeros((1, 8, width)), keras.ops.zeros((1, 8, width)))

        def attention(x):
            return layer(x, x, use_causal_mask=causal)

        return attention, layer.trainable_weights, (FLAGS.batch, width)
    keras.config.set_dtype_policy(FLAGS.dtype)
    dtype = keras.config.dtype_policy().compute_dtype
    projection = keras_performer.ops.sample_projection_matrix(
        FLAGS.features, FLAGS.dim, seed=0
    )

    def attention(x):
        x = keras.ops.cast(x, dtype)
        if config["method"] == "mha":
            return keras.ops.dot_product_attention(
                x, x, x, is_causal=causal, flash_attention=FLAGS.flash_attention
            )
        return keras_performer.ops.favor_attention(
            x,
            x,
            x,
            projection,
            feature_map=config["feature_map"],
            is_causal=causal,
            chunk_size=FLAGS.chunk_size,
        )

    return attention, [], (FLAGS.batch, FLAGS.heads, FLAGS.dim)


def _projections():
    """MultiHeadAttention's four projections with `q + k + v` in place of
    attention: the part of the layer that attention does not change."""
    import keras

    keras.config.set_dtype_policy(FLAGS.dtype)
    heads, dim = FLAGS.heads, FLAGS.dim
    width = heads * dim
    query, key, value = (
        keras.layers.EinsumDense(
            "abc,cde->abde", output_shape=(None, heads, dim), bias_axes="de"
        )
        for _ in range(3)
    )
    output = keras.layers.EinsumDense(
        "abcd,cde->abe", output_shape=(None, width), bias_axes="e"
    )

    def attention(x):
        return output(query(x) + key(x) + value(x))

    attention(keras.ops.zeros((1, 8, width)))
    weights = [
        w for layer in (query, key, value, output) for w in layer.weights
    ]
    return attention, weights, (FLAGS.batch, width)


def measure(config):
    """Runs in the child process: times one method at one length."""
    import keras

    attention, weights, shape = _timed_function(config)
    shape = shape[:1] + (config["length"],) + shape[1:]
    x = keras.random.normal(shape)

    def loss(x):
        return keras.ops.sum(keras.ops.cast(attention(x), "float32"))

    forward, forward_backward = measurement.compiled(
        loss, list(weights), FLAGS.compile == "xla"
    )
    result = {"baseline_gb": measurement.peak_memory_gb()}
    result["forward_s"], result["forward_median_s"] = measurement.seconds(
        forward, x, repeats=FLAGS.repeats
    )
    result["forward_peak_gb"] = measurement.peak_memory_gb()
    result["forward_backward_s"], result["forward_backward_median_s"] = (
        measurement.seconds(forward_backward, x, repeats=FLAGS.repeats)
    )
    result["peak_gb"] = measurement.peak_memory_gb()
    return result
