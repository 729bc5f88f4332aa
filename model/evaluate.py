"""The fidelity study: HISA / block-sparse against flat DSA on held-out text, restricted-attention
losses, fidelity against context length, and the committed fixture."""
import json
import math
import os
import time

import numpy as np
import torch
import torch.nn.functional as F

from common import (block_scores, e4m3_codes, log, pooled_keys, quantize_indexer, row_metrics, save_safetensors,
                    score_softmax, select, summarize, token_scores, topk_mask)
from hisa_select import select_mask
from train import autocast, base_attention_probs


class EvalSettings:
    def __init__(self, **kw):
        self.k = 2048
        self.Bs = [64, 128, 256]
        self.mBs = [4096, 8192, 16384]
        self.default = (128, 64)  # B, m
        self.window = 32768
        self.row_stride = 4  # fidelity rows per 32K window: every 4th position
        self.ctx_windows = [65536, 131072]
        self.ctx_stride = 32
        self.max_fid_windows = 1000
        self.loss_windows = 6
        self.fixture_rows = 256
        self.fixture_small_e = 32  # rows with e <= m*B in the fixture
        self.chunk_elems = 2 ** 31  # R * S * H bound per chunk (fp32 [R,H,S] = 8 GiB)
        for k, v in kw.items():
            if not hasattr(self, k):
                raise ValueError(k)
            setattr(self, k, v)

    def chunk_rows(self, S, H=64):
        r = max(16, self.chunk_elems // (S * H))
        return 1 << int(math.floor(math.log2(r)))


def fid_configs(st):
    """(name, method, B, m, pooling) of the sweep. Pooling: mean (the contract) | max (elementwise max
    of the block's keys) | sub4 (the best of the four quarter-block mean keys: 4x the block-stage
    work) | oracle (block score = the best token score inside the block: the ceiling of any block
    filter, as costly as flat DSA)."""
    out = []
    for B in st.Bs:
        for mB in st.mBs:
            out.append(("hisa B=%d mB=%d" % (B, mB), "hisa", B, mB // B, "mean"))
    dB, dm = st.default
    for B in st.Bs:
        out.append(("hisa-max B=%d mB=%d" % (B, dB * dm), "hisa", B, dB * dm // B, "max"))
    for B in st.Bs:
        out.append(("hisa-sub4 B=%d mB=%d" % (B, dB * dm), "hisa", B, dB * dm // B, "sub4"))
    out.append(("hisa-oracle B=%d mB=%d" % (dB, dB * dm), "hisa", dB, dm, "oracle"))
    for B in st.Bs:
        out.append(("block B=%d mB=%d" % (B, st.k), "block", B, st.k // B, "mean"))
    out.append(("block B=%d mB=%d" % (dB, dB * dm), "block", dB, dm, "mean"))
    return out


def default_name(st):
    B, m = st.default
    return "hisa B=%d mB=%d" % (B, B * m)


def block_name(st):
    return "block B=%d mB=%d" % (st.default[0], st.k)


# ----------------------------------------------------------------------------------------------


@torch.no_grad()
def window_layers(model, idxs, tok, rows=None, need_base=True):
    """Dense forward (bf16 autocast, as trained) of one window; per layer the fp8-quantised indexer
    inputs of the query rows `rows` (all when None) and of every key. Returns (layers, nll [T-1])."""
    logits, caps = None, None
    with autocast(tok.device):
        logits, caps = model(tok[None], capture=True)
    nll = F.cross_entropy(logits[0, :-1].float(), tok[1:], reduction="none")
    del logits
    T = tok.numel()
    if rows is None:
        rows = torch.arange(T, device=tok.device)
    out = []
    for li, (h, qb, kb) in enumerate(caps):
        hf = h[0].float()
        ix = idxs[li]
        q, w = ix.queries(hf[rows], rows)
        k = ix.keys(hf)
        q8, k8, kscale, w8 = quantize_indexer(q, k, w)
        d = {"q8": q8, "w8": w8, "k8": k8, "ks": kscale, "rows": rows}
        if need_base:
            d["qb"], d["kb"] = qb[0], kb[0]
        out.append(d)
        del q, k
    return out, nll


def _J(d, cache, rc_idx, I, e, B, pooling):
    if pooling == "oracle":
        R, Sc = I.shape
        vis = torch.arange(Sc, device=I.device)[None, :] < e[:, None]
        return I.masked_fill(~vis, float("-inf")).view(R, Sc // B, B).amax(-1)
    if pooling == "sub4":  # max over the four quarter-block mean keys
        key = (B // 4, "mean")
        if key not in cache:
            cache[key] = pooled_keys(d["k8"], d["ks"], B // 4, "mean")
        Sc = I.shape[1]
        Js = block_scores(d["q8"][rc_idx], d["w8"][rc_idx], cache[key][: Sc // (B // 4)])
        return Js.view(Js.shape[0], Sc // B, 4).amax(-1)
    key = (B, pooling)
    if key not in cache:
        cache[key] = pooled_keys(d["k8"], d["ks"], B, "mean" if pooling == "mean" else "max")
    Sc = I.shape[1]
    return block_scores(d["q8"][rc_idx], d["w8"][rc_idx], cache[key][: Sc // B])


@torch.no_grad()
def fidelity_layer(d, st, configs, extra=True):
    """All sweep configs on the rows of one layer of one window. Returns dict name -> arrays
    (e, iou, rec, mass) and, with extra, attention-mass and KL diagnostics per row."""
    rows = d["rows"]
    S = d["k8"].shape[0]
    R_all = rows.numel()
    res = {c[0]: {"e": [], "iou": [], "rec": [], "mass": []} for c in configs}
    diag = {"e": [], "kl": [], "am_dense": [], "am_flat": [], "am_hisa": [], "am_block": []}
    cache = {}
    dB, dm = st.default
    chunk = st.chunk_rows(S)
    for c0 in range(0, R_all, chunk):
        ci = torch.arange(c0, min(R_all, c0 + chunk), device=rows.device)
        rc = rows[ci]
        e = rc + 1
        Sc = min(S, int(math.ceil(int(e[-1].item()) / 256.0)) * 256)
        I = token_scores(d["q8"][ci], d["w8"][ci], d["k8"][:Sc], d["ks"][:Sc])
        # Flat, HISA and block-sparse with mean pooling are the library's selection (the hisa
        # package); the pooling experiments it does not have (max, quarter blocks, the oracle
        # block filter) rank their own block scores with common.select.
        Xf = select_mask("flat", d["q8"][ci], d["w8"][ci], d["k8"], d["ks"], e, Sc, k=st.k)
        pI = score_softmax(I, e)
        sels = {}
        for name, method, B, m, pooling in configs:
            if pooling == "mean":
                X = select_mask(method, d["q8"][ci], d["w8"][ci], d["k8"], d["ks"], e, Sc, B=B, m=m, k=st.k)
            else:
                J = _J(d, cache, ci, I, e, B, pooling)
                X = select(method, I, e, Sc, J=J, B=B, m=m, k=st.k)
            iou, rec, mass = row_metrics(X, Xf, I, e, pI)
            r = res[name]
            r["e"].append(e.cpu())
            r["iou"].append(iou.cpu())
            r["rec"].append(rec.cpu())
            r["mass"].append(mass.cpu())
            if name in (default_name(st), block_name(st)):
                sels[name] = X
        if extra and "qb" in d:
            p = base_attention_probs(d["qb"], d["kb"], rc, Sc)
            vis = torch.arange(Sc, device=I.device)[None, :] < e[:, None]
            Xo = topk_mask(p, vis, st.k)
            diag["e"].append(e.cpu())
            diag["am_dense"].append((p * Xo).sum(1).cpu())
            diag["am_flat"].append((p * Xf).sum(1).cpu())
            diag["am_hisa"].append((p * sels[default_name(st)]).sum(1).cpu())
            diag["am_block"].append((p * sels[block_name(st)]).sum(1).cpu())
            logq = torch.log_softmax(I.masked_fill(~vis, float("-inf")), -1).masked_fill(~vis, 0.0)
            plogp = torch.where(p > 0, p * torch.log(p.clamp(min=1e-30)), torch.zeros_like(p))
            diag["kl"].append((plogp - p * logq).sum(1).cpu())
        del I, pI
    cat = lambda v: torch.cat(v).double().numpy() if v else np.zeros(0)  # noqa: E731
    res = {n: {k: cat(v) for k, v in r.items()} for n, r in res.items()}
    diag = {k: cat(v) for k, v in diag.items()}
    return res, diag


def summarize_rows(r, mB=None, emin=None, emax=None):
    sel = np.ones(len(r["e"]), dtype=bool)
    if mB is not None:
        sel &= r["e"] > mB
    if emin is not None:
        sel &= r["e"] > emin
    if emax is not None:
        sel &= r["e"] <= emax
    return summarize(r["iou"][sel], r["rec"][sel], r["mass"][sel])


# ----------------------------------------------------------------------------------------------
# restricted attention: the whole model with every layer's attention limited to a selection


@torch.no_grad()
def restricted_forward(model, idxs, tok, mask_fn, chunk=1024, indexer=True, layer_end=None):
    """fp32 forward of tok [T] in which each layer's attention of each query row is restricted to
    a mask: mask_fn(li, ind, rc, e, Sc, s, vis) -> bool [R, Sc] for rows rc (visible ends e, the
    first Sc keys, scores s [H, R, Sc], causal mask vis), with ind the layer's quantised indexer
    inputs (q8, k8, ks, w8; None when not indexer). layer_end(li, ind), if given, runs after each
    layer's rows. Returns the logits [1, T, V]."""
    dev = tok.device
    T = tok.numel()
    cos, sin = model.rope(T, dev)
    x = model.emb(tok[None]).float()
    for li, blk in enumerate(model.blocks):
        h = blk.n1(x)
        q, kk, v = blk.qkv_heads(h, cos, sin)
        q, kk, v = q[0].float(), kk[0].float(), v[0].float()
        H, _, dh = q.shape
        ind = None
        if indexer:
            qi, ki, wi = idxs[li](h[0].float())
            ind = quantize_indexer(qi, ki, wi)
            del qi, ki
        y = torch.empty(T, H, dh, device=dev)
        for r0 in range(0, T, chunk):
            rc = torch.arange(r0, min(T, r0 + chunk), device=dev)
            e = rc + 1
            Sc = min(T, int(math.ceil((r0 + rc.numel()) / 256.0)) * 256)
            s = torch.matmul(q[:, rc], kk[:, :Sc].transpose(1, 2)) / math.sqrt(dh)
            vis = torch.arange(Sc, device=dev)[None, :] < e[:, None]
            X = mask_fn(li, ind, rc, e, Sc, s, vis)
            s = s.masked_fill(~X[None], float("-inf")).softmax(-1)
            y[rc] = torch.matmul(s, v[:, :Sc]).transpose(0, 1)
        if layer_end is not None:
            layer_end(li, ind)
        x = x + blk.o(y.reshape(1, T, -1))
        x = x + blk.mlp(x)
    return model.head(model.nf(x))


def sparse_nll(model, idxs, tok, method, st, B=128, m=64):
    """fp32 forward where each layer attends only to the selected positions of each query.
    method: dense | oracle (top-k of the head-mean dense attention) | flat | hisa | block.
    tok [T + 1]: inputs tok[:-1], targets tok[1:]. Returns nll [T]."""
    tgt = tok[1:]
    tok = tok[:-1]

    def mask(li, ind, rc, e, Sc, s, vis):
        if method == "dense":
            return vis
        if method == "oracle":
            p = s.masked_fill(~vis[None], float("-inf")).softmax(-1).mean(0)
            return topk_mask(p, vis, st.k)
        q8, k8, ks, w8 = ind  # flat, hisa, block: the library's selection
        return select_mask(method, q8[rc], w8[rc], k8, ks, e, Sc, B=B, m=m, k=st.k)

    logits = restricted_forward(model, idxs, tok, mask, chunk=min(1024, st.chunk_rows(tok.numel())),
                                indexer=method in ("flat", "hisa", "block"))
    return F.cross_entropy(logits[0], tgt, reduction="none")


# ----------------------------------------------------------------------------------------------


def windows_from_books(books, L, per_book, min_len=None):
    """(book index, offset) of up to per_book non-overlapping windows of L bytes per book, spread
    evenly over the book (skipping the first 5%: front matter)."""
    out = []
    for bi, b in enumerate(books):
        n = len(b)
        if n < L + 1:
            continue
        start = int(0.05 * n) if n - int(0.05 * n) > L + 1 else 0
        avail = n - start - L - 1
        cnt = min(per_book, max(1, (n - start) // L))
        for j in range(cnt):
            off = start + (avail * j) // max(1, cnt - 1) if cnt > 1 else start + avail // 2
            out.append((bi, off))
    return out


def interleave(ws):
    """Order windows round-robin over books so that a time-limited loop sees every book early."""
    by = {}
    for bi, off in ws:
        by.setdefault(bi, []).append(off)
    out, i = [], 0
    while any(i < len(v) for v in by.values()):
        for bi in sorted(by):
            if i < len(by[bi]):
                out.append((bi, by[bi][i]))
        i += 1
    return out


def run_eval(model, idxs, books, st, out_dir, seconds, device, fixture_path=None, smoke=False):
    """The whole study within `seconds`. Writes results.json (updated after every part)."""
    t0 = time.time()
    R = {"settings": dict(st.__dict__), "parts_done": []}
    res_path = os.path.join(out_dir, "results.json")

    def flush():
        with open(res_path, "w") as f:
            json.dump(R, f, indent=1, default=float)

    nl = len(idxs)
    configs = fid_configs(st)
    W = st.window
    wins = interleave(windows_from_books(books, W, 4))
    log("eval: %d windows of %d available; %d configs; budget %.0fs" % (len(wins), W, len(configs), seconds))

    # ---- part 1: fidelity sweep on W-token windows ------------------------------------------
    t_fid = 0.30 * seconds
    acc = [{c[0]: {"e": [], "iou": [], "rec": [], "mass": []} for c in configs} for _ in range(nl)]
    dacc = [dict() for _ in range(nl)]
    nll_dense, nwin = [], 0
    first_window_layers = None
    for wi, (bi, off) in enumerate(wins):
        if (wi >= 2 and time.time() - t0 > t_fid) or wi >= st.max_fid_windows:
            break
        tok = torch.from_numpy(books[bi][off: off + W + 1].astype(np.int64)).to(device)
        tok_in = tok[:W]
        rows = torch.arange((wi * 7) % st.row_stride, W, st.row_stride, device=device)
        layers, nll = window_layers(model, idxs, tok_in, rows)
        nll_dense.append(nll.cpu())
        for li in range(nl):
            r, dg = fidelity_layer(layers[li], st, configs)
            for n in r:
                for kk in r[n]:
                    acc[li][n][kk].append(r[n][kk])
            for kk in dg:
                dacc[li].setdefault(kk, []).append(dg[kk])
        if wi == 0:
            first_window_layers = (bi, off)
        nwin += 1
        dn = default_name(st)
        cur = [summarize_rows({k: np.concatenate(v) for k, v in acc[li][dn].items()}, mB=st.default[0] * st.default[1])
               for li in range(nl)]
        log("  window %d (book %d @%d) t=%.0fs default IoU(e>mB) per layer: %s" % (
            wi, bi, off, time.time() - t0, " ".join("%.4f" % c.get("iou_mean", float("nan")) for c in cur)))
        del layers
    acc = [{n: {k: np.concatenate(v) for k, v in r.items()} for n, r in a.items()} for a in acc]
    dacc = [{k: np.concatenate(v) for k, v in a.items()} for a in dacc]
    fid = {}
    for name, method, B, m, pooling in configs:
        mB = m * B
        ent = {"method": method, "B": B, "m": m, "pooling": pooling, "per_layer": []}
        for li in range(nl):
            ent["per_layer"].append({"all_rows": summarize_rows(acc[li][name]),
                                     "rows_e_gt_mB": summarize_rows(acc[li][name], mB=mB)})
        allr = {k: np.concatenate([acc[li][name][k] for li in range(nl)]) for k in acc[0][name]}
        ent["overall"] = {"all_rows": summarize_rows(allr), "rows_e_gt_mB": summarize_rows(allr, mB=mB)}
        ent["by_e"] = [{"e_lo": lo, "e_hi": hi, **summarize_rows(allr, emin=lo, emax=hi)}
                       for lo, hi in [(0, 2048), (2048, 4096), (4096, 8192), (8192, 16384), (16384, 32768),
                                      (32768, 65536), (65536, 131072)]]
        fid[name] = ent
    diag = []
    for li in range(nl):
        dg = dacc[li]
        if len(dg.get("e", [])) == 0:
            continue
        sel = dg["e"] > st.k
        diag.append({k: float(np.mean(dg[k][sel])) if sel.any() else None
                     for k in ["kl", "am_dense", "am_flat", "am_hisa", "am_block"]})
        diag[-1]["kl_all_rows"] = float(np.mean(dg["kl"]))
    nll_all = torch.cat(nll_dense)
    pos = torch.cat([torch.arange(n.numel()) for n in nll_dense])
    by_pos = [{"pos_lo": lo, "pos_hi": hi, "nats": float(nll_all[(pos >= lo) & (pos < hi)].mean())}
              for lo, hi in [(0, 1024), (1024, 4096), (4096, 8192), (8192, 16384), (16384, 32768)] if lo < W]
    R["fidelity_dense_loss_by_pos"] = by_pos
    R["fidelity"] = {"windows": nwin, "window_len": W, "row_stride": st.row_stride, "configs": fid,
                     "diagnostics_per_layer_rows_e_gt_k": diag,
                     "dense_loss_nats": float(nll_all.mean()), "dense_bpb": float(nll_all.mean() / math.log(2))}
    R["parts_done"].append("fidelity")
    flush()
    log("part 1 (fidelity) done at %.0fs: %d windows" % (time.time() - t0, nwin))

    # ---- part 2: the fixture ------------------------------------------------------------------
    if fixture_path:
        dn = default_name(st)
        mB = st.default[0] * st.default[1]
        per_layer_iou = [fid[dn]["per_layer"][li]["rows_e_gt_mB"].get("iou_mean", 1.0) for li in range(nl)]
        layer = int(np.argmin(per_layer_iou))
        bi, off = first_window_layers
        tok = torch.from_numpy(books[bi][off: off + W].astype(np.int64)).to(device)
        g = np.random.default_rng(1234)
        small = g.choice(np.arange(0, min(mB, W)), size=st.fixture_small_e, replace=False)
        big = g.choice(np.arange(mB, W), size=st.fixture_rows - st.fixture_small_e, replace=False)
        rows_np = np.sort(np.concatenate([small, big]))
        rows = torch.from_numpy(rows_np).to(device)
        layers, _ = window_layers(model, idxs, tok, rows, need_base=False)
        d = layers[layer]
        meta = {"source": "hisa model/ fidelity study: lightning indexer of layer %d of a byte-level LM, "
                          "held-out book %d (valid-00), window offset %d bytes, %d keys" % (layer, bi, off, W),
                "layer": layer, "book_index": bi, "offset": off, "rows_seed": 1234,
                "scale_rule": "ue8m0 (q per token-head, folded into w; k per token)"}
        save_safetensors(fixture_path, {
            "q": ("F8_E4M3", e4m3_codes(d["q8"])),
            "k": ("F8_E4M3", e4m3_codes(d["k8"])),
            "k_scale": d["ks"].float().cpu().numpy().astype(np.float32),
            "w": d["w8"].float().cpu().numpy().astype(np.float32),
            "ks": np.zeros(len(rows_np), dtype=np.int32),
            "ke": (rows_np + 1).astype(np.int32),
        }, meta)
        # the same rows through the torch fp32 path, for comparison with the float64 numpy path
        dB, dm = st.default
        tcfg = [("hisa B=%d m=%d" % (dB, dm), "hisa", dB, dm, "mean"),
                ("block B=%d m=%d" % (dB, st.k // dB), "block", dB, st.k // dB, "mean")]
        r, _ = fidelity_layer(d, st, tcfg, extra=False)
        R["fixture"] = {"path": fixture_path, "layer": layer, "book": bi, "offset": off,
                        "rows": int(len(rows_np)), "per_layer_iou_used_for_choice": per_layer_iou,
                        "torch_fp32": {n: {"all_rows": summarize_rows(r[n]),
                                           "rows_e_gt_mB": summarize_rows(r[n], mB=c[2] * c[3])}
                                       for n, c in zip([t[0] for t in tcfg], tcfg)}}
        R["parts_done"].append("fixture")
        flush()
        log("part 2 (fixture) done at %.0fs: layer %d, %d rows -> %s" % (time.time() - t0, layer, len(rows_np),
                                                                        fixture_path))
        del layers

    # ---- part 3: restricted-attention loss ----------------------------------------------------
    t_loss_end = 0.72 * seconds
    methods = [("dense", {}), ("oracle", {}), ("flat", {}),
               ("hisa", {"B": st.default[0], "m": st.default[1]}),
               ("block", {"B": st.default[0], "m": st.k // st.default[0]})]
    losses = {m[0]: [] for m in methods}
    lw = 0
    per_window_s = None
    for wi, (bi, off) in enumerate(wins[: st.loss_windows]):
        if per_window_s is not None and time.time() - t0 + per_window_s > t_loss_end:
            break
        tw = time.time()
        tok = torch.from_numpy(books[bi][off: off + W + 1].astype(np.int64)).to(device)
        for name, kw in methods:
            losses[name].append(sparse_nll(model, idxs, tok, name, st, **kw).cpu())
        lw += 1
        per_window_s = time.time() - tw
        log("  loss window %d: %s (%.0fs)" % (wi, " ".join("%s=%.4f" % (n, float(losses[n][-1].mean()))
                                                          for n, _ in methods), per_window_s))
    if lw:
        L = {n: torch.cat(v).double().numpy() for n, v in losses.items()}
        pos = np.concatenate([np.arange(W) for _ in range(lw)])  # target position t+1 -> query at t
        out = {}
        for n in L:
            out[n] = {"nats_all": float(L[n].mean()), "bpb_all": float(L[n].mean() / math.log(2)),
                      "nats_pos_gt_k": float(L[n][pos >= st.k].mean()),
                      "nats_pos_gt_mB": float(L[n][pos >= st.default[0] * st.default[1]].mean())}
        base = out["flat"]["nats_all"]
        for n in out:
            out[n]["rel_to_flat_all"] = out[n]["nats_all"] / base - 1.0
            out[n]["rel_to_flat_pos_gt_mB"] = out[n]["nats_pos_gt_mB"] / out["flat"]["nats_pos_gt_mB"] - 1.0
        # paired standard error of hisa - flat per window
        dif = [float((losses["hisa"][i] - losses["flat"][i]).double().mean()) for i in range(lw)]
        R["loss"] = {"windows": lw, "window_len": W, "methods": out, "hisa_minus_flat_per_window": dif,
                     "block_cfg": "B=%d m=%d" % (st.default[0], st.k // st.default[0])}
        R["parts_done"].append("loss")
        flush()
        log("part 3 (loss) done at %.0fs: %d windows" % (time.time() - t0, lw))

    # ---- part 4: fidelity against context length ----------------------------------------------
    B0 = st.default[0]
    ccfg = [("hisa B=%d mB=%d" % (B0, B0 * st.default[1]), "hisa", B0, st.default[1], "mean"),
            ("hisa B=%d mB=%d" % (B0, 2 * B0 * st.default[1]), "hisa", B0, 2 * st.default[1], "mean"),
            ("hisa B=%d mB=%d" % (B0, 4 * B0 * st.default[1]), "hisa", B0, 4 * st.default[1], "mean"),
            ("block B=%d mB=%d" % (B0, st.k), "block", B0, st.k // B0, "mean")]
    ctx = []
    for Lc in st.ctx_windows:
        cw = windows_from_books(books, Lc, 1)
        if not cw:
            continue
        cw.sort(key=lambda x: -len(books[x[0]]))
        bi, off = cw[0]
        if time.time() - t0 > 0.93 * seconds:
            log("context %d skipped (time)" % Lc)
            break
        tok = torch.from_numpy(books[bi][off: off + Lc].astype(np.int64)).to(device)
        rows = torch.arange(Lc - 1, -1, -st.ctx_stride, device=device).flip(0)
        tl = time.time()
        layers, _ = window_layers(model, idxs, tok, rows, need_base=False)
        ent = {"len": Lc, "book": bi, "offset": off, "per_layer": [], "by_e": {}}
        allr = {c[0]: {"e": [], "iou": [], "rec": [], "mass": []} for c in ccfg}
        for li in range(nl):
            r, _ = fidelity_layer(layers[li], st, ccfg, extra=False)
            for n in r:
                for kk in r[n]:
                    allr[n][kk].append(r[n][kk])
            if time.time() - t0 > 0.97 * seconds:
                break
        allr = {n: {k: np.concatenate(v) for k, v in r.items()} for n, r in allr.items()}
        edges = [0, 8192, 16384, 32768, 65536, 131072, 262144]
        for n in allr:
            ent["by_e"][n] = [{"e_lo": lo, "e_hi": hi, **summarize_rows(allr[n], emin=lo, emax=hi)}
                              for lo, hi in zip(edges[:-1], edges[1:]) if lo < Lc]
        ctx.append(ent)
        del layers
        log("  context %d done in %.0fs (t=%.0fs)" % (Lc, time.time() - tl, time.time() - t0))
        R["context"] = ctx
        flush()
    if ctx:
        R["parts_done"].append("context")
    R["eval_seconds"] = time.time() - t0
    flush()
    return R
