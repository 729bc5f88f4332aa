"""Input builders shared by the NumPy and the PyTorch tests."""
import numpy as np

import hisa


def small_ints(rng, T, S, H, D, vmax=2):
    """Small-integer q, k, w: every sum is exact in fp32, so all backends agree exactly."""
    q = rng.integers(-vmax, vmax + 1, size=(T, H, D)).astype(np.float32)
    k = rng.integers(-vmax, vmax + 1, size=(S, D)).astype(np.float32)
    w = rng.integers(-1, 4, size=(T, H)).astype(np.float32)
    return q, k, w


def ragged(rng, lens_q, lens_k):
    """cu_seqlens and the matching per-query ks / ke of a ragged batch (bottom-right causality)."""
    cu_q = np.concatenate([[0], np.cumsum(lens_q)]).astype(np.int32)
    cu_k = np.concatenate([[0], np.cumsum(lens_k)]).astype(np.int32)
    ks, ke = [], []
    for b, (tq, tk) in enumerate(zip(lens_q, lens_k)):
        for t in range(tq):
            ks.append(cu_k[b])
            ke.append(cu_k[b] + tk - tq + t + 1)
    return cu_q, cu_k, np.array(ks, np.int32), np.array(ke, np.int32)


def fp8_inputs(rng, T, S, H, D, rule="ue8m0"):
    """fp8 q and k as DeepSeek-V3.2 quantises them: per-head q scales folded into w, per-token k scales."""
    qf = rng.standard_normal((T, H, D)).astype(np.float32)
    kf = rng.standard_normal((S, D)).astype(np.float32)
    w = rng.standard_normal((T, H)).astype(np.float32)
    q8, qs = hisa.quantize_fp8(qf, rule)
    k8, ksc = hisa.quantize_fp8(kf, rule)
    return q8, k8, ksc, (w * qs).astype(np.float32)


def row_sets(idx):
    return [sorted(int(x) for x in row if x >= 0) for row in np.asarray(idx)]


def decode_case(rng, B, next_n, H, D, lens, page_size=64, shuffle_seed=0):
    """fp8 decode inputs: q [B, next_n, H, D] codes, weights [B * next_n, H], the paged cache in
    DeepGEMM's view and its block table."""
    L = int(max(lens))
    c, s = hisa.quantize_fp8(rng.standard_normal((B, L, D)).astype(np.float32))
    cache, table = hisa.pack_paged_cache(c, s, lens, page_size=page_size, shuffle_seed=shuffle_seed)
    q, qs = hisa.quantize_fp8(rng.standard_normal((B, next_n, H, D)).astype(np.float32))
    w = (rng.standard_normal((B * next_n, H)).astype(np.float32) * qs.reshape(B * next_n, H)).astype(np.float32)
    return q, w, cache, table, np.asarray(lens, np.int32)
