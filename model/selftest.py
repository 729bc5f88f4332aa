"""Exact cross-check of the model's selection on integer-valued inputs, where every sum is exact and
ties are frequent: the hisa package (hisa_select.py, what evaluate.py calls for flat, HISA and
block-sparse) against the independent float64 NumPy rule (select_np.py). With torch importable,
also the torch block-score path that evaluate.py keeps for the pooling experiments the library does
not have (common.select with external block scores), fed the mean-pooled scores.

    python3 model/selftest.py [cpu|cuda]       (numpy alone is enough for the package check)
"""
import os
import sys

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from hisa_select import select_mask  # noqa: E402
from select_np import choose_blocks as np_choose, top_lower  # noqa: E402

METHODS = ("flat", "hisa", "block")


def reference_sets(q, kk, w, e_np, S, B, m, k):
    """The float64 NumPy selections of every row: {method: [sorted positions per row]}."""
    T, H, D = q.shape
    kbar = kk[: (S // B) * B].reshape(S // B, B, D).mean(1)
    out = {mth: [] for mth in METHODS}
    for r in range(T):
        ee = int(e_np[r])
        pos = np.arange(ee)
        Ir = w[r] @ np.maximum(q[r] @ kk[:ee].T, 0)
        nblk = (ee + B - 1) // B
        ncomp = min(nblk, S // B)
        Jr = np.full(nblk, np.nan)
        Jr[:ncomp] = w[r] @ np.maximum(q[r] @ kbar[:ncomp].T, 0)
        blocks = np_choose(Jr, ee, B, m)
        cand = (blocks[:, None] * B + np.arange(B)).reshape(-1)
        cand = cand[cand < ee]
        out["flat"].append(np.sort(top_lower(Ir, pos, min(k, ee))))
        out["hisa"].append(np.sort(top_lower(Ir[cand], cand, min(k, len(cand)))))
        out["block"].append(np.sort(cand))
    return out


def compare(label, masks, ref):
    bad = 0
    for name in METHODS:
        for r, want in enumerate(ref[name]):
            got = np.nonzero(masks[name][r])[0]
            if not np.array_equal(got, want):
                bad += 1
                if bad < 5:
                    print("MISMATCH", label, name, "row", r, len(got), len(want))
    return bad


def run(device, seed=0, S=2048, T=96, H=8, D=64, k=64, B=64, m=6, vmax=2):
    g = np.random.default_rng(seed)
    q = g.integers(-vmax, vmax + 1, size=(T, H, D)).astype(np.float64)
    kk = g.integers(-vmax, vmax + 1, size=(S, D)).astype(np.float64)
    w = g.integers(-1, 3, size=(T, H)).astype(np.float64)
    ksc = np.ones(S)
    e_np = np.sort(g.choice(S, size=T, replace=False)) + 1
    ref = reference_sets(q, kk, w, e_np, S, B, m, k)
    # the package, on NumPy arrays (the cpu backend)
    masks = {mth: select_mask(mth, q, w, kk, ksc, e_np, S, B=B, m=m, k=k) for mth in METHODS}
    bad = compare("hisa package", masks, ref)
    try:
        import torch  # noqa: PLC0415
    except ImportError:
        return bad
    # the torch block-score path of evaluate.py (external block scores), and the package on tensors
    from common import block_scores, pooled_keys, select, token_scores  # noqa: PLC0415

    dev = torch.device(device)
    t = {n: torch.tensor(a, dtype=torch.float32, device=dev) for n, a in (("q", q), ("k", kk), ("w", w), ("s", ksc))}
    e = torch.tensor(e_np, device=dev)
    I = token_scores(t["q"], t["w"], t["k"], t["s"])
    J = block_scores(t["q"], t["w"], pooled_keys(t["k"], t["s"], B))
    masks = {mth: select(mth, I, e, S, J=J, B=B, m=m, k=k).cpu().numpy() for mth in METHODS}
    bad += compare("torch block scores", masks, ref)
    if dev.type == "cpu":  # the package on tensors (on CUDA its fused path needs H in {32, 64}, D = 128)
        masks = {mth: select_mask(mth, t["q"], t["w"], t["k"], t["s"], e, S, B=B, m=m, k=k).numpy()
                 for mth in METHODS}
        bad += compare("hisa package on tensors", masks, ref)
    return bad


def main(device="cpu"):
    tot = 0
    for seed in range(3):
        tot += run(device, seed)
    tot += run(device, 7, vmax=1, m=3)      # very many ties
    tot += run(device, 8, S=4096, B=128, m=8, k=300)
    print("selftest: %d mismatching rows" % tot)
    return tot


if __name__ == "__main__":
    sys.exit(1 if main(sys.argv[1] if len(sys.argv) > 1 else "cpu") else 0)
