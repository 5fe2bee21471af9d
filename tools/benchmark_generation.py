"""benchmark.py's decoding and generation timings (TensorFlow only).

Decoding: time per incremental step of a PerformerAttention layer at each
of `--decode_positions`. Generation: tokens per second of
`PerformerCausalLM`'s generation loop against the same-size keras-hub
exact model (GPT-2's `TransformerDecoder` blocks with their key/value
cache) from each of `--generate_positions`, with the cache each holds.
Run through benchmark.py, whose flags (sizes, `--compile`, `--repeats`)
these measurements read.
"""

import time

import measurement
from absl import flags

FLAGS = flags.FLAGS
flags.DEFINE_list(
    "decode_positions", [], "Positions at which to time decoding steps."
)
flags.DEFINE_integer("decode_steps", 50, "Decoding steps timed per position.")
flags.DEFINE_list(
    "generate_positions",
    [],
    "Positions at which to time generation (PerformerCausalLM.generate "
    "against keras-hub's GPT-2 model of the same size).",
)
flags.DEFINE_integer("generate_tokens", 64, "Tokens generated per position.")
flags.DEFINE_integer("generate_layers", 4, "Decoder blocks of both models.")
flags.DEFINE_integer("generate_vocabulary", 1024, "Vocabulary of both models.")

METHOD_NAMES = {
    "performer": "PerformerCausalLM",
    "exact": "keras-hub GPT2CausalLM (exact)",
}


def measurement_count():
    """How many measurements `time_decoding` and `time_generation` run."""
    return len(FLAGS.decode_positions) + 2 * len(FLAGS.generate_positions)


def time_decoding(progress, run_child):
    """Rows of time per decoding step, one per position."""
    rows = []
    for position in map(int, FLAGS.decode_positions):
        progress.start(f"decode step at position {position}")
        config = {
            "kind": "decode",
            "method": "performer",
            "feature_map": FLAGS.feature_maps[0],
            "position": position,
        }
        row = {**config, **run_child(config)}
        if row["status"] == "ok":
            print(f"      {row['step_ms']:.3f} ms per token")
        rows.append(row)
    return rows


def time_generation(progress, run_child):
    """Rows of generation speed, per position and model."""
    rows = []
    for position in map(int, FLAGS.generate_positions):
        for method in METHOD_NAMES:
            progress.start(f"generate ({method}) from {position}")
            config = {
                "kind": "generate",
                "method": method,
                "feature_map": FLAGS.feature_maps[0]
                if FLAGS.feature_maps
                else "softmax",
                "position": position,
            }
            row = {**config, **run_child(config)}
            if row["status"] == "ok":
                print(
                    f"      {row['ms_per_token']:.2f} ms per token, cache "
                    f"{row['cache_mb']:.1f} MB"
                )
            else:
                print(f"      {row['status']}")
            rows.append(row)
    return rows


def measure_decode(layer, position):
    """Runs in the child process: time per decoding step of `layer` at a
    position."""
    import tensorflow as tf

    width = FLAGS.heads * FLAGS.dim
    prompt = tf.random.normal((FLAGS.batch, position, width))
    _, cache = layer(prompt, cache=layer.get_initial_cache(FLAGS.batch))
    token = tf.random.normal((FLAGS.batch, 1, width))

    @tf.function(jit_compile=FLAGS.compile == "xla")
    def step(token, cache):
        return layer(token, cache=cache)

    out, next_cache = step(token, cache)  # trace
    start = time.perf_counter()
    for _ in range(FLAGS.decode_steps):
        out, cache = step(token, cache)
    out.numpy()
    seconds = (time.perf_counter() - start) / FLAGS.decode_steps
    return {"step_ms": 1e3 * seconds, "cache_shape": list(cache.shape)}


def _generation_sizes(max_length):
    hidden_dim = FLAGS.heads * FLAGS.dim
    return dict(
        vocabulary_size=FLAGS.generate_vocabulary,
        num_layers=FLAGS.generate_layers,
        num_heads=FLAGS.heads,
        hidden_dim=hidden_dim,
        intermediate_dim=4 * hidden_dim,
        max_sequence_length=max_length,
    )


def measure_generate(config):
    """Runs in the child process: seconds per generated token from a
    position, and the size of the cache."""
    import keras
    import keras_hub
    import numpy as np
    import tensorflow as tf

    import keras_performer

    keras.config.set_dtype_policy(FLAGS.dtype)
    position, steps = config["position"], FLAGS.generate_tokens
    max_length = position + steps
    sizes = _generation_sizes(max_length)
    prompt = np.random.default_rng(0).integers(
        0, sizes["vocabulary_size"], (FLAGS.batch, position)
    )
    if config["method"] == "performer":
        model = keras_performer.PerformerCausalLM(
            **sizes,
            feature_map=config["feature_map"],
            num_random_features=FLAGS.features,
            chunk_size=FLAGS.chunk_size,
            seed=0,
        )
        # The prompt's prefill, as `generate` does it before its loop.
        _, _, cache = model.call_with_cache(
            prompt, model.get_initial_cache(FLAGS.batch), 0
        )
    else:
        # keras-hub's GPT-2: TransformerDecoder blocks with a key/value
        # cache. Its cache holds zeros instead of a prefill, which would
        # need the quadratic attention matrix of the prompt; the cost of a
        # step does not depend on the values.
        model = keras_hub.models.GPT2CausalLM(
            keras_hub.models.GPT2Backbone(**sizes), preprocessor=None
        )
        cache = tf.zeros(
            (FLAGS.batch, sizes["num_layers"], 2, max_length)
            + (FLAGS.heads, FLAGS.dim),
            model.compute_dtype,
        )
    # Both models in keras-hub's generation loop, the loop that
    # `PerformerCausalLM.generate` runs after its prefill.
    tokens = tf.pad(tf.constant(prompt, "int32"), [[0, 0], [0, steps]])
    mask = tf.tile(tf.range(max_length)[None, :] < position, (FLAGS.batch, 1))
    sampler = keras_hub.samplers.GreedySampler()

    @tf.function(jit_compile=FLAGS.compile == "xla")
    def loop(tokens, cache):
        def next_logits(tokens, cache, index):
            token = tf.slice(tokens, [0, index - 1], [FLAGS.batch, 1])
            logits, hidden, cache = model.call_with_cache(
                token, cache, index - 1
            )
            return logits[:, 0], hidden[:, 0], cache

        return sampler(
            next_logits, tokens, cache=cache, index=position, mask=mask
        )

    seconds, _ = measurement.seconds(loop, tokens, cache, repeats=FLAGS.repeats)
    cache_bytes = int(np.prod(cache.shape)) * cache.dtype.size
    return {
        "tokens_per_s": steps / seconds,
        "ms_per_token": 1e3 * seconds / steps,
        "cache_mb": cache_bytes / 2**20,
        "cache_shape": list(cache.shape),
        "peak_gb": measurement.peak_memory_gb(),
    }


def format_decoding(rows):
    """Decoding table: time per step at each position."""
    lines = [f"\n{'decode position':>16} {'ms per token':>13}"]
    for row in rows:
        step = row.get("step_ms", float("nan"))
        lines.append(f"{row['position']:>16} {step:>13.3f}")
    return "\n".join(lines)


def format_generation(rows):
    """Generation table: per method and position, with each method's cost
    per token relative to its first position."""
    header = (
        f"\n{'generation':<34} {'position':>8} {'ms/token':>9} "
        f"{'tokens/s':>9} {'vs first':>9} {'cache MB':>9}"
    )
    lines = [header, "-" * (len(header) - 1)]
    for method, name in METHOD_NAMES.items():
        first = None
        for row in rows:
            if row["method"] != method:
                continue
            if row["status"] != "ok":
                lines.append(f"{name:<34} {row['position']:>8} {row['status']}")
                continue
            first = first or row["ms_per_token"]
            lines.append(
                f"{name:<34} {row['position']:>8} "
                f"{row['ms_per_token']:>9.2f} {row['tokens_per_s']:>9.1f} "
                f"{row['ms_per_token'] / first:>8.2f}x {row['cache_mb']:>9.1f}"
            )
    return "\n".join(lines)
