"""Fidelity of HISA / block-sparse against flat DSA on a safetensors case file, in float64 with numpy
alone (an implementation independent of the torch one in evaluate.py; SEMANTICS.md sections 2-5, 8).

    python3 model/fixture_eval.py tests/data/fixture_layer.safetensors [--json out.json]

The case file holds q [T,H,D] F8_E4M3, k [S,D] F8_E4M3, k_scale [S] F32, w [T,H] F32 and ks, ke [T]
I32 (per-query form; one sequence, ks = 0).
"""
import argparse
import hashlib
import json
import os
import sys

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from common import E4M3, load_safetensors_np, summarize  # noqa: E402
from select_np import choose_blocks, top_lower  # noqa: E402

DEFAULT_CONFIGS = [
    ("hisa", 128, 64, 2048),   # the library default
    ("hisa", 64, 128, 2048),
    ("hisa", 256, 32, 2048),
    ("hisa", 128, 32, 2048),   # m*B = 4096
    ("block", 128, 16, 2048),  # block-sparse at DSA's token budget
]


def cfg_name(method, B, m, k):
    return "%s B=%d m=%d k=%d" % (method, B, m, k)


def eval_case(path, configs=DEFAULT_CONFIGS, verbose=True):
    t, meta, dts = load_safetensors_np(path)
    assert dts["q"] == "F8_E4M3" and dts["k"] == "F8_E4M3", dts
    q = E4M3[t["q"]]  # [T,H,D] float64
    kd = E4M3[t["k"]] * t["k_scale"].astype(np.float64)[:, None]  # dequantised keys [S,D]
    w = t["w"].astype(np.float64)
    ks, ke = t["ks"].astype(np.int64), t["ke"].astype(np.int64)
    T, H, D = q.shape
    S = kd.shape[0]
    pooled = {}
    for _, B, _, _ in configs:
        if B not in pooled:
            nb = S // B
            pooled[B] = kd[: nb * B].reshape(nb, B, D).mean(1)
    per = {cfg_name(*c): {"iou": [], "rec": [], "mass": [], "e": []} for c in configs}
    flat_sets = []
    for r in range(T):
        assert ks[r] == 0
        e = int(ke[r] - ks[r])
        pos = np.arange(e)
        I = w[r] @ np.maximum(q[r] @ kd[:e].T, 0.0)  # [e]
        mx = I.max()
        p = np.exp(I - mx)
        kmax = max(c[3] for c in configs)
        flat_by_k = {}
        for method, B, m, k in configs:
            if k not in flat_by_k:
                flat_by_k[k] = top_lower(I, pos, min(k, e))
            Y = flat_by_k[k]
            nblk = (e + B - 1) // B
            ncomplete = min(nblk, S // B)
            J = np.full(nblk, np.nan)
            J[:ncomplete] = w[r] @ np.maximum(q[r] @ pooled[B][:ncomplete].T, 0.0)
            blocks = choose_blocks(J, e, B, m)
            cand = (blocks[:, None] * B + np.arange(B)[None, :]).reshape(-1)
            cand = cand[cand < e]
            X = cand if method == "block" else top_lower(I[cand], cand, min(k, len(cand)))
            inter = len(np.intersect1d(X, Y, assume_unique=True))
            union = len(X) + len(Y) - inter
            d = per[cfg_name(method, B, m, k)]
            d["iou"].append(inter / union)
            d["rec"].append(inter / len(Y))
            d["mass"].append(p[X].sum() / p[Y].sum())
            d["e"].append(e)
        flat_sets.append(flat_by_k[kmax])
    out = {"file": os.path.basename(path), "sha256": hashlib.sha256(open(path, "rb").read()).hexdigest(),
           "rows": T, "keys": S, "heads": H, "dim": D, "metadata": meta, "configs": {}}
    for method, B, m, k in configs:
        name = cfg_name(method, B, m, k)
        d = {kk: np.asarray(v) for kk, v in per[name].items()}
        sel = d["e"] > m * B
        out["configs"][name] = {
            "all_rows": summarize(d["iou"], d["rec"], d["mass"]),
            "rows_e_gt_mB": summarize(d["iou"][sel], d["rec"][sel], d["mass"][sel]),
        }
        if verbose:
            a, b = out["configs"][name]["all_rows"], out["configs"][name]["rows_e_gt_mB"]
            print("%-28s all %3d rows: IoU %.5f (p1 %.4f min %.4f) mass %.6f | e>mB %3d rows: IoU %.5f "
                  "(p1 %.4f min %.4f) recall %.5f mass %.6f (min %.5f)" % (
                      name, a["rows"], a["iou_mean"], a["iou_p1"], a["iou_min"], a["mass_mean"], b["rows"],
                      b.get("iou_mean", 1), b.get("iou_p1", 1), b.get("iou_min", 1), b.get("recall_mean", 1),
                      b.get("mass_mean", 1), b.get("mass_min", 1)), flush=True)
    return out, flat_sets


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("path")
    ap.add_argument("--json")
    ap.add_argument("--device-json", help="fixture_fidelity.json of the device run: its torch fp32 numbers "
                                          "on the same rows are copied in as a cross-check")
    ap.add_argument("--cli-json", help="`hisa eval --score-rows 0 --json` output on the same file: copied in "
                                       "as a cross-check")
    a = ap.parse_args()
    out, _ = eval_case(a.path)
    out["definitions"] = (
        "numpy float64 (model/fixture_eval.py): scores from the dequantised fp8 values (SEMANTICS.md 2), "
        "mean-pooled keys in float64, ties toward the lower position; IoU / recall / score-mass recall per "
        "row against flat top-k (SEMANTICS.md 8); p1 by the nearest-rank rule of hisa::summarize "
        "(*_p1_interp: numpy's interpolated percentile); all_rows = every row, rows_e_gt_mB = rows with "
        "e > m*B.")
    if a.device_json:
        d = json.load(open(a.device_json))
        out["cross_check_torch_fp32_on_gpu"] = d.get("torch_fp32_same_rows")
        same = d.get("configs", {}).keys() == out["configs"].keys() and all(
            abs(d["configs"][n][g][f] - out["configs"][n][g][f]) < 1e-12
            for n in out["configs"] for g in ("all_rows", "rows_e_gt_mB")
            for f in ("iou_mean", "iou_min", "recall_mean", "mass_mean", "mass_min"))
        out["cross_check_numpy_on_device_equal"] = bool(same)
    if a.cli_json:
        c = json.load(open(a.cli_json))
        out["cross_check_hisa_cli"] = [{"method": x["method"], "B": x["block_size"], "m": x["top_blocks"],
                                        "k": x["topk"], "all": x["all"], "differ": x["differ"]}
                                       for x in c["configs"]]
    if a.json:
        with open(a.json, "w") as f:
            json.dump(out, f, indent=1)


if __name__ == "__main__":
    main()
