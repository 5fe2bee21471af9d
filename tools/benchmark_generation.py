"""benchmark.py's decoding and generation timings (TensorFlow only).

Decoding: time per incremental step of a PerformerAttention layer at each
of `--decode_positions`. Generation: milliseconds per generated token of
`keras_performer.models.PerformerCausalLM` against keras-hub's
`GPT2CausalLM` of the same size (an exact model with a key/value cache)
from each of `--generate_positions`, both through the same `generate` call
(greedy sampler, token-id inputs, no stop token), with the cache each
holds; the prefill of the prompt is left out of the time per token (and
timed apart with `--generate_prefill`). `--generate_baseline` reads the
JSON of another run (another version of the package, from its own tree)
and prints its figures beside this run's. Run through benchmark.py, whose
flags (sizes, `--compile`, `--repeats`) these measurements read.
"""

import json
import time

import measurement
import numpy as np
from absl import flags

FLAGS = flags.FLAGS
flags.DEFINE_list(
    "decode_positions", [], "Positions at which to time decoding steps."
)
flags.DEFINE_integer("decode_steps", 50, "Decoding steps timed per position.")
flags.DEFINE_list(
    "generate_positions",
    [],
    "Positions (prompt lengths) from which to time generation: "
    "PerformerCausalLM.generate against keras-hub's GPT2CausalLM.generate "
    "of the same size.",
)
flags.DEFINE_integer("generate_tokens", 64, "Tokens generated per position.")
flags.DEFINE_integer("generate_layers", 4, "Decoder blocks of both models.")
flags.DEFINE_integer("generate_vocabulary", 1024, "Vocabulary of both models.")
flags.DEFINE_bool(
    "generate_prefill",
    False,
    "Also time generate's prefill of the whole sequence (one generate call "
    "with no step, after the one that compiles it), which the time per "
    "token leaves out. keras-hub's GPT-2 prefill is quadratic in the "
    "length: minutes per call at 16,000 tokens on a CPU (see --timeout).",
)
flags.DEFINE_string(
    "generate_baseline",
    None,
    "JSON file of an earlier benchmark.py run with --generate_positions "
    "(e.g. of another version of the package, run from its own tree): its "
    "generation figures are printed beside this run's and kept in this "
    "run's JSON under generation_baseline.",
)

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


def make_causal_lm(method, feature_map, max_length):
    """The model to generate with: a `PerformerCausalLM` (`method`
    "performer") or keras-hub's `GPT2CausalLM` ("exact") of the same size,
    without a preprocessor, compiled with the greedy sampler and, with
    `--compile=xla`, an XLA generate function."""
    import keras_hub

    import keras_performer

    sizes = _generation_sizes(max_length)
    if method == "performer":
        backbone = keras_performer.models.PerformerBackbone(
            **sizes,
            feature_map=feature_map,
            num_random_features=FLAGS.features,
            chunk_size=FLAGS.chunk_size,
            seed=0,
        )
        model = keras_performer.models.PerformerCausalLM(backbone)
    else:
        backbone = keras_hub.models.GPT2Backbone(**sizes)
        model = keras_hub.models.GPT2CausalLM(backbone, preprocessor=None)
    model.compile(sampler="greedy", jit_compile=FLAGS.compile == "xla")
    return model


def generation_inputs(batch, position, steps, vocabulary_size):
    """`generate`'s inputs without a preprocessor, `batch` rows of
    `position + steps` tokens: prompts of `position` random tokens
    right-padded by `steps` (`generate` fills the padding), and random
    tokens all marked as prompt (`generate` runs no step)."""
    rng = np.random.default_rng(0)
    max_length = position + steps
    token_ids = rng.integers(0, vocabulary_size, (batch, max_length))
    token_ids = token_ids.astype("int32")
    prompts = {
        "token_ids": np.where(np.arange(max_length) < position, token_ids, 0),
        "padding_mask": np.repeat(
            (np.arange(max_length) < position)[None], batch, axis=0
        ),
    }
    all_prompt = {
        "token_ids": token_ids,
        "padding_mask": np.ones((batch, max_length), bool),
    }
    return prompts, all_prompt


def _is_performer(model):
    import keras_performer

    return isinstance(model, keras_performer.models.PerformerCausalLM)


def generation_cache(model, batch, max_length):
    """The shape and dtype of the cache that `model.generate` holds for
    sequences of `max_length` tokens, and of the hidden states it starts
    from, from a trace (not a run) of the model's prefill."""
    import tensorflow as tf

    spec = tf.TensorSpec((batch, max_length), "int32")
    if _is_performer(model):
        prefill = tf.function(lambda ids: model._build_cache(ids, ids >= 0))
    else:
        prefill = tf.function(model._build_cache)
    hidden_states, cache = prefill.get_concrete_function(
        spec
    ).structured_outputs
    return [
        (tensor.shape.as_list(), tensor.dtype.name)
        for tensor in (cache, hidden_states)
    ]


def skip_prefill(model, batch, max_length):
    """Makes `model.generate` start its loop from the cache held before any
    token (the Performer's empty state, GPT-2's zeros), of the shape the
    prefill gives, instead of running the prefill: a step's cost depends on
    the shape of the cache, not on what it holds, and the prefill of
    keras-hub's GPT-2 (quadratic in the length) would take most of the
    time of a run at long positions. Undone by `restore_prefill`."""
    from keras import ops

    (cache_shape, cache_dtype), (hidden_shape, hidden_dtype) = generation_cache(
        model, batch, max_length
    )

    def build_cache(token_ids, *padding_mask):
        if _is_performer(model):
            cache = model.get_initial_cache(batch)
        else:
            cache = ops.zeros(cache_shape, cache_dtype)
        return ops.zeros(hidden_shape, hidden_dtype), cache

    model._build_cache = build_cache  # This instance's only.
    model.generate_function = None  # Traced again, without the prefill.
    return cache_shape, np.dtype(cache_dtype)


def restore_prefill(model):
    del model._build_cache
    model.generate_function = None


def best_seconds(calls, repeats):
    """Best time of each of `calls` (functions of no argument) over
    `repeats` rounds, after a warm-up round (which compiles); the calls
    alternate, so that a change in the machine's load reaches all of
    them."""
    times = [[] for _ in calls]
    for timed in [False] + [True] * repeats:
        for call, call_times in zip(calls, times, strict=True):
            start = time.perf_counter()
            call()
            if timed:
                call_times.append(time.perf_counter() - start)
    return [min(call_times) for call_times in times]


def measure_generate(config):
    """Runs in the child process: time per generated token from a
    position through the model's `generate`, and the size of its cache.

    Timed (best of `--repeats`): `generate` of `--generate_tokens` tokens
    after a prompt of `position` tokens, less `generate` of the same
    shapes with every token marked as prompt (no step), which leaves the
    steps alone; both start from the cache before any token
    (`skip_prefill`). With `--generate_prefill`, also one run of `generate`
    with no step and its real prefill of the whole sequence."""
    import keras
    import tensorflow as tf

    keras.config.set_dtype_policy(FLAGS.dtype)
    position, steps = config["position"], FLAGS.generate_tokens
    max_length = position + steps
    model = make_causal_lm(config["method"], config["feature_map"], max_length)
    prompts, all_prompt = (
        {name: tf.constant(value) for name, value in inputs.items()}
        for inputs in generation_inputs(
            FLAGS.batch, position, steps, FLAGS.generate_vocabulary
        )
    )

    def generate(inputs):
        return model.generate(inputs, stop_token_ids=None)["token_ids"]

    shape, dtype = skip_prefill(model, FLAGS.batch, max_length)
    generate_s, no_step_s = best_seconds(
        [lambda: generate(prompts), lambda: generate(all_prompt)],
        FLAGS.repeats,
    )
    seconds = max(generate_s - no_step_s, 1e-9)
    row = {
        "tokens_per_s": steps / seconds,
        "ms_per_token": 1e3 * seconds / steps,
        "cache_mb": int(np.prod(shape)) * dtype.itemsize / 2**20,
        "cache_shape": shape,
    }
    if FLAGS.generate_prefill:
        restore_prefill(model)
        # Once: GPT-2's prefill at long positions takes minutes.
        (row["prefill_s"],) = best_seconds([lambda: generate(all_prompt)], 1)
    row["peak_gb"] = measurement.peak_memory_gb()
    return row


def format_decoding(rows):
    """Decoding table: time per step at each position."""
    lines = [f"\n{'decode position':>16} {'ms per token':>13}"]
    for row in rows:
        step = row.get("step_ms", float("nan"))
        lines.append(f"{row['position']:>16} {step:>13.3f}")
    return "\n".join(lines)


def format_generation(rows):
    """Generation table: per method and position, with each method's cost
    per token relative to its first position (and the prefill's time,
    where measured)."""
    prefill = any("prefill_s" in row for row in rows)
    header = (
        f"\n{'generation':<34} {'position':>8} {'ms/token':>9} "
        f"{'tokens/s':>9} {'vs first':>9} {'cache MB':>9}"
    ) + (f" {'prefill s':>10}" if prefill else "")
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
            prefill_s = row.get("prefill_s", float("nan"))
            lines.append(
                f"{name:<34} {row['position']:>8} "
                f"{row['ms_per_token']:>9.2f} {row['tokens_per_s']:>9.1f} "
                f"{row['ms_per_token'] / first:>8.2f}x {row['cache_mb']:>9.1f}"
                + (f" {prefill_s:>10.3f}" if prefill else "")
            )
    return "\n".join(lines)


def read_baseline():
    """The generation rows of `--generate_baseline`'s JSON, or `None`
    without the flag."""
    if not FLAGS.generate_baseline:
        return None
    with open(FLAGS.generate_baseline) as file:
        rows = json.load(file).get("generation")
    if not rows:
        raise ValueError(
            "--generate_baseline must name the JSON of a benchmark.py run "
            "with --generate_positions (a list under 'generation'). "
            f"Received: --generate_baseline={FLAGS.generate_baseline}, "
            f"generation={rows!r}"
        )
    return rows


def format_baseline(rows, baseline):
    """This run's ms per token against the baseline run's, per method and
    position both measured, with each run's cost relative to its first
    position."""

    def figures(rows):
        ok = [r for r in rows if r["status"] == "ok"]
        firsts = {}
        for row in ok:
            firsts.setdefault(row["method"], row["ms_per_token"])
        return {
            (r["method"], r["position"]): (
                r["ms_per_token"],
                r["ms_per_token"] / firsts[r["method"]],
            )
            for r in ok
        }

    now, before = figures(rows), figures(baseline)
    header = (
        f"\n{'ms per token: baseline -> now':<34} {'position':>8} "
        f"{'baseline':>9} {'now':>9} {'now/base':>9} "
        f"{'base vs 1st':>12} {'now vs 1st':>11}"
    )
    lines = [header, "-" * (len(header) - 1)]
    for method, name in METHOD_NAMES.items():
        for key in sorted(k for k in now if k[0] == method and k in before):
            (ms, relative), (ms_before, relative_before) = now[key], before[key]
            lines.append(
                f"{name:<34} {key[1]:>8} {ms_before:>9.2f} {ms:>9.2f} "
                f"{ms / ms_before:>8.2f}x {relative_before:>11.2f}x "
                f"{relative:>10.2f}x"
            )
    return "\n".join(lines)
