"""Speed and memory of PerformerAttention against MultiHeadAttention.

Times forward and forward+backward passes of whole layers (projections
included) over sequence lengths (best of `--repeats` runs), records peak
memory, and measures the machine's matmul FLOP rate so that each method's
achieved FLOP/s can be read against it. Each measurement runs in its own
process, so that peak memory is its own and running out of memory ends that
process only: a method stops at the first length it cannot hold. Also times
incremental decoding steps at several positions, and generation: time per
token of `PerformerCausalLM.generate` against the same-size keras-hub
`GPT2CausalLM.generate` (an exact model with a key/value cache) from given
positions, with the cache each holds. Prints a table, writes JSON and a
log-log plot (PNG).

    python tools/benchmark.py --lengths=1024,8192 --feature_maps=softmax
    python tools/benchmark.py --decode_positions=10,1000,16000
    python tools/benchmark.py --lengths= --generate_positions=1000,16000
    python tools/benchmark.py --lengths= --generate_positions=1000,16000 \
        --generate_baseline=/tmp/other_version.json  # beside another run

Runs on CPU and GPU. The layer and op timings (`--level`) and the matmul
rate run on every Keras backend (`KERAS_BACKEND=jax python
tools/benchmark.py ...`): compiled with `tf.function` (`--compile`) on
TensorFlow, with `jax.jit` on JAX, eagerly on PyTorch (`torch.compile` takes
minutes per shape on a CPU). Decoding and generation timings, and peak
GPU memory, need TensorFlow (on another backend the peak is the process's
host memory).

This file runs the measurements and reports them; what a measurement does
is in benchmark_layers.py (layers and ops) and benchmark_generation.py
(decoding and generation), the table and plot in benchmark_report.py, and
the processes, timing and memory in measurement.py.
"""

import json
import os

from absl import app
from absl import flags

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import benchmark_generation  # noqa: E402
import benchmark_layers  # noqa: E402
import benchmark_report  # noqa: E402
import measurement  # noqa: E402

FLAGS = flags.FLAGS
flags.adopt_module_key_flags(benchmark_generation)  # Listed in --help.
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
flags.DEFINE_bool(
    "flash_attention",
    None,
    "The exact baseline's `flash_attention` (MultiHeadAttention's argument, "
    "keras.ops.dot_product_attention's): True where the backend has flash "
    "attention on the device (JAX, PyTorch on a GPU); None lets Keras choose.",
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


def _measure_in_child(config):
    """The measurement a child process was started for."""
    kind = config.get("kind", "layer")
    if kind == "matmul":
        gflops = measurement.matmul_gflops(
            FLAGS.matmul_size,
            config["dtype"],
            FLAGS.repeats,
            FLAGS.compile == "xla",
        )
        return {"gflops": gflops}
    if kind == "decode":
        return benchmark_generation.measure_decode(
            benchmark_layers.make_layer(config), config["position"]
        )
    if kind == "generate":
        return benchmark_generation.measure_generate(config)
    return benchmark_layers.measure(config)


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
    "generate_prefill",
    "matmul_size",
)


def _run_child(config):
    """Runs one measurement in a fresh process; returns its result."""
    arguments = [
        f"--{name}={value}"
        for name, value in FLAGS.flag_values_dict().items()
        if name in _FORWARDED_FLAGS
    ]
    return measurement.run_child(
        __file__, arguments, config, FLAGS.timeout, FLAGS.memory_limit_gb
    )


def _time_matmul(progress, dtype):
    progress.start(f"matmul {FLAGS.matmul_size}^2 {dtype}")
    matmul = {dtype: _run_child({"kind": "matmul", "dtype": dtype})}
    print(f"      {matmul[dtype].get('gflops', float('nan')):.1f} GFLOP/s")
    return matmul


def _time_layers(progress, configs, lengths, matmul_dtype):
    """A row per method and length; a method stops at the first length
    that fails."""
    results = []
    for config in configs:
        stopped = None
        for length in lengths:
            label = _label(config)
            row = {**config, "label": label, "length": length}
            if stopped:
                progress.skip()
                row["status"] = f"skipped ({stopped})"
            else:
                progress.start(f"{label}, length {length}")
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
    return results


def _format_speedups(speedups):
    baseline = _method_name({"method": "mha"})
    lines = [f"\nforward+backward speedup over {baseline}"]
    for row in speedups:
        lines.append(
            f"{row['mode']:>14} {row['length']:>7} "
            f"{_method_name(row):<34} {row['speedup']:6.2f}x"
        )
    return "\n".join(lines)


def main(argv):
    del argv
    if FLAGS.child:
        measurement.print_result(_measure_in_child(json.loads(FLAGS.child)))
        return

    backend = os.environ.get("KERAS_BACKEND", "tensorflow")
    if backend != "tensorflow" and (
        FLAGS.decode_positions or FLAGS.generate_positions
    ):
        raise app.UsageError(
            "--decode_positions and --generate_positions time TensorFlow "
            f"functions: run them with KERAS_BACKEND=tensorflow, not {backend}"
        )
    # Read before any measurement, so that a wrong path fails at once.
    generation_baseline = benchmark_generation.read_baseline()
    lengths = [int(length) for length in FLAGS.lengths]
    configs = _configs()
    matmul_dtype = "bfloat16" if "bfloat16" in FLAGS.dtype else "float32"
    progress = measurement.Progress(
        1
        + len(configs) * len(lengths)
        + benchmark_generation.measurement_count()
    )
    matmul = _time_matmul(progress, matmul_dtype)
    results = _time_layers(progress, configs, lengths, matmul_dtype)
    decode = benchmark_generation.time_decoding(progress, _run_child)
    generation = benchmark_generation.time_generation(progress, _run_child)

    print()
    speedups = _speedups(results)
    if results:
        print(benchmark_report.format_table(results, matmul))
    if speedups:
        print(_format_speedups(speedups))
    if decode:
        print(benchmark_generation.format_decoding(decode))
    if generation:
        print(benchmark_generation.format_generation(generation))
    if generation_baseline:
        print(
            benchmark_generation.format_baseline(
                generation, generation_baseline
            )
        )
    report = {
        "machine": measurement.machine(),
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
    if generation_baseline:
        report["generation_baseline"] = generation_baseline
    measurement.write_json(FLAGS.output + ".json", report)
    written = [FLAGS.output + ".json"]
    if len(lengths) > 1:  # A plot over lengths.
        benchmark_report.plot(results, FLAGS.output + ".png")
        written.append(FLAGS.output + ".png")
    print("\nwrote " + ", ".join(written))


if __name__ == "__main__":
    app.run(main)
