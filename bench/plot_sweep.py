"""The HISA prefill sweep of a CUDA bench run (hisa_cuda_bench --sweep --json FILE) as a PNG.

    python3 bench/plot_sweep.py bench/results/<run>/bench.json docs/img/hisa_sweep.png

One panel per sequence length: median time against the candidate budget m*B, a line per block
size B; the token stage's share of the FLOPs is in the JSON's "flops" (prefill_flops in the bench).
Needs matplotlib (Debian: python3-matplotlib).
"""
import json
import sys

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402


def main(src, dst):
    rep = json.load(open(src))
    rows = [r for r in rep.get("results", []) if r.get("kind") == "sweep" and "error" not in r]
    if not rows:
        sys.exit(f"{src}: no sweep results")
    lengths = sorted({r["L"] for r in rows})
    fig, axes = plt.subplots(1, len(lengths), figsize=(5.2 * len(lengths), 4), squeeze=False)
    gpu = rep.get("device", "")
    for ax, L in zip(axes[0], lengths):
        for B in sorted({r["B"] for r in rows if r["L"] == L}):
            pts = sorted((r["budget"], r["median_ms"], r["tflops"]) for r in rows
                         if r["L"] == L and r["B"] == B)
            ax.plot([p[0] for p in pts], [p[1] for p in pts], marker="o", label=f"B = {B}")
            for b, ms, tf in pts:
                ax.annotate(f"{tf:.0f}", (b, ms), textcoords="offset points", xytext=(4, 4),
                            fontsize=7)
        ax.set_xscale("log", base=2)
        ax.set_xlabel("candidate budget m*B (tokens)")
        ax.set_ylabel("median ms per call")
        ax.set_title(f"HISA prefill, L = {L // 1024}K (labels: TFLOP/s)")
        ax.grid(alpha=0.3)
        ax.legend()
    fig.suptitle(f"H=64, D=128, fp8, k=2048, one causal sequence; {gpu}", fontsize=9)
    fig.tight_layout()
    fig.savefig(dst, dpi=110)
    print(f"{dst}: {len(rows)} points")


if __name__ == "__main__":
    if len(sys.argv) != 3:
        sys.exit(__doc__)
    main(*sys.argv[1:])
