"""Speed and memory of PerformerAttention against MultiHeadAttention.

Times forward and forward+backward passes of whole layers (projections
included) over sequence lengths (best of `--repeats` runs), records peak
memory, and measures the machine's matmul FLOP rate so that each method's
achieved FLOP/s can be read against it. Each measurement runs in its own
process, so that peak memory is its own and running out of memory ends that
process only: a method stops at the first length it cannot hold. Also times
incremental decoding steps at several positions, and generation: tokens per
second of `PerformerCausalLM.generate` against the same-size keras-hub
exact model (GPT-2's `TransformerDecoder` blocks with their key/value
cache) at given positions, with the cache each holds. Prints a table,
writes JSON and a log-log plot (PNG).

    python tools/benchmark.py --lengths=1024,8192 --feature_maps=softmax
    python tools/benchmark.py --decode_positions=10,1000,16000
    python tools/benchmark.py --lengths= --generate_positions=1000,16000

Runs on CPU and GPU. The layer and op timings (`--level`) and the matmul
rate run on every Keras backend (`KERAS_BACKEND=jax python
tools/benchmark.py ...`): compiled with `tf.function` (`--compile`) on
TensorFlow, with `jax.jit` on JAX, eagerly on PyTorch (`torch.compile` takes
minutes per shape on a CPU). Decoding and generation timings, and peak
GPU memory, need TensorFlow (on another backend the peak is the process's
host memory).
"""

import json
import os
import platform
import resource
import subprocess
import sys
import time

from absl import app
from absl import flags

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

FLAGS = flags.FLAGS
flags.DEFINE_list(
    "lengths",
    [str(2**i) for i in range(8, 17)],
    "Sequence lengths, ascending.",
)
flags.DEFINE_list("modes", ["bidirectional", "causal"], "Attention modes.")
flags.DEFINE_list(
    "feature_maps", ["softmax"], "PerformerAttention feature maps to measure."
)
flags.DEFINE_bool("mha", True, "Also measure the exact attention baseline.")
flags.DEFINE_bool(
    "projections",
    True,
    "At --level=layer, also measure the four dense projections alone "
    "(attention replaced by q + k + v): no layer with them is faster, so "
    "MultiHeadAttention's time over theirs is the largest speedup any "
    "attention can give (the paper's 'OPT', Fig. 3).",
)
flags.DEFINE_enum(
    "level",
    "layer",
    ["layer", "op"],
    "layer: PerformerAttention against keras.layers.MultiHeadAttention "
    "(projections included); op: keras_performer.ops.favor_attention "
    "against keras.ops.dot_product_attention (flash attention where the "
    "backend has it).",
)
flags.DEFINE_integer("batch", 1, "Batch size.")
flags.DEFINE_integer("heads", 8, "Attention heads.")
flags.DEFINE_integer("dim", 64, "Head size (key_dim = value_dim).")
flags.DEFINE_integer("features", 256, "Random features (PerformerAttention).")
flags.DEFINE_integer("chunk_size", 128, "Causal chunk size.")
flags.DEFINE_enum("compile", "graph", ["graph", "xla"], "tf.function mode.")
flags.DEFINE_string("dtype", "float32", "Dtype policy, e.g. mixed_bfloat16.")
flags.DEFINE_integer(
    "repeats", 5, "Timed runs per measurement (best and median kept)."
)
flags.DEFINE_float(
    "memory_limit_gb", 20.0, "Memory a measurement may use (CPU)."
)
flags.DEFINE_integer("timeout", 900, "Seconds a measurement may take.")
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
flags.DEFINE_integer("matmul_size", 4096, "Size of the FLOP-rate matmul.")
flags.DEFINE_string("output", "docs/benchmark", "Output path prefix.")
flags.DEFINE_string("child", None, "Internal: run one measurement (JSON).")


def _configs():
    configs = []
    if FLAGS.projections and FLAGS.level == "layer":
        configs.append(
            {"method": "projections", "mode": None, "feature_map": None}
        )
    for mode in FLAGS.modes:
        if FLAGS.mha:
            configs.append({"method": "mha", "mode": mode, "feature_map": None})
        for feature_map in FLAGS.feature_maps:
            configs.append(
                {
                    "method": "performer",
                    "mode": mode,
                    "feature_map": feature_map,
                }
            )
    return configs


def _method_name(config):
    if config["method"] == "projections":
        return "projections only (no attention)"
    if config["method"] == "mha":
        if FLAGS.level == "layer":
            return "MultiHeadAttention"
        return "dot_product_attention"
    name = "Performer" if FLAGS.level == "layer" else "favor_attention"
    return f"{name}-{config['feature_map']}"


def _label(config):
    if config["mode"] is None:
        return _method_name(config)
    return f"{_method_name(config)} {config['mode']}"


def layer_flops(config, length):
    """Forward FLOPs: projections, plus attention counted as exact
    `4 L^2 d` or FAVOR `8 L m d` per head (paper's cost model)."""
    batch, heads, dim = FLAGS.batch, FLAGS.heads, FLAGS.dim
    width = heads * dim
    projections = 2 * batch * length * width * width * 4
    if FLAGS.level == "op":
        projections = 0
    if config["method"] == "projections":
        return projections
    if config["method"] == "mha":
        attention = 4 * batch * heads * length * length * dim
    else:
        attention = 8 * batch * heads * length * FLAGS.features * dim
    return projections + attention


def _peak_memory_gb(tf=None):
    if tf is not None and tf.config.list_physical_devices("GPU"):
        return tf.config.experimental.get_memory_info("GPU:0")["peak"] / 2**30
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 2**20
    return float("nan")


def _seconds(function, *args):
    """Best and median time of `--repeats` runs, after a warm-up run. The
    best is the one least disturbed by other load on the machine."""
    import keras

    keras.ops.convert_to_numpy(function(*args))  # trace, compile, warm up
    times = []
    for _ in range(FLAGS.repeats):
        start = time.perf_counter()
        keras.ops.convert_to_numpy(function(*args))
        times.append(time.perf_counter() - start)
    return min(times), sorted(times)[len(times) // 2]


def _make_layer(config):
    import keras

    import keras_performer

    keras.config.set_dtype_policy(FLAGS.dtype)
    common = {"num_heads": FLAGS.heads, "key_dim": FLAGS.dim}
    if config["method"] == "mha":
        return keras.layers.MultiHeadAttention(**common)
    return keras_performer.PerformerAttention(
        feature_map=config["feature_map"],
        num_random_features=FLAGS.features,
        chunk_size=FLAGS.chunk_size,
        seed=0,
        **common,
    )


def _attention_function(config):
    """The function to time, of one input `x`, and the input's shape."""
    import keras

    import keras_performer

    causal = config["mode"] == "causal"
    if config["method"] == "projections":
        return _projections_function()
    if FLAGS.level == "layer":
        layer = _make_layer(config)
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
            return keras.ops.dot_product_attention(x, x, x, is_causal=causal)
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


def _projections_function():
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


def _speedups(results):
    """The exact baseline's forward+backward time over each method's, at
    each length both ran, per mode."""
    times = {
        (r["method"], r["mode"], r["feature_map"], r["length"]): r[
            "forward_backward_s"
        ]
        for r in results
        if r["status"] == "ok"
    }
    speedups = []
    for (method, mode, feature_map, length), seconds in times.items():
        if method == "mha":
            continue
        for mha_mode in [mode] if mode else FLAGS.modes:
            mha = times.get(("mha", mha_mode, None, length))
            if mha:
                speedups.append(
                    {
                        "method": method,
                        "mode": mha_mode,
                        "feature_map": feature_map,
                        "length": length,
                        "speedup": mha / seconds,
                    }
                )
    # By mode and length; the projections' ceiling after the methods.
    return sorted(
        speedups,
        key=lambda r: (
            FLAGS.modes.index(r["mode"]),
            r["length"],
            r["method"] == "projections",
            str(r["feature_map"]),
        ),
    )


def _compiled(loss, weights):
    """`loss(x)` and the sum of its gradients with respect to `x` and the
    `weights`, compiled as the backend compiles a training step."""
    import keras

    backend = keras.backend.backend()
    if backend == "tensorflow":
        import tensorflow as tf

        jit = FLAGS.compile == "xla"

        def forward_backward(x):
            with tf.GradientTape() as tape:
                tape.watch(x)
                value = loss(x)
            grads = tape.gradient(value, [x] + weights)
            return tf.add_n([tf.reduce_sum(g) for g in grads])

        return (
            tf.function(loss, jit_compile=jit),
            tf.function(forward_backward, jit_compile=jit),
        )
    if backend == "jax":
        import jax

        def stateless_loss(x, values):
            mapping = list(zip(weights, values, strict=True))
            with keras.StatelessScope(state_mapping=mapping):
                return loss(x)

        gradients = jax.jit(jax.grad(stateless_loss, argnums=(0, 1)))
        values = [w.value for w in weights]

        def forward_backward(x):
            grads = jax.tree_util.tree_leaves(gradients(x, values))
            return sum(g.sum() for g in grads)

        return jax.jit(lambda x: stateless_loss(x, values)), forward_backward
    import torch

    def forward(x):
        with torch.no_grad():
            return loss(x)

    def forward_backward(x):
        x = x.detach().requires_grad_()
        grads = torch.autograd.grad(loss(x), [x] + [w.value for w in weights])
        return sum(g.sum() for g in grads)

    return forward, forward_backward


def measure(config):
    """Runs in the child process: times one method at one length."""
    import keras

    attention, weights, shape = _attention_function(config)
    shape = shape[:1] + (config["length"],) + shape[1:]
    x = keras.random.normal(shape)

    def loss(x):
        return keras.ops.sum(keras.ops.cast(attention(x), "float32"))

    forward, forward_backward = _compiled(loss, list(weights))
    tf = _tensorflow()
    result = {"baseline_gb": _peak_memory_gb(tf)}
    result["forward_s"], result["forward_median_s"] = _seconds(forward, x)
    result["forward_peak_gb"] = _peak_memory_gb(tf)
    result["forward_backward_s"], result["forward_backward_median_s"] = (
        _seconds(forward_backward, x)
    )
    result["peak_gb"] = _peak_memory_gb(tf)
    return result


def _tensorflow():
    """TensorFlow when it is the backend (GPU memory is read from it)."""
    import keras

    if keras.backend.backend() != "tensorflow":
        return None
    import tensorflow as tf

    return tf


def measure_decode(config):
    """Runs in the child process: time per decoding step at a position."""
    import tensorflow as tf

    layer = _make_layer(config)
    width = FLAGS.heads * FLAGS.dim
    prompt = tf.random.normal((FLAGS.batch, config["position"], width))
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

    seconds, _ = _seconds(loop, tokens, cache)
    cache_bytes = int(np.prod(cache.shape)) * cache.dtype.size
    return {
        "tokens_per_s": steps / seconds,
        "ms_per_token": 1e3 * seconds / steps,
        "cache_mb": cache_bytes / 2**20,
        "cache_shape": list(cache.shape),
        "peak_gb": _peak_memory_gb(tf),
    }


def measure_matmul(dtype):
    """Runs in the child process: FLOP/s of a square matmul."""
    import keras

    n = FLAGS.matmul_size
    a = keras.ops.cast(keras.random.normal((n, n)), dtype)

    def product(a):
        return keras.ops.sum(keras.ops.cast(keras.ops.matmul(a, a), "float32"))

    forward, _ = _compiled(product, [])
    seconds, _ = _seconds(forward, a)
    return {"gflops": 2 * n**3 / seconds / 1e9}


def _run_child(config):
    """Runs one measurement in a fresh process; returns its result."""
    command = [sys.executable, os.path.abspath(__file__)] + [
        f"--{name}={value}"
        for name, value in FLAGS.flag_values_dict().items()
        if name in _FORWARDED_FLAGS
    ]
    command.append("--child=" + json.dumps(config))
    try:
        done = subprocess.run(
            command,
            capture_output=True,
            text=True,
            timeout=FLAGS.timeout,
            preexec_fn=_limit_memory,
        )
    except subprocess.TimeoutExpired:
        return {"status": "timeout"}
    for line in reversed(done.stdout.splitlines()):
        if line.startswith("RESULT "):
            return {"status": "ok", **json.loads(line[len("RESULT ") :])}
    memory_errors = ("OOM", "ResourceExhausted", "bad_alloc", "memory")
    if any(text in done.stderr for text in memory_errors):
        return {"status": "out of memory"}
    if done.returncode < 0:  # killed by a signal, as the kernel's OOM does
        status = f"crashed (signal {-done.returncode})"
        return {"status": status, "stderr": done.stderr[-2000:]}
    return {"status": "error", "stderr": done.stderr[-2000:]}


_FORWARDED_FLAGS = (
    "level",
    "batch",
    "heads",
    "dim",
    "features",
    "chunk_size",
    "compile",
    "dtype",
    "repeats",
    "decode_steps",
    "generate_tokens",
    "generate_layers",
    "generate_vocabulary",
    "matmul_size",
)


def _limit_memory():
    if os.path.exists("/dev/nvidia0"):
        return  # GPU memory is read from TensorFlow; CUDA maps much more.
    limit = int(FLAGS.memory_limit_gb * 2**30)
    resource.setrlimit(resource.RLIMIT_DATA, (limit, limit))


def _machine():
    info = {
        "platform": platform.platform(),
        "processor": platform.processor() or platform.machine(),
        "cpu_count": os.cpu_count(),
    }
    try:
        with open("/proc/cpuinfo") as cpuinfo:
            for line in cpuinfo:
                if line.startswith("model name"):
                    info["cpu"] = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    return info


def _format_table(results, matmul):
    header = (
        f"{'method':<34} {'length':>7} {'fwd s':>9} {'fwd+bwd s':>10} "
        f"{'peak GB':>8} {'fwd GFLOP/s':>12} {'% matmul':>9}"
    )
    lines = [header, "-" * len(header)]
    for row in results:
        if row["status"] != "ok":
            lines.append(
                f"{row['label']:<34} {row['length']:>7} {row['status']:>9}"
            )
            continue
        gflops = row["forward_flops"] / row["forward_s"] / 1e9
        percent = 100 * gflops / matmul[row["matmul_dtype"]]["gflops"]
        lines.append(
            f"{row['label']:<34} {row['length']:>7} {row['forward_s']:>9.4f} "
            f"{row['forward_backward_s']:>10.4f} {row['peak_gb']:>8.2f} "
            f"{gflops:>12.1f} {percent:>8.1f}%"
        )
    return "\n".join(lines)


def _format_generation(rows):
    """Generation table: per method and position, with each method's cost
    per token relative to its first position."""
    names = {
        "performer": "PerformerCausalLM",
        "exact": "keras-hub GPT2CausalLM (exact)",
    }
    header = (
        f"\n{'generation':<34} {'position':>8} {'ms/token':>9} "
        f"{'tokens/s':>9} {'vs first':>9} {'cache MB':>9}"
    )
    lines = [header, "-" * (len(header) - 1)]
    for method, name in names.items():
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


def _plot(results, path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, (time_axis, memory_axis) = plt.subplots(1, 2, figsize=(12, 4.5))
    labels = sorted({row["label"] for row in results})
    for label in labels:
        rows = [
            r for r in results if r["label"] == label and r["status"] == "ok"
        ]
        if not rows:
            continue
        lengths = [r["length"] for r in rows]
        (line,) = time_axis.plot(
            lengths, [r["forward_backward_s"] for r in rows], "o-", label=label
        )
        time_axis.plot(
            lengths,
            [r["forward_s"] for r in rows],
            "x--",
            color=line.get_color(),
        )
        memory_axis.plot(
            lengths, [r["peak_gb"] for r in rows], "o-", label=label
        )
    for axis, title in (
        (time_axis, "seconds (solid: forward+backward, dashed: forward)"),
        (memory_axis, "peak memory, GB"),
    ):
        axis.set_xscale("log", base=2)
        axis.set_yscale("log")
        axis.set_xlabel("sequence length")
        axis.set_title(title)
        axis.grid(True, which="both", alpha=0.3)
    memory_axis.legend(fontsize=8)
    figure.tight_layout()
    figure.savefig(path, dpi=120)


def _progress(index, total, text):
    print(f"[{index:>3}/{total}] {text}", flush=True)


def main(argv):
    del argv
    if FLAGS.child:
        config = json.loads(FLAGS.child)
        kind = config.get("kind", "layer")
        if kind == "matmul":
            result = measure_matmul(config["dtype"])
        elif kind == "decode":
            result = measure_decode(config)
        elif kind == "generate":
            result = measure_generate(config)
        else:
            result = measure(config)
        print("RESULT " + json.dumps(result), flush=True)
        return

    backend = os.environ.get("KERAS_BACKEND", "tensorflow")
    if backend != "tensorflow" and (
        FLAGS.decode_positions or FLAGS.generate_positions
    ):
        raise app.UsageError(
            "--decode_positions and --generate_positions time TensorFlow "
            f"functions: run them with KERAS_BACKEND=tensorflow, not {backend}"
        )
    lengths = [int(length) for length in FLAGS.lengths]
    configs = _configs()
    positions = [int(p) for p in FLAGS.decode_positions]
    matmul_dtype = "bfloat16" if "bfloat16" in FLAGS.dtype else "float32"
    generate_positions = [int(p) for p in FLAGS.generate_positions]
    total = (
        1
        + len(configs) * len(lengths)
        + len(positions)
        + 2 * len(generate_positions)
    )
    _progress(1, total, f"matmul {FLAGS.matmul_size}^2 {matmul_dtype}")
    matmul = {
        matmul_dtype: _run_child({"kind": "matmul", "dtype": matmul_dtype})
    }
    print(
        f"      {matmul[matmul_dtype].get('gflops', float('nan')):.1f} GFLOP/s"
    )
    results, index = [], 1
    for config in configs:
        stopped = None
        for length in lengths:
            index += 1
            label = _label(config)
            row = {**config, "label": label, "length": length}
            if stopped:
                row["status"] = f"skipped ({stopped})"
            else:
                _progress(index, total, f"{label}, length {length}")
                row.update(_run_child({**config, "length": length}))
                if row["status"] != "ok":
                    stopped = row["status"]
                    print(f"      {row['status']}: stopping this method")
                else:
                    print(
                        f"      forward {row['forward_s']:.4f} s, "
                        f"forward+backward {row['forward_backward_s']:.4f} s, "
                        f"peak {row['peak_gb']:.2f} GB"
                    )
            row["forward_flops"] = layer_flops(config, length)
            row["matmul_dtype"] = matmul_dtype
            results.append(row)
    decode = []
    for position in positions:
        index += 1
        _progress(index, total, f"decode step at position {position}")
        config = {
            "kind": "decode",
            "method": "performer",
            "feature_map": FLAGS.feature_maps[0],
            "position": position,
        }
        row = {**config, **_run_child(config)}
        if row["status"] == "ok":
            print(f"      {row['step_ms']:.3f} ms per token")
        decode.append(row)
    generation = []
    for position in generate_positions:
        for method in ("performer", "exact"):
            index += 1
            _progress(index, total, f"generate ({method}) from {position}")
            config = {
                "kind": "generate",
                "method": method,
                "feature_map": FLAGS.feature_maps[0]
                if FLAGS.feature_maps
                else "softmax",
                "position": position,
            }
            row = {**config, **_run_child(config)}
            if row["status"] == "ok":
                print(
                    f"      {row['ms_per_token']:.2f} ms per token, cache "
                    f"{row['cache_mb']:.1f} MB"
                )
            else:
                print(f"      {row['status']}")
            generation.append(row)

    print()
    speedups = _speedups(results)
    if results:
        print(_format_table(results, matmul))
    if speedups:
        baseline = _method_name({"method": "mha"})
        print(f"\nforward+backward speedup over {baseline}")
        for row in speedups:
            print(
                f"{row['mode']:>14} {row['length']:>7} "
                f"{_method_name(row):<34} {row['speedup']:6.2f}x"
            )
    if decode:
        print(f"\n{'decode position':>16} {'ms per token':>13}")
        for row in decode:
            step = row.get("step_ms", float("nan"))
            print(f"{row['position']:>16} {step:>13.3f}")
    if generation:
        print(_format_generation(generation))
    os.makedirs(os.path.dirname(FLAGS.output) or ".", exist_ok=True)
    report = {
        "machine": _machine(),
        "backend": backend,
        "flags": {
            name: FLAGS[name].value
            for name in _FORWARDED_FLAGS + ("lengths", "modes", "feature_maps")
        },
        "matmul": matmul,
        "results": results,
        "speedups": speedups,
        "decode": decode,
        "generation": generation,
    }
    with open(FLAGS.output + ".json", "w") as file:
        json.dump(report, file, indent=1)
    written = [FLAGS.output + ".json"]
    if len(lengths) > 1:  # A plot over lengths.
        _plot(results, FLAGS.output + ".png")
        written.append(FLAGS.output + ".png")
    print("\nwrote " + ", ".join(written))


if __name__ == "__main__":
    app.run(main)
