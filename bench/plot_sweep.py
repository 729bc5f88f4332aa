#!/usr/bin/env python3
"""The HISA prefill sweep of a CUDA bench run (`hisa_cuda_bench --sweep`), as a table and a plot.

    python3 bench/plot_sweep.py bench.json [--png docs/img/hisa_sweep.png] [--fp8-tflops R]

For every sweep entry (one sequence of L tokens, block size B, m blocks, budget m * B): the call's
median time, its split into the token stage (the same call given its own blocks: chunk lists and
the token stage) and the rest (pooling and the block stage), and the token stage's useful FLOP
rate (the bench's token_stage_flops: each query's min(e, m * B) keys) against the fp8 GEMM rate
measured in the same run (the JSON's ceilings, or --fp8-tflops). The table is markdown on stdout;
the PNG (matplotlib) has one panel per L: time against the budget, one line per B, the token
stage dashed.
"""
import argparse
import json
import sys


def rows_of(report):
    rows = []
    for r in report.get("results", []):
        if r.get("kind") != "sweep" or "error" in r:
            continue
        L, B, m, ms = r["L"], r["B"], r["m"], r["median_ms"]
        token_ms = r.get("given_blocks_ms")
        flops = r["token_stage_flops"]
        rows.append({
            "L": L, "B": B, "m": m, "budget": B * m, "ms": ms, "token_ms": token_ms,
            "rest_ms": ms - token_ms if token_ms is not None else None,
            "token_tflops": flops / (token_ms * 1e-3) / 1e12 if token_ms else None,
            "checked": f"{r.get('rows_checked', 0) - r.get('rows_failed', 0)}/{r.get('rows_checked', 0)}",
        })
    return sorted(rows, key=lambda x: (x["L"], x["B"], x["budget"]))


def table(rows, fp8):
    f = lambda v, p=2: "-" if v is None else f"{v:.{p}f}"
    out = ["| L | B | m | m*B | ms | token stage ms | pooling + block stage ms | token stage TFLOP/s |"
           + (" of fp8 rate |" if fp8 else "") + " checked |",
           "|---|---|---|---|---|---|---|---|" + ("---|" if fp8 else "") + "---|"]
    for r in rows:
        frac = f"{100 * r['token_tflops'] / fp8:.0f}% |" if fp8 and r["token_tflops"] else ("- |" if fp8 else "")
        out.append(f"| {r['L'] // 1024}K | {r['B']} | {r['m']} | {r['budget']} | {f(r['ms'], 3)} | "
                   f"{f(r['token_ms'], 3)} | {f(r['rest_ms'], 3)} | {f(r['token_tflops'], 0)} | "
                   + (frac + " " if fp8 else "") + f"{r['checked']} |")
    return "\n".join(out)


def plot(rows, path, title):
    import matplotlib  # noqa: PLC0415

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt  # noqa: PLC0415

    lengths = sorted({r["L"] for r in rows})
    fig, axes = plt.subplots(1, len(lengths), figsize=(5.2 * len(lengths), 4), squeeze=False)
    for ax, L in zip(axes[0], lengths):
        for i, B in enumerate(sorted({r["B"] for r in rows if r["L"] == L})):
            sel = [r for r in rows if r["L"] == L and r["B"] == B]
            x = [r["budget"] for r in sel]
            color = f"C{i}"
            ax.plot(x, [r["ms"] for r in sel], "o-", color=color, label=f"B = {B}")
            if all(r["token_ms"] is not None for r in sel):
                ax.plot(x, [r["token_ms"] for r in sel], "s--", color=color, alpha=0.6,
                        label=f"B = {B}, token stage")
        ax.set_xscale("log", base=2)
        ax.set_xlabel("candidate budget m * B (keys)")
        ax.set_ylabel("ms per call")
        ax.set_title(f"L = {L // 1024}K")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("bench_json")
    ap.add_argument("--png", default="")
    ap.add_argument("--fp8-tflops", type=float, default=0.0,
                    help="fp8 GEMM rate (default: the JSON's ceilings)")
    a = ap.parse_args()
    report = json.load(open(a.bench_json))
    rows = rows_of(report)
    if not rows:
        sys.exit(f"{a.bench_json}: no sweep results (run hisa_cuda_bench --sweep)")
    fp8 = a.fp8_tflops or report.get("ceilings", {}).get("fp8_gemm_tflops") or 0.0
    print(table(rows, fp8))
    if a.png:
        plot(rows, a.png, f"HISA prefill sweep, {report.get('device', '?')}, "
                          f"{report.get('date_utc', '?')[:10]}, commit {report.get('commit', '?')[:12]}")
        print(f"\nwrote {a.png}", file=sys.stderr)


if __name__ == "__main__":
    main()
