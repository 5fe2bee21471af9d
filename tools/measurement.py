"""What the benchmark tools share: each measurement in its own process, the
time of compiled functions, peak memory, the machine's matmul rate and
description, progress lines and JSON output.

Tools import it as a sibling module (`python tools/<tool>.py` puts tools/
first on the path).
"""

import json
import os
import platform
import resource
import subprocess
import sys
import time

_RESULT = "RESULT "


def run_child(script, arguments, config, timeout, memory_limit_gb):
    """Runs `script` with `arguments` and `--child=<config as JSON>` in a
    fresh process, so that its peak memory is its own and running out of
    memory ends it only. Returns the result it prints (`print_result`) with
    `status` "ok", or the status it ended with."""
    command = [sys.executable, os.path.abspath(script), *arguments]
    command.append("--child=" + json.dumps(config))
    try:
        done = subprocess.run(
            command,
            capture_output=True,
            text=True,
            timeout=timeout,
            preexec_fn=lambda: _limit_memory(memory_limit_gb),
        )
    except subprocess.TimeoutExpired:
        return {"status": "timeout"}
    for line in reversed(done.stdout.splitlines()):
        if line.startswith(_RESULT):
            return {"status": "ok", **json.loads(line[len(_RESULT) :])}
    memory_errors = ("OOM", "ResourceExhausted", "bad_alloc", "memory")
    if any(text in done.stderr for text in memory_errors):
        return {"status": "out of memory"}
    if done.returncode < 0:  # killed by a signal, as the kernel's OOM does
        status = f"crashed (signal {-done.returncode})"
        return {"status": status, "stderr": done.stderr[-2000:]}
    return {"status": "error", "stderr": done.stderr[-2000:]}


def print_result(result):
    """In the child process: hands `result` to `run_child`."""
    print(_RESULT + json.dumps(result), flush=True)


def _limit_memory(limit_gb):
    if os.path.exists("/dev/nvidia0"):
        return  # GPU memory is read from TensorFlow; CUDA maps much more.
    limit = int(limit_gb * 2**30)
    resource.setrlimit(resource.RLIMIT_DATA, (limit, limit))


def seconds(function, *args, repeats):
    """Best and median time of `repeats` runs, after a warm-up run. The
    best is the one least disturbed by other load on the machine."""
    import keras

    keras.ops.convert_to_numpy(function(*args))  # trace, compile, warm up
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        keras.ops.convert_to_numpy(function(*args))
        times.append(time.perf_counter() - start)
    return min(times), sorted(times)[len(times) // 2]


def compiled(loss, weights, jit_compile):
    """`loss(x)` and the sum of its gradients with respect to `x` and the
    `weights`, compiled as the backend compiles a training step: with
    `tf.function` (XLA if `jit_compile`) on TensorFlow, `jax.jit` on JAX,
    eagerly on PyTorch."""
    import keras

    backend = keras.backend.backend()
    if backend == "tensorflow":
        import tensorflow as tf

        def forward_backward(x):
            with tf.GradientTape() as tape:
                tape.watch(x)
                value = loss(x)
            grads = tape.gradient(value, [x] + weights)
            return tf.add_n([tf.reduce_sum(g) for g in grads])

        return (
            tf.function(loss, jit_compile=jit_compile),
            tf.function(forward_backward, jit_compile=jit_compile),
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


def peak_memory_gb():
    """Peak GPU memory on TensorFlow with a GPU, else the process's peak
    resident size."""
    import keras

    if keras.backend.backend() == "tensorflow":
        import tensorflow as tf

        if tf.config.list_physical_devices("GPU"):
            peak = tf.config.experimental.get_memory_info("GPU:0")["peak"]
            return peak / 2**30
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 2**20
    return float("nan")


def matmul_gflops(size, dtype, repeats, jit_compile):
    """GFLOP/s of a `size` x `size` matmul in `dtype`, compiled as
    `compiled` compiles."""
    import keras

    a = keras.ops.cast(keras.random.normal((size, size)), dtype)

    def product(a):
        return keras.ops.sum(keras.ops.cast(keras.ops.matmul(a, a), "float32"))

    forward, _ = compiled(product, [], jit_compile)
    best, _ = seconds(forward, a, repeats=repeats)
    return 2 * size**3 / best / 1e9


def machine():
    """Platform, processor and CPU count (and model, where Linux says)."""
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


class Progress:
    """Numbers the measurements of a run: `[  3/12] text`."""

    def __init__(self, total):
        self.total = total
        self.count = 0

    def start(self, text):
        self.count += 1
        print(f"[{self.count:>3}/{self.total}] {text}", flush=True)

    def skip(self):
        self.count += 1


def write_json(path, data):
    """Writes `data` to `path`, creating its folder."""
    os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
    with open(path, "w") as file:
        json.dump(data, file, indent=1)
