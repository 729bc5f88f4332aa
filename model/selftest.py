"""Exact cross-check of the torch selection (evaluate.py's path) against the numpy float64 one
(fixture_eval.py) on integer-valued inputs, where every sum is exact and ties are frequent."""
import os
import sys

import numpy as np
import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from common import block_scores, pooled_keys, select, token_scores  # noqa: E402
from fixture_eval import choose_blocks as np_choose, top_lower  # noqa: E402

def run(device, seed=0, S=2048, T=96, H=8, D=16, k=64, B=64, m=6, vmax=2):
    g = np.random.default_rng(seed)
    q = g.integers(-vmax, vmax + 1, size=(T, H, D)).astype(np.float64)
    kk = g.integers(-vmax, vmax + 1, size=(S, D)).astype(np.float64)
    w = g.integers(-1, 3, size=(T, H)).astype(np.float64)
    ksc = np.ones(S)
    rows = np.sort(g.choice(S, size=T, replace=False))
    e_np = rows + 1
    # torch path
    dev = torch.device(device)
    q8 = torch.tensor(q, dtype=torch.float32, device=dev)
    k8 = torch.tensor(kk, dtype=torch.float32, device=dev)
    w8 = torch.tensor(w, dtype=torch.float32, device=dev)
    ks = torch.tensor(ksc, dtype=torch.float32, device=dev)
    e = torch.tensor(e_np, device=dev)
    I = token_scores(q8, w8, k8, ks)
    J = block_scores(q8, w8, pooled_keys(k8, ks, B))
    sel = {mth: select(mth, I, e, S, J=J, B=B, m=m, k=k).cpu().numpy() for mth in ("flat", "hisa", "block")}
    bad = 0
    kbar = kk[: (S // B) * B].reshape(S // B, B, D).mean(1)
    for r in range(T):
        ee = int(e_np[r])
        pos = np.arange(ee)
        Ir = w[r] @ np.maximum(q[r] @ kk[:ee].T, 0)
        flat = np.sort(top_lower(Ir, pos, min(k, ee)))
        nblk = (ee + B - 1) // B
        ncomp = min(nblk, S // B)
        Jr = np.full(nblk, np.nan)
        Jr[:ncomp] = w[r] @ np.maximum(q[r] @ kbar[:ncomp].T, 0)
        blocks = np_choose(Jr, ee, B, m)
        cand = (blocks[:, None] * B + np.arange(B)).reshape(-1)
        cand = cand[cand < ee]
        hisa = np.sort(top_lower(Ir[cand], cand, min(k, len(cand))))
        for name, ref in (("flat", flat), ("hisa", hisa), ("block", np.sort(cand))):
            got = np.nonzero(sel[name][r])[0]
            if not np.array_equal(got, ref):
                bad += 1
                if bad < 5:
                    print("MISMATCH", name, "row", r, "e", ee, len(got), len(ref))
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
