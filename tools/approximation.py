"""How well FAVOR approximates softmax attention (the paper's Fig. 3 study).

Mean squared error of the attention output against exact softmax attention
as the number of random features grows, for positive (softmax), hyperbolic
and trigonometric features, orthogonal against i.i.d. projections, on
queries and keys of small and of large norm. Each point is the mean over
`--draws` projections. Prints a table, writes JSON and a plot (PNG).

    python tools/approximation.py --features=16,32,64,128,256,512
"""

import os

from absl import app
from absl import flags

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402
import measurement  # noqa: E402
import numpy as np  # noqa: E402

from keras_performer import ops  # noqa: E402

FLAGS = flags.FLAGS
flags.DEFINE_list(
    "features", ["16", "32", "64", "128", "256", "512"], "Feature counts."
)
flags.DEFINE_list(
    "feature_maps", ["softmax", "hyperbolic", "trig"], "Feature maps."
)
flags.DEFINE_list(
    "norms", ["0.5", "1.5"], "Std of query and key entries (small, large)."
)
flags.DEFINE_integer("length", 512, "Sequence length.")
flags.DEFINE_integer("heads", 4, "Heads (independent samples per draw).")
flags.DEFINE_integer("dim", 16, "Head size.")
flags.DEFINE_integer("draws", 10, "Projection draws per point.")
flags.DEFINE_bool("causal", False, "Causal attention.")
flags.DEFINE_string("output", "docs/approximation", "Output path prefix.")


def approximation_errors():
    """Returns rows {feature_map, orthogonal, norm, features, mse, mse_std}."""
    rng = np.random.default_rng(0)
    shape = (1, FLAGS.length, FLAGS.heads, FLAGS.dim)
    value = rng.normal(size=shape).astype("float32")
    settings = [
        (float(norm), feature_map, orthogonal, int(m))
        for norm in FLAGS.norms
        for feature_map in FLAGS.feature_maps
        for orthogonal in (True, False)
        for m in FLAGS.features
    ]
    progress = keras.utils.Progbar(len(settings) * FLAGS.draws, unit_name="run")
    inputs = {}
    rows = []
    for norm, feature_map, orthogonal, m in settings:
        if norm not in inputs:
            query = (norm * rng.normal(size=shape)).astype("float32")
            key = (norm * rng.normal(size=shape)).astype("float32")
            exact = ops.exact_attention(
                query, key, value, is_causal=FLAGS.causal
            )
            inputs[norm] = (query, key, np.asarray(exact))
        query, key, exact = inputs[norm]
        errors = []
        for draw in range(FLAGS.draws):
            projection = ops.sample_projection_matrix(
                m,
                FLAGS.dim,
                seed=draw,
                projection_coupling="orthogonal" if orthogonal else "iid",
            )
            out = ops.favor_attention(
                query,
                key,
                value,
                projection,
                feature_map=feature_map,
                is_causal=FLAGS.causal,
            )
            errors.append(float(np.mean((np.asarray(out) - exact) ** 2)))
            progress.add(1)
        rows.append(
            {
                "norm": norm,
                "feature_map": feature_map,
                "orthogonal": orthogonal,
                "features": m,
                "mse": float(np.mean(errors)),
                "mse_median": float(np.median(errors)),
                "mse_std": float(np.std(errors)),
            }
        )
    return rows


def format_table(rows):
    features = sorted({row["features"] for row in rows})
    header = f"{'norm':>5} {'feature map':<11} {'projection':<11}" + "".join(
        f"{m:>10}" for m in features
    )
    lines = [header, "-" * len(header)]
    groups = {}
    for row in rows:
        key = (row["norm"], row["feature_map"], row["orthogonal"])
        groups.setdefault(key, {})[row["features"]] = row["mse"]
    for (norm, feature_map, orthogonal), errors in groups.items():
        projection = "orthogonal" if orthogonal else "iid"
        lines.append(
            f"{norm:>5} {feature_map:<11} {projection:<11}"
            + "".join(f"{errors[m]:>10.2e}" for m in features)
        )
    return "\n".join(lines)


def plot(rows, path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    norms = sorted({row["norm"] for row in rows})
    figure, axes = plt.subplots(
        1, len(norms), figsize=(6 * len(norms), 4.5), squeeze=False
    )
    for axis, norm in zip(axes[0], norms, strict=True):
        for feature_map in FLAGS.feature_maps:
            for orthogonal, style in ((True, "o-"), (False, "x--")):
                points = [
                    r
                    for r in rows
                    if r["norm"] == norm
                    and r["feature_map"] == feature_map
                    and r["orthogonal"] == orthogonal
                ]
                label = (
                    f"{feature_map}, {'orthogonal' if orthogonal else 'iid'}"
                )
                axis.plot(
                    [r["features"] for r in points],
                    [r["mse"] for r in points],
                    style,
                    label=label,
                )
        axis.set_xscale("log", base=2)
        axis.set_yscale("log")
        axis.set_xlabel("random features m")
        axis.set_ylabel("MSE of attention output")
        axis.set_title(f"query/key entries ~ N(0, {norm}^2), d={FLAGS.dim}")
        axis.grid(True, which="both", alpha=0.3)
        axis.legend(fontsize=8)
    figure.tight_layout()
    figure.savefig(path, dpi=120)


def main(argv):
    del argv
    rows = approximation_errors()
    print()
    print(format_table(rows))
    settings = {
        name: FLAGS[name].value
        for name in ("length", "heads", "dim", "draws", "causal", "norms")
    }
    measurement.write_json(
        FLAGS.output + ".json", {"settings": settings, "results": rows}
    )
    plot(rows, FLAGS.output + ".png")
    print(f"\nwrote {FLAGS.output}.json, {FLAGS.output}.png")


if __name__ == "__main__":
    app.run(main)
