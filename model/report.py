"""Tables (markdown) and plots (PNG) from the study's results.json. Runs anywhere (numpy, matplotlib).

    python3 model/report.py RESULTS.json --img docs/img > /tmp/tables.md
"""
import argparse
import json
import os

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402


def f4(x):
    return "-" if x is None else "%.4f" % x


def row(cells):
    return "| " + " | ".join(str(c) for c in cells) + " |"


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("results")
    ap.add_argument("--img", default=None)
    a = ap.parse_args()
    R = json.load(open(a.results))
    F = R["fidelity"]
    C = F["configs"]
    out = []
    P = out.append

    P("### Sweep: HISA (mean pooling) and variants against flat DSA, all layers pooled\n")
    P("%d windows of %d tokens (4 per held-out book), every %dth query row, 6 layers.\n" % (
        F["windows"], F["window_len"], F["row_stride"]))
    P(row(["config", "rows e > m*B", "IoU mean", "IoU p1", "IoU min", "recall", "mass recall", "mass p1",
           "mass min", "IoU all rows", "mass all rows"]))
    P(row(["---"] * 11))
    for n, e in C.items():
        o, al = e["overall"]["rows_e_gt_mB"], e["overall"]["all_rows"]
        P(row([n, o["rows"], f4(o["iou_mean"]), f4(o["iou_p1"]), f4(o["iou_min"]), f4(o["recall_mean"]),
               f4(o["mass_mean"]), f4(o["mass_p1"]), f4(o["mass_min"]), f4(al["iou_mean"]), f4(al["mass_mean"])]))
    P("")

    nl = len(C["hisa B=128 mB=8192"]["per_layer"])
    diag = F["diagnostics_per_layer_rows_e_gt_k"]
    P("### Per layer (rows with e > m*B)\n")
    names = ["hisa B=128 mB=8192", "hisa B=128 mB=16384", "hisa-sub4 B=128 mB=8192", "hisa-oracle B=128 mB=8192",
             "block B=128 mB=2048"]
    P(row(["layer"] + ["%s IoU / mass" % n for n in names] + ["indexer KL", "attn mass: dense top-k / DSA / HISA / block"]))
    P(row(["---"] * (len(names) + 3)))
    for li in range(nl):
        cells = [li]
        for n in names:
            o = C[n]["per_layer"][li]["rows_e_gt_mB"]
            cells.append("%.4f / %.4f" % (o["iou_mean"], o["mass_mean"]))
        d = diag[li]
        cells.append("%.3f" % d["kl"])
        cells.append("%.3f / %.3f / %.3f / %.3f" % (d["am_dense"], d["am_flat"], d["am_hisa"], d["am_block"]))
        P(row(cells))
    P("")

    P("### Against the query position e (32K windows, default HISA B=128 m=64; block-sparse B=128 m=16)\n")
    P(row(["e in", "rows", "HISA IoU", "HISA IoU p1", "HISA mass", "block IoU", "block mass"]))
    P(row(["---"] * 7))
    for h, b in zip(C["hisa B=128 mB=8192"]["by_e"], C["block B=128 mB=2048"]["by_e"]):
        if h.get("rows", 0) == 0:
            continue
        P(row(["(%d, %d]" % (h["e_lo"], h["e_hi"]), h["rows"], f4(h["iou_mean"]), f4(h["iou_p1"]), f4(h["mass_mean"]),
               f4(b["iou_mean"]), f4(b["mass_mean"])]))
    P("")

    if "context" in R:
        P("### Longer windows (beyond the 32K training length; one window of the longest held-out book)\n")
        P(row(["window", "config", "e in", "rows", "IoU mean", "IoU p1", "mass mean", "mass p1"]))
        P(row(["---"] * 8))
        for c in R["context"]:
            for n, bs in c["by_e"].items():
                for b in bs:
                    if b.get("rows", 0) == 0 or b["e_hi"] <= 8192:
                        continue
                    P(row([c["len"], n, "(%d, %d]" % (b["e_lo"], b["e_hi"]), b["rows"], f4(b["iou_mean"]),
                           f4(b["iou_p1"]), f4(b["mass_mean"]), f4(b["mass_p1"])]))
        P("")

    if "loss" in R:
        L = R["loss"]
        P("### Held-out loss with every layer's attention restricted to a selection\n")
        P("%d windows of %d tokens (one per held-out book); k = 2048; block-sparse %s (same token budget).\n" % (
            L["windows"], L["window_len"], L["block_cfg"]))
        P(row(["attention", "nats/byte", "bits/byte", "vs DSA", "nats/byte, positions >= 8192", "vs DSA (>= 8192)"]))
        P(row(["---"] * 6))
        lab = {"dense": "dense (full causal)", "oracle": "top-k of dense attention (head mean)",
               "flat": "DSA (indexer top-k)", "hisa": "HISA B=128 m=64", "block": "block-sparse"}
        for n, v in L["methods"].items():
            P(row([lab[n], "%.4f" % v["nats_all"], "%.4f" % v["bpb_all"], "%+.2f%%" % (100 * v["rel_to_flat_all"]),
                   "%.4f" % v["nats_pos_gt_mB"], "%+.2f%%" % (100 * v["rel_to_flat_pos_gt_mB"])]))
        d = np.array(L["hisa_minus_flat_per_window"])
        P("\nHISA minus DSA per window (nats/byte): %s; mean %.4f, sd %.4f.\n" % (
            ", ".join("%.4f" % x for x in d), d.mean(), d.std(ddof=1) if len(d) > 1 else 0))

    print("\n".join(out))

    if not a.img:
        return
    os.makedirs(a.img, exist_ok=True)
    # 1. per layer
    fig, ax = plt.subplots(figsize=(7, 3.4), dpi=100)
    xs = np.arange(nl)
    sel = [("hisa B=128 mB=8192", "HISA m*B=8192"), ("hisa B=128 mB=16384", "HISA m*B=16384"),
           ("hisa-oracle B=128 mB=8192", "max-token-score blocks (oracle)"), ("block B=128 mB=2048", "block-sparse m*B=2048")]
    wd = 0.2
    for i, (n, lb) in enumerate(sel):
        ax.bar(xs + (i - 1.5) * wd, [C[n]["per_layer"][li]["rows_e_gt_mB"]["iou_mean"] for li in range(nl)], wd, label=lb)
    ax.set_xticks(xs)
    ax.set_xticklabels(["layer %d" % i for i in xs])
    ax.set_ylabel("mean IoU vs DSA (rows e > m*B)")
    ax.set_ylim(0, 1)
    ax.axhline(0.99, color="k", lw=0.6, ls="--")
    ax.legend(fontsize=7, loc="lower right")
    ax.set_title("HISA vs DSA per layer, 32K held-out windows, B=128, k=2048", fontsize=9)
    fig.tight_layout()
    fig.savefig(os.path.join(a.img, "fidelity_layers.png"))
    plt.close(fig)
    # 2. sweep
    fig, axs = plt.subplots(1, 2, figsize=(8, 3.2), dpi=100)
    for B, mk in zip([64, 128, 256], ["o", "s", "^"]):
        mbs = [4096, 8192, 16384]
        axs[0].plot(mbs, [C["hisa B=%d mB=%d" % (B, mb)]["overall"]["rows_e_gt_mB"]["iou_mean"] for mb in mbs],
                    marker=mk, label="B=%d" % B)
        axs[1].plot(mbs, [C["hisa B=%d mB=%d" % (B, mb)]["overall"]["rows_e_gt_mB"]["mass_mean"] for mb in mbs],
                    marker=mk, label="B=%d" % B)
    for ax, t in zip(axs, ["mean IoU", "score-mass recall"]):
        ax.set_xscale("log", base=2)
        ax.set_xlabel("candidate budget m*B")
        ax.set_title(t + " (rows e > m*B)", fontsize=9)
        ax.legend(fontsize=7)
    axs[0].axhline(0.99, color="k", lw=0.6, ls="--")
    axs[1].axhline(0.995, color="k", lw=0.6, ls="--")
    fig.tight_layout()
    fig.savefig(os.path.join(a.img, "fidelity_sweep.png"))
    plt.close(fig)
    # 3. against e (context)
    fig, ax = plt.subplots(figsize=(7, 3.2), dpi=100)
    if "context" in R:
        c = R["context"][-1]
        for n, bs in c["by_e"].items():
            pts = [(b["e_hi"], b["iou_mean"]) for b in bs if b.get("rows", 0) > 0]
            ax.plot([p[0] for p in pts], [p[1] for p in pts], marker="o", label="%s (%dK window)" % (n, c["len"] // 1024))
    pts = [(b["e_hi"], b["iou_mean"]) for b in C["hisa B=128 mB=8192"]["by_e"] if b.get("rows", 0) > 0]
    ax.plot([p[0] for p in pts], [p[1] for p in pts], "k--", marker="x", label="hisa B=128 mB=8192 (32K windows)")
    ax.axvline(32768, color="gray", lw=0.6)
    ax.text(33000, 0.05, "training length", fontsize=7, color="gray")
    ax.set_xscale("log", base=2)
    ax.set_xlabel("query position e (upper edge of bucket)")
    ax.set_ylabel("mean IoU vs DSA")
    ax.set_ylim(0, 1.02)
    ax.legend(fontsize=6.5, loc="lower left")
    fig.tight_layout()
    fig.savefig(os.path.join(a.img, "fidelity_context.png"))
    plt.close(fig)
    # 4. loss
    if "loss" in R:
        L = R["loss"]["methods"]
        fig, ax = plt.subplots(figsize=(6, 2.8), dpi=100)
        ns = ["dense", "oracle", "flat", "hisa", "block"]
        lb = ["dense", "top-k of\ndense attn", "DSA", "HISA", "block-sparse"]
        ax.bar(lb, [L[n]["bpb_all"] for n in ns], color=["gray", "C2", "C0", "C1", "C3"])
        lo = min(L[n]["bpb_all"] for n in ns)
        ax.set_ylim(lo - 0.03, max(L[n]["bpb_all"] for n in ns) + 0.01)
        ax.set_ylabel("held-out bits per byte")
        ax.set_title("attention restricted per layer, k = 2048, 32K windows", fontsize=9)
        fig.tight_layout()
        fig.savefig(os.path.join(a.img, "fidelity_loss.png"))
        plt.close(fig)


if __name__ == "__main__":
    main()
