"""The package on PyTorch tensors: CPU tensors against the NumPy path, and on a GPU the CUDA backend
against the float64 reference (exact small-integer cases and tolerance-judged random fp8 / bf16
inputs), the current-stream rule, the errors, the torch custom ops eagerly, under
torch.compile(fullgraph=True) and inside a captured CUDA graph, and fp8 quantisation on the device
bitwise against the library's. Skips without PyTorch, and the CUDA tests without a GPU or a CUDA
build of hisa."""
import numpy as np
import pytest

import hisa
from helpers import decode_case, fp8_inputs, ragged, row_sets, small_ints

torch = pytest.importorskip("torch")

needs_cuda = pytest.mark.skipif(
    not (torch.cuda.is_available() and hisa.cuda_available()),
    reason="needs a CUDA GPU and a build of hisa with the CUDA backend")
needs_ops = pytest.mark.skipif(not hisa.ops.available, reason=hisa.ops.why_unavailable() or "ops available")
FP8 = getattr(torch, "float8_e4m3fn", None)
needs_fp8 = pytest.mark.skipif(FP8 is None, reason="this torch has no float8_e4m3fn")

# Shapes the CUDA backend's fused kernels take (hisa and block run there only): D = 128, H = 64.
H, D = 64, 128
SMALL = dict(block_size=64, top_blocks=8, topk=256)


def host(x):
    """A tensor's bits as NumPy (fp8 as uint8 codes, bf16 as uint16), for the host reference."""
    x = x.detach().cpu()
    if FP8 is not None and x.dtype == FP8:
        return x.view(torch.uint8).numpy()
    if x.dtype == torch.bfloat16:
        return x.view(torch.int16).numpy().view(np.uint16)
    return x.numpy()


def to_dev(a, dtype=None):
    t = torch.from_numpy(np.ascontiguousarray(a)).cuda()
    return t.view(dtype) if dtype is not None else t


def fp8_case(rng, T, S, lens_q=None, lens_k=None):
    q8, k8, ksc, w = fp8_inputs(rng, T, S, H, D)
    lens_q, lens_k = lens_q or [T], lens_k or [S]
    cu_q, cu_k, ks, ke = ragged(rng, lens_q, lens_k)
    return dict(q=q8, k=k8, k_scale=ksc, w=w, cu_q=cu_q, cu_k=cu_k, ks=ks, ke=ke)


def on_device(c):
    return {n: (to_dev(a, FP8) if n in ("q", "k") else to_dev(a)) for n, a in c.items()}


# ---- CPU tensors --------------------------------------------------------------------------------

def test_cpu_tensors_match_numpy(rng):
    q, k, w = small_ints(rng, 16, 700, 4, 64)
    for method in ("flat", "hisa", "block"):
        a, ab = hisa.select_prefill(q, k, w, method=method, block_size=64, top_blocks=4, topk=100)
        b, bb = hisa.select_prefill(torch.from_numpy(q), torch.from_numpy(k), torch.from_numpy(w),
                                    method=method, block_size=64, top_blocks=4, topk=100)
        assert isinstance(b, torch.Tensor) and b.dtype == torch.int32 and b.device.type == "cpu"
        assert (b.numpy() == a).all() and (bb.numpy() == ab).all()


@needs_fp8
def test_cpu_fp8_and_bf16_tensors(rng):
    q8, k8, ksc, w = fp8_inputs(rng, 16, 900, 8, 128)
    a, _ = hisa.select_prefill(q8, k8, w, k_scale=ksc, method="flat", topk=64)
    b, _ = hisa.select_prefill(torch.from_numpy(q8).view(FP8), torch.from_numpy(k8).view(FP8),
                               torch.from_numpy(w), k_scale=torch.from_numpy(ksc), method="flat", topk=64)
    assert (b.numpy() == a).all()
    qf = rng.standard_normal((16, 8, 128)).astype(np.float32)
    kf = rng.standard_normal((900, 128)).astype(np.float32)
    c, _ = hisa.select_prefill(hisa.to_bf16(qf), hisa.to_bf16(kf), w, method="flat", topk=64)
    d, _ = hisa.select_prefill(torch.from_numpy(qf).bfloat16(), torch.from_numpy(kf).bfloat16(),
                               torch.from_numpy(w), method="flat", topk=64)
    assert (d.numpy() == c).all()


@needs_fp8
def test_cpu_quantize_matches_numpy(rng):
    x = rng.standard_normal((32, 128)).astype(np.float32)
    for rule in ("ue8m0", "amax"):
        c, s = hisa.quantize_fp8(x, rule)
        tc, ts = hisa.quantize_fp8(torch.from_numpy(x), rule)
        assert tc.dtype == FP8 and (tc.view(torch.uint8).numpy() == c).all() and (ts.numpy() == s).all()


# ---- CUDA: selections against the reference --------------------------------------------------

@needs_cuda
@needs_fp8
@pytest.mark.parametrize("method", ["flat", "hisa", "block"])
def test_cuda_exact_small_integers(rng, method):
    # Small integers are exact in fp8 and every fp32 sum is exact; unit scales.
    T, S = 64, 2000
    q, k, w = small_ints(rng, T, S, H, D)
    q8 = _exact_codes(q)
    k8 = _exact_codes(k)
    cu_q, cu_k, ks, ke = ragged(rng, [20, 44], [700, 1300])
    dq, dk, dw = to_dev(q8, FP8), to_dev(k8, FP8), to_dev(w)
    idx, blocks = hisa.select_prefill(dq, dk, dw, cu_seqlens_q=to_dev(cu_q), cu_seqlens_k=to_dev(cu_k),
                                      method=method, **SMALL)
    assert idx.is_cuda and idx.dtype == torch.int32 and idx.device == dq.device
    rounding = "exact" if method == "flat" else "fp8_block"
    bad = hisa.judge_prefill(q8, k8, w, host(idx), host(blocks), cu_seqlens_q=cu_q, cu_seqlens_k=cu_k,
                             method=method, exact=method == "flat", rounding=rounding, **SMALL)
    assert bad == [], bad[:3]
    if method == "flat":
        ref, _ = hisa.select_prefill(q8, k8, w, cu_seqlens_q=cu_q, cu_seqlens_k=cu_k, method=method,
                                     backend="reference", **SMALL)
        assert row_sets(host(idx)) == row_sets(ref)


def _exact_codes(x):
    """fp8 e4m3 codes of small integers (exact: |x| <= 8 has a code), scale 1."""
    table = hisa.to_float(np.arange(256, dtype=np.uint8))
    lookup = {float(v): c for c, v in enumerate(table) if np.isfinite(v)}
    return np.vectorize(lambda v: lookup[float(v)], otypes=[np.uint8])(x)


@needs_cuda
@needs_fp8
@pytest.mark.parametrize("method", ["flat", "hisa", "block"])
def test_cuda_random_fp8_judged(rng, method):
    c = fp8_case(rng, 96, 5000, [32, 64], [1800, 3200])
    d = on_device(c)
    idx, blocks = hisa.select_prefill(d["q"], d["k"], d["w"], k_scale=d["k_scale"], ks=d["ks"], ke=d["ke"],
                                      method=method, **SMALL)
    bad = hisa.judge_prefill(c["q"], c["k"], c["w"], host(idx), host(blocks), k_scale=c["k_scale"], ks=c["ks"],
                             ke=c["ke"], method=method, rounding="fp8_block", **SMALL)
    assert bad == [], bad[:3]
    # The same call through cu_seqlens gives the same selection.
    idx2, _ = hisa.select_prefill(d["q"], d["k"], d["w"], k_scale=d["k_scale"], cu_seqlens_q=d["cu_q"],
                                  cu_seqlens_k=d["cu_k"], method=method, **SMALL)
    assert torch.equal(idx, idx2)


@needs_cuda
def test_cuda_random_bf16_judged(rng):
    T, S = 48, 3000
    qf = rng.standard_normal((T, H, D)).astype(np.float32)
    kf = rng.standard_normal((S, D)).astype(np.float32)
    w = rng.standard_normal((T, H)).astype(np.float32)
    q16, k16 = hisa.to_bf16(qf), hisa.to_bf16(kf)
    dq = torch.from_numpy(q16.view(np.int16)).cuda().view(torch.bfloat16)
    dk = torch.from_numpy(k16.view(np.int16)).cuda().view(torch.bfloat16)
    cu_q, cu_k, _, _ = ragged(rng, [T], [S])
    idx, blocks = hisa.select_prefill(dq, dk, to_dev(w), cu_seqlens_q=to_dev(cu_q), cu_seqlens_k=to_dev(cu_k),
                                      method="hisa", **SMALL)
    assert hisa.judge_prefill(q16, k16, w, host(idx), host(blocks), cu_seqlens_q=cu_q, cu_seqlens_k=cu_k,
                              method="hisa", rounding="bf16", **SMALL) == []


@needs_cuda
@needs_fp8
def test_cuda_hisa_indexer_signature_and_determinism(rng):
    c = fp8_case(rng, 64, 4000, [64], [4000])
    d = on_device(c)
    kw = dict(k_block_size=64, block_topk=8, topk_tokens=256)
    first = hisa.hisa_indexer(d["q"], d["k"], d["k_scale"], d["w"], d["ks"], d["ke"], **kw)
    assert first.shape == (64, 256) and first.dtype == torch.int32
    for _ in range(20):  # bitwise-identical reruns
        assert torch.equal(first, hisa.hisa_indexer(d["q"], d["k"], d["k_scale"], d["w"], d["ks"], d["ke"], **kw))
    flat = hisa.dsa_indexer(d["q"], d["k"], d["k_scale"], d["w"], d["ks"], d["ke"], topk_tokens=256)
    assert hisa.judge_prefill(c["q"], c["k"], c["w"], host(flat), k_scale=c["k_scale"], ks=c["ks"], ke=c["ke"],
                              method="flat", topk=256) == []


@needs_cuda
@pytest.mark.parametrize("next_n", [1, 2, 4])
def test_cuda_decode_deepgemm_view(rng, next_n):
    B = 5
    lens = rng.integers(next_n, 3000, B)
    q, w, cache, table, lens = decode_case(rng, B, next_n, H, D, lens, shuffle_seed=1)
    ctx = np.stack([lens - next_n + j + 1 for j in range(next_n)], 1).astype(np.int32)
    dq = to_dev(q, FP8) if FP8 is not None else to_dev(q)
    idx, _ = hisa.select_decode(dq, to_dev(cache), to_dev(w), to_dev(ctx), to_dev(table), topk=512)
    assert idx.shape == (B * next_n, 512) and idx.is_cuda
    assert hisa.judge_decode(q, cache, w, lens, table, host(idx), topk=512) == []
    idx1, _ = hisa.select_decode(dq, to_dev(cache), to_dev(w), to_dev(lens), to_dev(table), topk=512)
    assert torch.equal(idx, idx1)


# ---- CUDA: streams and errors --------------------------------------------------------------------

@needs_cuda
@needs_fp8
def test_cuda_runs_on_the_current_stream(rng):
    c = fp8_case(rng, 32, 3000)
    d = on_device(c)
    want, _ = hisa.select_prefill(d["q"], d["k"], d["w"], k_scale=d["k_scale"], ks=d["ks"], ke=d["ke"],
                                  method="hisa", **SMALL)
    s = torch.cuda.Stream()
    s.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(s):
        got, _ = hisa.select_prefill(d["q"], d["k"], d["w"], k_scale=d["k_scale"], ks=d["ks"], ke=d["ke"],
                                     method="hisa", validate=False, **SMALL)
    s.synchronize()
    assert torch.equal(want, got)
    other = torch.cuda.Stream()
    with pytest.raises(hisa.Error, match="differs from PyTorch's current stream"):
        hisa.select_prefill(d["q"], d["k"], d["w"], ks=d["ks"], ke=d["ke"], method="flat", topk=64,
                            stream=other.cuda_stream)


@needs_cuda
@needs_fp8
def test_cuda_errors(rng):
    c = fp8_case(rng, 16, 1000)
    d = on_device(c)
    base = dict(k_scale=d["k_scale"], ks=d["ks"], ke=d["ke"], method="flat", topk=64)
    cases = [
        (lambda: hisa.select_prefill(d["q"], d["k"], d["w"], **dict(base, ks=d["ks"].long())),
         "ks: expected int32 on the device, got int64"),
        (lambda: hisa.select_prefill(d["q"], d["k"].cpu(), d["w"], **base), "k is on cpu but q is on cuda:"),
        (lambda: hisa.select_prefill(d["q"], d["k"], d["w"], backend="cpu", **base),
         "reads host memory: hisa never copies device data to the host"),
        (lambda: hisa.select_prefill(d["q"][:, ::2], d["k"], d["w"], **base), "q must be contiguous"),
        (lambda: hisa.select_prefill(d["q"], d["k"], d["w"].double(), **base), "w: expected float32"),
        (lambda: hisa.select_prefill(d["q"], d["k"], d["w"], **dict(base, ke=d["ke"] + 5000)),
         "has ks/ke out of range"),
    ]
    for fn, part in cases:
        with pytest.raises(hisa.Error) as e:
            fn()
        assert part in str(e.value), (part, str(e.value))
    with pytest.raises(hisa.Error, match="needs the device pooled cache"):
        B = 2
        q, w, cache, table, lens = decode_case(np.random.default_rng(3), B, 1, H, D, np.array([900, 2000]))
        hisa.select_decode(to_dev(q, FP8), to_dev(cache), to_dev(w), to_dev(lens), to_dev(table),
                           method="hisa", **SMALL)


@needs_cuda
@needs_fp8
@pytest.mark.parametrize("method", ["hisa", "block"])
def test_cuda_decode_with_the_device_pooled_cache(rng, method):
    # Keys appended in two writes: the cache pooled after the first, updated after the second
    # (only the blocks it completed), then hisa / block decode judged against the reference.
    B, next_n = 4, 2
    lens = np.array([700, 3000, 130, 5000], np.int32)
    q, w, cache, table, lens = decode_case(rng, B, next_n, H, D, lens, shuffle_seed=2)
    dq, dcache, dw, dtable = to_dev(q, FP8), to_dev(cache), to_dev(w), to_dev(table)
    max_blocks = table.shape[1] * cache.shape[1] // SMALL["block_size"]
    pooled = hisa.allocate_pooled_keys(B, max_blocks, like=dq)
    first = (lens - 300).clip(0).astype(np.int32)
    hisa.update_pooled_keys(dcache, dtable, to_dev(first), pooled, block_size=SMALL["block_size"])
    hisa.update_pooled_keys(dcache, dtable, to_dev(lens), pooled, old_lens=to_dev(first),
                            block_size=SMALL["block_size"])
    idx, blocks = hisa.select_decode(dq, dcache, dw, to_dev(lens), dtable, pooled=pooled, method=method,
                                     **SMALL)
    assert idx.is_cuda and blocks.shape == (B * next_n, SMALL["top_blocks"])
    assert hisa.judge_decode(q, cache, w, lens, table, host(idx), host(blocks), method=method,
                             rounding="fp8_block", **SMALL) == []


@needs_cuda
@needs_fp8
@needs_ops
@pytest.mark.parametrize("method", ["hisa", "block"])
def test_cuda_given_blocks_reuse_through_the_op(rng, method):
    # Layer 1's chosen blocks given to layer 2 (its own q, k, w) through the custom op: the blocks
    # come back as given and the tokens are judged against the reference given the same blocks.
    c1 = fp8_case(rng, 64, 4000, [24, 40], [1500, 2500])
    c2 = fp8_case(rng, 64, 4000, [24, 40], [1500, 2500])
    d1, d2 = on_device(c1), on_device(c2)
    args = (method, SMALL["block_size"], SMALL["top_blocks"], SMALL["topk"], 1, 1, "mean", True)
    _, b1 = torch.ops.hisa.prefill(d1["q"], d1["k"], d1["w"], d1["k_scale"], d1["cu_q"], d1["cu_k"],
                                   None, None, *args)
    idx, b2 = torch.ops.hisa.prefill(d2["q"], d2["k"], d2["w"], d2["k_scale"], d2["cu_q"], d2["cu_k"],
                                     None, None, *args, given_blocks=b1)
    assert torch.equal(b1, b2)
    bad = hisa.judge_prefill(c2["q"], c2["k"], c2["w"], host(idx), host(b2), k_scale=c2["k_scale"],
                             cu_seqlens_q=c2["cu_q"], cu_seqlens_k=c2["cu_k"], method=method,
                             given_blocks=host(b1), **SMALL)
    assert bad == [], bad[:3]


# ---- torch custom ops: eager, torch.compile(fullgraph=True), CUDA graphs ------------------------

@needs_ops
def test_ops_cpu_eager(rng):
    q, k, w = small_ints(rng, 16, 700, 4, 64)
    tq, tk, tw = torch.from_numpy(q), torch.from_numpy(k), torch.from_numpy(w)
    ks, ke = ragged(rng, [16], [700])[2:]
    idx, blocks = torch.ops.hisa.prefill(tq, tk, tw, None, None, None, torch.from_numpy(ks), torch.from_numpy(ke),
                                         "hisa", 64, 4, 100, 1, 1, "mean", True)
    want, wb = hisa.select_prefill(q, k, w, ks=ks, ke=ke, method="hisa", block_size=64, top_blocks=4, topk=100)
    assert (idx.numpy() == want).all() and (blocks.numpy() == wb).all()


@needs_ops
def test_ops_fake_shapes():
    from torch._subclasses.fake_tensor import FakeTensorMode

    with FakeTensorMode():
        q = torch.empty(10, H, D, dtype=torch.bfloat16)
        k = torch.empty(300, D, dtype=torch.bfloat16)
        w = torch.empty(10, H)
        ks = torch.empty(10, dtype=torch.int32)
        idx, blocks = torch.ops.hisa.prefill(q, k, w, None, None, None, ks, ks, "block", 64, 8, 256, 1, 1, "mean", True)
        assert idx.shape == (10, 512) and blocks.shape == (10, 8) and idx.dtype == torch.int32
        qd = torch.empty(3, 2, H, D, dtype=torch.bfloat16)
        i2, b2 = torch.ops.hisa.decode(qd, torch.empty(9, 64, 1, D + 4, dtype=torch.uint8), torch.empty(6, H),
                                       torch.empty(3, dtype=torch.int32), torch.empty(3, 4, dtype=torch.int32),
                                       None, None, 0, "flat", 128, 64, 100, 1, 1, "mean", True)
        assert i2.shape == (6, 100) and b2.shape == (6, 0)


@needs_cuda
@needs_ops
@needs_fp8
def test_ops_under_torch_compile_fullgraph(rng):
    c = fp8_case(rng, 64, 4000)
    d = on_device(c)

    def indexer(q, k, k_scale, w, ks, ke):
        idx = hisa.ops.hisa_indexer(q, k, k_scale, w, ks, ke, k_block_size=64, block_topk=8, topk_tokens=256)
        return idx, (idx >= 0).sum(dim=1)  # some torch work around the op

    compiled = torch.compile(indexer, fullgraph=True)
    got, count = compiled(d["q"], d["k"], d["k_scale"], d["w"], d["ks"], d["ke"])
    want, want_count = indexer(d["q"], d["k"], d["k_scale"], d["w"], d["ks"], d["ke"])
    assert torch.equal(got, want) and torch.equal(count, want_count)


@needs_cuda
@needs_ops
@needs_fp8
def test_ops_inside_cuda_graph(rng):
    B, next_n = 4, 2
    lens = rng.integers(next_n, 2500, B)
    q, w, cache, table, lens = decode_case(rng, B, next_n, H, D, lens, shuffle_seed=2)
    c = fp8_case(rng, 64, 3000)
    dp = on_device(c)
    sq, sw, scache, stable, slens = to_dev(q, FP8), to_dev(w), to_dev(cache), to_dev(table), to_dev(lens)

    def step():
        di, _ = torch.ops.hisa.decode(sq, scache, sw, slens, stable, None, None, 0, "flat", 128, 64, 512, 1, 1, "mean",
                                      True)
        pi, pb = torch.ops.hisa.prefill(dp["q"], dp["k"], dp["w"], dp["k_scale"], None, None, dp["ks"], dp["ke"],
                                        "hisa", 64, 8, 256, 1, 1, "mean", True)
        return di, pi, pb

    s = torch.cuda.Stream()
    s.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(s):
        step()  # warm-up outside capture
    torch.cuda.current_stream().wait_stream(s)
    g = torch.cuda.CUDAGraph()
    with torch.cuda.graph(g):
        outs = step()
    # New inputs in the captured buffers, then replay: the graph's results are the eager ones.
    q2, w2 = decode_case(rng, B, next_n, H, D, lens, shuffle_seed=2)[:2]
    sq.copy_(to_dev(q2, FP8))
    sw.copy_(to_dev(w2))
    g.replay()
    torch.cuda.synchronize()
    want = step()
    for got, ref in zip(outs, want):
        assert torch.equal(got, ref)
    assert hisa.judge_decode(q2, cache, w2, lens, table, host(outs[0]), topk=512) == []


@needs_cuda
@needs_fp8
def test_cuda_quantize_bitwise_as_the_library(rng):
    x = (rng.standard_normal((256, 128)) * rng.uniform(1e-6, 1e4, (256, 1))).astype(np.float32)
    x[0] = 0
    x[1, :] = 1e-37  # a subnormal scale
    x[2, :] = 448 * 2.0 ** 5 * (1 + 2 ** -23)  # just above a power of two
    for rule in ("ue8m0", "amax"):
        c, s = hisa.quantize_fp8(x, rule)
        tc, ts = hisa.quantize_fp8(to_dev(x), rule)
        assert tc.is_cuda and tc.dtype == FP8
        assert (host(tc) == c).all() and (ts.cpu().numpy() == s).all(), rule
