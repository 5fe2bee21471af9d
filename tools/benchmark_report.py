"""benchmark.py's table and plot of the layer and op timings."""


def format_table(results, matmul):
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


def plot(results, path):
    """Log-log plot of each method's times (forward+backward solid,
    forward dashed) and peak memory over the lengths it ran; a PNG."""
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
