"""Needle in a haystack on the model of this folder: passkey documents for training, and the grid of
retrieval accuracy over context length x needle depth for dense attention and for every layer's
attention restricted to its indexer's selection (flat DSA, HISA, block-sparse, HISA reusing the
blocks of an earlier layer), with the evidence miss rate of HISA against DSA.

A passkey document is book text with the needle sentence " The secret code is NNNNN. Remember it. "
at a relative depth (0: the start, 1: just before the question) and ends with "\nWhat is the secret
code? The secret code is NNNNN." The model retrieves the needle when its greedy prediction of each
of the five answer digits, given the document before it, is the digit (teacher forcing: the
prediction of digit j sees the true digits before it).

The selections run through the hisa package (hisa_select.select_mask), on the GPU its CUDA ops in
fp8 as served. No GPU is needed for the plumbing (`study.py needle --tiny`).
"""

import numpy as np
import torch

from common import log
from evaluate import restricted_forward
from hisa_select import select_mask
from train import sample_batch

DIGITS = 5
NEEDLE = b" The secret code is %s. Remember it. "
QUESTION = b"\nWhat is the secret code? The secret code is %s."


def code_of(rng):
    return b"%05d" % int(rng.integers(0, 10 ** DIGITS))


def passkey_doc(filler, L, depth, code):
    """One document of L + 1 bytes from filler bytes (at least L + 1 of them): the needle at `depth`,
    the question and its answer at the end. Returns (tokens uint8 [L + 1], the needle's digit
    positions [5], the answer's digit positions [5]); digit p is predicted from tokens[:p], i.e. by
    the logits of row p - 1."""
    needle, q = NEEDLE % code, QUESTION % code
    nf = L + 1 - len(q) - len(needle)
    if nf < 0 or len(filler) < nf:
        raise ValueError("passkey_doc: L = %d is too short for the needle and the question" % L)
    at = int(round(depth * nf))
    doc = bytes(filler[:at]) + needle + bytes(filler[at:nf]) + q
    assert len(doc) == L + 1
    needle_pos = at + needle.index(code) + np.arange(DIGITS)
    answer_pos = L - DIGITS + np.arange(DIGITS)  # (the last byte is the final '.')
    return np.frombuffer(doc, np.uint8).copy(), needle_pos, answer_pos


def passkey_batches(frac, seed=0):
    """A batch sampler for train.pretrain: book windows, a fraction `frac` of them turned into passkey
    documents (random code, depth uniform in [0, 1])."""
    rng = np.random.default_rng(seed)

    def fn(data, nseq, L, gen, device):
        tok = sample_batch(data, nseq, L, gen, device)
        for i in np.nonzero(rng.random(nseq) < frac)[0]:
            filler = tok[i].to(torch.uint8).cpu().numpy().tobytes()
            doc, _, _ = passkey_doc(filler, L, float(rng.random()), code_of(rng))
            tok[i] = torch.from_numpy(doc).to(device).long()
        return tok

    return fn


def method_params(method, L, k):
    """(selection, B, m, reuse) of a grid method: dense, flat, hisa (B = 128, m = 64), hisa_L4 (m * B
    = L / 4), block (B = 128 at hisa's token budget k: m = k / B), hisa_r1 / r2 / r4 (the default
    HISA with each choosing layer's blocks reused by the next r layers)."""
    B = 128
    if method in ("dense", "flat"):
        return method, B, 64, 0
    if method == "hisa":
        return "hisa", B, 64, 0
    if method == "hisa_L4":
        return "hisa", B, max(4, L // 4 // B), 0
    if method == "block":
        return "block", B, max(3, k // B), 0
    if method.startswith("hisa_r"):
        return "hisa", B, 64, int(method[len("hisa_r"):])
    raise ValueError("unknown needle method " + method)


@torch.no_grad()
def restricted_logits(model, idxs, tok, method, k, rows, chunk=1024, needle_pos=None):
    """fp32 forward of tok [T] where every layer's attention of every query is restricted to the
    selection of method (method_params); returns the logits of `rows` [R, V] and, for hisa with
    needle_pos, per layer the fraction of `rows` whose needle digits DSA's top-k holds and HISA's
    selection misses (the evidence miss rate; None where DSA holds none)."""
    sel, B, m, reuse = method_params(method, tok.numel(), k)
    dev = tok.device
    T = tok.numel()
    rows = torch.as_tensor(rows, device=dev)
    misses = []
    blocks = None  # the last choosing layer's blocks [T, m] (reuse)
    layer_blocks = []  # this layer's, per row chunk
    choose = lambda li: reuse == 0 or li % (reuse + 1) == 0  # noqa: E731

    def mask(li, ind, rc, e, Sc, s, vis):
        if sel == "dense":
            return vis
        q8, k8, ks, w8 = ind
        if sel == "flat":
            return select_mask("flat", q8[rc], w8[rc], k8, ks, e, Sc, k=k)
        r0 = int(rc[0])
        given = None if choose(li) else blocks[r0:r0 + rc.numel()].contiguous()
        X, b = select_mask(sel, q8[rc], w8[rc], k8, ks, e, Sc, B=B, m=m, k=k, given_blocks=given,
                           return_blocks=True)
        layer_blocks.append(b)
        return X

    def layer_end(li, ind):
        nonlocal blocks, layer_blocks
        if sel in ("hisa", "block") and choose(li):
            blocks = torch.cat(layer_blocks, 0)
        layer_blocks = []
        if sel == "hisa" and needle_pos is not None:
            q8, k8, ks, w8 = ind
            e = rows + 1
            npos = torch.as_tensor(needle_pos, device=dev)
            dsa = select_mask("flat", q8[rows], w8[rows], k8, ks, e, T, k=k)[:, npos]
            given = None if choose(li) else blocks[rows].contiguous()
            hs = select_mask("hisa", q8[rows], w8[rows], k8, ks, e, T, B=B, m=m, k=k,
                             given_blocks=given)[:, npos]
            held = dsa.any(1)
            missed = (dsa & ~hs).any(1) & held
            misses.append(float(missed.sum()) / float(held.sum()) if bool(held.any()) else None)

    logits = restricted_forward(model, idxs, tok, mask, chunk=chunk, indexer=sel != "dense",
                                layer_end=layer_end)
    return logits[0, rows], misses


def needle_docs(books, L, depths, per_cell, seed=0):
    """Documents of the grid: for each depth, per_cell fillers from the held-out books (spread over
    them), each with its own code."""
    rng = np.random.default_rng(seed + L)
    need = L + 1
    usable = [b for b in books if len(b) > need + 1]
    if not usable:
        raise ValueError("needle: no held-out book has %d bytes" % need)
    docs = []
    for di, d in enumerate(depths):
        for j in range(per_cell):
            b = usable[(di * per_cell + j) % len(usable)]
            off = int(rng.integers(0, len(b) - need))
            docs.append((float(d),) + passkey_doc(b[off:off + need], L, float(d), code_of(rng)))
    return docs


def run_needle(model, idxs, books, device, lengths, depths, per_cell, methods, k=2048, log_every=20,
               deadline=None):
    """The grid: {method: {L: {depth: accuracy}}}, evidence miss rates per method and layer, and the
    time per document. Stops (keeping what it has) at `deadline` (time.time() seconds)."""
    import time  # noqa: PLC0415

    res = {"lengths": lengths, "depths": list(map(float, depths)), "per_cell": per_cell, "k": k,
           "accuracy": {}, "evidence_miss": {}, "seconds": {}}
    n = 0
    for L in lengths:
        docs = needle_docs(books, L, depths, per_cell)
        for method in methods:
            t0 = time.time()
            acc, miss = {}, []
            for d, doc, needle_pos, answer_pos in docs:
                if deadline is not None and time.time() > deadline:
                    log("needle: out of time at L=%d %s" % (L, method))
                    res["stopped_early"] = True
                    return res
                tok = torch.from_numpy(doc).to(device).long()
                rows = answer_pos - 1
                logits, mr = restricted_logits(model, idxs, tok, method, k, rows, needle_pos=needle_pos)
                ok = bool((logits.argmax(-1).cpu().numpy() == doc[answer_pos]).all())
                acc.setdefault(d, []).append(ok)
                if mr:
                    miss.append(mr)
                n += 1
                if n % log_every == 0:
                    log("needle: %d documents, L=%d %s" % (n, L, method))
            res["accuracy"].setdefault(method, {})[str(L)] = {str(d): float(np.mean(v)) for d, v in acc.items()}
            if miss:
                per_layer = [[m[li] for m in miss if m[li] is not None] for li in range(len(miss[0]))]
                res["evidence_miss"].setdefault(method, {})[str(L)] = [
                    float(np.mean(v)) if v else None for v in per_layer]
            res["seconds"].setdefault(method, {})[str(L)] = (time.time() - t0) / max(1, len(docs))
            log("needle L=%d %-8s accuracy %.3f" % (
                L, method, float(np.mean([x for v in acc.values() for x in v]))))
    return res


def heatmaps(res, out_prefix):
    """One PNG per method: accuracy over depth (rows) x length (columns), as the paper draws it."""
    try:
        import matplotlib  # noqa: PLC0415

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt  # noqa: PLC0415
    except ImportError:
        log("needle: no matplotlib, no heatmaps")
        return []
    files = []
    Ls = [str(L) for L in res["lengths"]]
    ds = [str(d) for d in res["depths"]]
    for method, by_L in res["accuracy"].items():
        a = np.array([[by_L.get(L, {}).get(d, np.nan) for L in Ls] for d in ds])
        fig, ax = plt.subplots(figsize=(1.2 + 0.9 * len(Ls), 1.0 + 0.35 * len(ds)))
        im = ax.imshow(a, vmin=0, vmax=1, cmap="RdYlGn", aspect="auto")
        ax.set_xticks(range(len(Ls)), ["%gK" % (int(L) / 1024) for L in Ls])
        ax.set_yticks(range(len(ds)), ["%.0f%%" % (100 * float(d)) for d in ds])
        ax.set_xlabel("context length")
        ax.set_ylabel("needle depth")
        ax.set_title(method)
        fig.colorbar(im, ax=ax)
        fig.tight_layout()
        f = "%s_%s.png" % (out_prefix, method)
        fig.savefig(f, dpi=110)
        plt.close(fig)
        files.append(f)
    return files
