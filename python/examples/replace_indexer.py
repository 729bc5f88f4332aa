"""Replacing the DSA indexer's selection with hisa, on synthetic DeepSeek-V3.2-shaped tensors
(64 heads x 128 dims, fp8 e4m3 with power-of-two scales, top-2048), timed in one run against what
the serving engines call today: DeepGEMM's fp8_mqa_logits / fp8_paged_mqa_logits followed by
torch.topk. docs/integration.md explains the call sites this mirrors.

    python3 python/examples/replace_indexer.py [--ctx 32768] [--queries 2048] [--batch 32]

On a GPU with PyTorch: prefill (one chunk of `queries` rows over `ctx` keys, the per-query ks / ke
form) and decode (`batch` requests of `ctx` tokens in the paged cache). The baseline is DeepGEMM
when it is importable, else the same scores in torch (fp32 matmuls) then torch.topk, and the line
says which. Without a GPU, the same calls on small NumPy inputs on the host (hisa's cpu backend
against a NumPy top-k), so the example runs anywhere. Each line gives the time per call and the
agreement with the baseline (IoU of the selected sets; 1.0 for flat DSA up to ties).
"""
import argparse
import time

import numpy as np

import hisa

try:
    import torch
except ImportError:
    torch = None

H, D, TOPK = 64, 128, 2048


def synthetic(rng, T, S):
    """fp8 q [T, H, D], k [S, D], k_scale [S] and weights [T, H] with the q scales folded in, as the
    DeepSeek-V3.2 indexer produces them."""
    q, qs = hisa.quantize_fp8(rng.standard_normal((T, H, D)).astype(np.float32), "ue8m0")
    k, ks = hisa.quantize_fp8(rng.standard_normal((S, D)).astype(np.float32), "ue8m0")
    w = (rng.standard_normal((T, H)).astype(np.float32) * qs * (H ** -0.5) * (D ** -0.5)).astype(np.float32)
    return q, k, ks, w


def iou(a, b):
    a, b = np.asarray(a), np.asarray(b)
    out = []
    for x, y in zip(a, b):
        x, y = set(x[x >= 0].tolist()), set(y[y >= 0].tolist())
        out.append(len(x & y) / max(1, len(x | y)))
    return float(np.mean(out))


def report(name, seconds, agree, note=""):
    print("%-44s %10.3f ms   IoU vs baseline %.4f  %s" % (name, seconds * 1e3, agree, note))


# ---- GPU: PyTorch tensors --------------------------------------------------------------------

def gpu_time(fn, reps=10):
    fn()
    torch.cuda.synchronize()
    a, b = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    a.record()
    for _ in range(reps):
        out = fn()
    b.record()
    b.synchronize()
    return a.elapsed_time(b) / 1e3 / reps, out


def topk_relative(logits, ks, ke, k):
    """torch.topk over each row's [ks, ke), as positions relative to ks, -1 padded (what the
    engines do with the logits)."""
    kk = min(k, logits.shape[1])
    idx = logits.topk(kk, dim=1).indices
    rel = idx - ks[:, None]
    ok = (rel >= 0) & (idx < ke[:, None])
    rel = rel.masked_fill(~ok, -1).int()
    if kk < k:
        rel = torch.cat([rel, rel.new_full((rel.shape[0], k - kk), -1)], 1)
    return rel


def torch_logits(q, k, k_scale, w, ks, ke):
    """I(t, p) in fp32 torch matmuls, -inf outside [ks, ke)."""
    s = torch.einsum("thd,sd->ths", q.float(), k.float()).clamp_(min=0)
    logits = torch.einsum("th,ths->ts", w, s) * k_scale[None, :]
    p = torch.arange(k.shape[0], device=q.device)[None, :]
    return logits.masked_fill((p < ks[:, None]) | (p >= ke[:, None]), float("-inf"))


def gpu_prefill(args, dg):
    rng = np.random.default_rng(0)
    T, S = args.queries, args.ctx
    q, k, ksc, w = synthetic(rng, T, S)
    fp8 = torch.float8_e4m3fn
    dq, dk = torch.from_numpy(q).cuda().view(fp8), torch.from_numpy(k).cuda().view(fp8)
    dks, dw = torch.from_numpy(ksc).cuda(), torch.from_numpy(w).cuda()
    # One chunk of a long prefill: the last T queries of an S-token sequence.
    ks = torch.zeros(T, dtype=torch.int32, device="cuda")
    ke = torch.arange(S - T + 1, S + 1, dtype=torch.int32, device="cuda")
    if dg is not None:
        base_name = "DeepGEMM fp8_mqa_logits + torch.topk"
        base = lambda: topk_relative(dg.fp8_mqa_logits(dq, (dk, dks), dw, ks, ke, clean_logits=True), ks, ke, TOPK)
    else:
        base_name = "torch fp32 logits + torch.topk (no DeepGEMM)"
        base = lambda: topk_relative(torch_logits(dq, dk, dks, dw, ks, ke), ks, ke, TOPK)
    t_base, ref = gpu_time(base)
    print("prefill: T = %d queries over S = %d keys, top-%d (%s)" % (T, S, TOPK, torch.cuda.get_device_name()))
    report(base_name, t_base, 1.0)
    t, flat = gpu_time(lambda: hisa.dsa_indexer(dq, dk, dks, dw, ks, ke, topk_tokens=TOPK, validate=False))
    report("hisa.dsa_indexer (flat DSA)", t, iou(flat.cpu(), ref.cpu()), "x%.2f" % (t_base / t))
    t, hs = gpu_time(lambda: hisa.hisa_indexer(dq, dk, dks, dw, ks, ke, k_block_size=128, block_topk=64,
                                               topk_tokens=TOPK, validate=False))
    report("hisa.hisa_indexer (B=128, m=64)", t, iou(hs.cpu(), ref.cpu()), "x%.2f" % (t_base / t))


def gpu_decode(args, dg):
    rng = np.random.default_rng(1)
    B, ctx = args.batch, args.ctx
    lens = np.full(B, ctx, np.int32)
    codes, scale = hisa.quantize_fp8(rng.standard_normal((B, ctx, D)).astype(np.float32))
    cache, table = hisa.pack_paged_cache(codes, scale, lens, shuffle_seed=0)
    q, qs = hisa.quantize_fp8(rng.standard_normal((B, 1, H, D)).astype(np.float32))
    w = (rng.standard_normal((B, H)).astype(np.float32) * qs.reshape(B, H)).astype(np.float32)
    fp8 = torch.float8_e4m3fn
    dq, dcache = torch.from_numpy(q).cuda().view(fp8), torch.from_numpy(cache).cuda()
    dw, dlens, dtable = torch.from_numpy(w).cuda(), torch.from_numpy(lens).cuda(), torch.from_numpy(table).cuda()
    zeros = torch.zeros(B, dtype=torch.int32, device="cuda")
    print("decode: B = %d requests of %d tokens, next_n = 1, top-%d" % (B, ctx, TOPK))
    base_name, base = None, None
    if dg is not None:
        try:
            sms = torch.cuda.get_device_properties(0).multi_processor_count
            meta = dg.get_paged_mqa_logits_metadata(dlens, 64, sms)
            logits_fn = lambda: dg.fp8_paged_mqa_logits(dq, dcache, dw, dlens, dtable, meta, ctx, clean_logits=True)
            logits_fn()
            base_name = "DeepGEMM fp8_paged_mqa_logits + torch.topk"
            base = lambda: topk_relative(logits_fn(), zeros, dlens, TOPK)
        except Exception as e:  # noqa: BLE001 - the DeepGEMM API differs between versions: say so
            print("  (DeepGEMM's paged call failed here: %s: %s; using the torch baseline)" % (type(e).__name__, e))
    if base is None:
        keys = torch.from_numpy(hisa.dequantize_fp8(codes, scale)).cuda()  # [B, ctx, D] fp32
        qd = dq.float()

        def torch_decode():
            s = torch.einsum("bhd,bsd->bhs", qd[:, 0], keys).clamp_(min=0)
            return topk_relative(torch.einsum("bh,bhs->bs", dw, s), zeros, dlens, TOPK)
        base_name, base = "torch fp32 logits + torch.topk (no DeepGEMM)", torch_decode
    t_base, ref = gpu_time(base)
    report(base_name, t_base, 1.0)
    t, got = gpu_time(lambda: hisa.select_decode(dq, dcache, dw, dlens, dtable, topk=TOPK, validate=False)[0])
    report("hisa.select_decode (flat)", t, iou(got.cpu(), ref.cpu()), "x%.2f" % (t_base / t))


# ---- host: NumPy arrays -----------------------------------------------------------------------

def host_run():
    rng = np.random.default_rng(0)
    T, S = 64, 8192
    q, k, ksc, w = synthetic(rng, T, S)
    ks = np.zeros(T, np.int32)
    ke = np.arange(S - T + 1, S + 1, dtype=np.int32)
    print("no GPU with PyTorch here: the host path, T = %d queries over S = %d keys, top-%d" % (T, S, TOPK))
    t0 = time.perf_counter()
    qf, kf = hisa.dequantize_fp8(q, np.ones(q.shape[:2], np.float32)), hisa.dequantize_fp8(k, ksc)
    logits = np.einsum("th,ths->ts", w, np.maximum(np.einsum("thd,sd->ths", qf, kf), 0))
    ref = np.full((T, TOPK), -1, np.int32)
    for t in range(T):
        row = logits[t, : ke[t]]
        top = np.argsort(-row, kind="stable")[:TOPK]
        ref[t, : len(top)] = top
    t_base = time.perf_counter() - t0
    report("NumPy fp32 logits + argsort", t_base, 1.0)
    t0 = time.perf_counter()
    flat = hisa.dsa_indexer(q, k, ksc, w, ks, ke, topk_tokens=TOPK)
    t = time.perf_counter() - t0
    report("hisa.dsa_indexer (flat DSA, cpu backend)", t, iou(flat, ref), "x%.2f" % (t_base / t))
    t0 = time.perf_counter()
    hs = hisa.hisa_indexer(q, k, ksc, w, ks, ke, k_block_size=128, block_topk=32, topk_tokens=TOPK)
    t = time.perf_counter() - t0
    report("hisa.hisa_indexer (B=128, m=32, cpu backend)", t, iou(hs, ref), "x%.2f" % (t_base / t))


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--ctx", type=int, default=32768)
    ap.add_argument("--queries", type=int, default=2048)
    ap.add_argument("--batch", type=int, default=32)
    args = ap.parse_args()
    if torch is None or not torch.cuda.is_available() or not hisa.cuda_available():
        host_run()
        return
    try:
        import deep_gemm as dg
    except ImportError:
        dg = None
    gpu_prefill(args, dg)
    gpu_decode(args, dg)


if __name__ == "__main__":
    main()
