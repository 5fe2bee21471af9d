"""How well FAVOR approximates softmax attention (the paper's Fig. 3 study),
for every feature map and projection coupling.

Two studies, one run each:

- The grid: mean squared error of the bidirectional attention output
  against exact softmax attention as the number of random features grows,
  for each feature map x projection coupling, on isotropic queries and keys
  of entry std 0.5, 1.0 and 1.5 and on anisotropic ones (per-dimension
  scales from 1/2 to 2 in the queries and the inverse in the keys, where
  FAVOR#'s rescaling should help). Each point is the mean over `--draws`
  projections; the tables give each map's error as a ratio of FAVOR+'s
  (`softmax`, same coupling and features).
- The peaked study: the output error of FAVOR++-type features for a fixed
  `A` (`f(w, x) = D exp(A |w|^2 + B w.x - |x|^2 / 2)`, FAVOR+ at 0), as a
  ratio of FAVOR+'s, on isotropic inputs of growing std, against the
  logits' root mean square: the paper's `A` (Likhosherstov et al. 2022,
  Theorem 3.1), the `A` this package uses (the paper's, tapered where
  attention is peaked) and the best `A` of a grid.

Prints the tables, writes JSON and a plot (PNG) per study.

    python tools/approximation.py --output=docs/approximation
"""

import os

from absl import app
from absl import flags

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402
import measurement  # noqa: E402
import numpy as np  # noqa: E402

from keras_performer import ops  # noqa: E402
from keras_performer.ops import feature_maps  # noqa: E402
from keras_performer.ops import feature_statistics  # noqa: E402

FLAGS = flags.FLAGS
flags.DEFINE_list(
    "features",
    ["16", "32", "64", "128", "256", "512", "1024"],
    "Feature counts (projection rows).",
)
flags.DEFINE_list(
    "feature_maps",
    ["softmax", "hyperbolic", "optimal_positive", "dense_exponential", "trig"],
    "Feature maps.",
)
flags.DEFINE_list(
    "couplings", ["orthogonal", "simplex", "iid"], "Projection couplings."
)
flags.DEFINE_list(
    "inputs",
    ["isotropic:0.5", "isotropic:1.0", "isotropic:1.5", "anisotropic:1.0"],
    "Query/key distributions, kind:std.",
)
flags.DEFINE_integer("length", 512, "Sequence length.")
flags.DEFINE_integer("heads", 4, "Heads (independent samples per draw).")
flags.DEFINE_integer("dim", 16, "Head size.")
flags.DEFINE_integer("draws", 10, "Projection draws per point.")
flags.DEFINE_list(
    "peaked_stds",
    ["0.3", "0.5", "0.6", "0.7", "0.85", "1.0", "1.25", "1.5"],
    "Entry stds of the peaked study ([] to skip it).",
)
flags.DEFINE_integer("peaked_features", 64, "Features of the peaked study.")
flags.DEFINE_string("output", "docs/approximation", "Output path prefix.")

# The fixed values of A the peaked study tries (A < 1/8: finite variance).
A_GRID = (-0.3, -0.2, -0.15, -0.1, -0.07, -0.05, -0.03, -0.015, 0.0)
A_GRID += (0.02, 0.05, 0.08, 0.1, 0.12)


def make_inputs(spec, rng):
    """Queries and keys `(1, L, H, d)` for `kind:std`."""
    kind, std = spec.split(":")
    shape = (1, FLAGS.length, FLAGS.heads, FLAGS.dim)
    query_scales = np.ones(FLAGS.dim)
    if kind == "anisotropic":
        query_scales = np.geomspace(0.5, 2.0, FLAGS.dim)
    elif kind != "isotropic":
        raise app.UsageError(f"--inputs kinds: isotropic, anisotropic: {spec}")
    query = float(std) * rng.normal(size=shape) * query_scales
    key = float(std) * rng.normal(size=shape) / query_scales
    return query.astype("float32"), key.astype("float32")


def squared_error(out, exact):
    return float(np.mean((np.asarray(out) - exact) ** 2))


def approximation_errors(value, rng):
    """Rows {input, feature_map, coupling, features, mse, mse_median,
    mse_std} of the grid."""
    settings = [
        (spec, feature_map, coupling, int(m))
        for spec in FLAGS.inputs
        for feature_map in FLAGS.feature_maps
        for coupling in FLAGS.couplings
        for m in FLAGS.features
    ]
    progress = keras.utils.Progbar(len(settings) * FLAGS.draws, unit_name="run")
    inputs = {}
    rows = []
    for spec, feature_map, coupling, m in settings:
        if spec not in inputs:
            query, key = make_inputs(spec, rng)
            exact = np.asarray(ops.exact_attention(query, key, value))
            inputs[spec] = (query, key, exact)
        query, key, exact = inputs[spec]
        errors = []
        for draw in range(FLAGS.draws):
            projection = ops.sample_projection_matrix(
                m, FLAGS.dim, seed=draw, projection_coupling=coupling
            )
            out = ops.favor_attention(
                query, key, value, projection, feature_map=feature_map
            )
            errors.append(squared_error(out, exact))
            progress.add(1)
        rows.append(
            {
                "input": spec,
                "feature_map": feature_map,
                "coupling": coupling,
                "features": m,
                "mse": float(np.mean(errors)),
                "mse_median": float(np.median(errors)),
                "mse_std": float(np.std(errors)),
            }
        )
    return rows


def fixed_a_attention(query, key, value, projection, a):
    """Bidirectional attention through FAVOR++-type features with a given
    `A` (FAVOR+ at 0), from the package's feature map."""
    kernel = feature_statistics.KernelParameters(
        query_scale=np.ones((1, 1, 1, FLAGS.dim), "float32"),
        a=np.full((1, 1, 1, 1), a, "float32"),
    )
    heads_first = [np.swapaxes(x, 1, 2) for x in (query, key, value)]
    q_parts, k_parts = (
        feature_maps.feature_parts(x, projection, "optimal_positive", kernel, k)
        for x, k in ((heads_first[0], False), (heads_first[1], True))
    )
    q_features = np.asarray(feature_maps.query_features(q_parts), np.float64)
    k_stabilizer = feature_maps.sequence_log_max(k_parts)
    k_features = np.asarray(
        feature_maps.features(k_parts, k_stabilizer), np.float64
    )
    scores = q_features @ np.swapaxes(k_features, 2, 3)
    out = (scores @ heads_first[2]) / scores.sum(-1, keepdims=True)
    return np.swapaxes(out, 1, 2)


def peaked_study(value, rng):
    """Rows {std, logit_rms, rho, paper_a, tapered_a, best_a, ratio_paper,
    ratio_tapered, ratio_best, ratios} of the peaked study."""
    rows = []
    stds = [float(std) for std in FLAGS.peaked_stds]
    progress = keras.utils.Progbar(len(stds), unit_name="std")
    for std in stds:
        query, key = make_inputs(f"isotropic:{std}", rng)
        exact = np.asarray(ops.exact_attention(query, key, value))
        moments = feature_statistics.query_key_moments(query, key, pooled=True)
        kernel = feature_statistics.kernel_parameters(
            moments, "optimal_positive"
        )
        x, y = (v[0] * FLAGS.dim**-0.25 for v in (query, key))
        logits = np.einsum("thd,shd->hts", x, y)
        rho = float(
            (np.mean(np.sum(x**2, -1)) + np.mean(np.sum(y**2, -1))) / FLAGS.dim
            + 2 * np.mean(np.sum(x.mean(0) * y.mean(0), -1)) / FLAGS.dim
        )
        paper_a = float(feature_statistics.optimal_a(np.float32(rho)))
        tapered_a = float(np.asarray(kernel.a).mean())
        candidates = sorted(set(A_GRID) | {paper_a, tapered_a})
        errors = {}
        for a in candidates:
            draws = []
            for draw in range(FLAGS.draws):
                projection = ops.sample_projection_matrix(
                    FLAGS.peaked_features, FLAGS.dim, seed=draw
                )
                out = fixed_a_attention(query, key, value, projection, a)
                draws.append(squared_error(out, exact))
            errors[a] = float(np.mean(draws))
        best_a = min(A_GRID, key=errors.get)
        favor_plus = errors[0.0]
        rows.append(
            {
                "std": std,
                "logit_rms": float(np.sqrt(np.mean(logits**2))),
                "rho": rho,
                "paper_a": paper_a,
                "tapered_a": tapered_a,
                "best_a": best_a,
                "ratio_paper": errors[paper_a] / favor_plus,
                "ratio_tapered": errors[tapered_a] / favor_plus,
                "ratio_best": errors[best_a] / favor_plus,
                "ratios": {str(a): errors[a] / favor_plus for a in A_GRID},
            }
        )
        progress.add(1)
    return rows


def ratio_tables(rows):
    """Each feature map's error over FAVOR+'s (softmax, same coupling and
    features), per input and coupling."""
    mse = {
        (r["input"], r["feature_map"], r["coupling"], r["features"]): r["mse"]
        for r in rows
    }
    features = sorted({r["features"] for r in rows})
    lines = []
    for spec in FLAGS.inputs:
        header = f"{spec:<16} {'coupling':<11}" + "".join(
            f"{m:>8}" for m in features
        )
        lines += ["", header, "-" * len(header)]
        for feature_map in FLAGS.feature_maps:
            for coupling in FLAGS.couplings:
                if (spec, "softmax", coupling, features[0]) not in mse:
                    continue
                ratios = [
                    mse[spec, feature_map, coupling, m]
                    / mse[spec, "softmax", coupling, m]
                    for m in features
                ]
                lines.append(
                    f"{feature_map:<16} {coupling:<11}"
                    + "".join(f"{ratio:>8.3g}" for ratio in ratios)
                )
    return "\n".join(lines)


def format_table(rows):
    features = sorted({row["features"] for row in rows})
    header = f"{'input':<16} {'feature map':<18} {'coupling':<11}" + "".join(
        f"{m:>10}" for m in features
    )
    lines = [header, "-" * len(header)]
    groups = {}
    for row in rows:
        key = (row["input"], row["feature_map"], row["coupling"])
        groups.setdefault(key, {})[row["features"]] = row["mse"]
    for (spec, feature_map, coupling), errors in groups.items():
        lines.append(
            f"{spec:<16} {feature_map:<18} {coupling:<11}"
            + "".join(f"{errors[m]:>10.2e}" for m in features)
        )
    return "\n".join(lines)


def format_peaked(rows):
    header = (
        f"{'std':>5} {'logit rms':>9} {'paper A':>8} {'ratio':>6} "
        f"{'used A':>7} {'ratio':>6} {'best A':>7} {'ratio':>6}"
    )
    lines = [header, "-" * len(header)]
    for r in rows:
        lines.append(
            f"{r['std']:>5} {r['logit_rms']:>9.2f} {r['paper_a']:>8.3f} "
            f"{r['ratio_paper']:>6.2f} {r['tapered_a']:>7.3f} "
            f"{r['ratio_tapered']:>6.2f} {r['best_a']:>7.3f} "
            f"{r['ratio_best']:>6.2f}"
        )
    return "\n".join(lines)


def plot(rows, path):
    """One panel per input; one color per feature map, one line style per
    coupling. The y range is the positive maps': the trigonometric curves,
    orders of magnitude above at larger norms, leave the panel there."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    styles = {"orthogonal": "o-", "simplex": "s:", "iid": "x--"}
    colors = {m: f"C{i}" for i, m in enumerate(FLAGS.feature_maps)}
    figure, axes = plt.subplots(
        1,
        len(FLAGS.inputs),
        figsize=(5 * len(FLAGS.inputs), 4.5),
        squeeze=False,
    )
    for axis, spec in zip(axes[0], FLAGS.inputs, strict=True):
        positive = [
            r["mse"]
            for r in rows
            if r["input"] == spec and r["feature_map"] != "trig"
        ]
        for feature_map in FLAGS.feature_maps:
            for coupling in FLAGS.couplings:
                points = [
                    r
                    for r in rows
                    if r["input"] == spec
                    and r["feature_map"] == feature_map
                    and r["coupling"] == coupling
                ]
                axis.plot(
                    [r["features"] for r in points],
                    [r["mse"] for r in points],
                    styles.get(coupling, "-"),
                    color=colors[feature_map],
                    label=f"{feature_map}, {coupling}",
                    markersize=4,
                )
        if positive:
            axis.set_ylim(min(positive) / 1.5, max(positive) * 1.5)
        axis.set_xscale("log", base=2)
        axis.set_yscale("log")
        axis.set_xlabel("random features m")
        axis.set_ylabel("MSE of attention output")
        axis.set_title(f"{spec.replace(':', ', std ')}, d={FLAGS.dim}")
        axis.grid(True, which="both", alpha=0.3)
    handles, labels = axes[0][0].get_legend_handles_labels()
    figure.legend(handles, labels, loc="lower center", ncol=5, fontsize=8)
    figure.tight_layout(rect=(0, 0.16, 1, 1))
    figure.savefig(path, dpi=110)


def plot_peaked(rows, path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axis = plt.subplots(figsize=(6.5, 4.5))
    rms = [r["logit_rms"] for r in rows]
    for key, label, style in (
        ("ratio_paper", "paper's A (FAVOR++)", "o-"),
        ("ratio_tapered", "A used (tapered)", "s-"),
        ("ratio_best", "best A of the grid", "x--"),
    ):
        axis.plot(rms, [r[key] for r in rows], style, label=label)
    axis.axhline(1.0, color="gray", linewidth=1, label="FAVOR+ (A = 0)")
    axis.axvspan(
        feature_statistics.TAPER_START,
        feature_statistics.TAPER_END,
        color="gray",
        alpha=0.15,
        label="taper",
    )
    axis.set_xlabel("root mean square of the logits q.k / sqrt(d)")
    axis.set_ylabel("output MSE / FAVOR+'s")
    axis.set_title(
        f"FAVOR++ features, m={FLAGS.peaked_features}, d={FLAGS.dim}, "
        f"L={FLAGS.length}"
    )
    axis.grid(True, alpha=0.3)
    axis.legend(fontsize=8)
    figure.tight_layout()
    figure.savefig(path, dpi=110)


def main(argv):
    del argv
    rng = np.random.default_rng(0)
    shape = (1, FLAGS.length, FLAGS.heads, FLAGS.dim)
    value = rng.normal(size=shape).astype("float32")
    rows = approximation_errors(value, rng)
    print()
    print(format_table(rows))
    print("\nOutput error over FAVOR+'s (softmax), same coupling and features:")
    print(ratio_tables(rows))
    peaked = peaked_study(value, rng) if FLAGS.peaked_stds else []
    if peaked:
        print("\nPeaked study: output error over FAVOR+'s")
        print(format_peaked(peaked))
    names = ("length", "heads", "dim", "draws", "inputs", "peaked_features")
    measurement.write_json(
        FLAGS.output + ".json",
        {
            "command": f"python tools/approximation.py --output={FLAGS.output}",
            "machine": measurement.machine(),
            "settings": {name: FLAGS[name].value for name in names},
            "results": rows,
            "peaked": peaked,
        },
    )
    plot(rows, FLAGS.output + ".png")
    written = [f"{FLAGS.output}.json", f"{FLAGS.output}.png"]
    if peaked:
        plot_peaked(peaked, FLAGS.output + "_peaked.png")
        written.append(f"{FLAGS.output}_peaked.png")
    print("\nwrote " + ", ".join(written))


if __name__ == "__main__":
    app.run(main)
