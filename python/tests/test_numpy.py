"""The package on host arrays (NumPy, DLPack producers), judged against the float64 reference:
exact small-integer cases, random inputs (seed printed), both batch forms, decode with DeepGEMM's
cache view, fp8 quantisation, pooled keys, fidelity, and the errors."""
import ctypes

import numpy as np
import pytest

import hisa
from helpers import decode_case, fp8_inputs, ragged, row_sets, small_ints

SMALL = dict(block_size=64, top_blocks=4, topk=100)
METHODS = ("flat", "hisa", "block")


# ---- exact cases: every backend returns the reference's sets, ties included ------------------

@pytest.mark.parametrize("method", METHODS)
def test_exact_small_integers_match_reference(rng, method):
    q, k, w = small_ints(rng, 32, 900, 4, 64)
    ref, rb = hisa.select_prefill(q, k, w, method=method, backend="reference", **SMALL)
    cpu, cb = hisa.select_prefill(q, k, w, method=method, backend="cpu", **SMALL)
    assert ref.shape == cpu.shape == (32, 256 if method == "block" else 100)
    assert row_sets(ref) == row_sets(cpu)
    assert (rb == cb).all()
    assert hisa.judge_prefill(q, k, w, cpu, cb, method=method, exact=True, **SMALL) == []


def test_exact_ties_everywhere():
    # Every key equal: all scores tie, so each row takes its lowest positions (and blocks).
    T, S, H, D = 8, 512, 2, 64
    q = np.ones((T, H, D), np.float32)
    k = np.ones((S, D), np.float32)
    w = np.ones((T, H), np.float32)
    idx, blocks = hisa.select_prefill(q, k, w, method="hisa", block_size=64, top_blocks=4, topk=10)
    for t in range(T):
        assert row_sets(idx[t:t + 1])[0] == list(range(10))
        e = S - T + t + 1
        last = (e + 63) // 64 - 1
        assert list(blocks[t]) == [0, 1, 2, last]  # sink, the two lowest others, local


@pytest.mark.parametrize("method", METHODS)
def test_ragged_batch_forms_agree(rng, method):
    q, k, w = small_ints(rng, 40, 1200, 4, 64)
    cu_q, cu_k, ks, ke = ragged(rng, [10, 30], [500, 700])
    a, ab = hisa.select_prefill(q, k, w, cu_seqlens_q=cu_q, cu_seqlens_k=cu_k, method=method, **SMALL)
    b, bb = hisa.select_prefill(q, k, w, ks=ks, ke=ke, method=method, **SMALL)
    assert row_sets(a) == row_sets(b) and (ab == bb).all()
    assert hisa.judge_prefill(q, k, w, a, ab, cu_seqlens_q=cu_q, cu_seqlens_k=cu_k, method=method,
                              exact=True, **SMALL) == []
    # Positions are relative to each sequence's start: the second sequence's rows stay below 700.
    assert a[10:].max() < 700


def test_hisa_indexer_signature(rng):
    q8, k8, ksc, w = fp8_inputs(rng, 48, 1500, 8, 128)
    cu_q, cu_k, ks, ke = ragged(rng, [16, 32], [600, 900])
    got = hisa.hisa_indexer(q8, k8, ksc, w, ks, ke, k_block_size=64, block_topk=6, topk_tokens=200)
    assert got.dtype == np.int32 and got.shape == (48, 200)
    want, _ = hisa.select_prefill(q8, k8, w, k_scale=ksc, ks=ks, ke=ke, method="hisa", block_size=64,
                                  top_blocks=6, topk=200)
    assert (got == want).all()
    flat = hisa.dsa_indexer(q8, k8, ksc, w, ks, ke, topk_tokens=200)
    assert hisa.judge_prefill(q8, k8, w, flat, k_scale=ksc, ks=ks, ke=ke, method="flat", topk=200) == []


# ---- random inputs against the reference (tolerance of SEMANTICS.md section 7) -----------------

@pytest.mark.parametrize("dtype", ["f32", "bf16", "fp8"])
@pytest.mark.parametrize("method", METHODS)
def test_random_inputs_judged(rng, dtype, method):
    T, S, H, D = 24, 1100, 8, 128
    if dtype == "fp8":
        q, k, ksc, w = fp8_inputs(rng, T, S, H, D)
    else:
        q = rng.standard_normal((T, H, D)).astype(np.float32)
        k = rng.standard_normal((S, D)).astype(np.float32)
        w = rng.standard_normal((T, H)).astype(np.float32)
        ksc = rng.uniform(0.5, 2.0, S).astype(np.float32)
        if dtype == "bf16":
            q, k = hisa.to_bf16(q), hisa.to_bf16(k)
    idx, blocks = hisa.select_prefill(q, k, w, k_scale=ksc, method=method, **SMALL)
    bad = hisa.judge_prefill(q, k, w, idx, blocks, k_scale=ksc, method=method, rounding="fp32", **SMALL)
    assert bad == [], bad[:3]


def test_reference_scores_by_hand(rng):
    q, k, w = small_ints(rng, 3, 20, 2, 64)
    s = hisa.reference_scores(q, k, w)
    assert s.shape == (3, 20)
    for t in range(3):
        e = 20 - 3 + t + 1
        want = (w[t][:, None] * np.maximum(q[t] @ k[:e].T, 0)).sum(0)
        assert np.array_equal(s[t, :e], want)
        assert np.isnan(s[t, e:]).all()


# ---- decode -----------------------------------------------------------------------------------

def test_decode_forms_and_deepgemm_view(rng):
    B, n, H, D = 3, 2, 8, 128
    q, w, cache, table, lens = decode_case(rng, B, n, H, D, [700, 130, 64])
    ctx2d = np.stack([lens - 1, lens], 1)  # DeepGEMM's [B, next_n] form
    a, _ = hisa.select_decode(q, cache, w, lens, table, topk=100)
    b, _ = hisa.select_decode(q.reshape(B * n, H, D), cache.reshape(cache.shape[0], 64, D + 4), w,
                              ctx2d, table, next_n=n, topk=100)
    assert a.shape == (B * n, 100) and (a == b).all()
    assert hisa.judge_decode(q, cache, w, lens, table, a, topk=100) == []
    # Query j of request b sees lens[b] - next_n + j + 1 positions.
    assert a[1].max() <= 699 and a[0].max() <= 698 and a[5].max() < 64
    ref, _ = hisa.select_decode(q, cache, w, lens, table, topk=100, backend="reference")
    assert row_sets(ref) == row_sets(a)


def test_decode_hisa_with_pooled_keys(rng):
    B, n, H, D = 2, 1, 8, 128
    lens = np.array([900, 300], np.int32)
    q, w, cache, table, lens = decode_case(rng, B, n, H, D, lens)
    pooled = hisa.allocate_pooled_keys(B, 16, D)
    # Incremental updates give the same pooled keys as pooling from scratch.
    hisa.update_pooled_keys(cache, table, lens - 200, pooled, block_size=64)
    hisa.update_pooled_keys(cache, table, lens, pooled, old_lens=lens - 200, block_size=64)
    scratch = hisa.allocate_pooled_keys(B, 16, D)
    hisa.update_pooled_keys(cache, table, lens, scratch, block_size=64)
    assert np.array_equal(pooled, scratch)
    cfg = dict(method="hisa", block_size=64, top_blocks=4, topk=100)
    idx, blocks = hisa.select_decode(q, cache, w, lens, table, pooled=pooled, **cfg)
    assert hisa.judge_decode(q, cache, w, lens, table, idx, blocks, rounding="fp32", **cfg) == []
    with pytest.raises(hisa.Error, match="needs pooled keys"):
        hisa.select_decode(q, cache, w, lens, table, **cfg)


def test_decode_context_lens_rule_is_checked(rng):
    q, w, cache, table, lens = decode_case(rng, 2, 2, 8, 128, [200, 100])
    bad = np.stack([lens, lens], 1)
    with pytest.raises(hisa.Error, match=r"context_lens\[0, 0\] = 200"):
        hisa.select_decode(q, cache, w, bad, table, topk=50)


# ---- fp8 quantisation (DeepSeek-V3.2's conventions) ----------------------------------------

def test_quantize_ue8m0_and_amax(rng):
    x = (rng.standard_normal((64, 128)) * rng.uniform(1e-3, 1e3, (64, 1))).astype(np.float32)
    x[3] = 0
    for rule in ("ue8m0", "amax"):
        c, s = hisa.quantize_fp8(x, rule)
        assert c.dtype == np.uint8 and c.shape == x.shape and s.shape == (64,)
        amax = np.abs(x).max(1)
        assert s[3] == 1
        nz = amax > 0
        if rule == "amax":
            assert np.array_equal(s[nz], (amax / np.float32(448))[nz])
        else:
            m, _ = np.frexp(s)
            assert (m == 0.5).all() and (s[nz] >= amax[nz] / 448).all() and (s[nz] < amax[nz] / 224).all()
        v = hisa.dequantize_fp8(c, s)
        assert (np.abs(v) <= np.abs(x).max(1, keepdims=True) * (1 + 2 ** -4)).all()
        assert (np.abs(hisa.to_float(c)) <= 448).all()
        assert np.allclose(v, x, rtol=0.07, atol=s[:, None] * 2 ** -9)


def test_quantize_groups(rng):
    x = rng.standard_normal((4, 256)).astype(np.float32)
    c, s = hisa.quantize_fp8(x, "ue8m0", group_size=128)
    assert s.shape == (4, 2)
    c0, s0 = hisa.quantize_fp8(x[:, 128:], "ue8m0")
    assert np.array_equal(c[:, 128:], c0) and np.array_equal(s[:, 1], s0)
    with pytest.raises(hisa.Error, match="must divide"):
        hisa.quantize_fp8(x, group_size=100)
    with pytest.raises(hisa.Error, match="unknown scale rule"):
        hisa.quantize_fp8(x, "e8m0")


# ---- fidelity ----------------------------------------------------------------------------------

def test_fidelity_by_hand():
    a = np.array([[0, 1, 2, -1], [5, 6, -1, -1]], np.int32)
    b = np.array([[1, 2, 3, -1], [5, 6, -1, -1]], np.int32)
    scores = np.zeros((2, 8))
    f = hisa.fidelity(a, b, np.array([8, 8]), scores=scores, budget_tokens=4)
    assert np.allclose(f["iou"], [0.5, 1.0]) and np.allclose(f["recall"], [2 / 3, 1.0])
    assert np.allclose(f["mass_recall"], [1.0, 1.0])
    assert f["all"]["rows"] == 2 and f["all"]["iou_min"] == 0.5 and f["differ"]["rows"] == 2
    g = hisa.fidelity(a, b, np.array([8, 8]), budget_tokens=16)
    assert g["differ"]["rows"] == 0 and "mass_mean" not in g["all"]


def test_fidelity_of_identical_selection(rng):
    q, k, w = small_ints(rng, 16, 600, 4, 64)
    flat, _ = hisa.select_prefill(q, k, w, method="flat", topk=100)
    f = hisa.fidelity(flat, flat, np.arange(585, 601), scores=hisa.reference_scores(q, k, w))
    assert f["all"]["iou_min"] == 1 and f["all"]["mass_min"] == 1


# ---- DLPack producers on the host ---------------------------------------------------------------

class DLPackOnly:
    """An array that is only reachable through DLPack (NumPy's own producer)."""

    def __init__(self, a):
        self.a = a
        self.shape = a.shape

    def __dlpack__(self, stream=None):
        return self.a.__dlpack__()

    def __dlpack_device__(self):
        return self.a.__dlpack_device__()


def test_dlpack_host_inputs(rng):
    q, k, w = small_ints(rng, 16, 400, 4, 64)
    a, _ = hisa.select_prefill(q, k, w, method="flat", topk=50)
    b, _ = hisa.select_prefill(DLPackOnly(q), DLPackOnly(k), DLPackOnly(w), method="flat", topk=50)
    c, _ = hisa.select_prefill(q, k, w, cu_seqlens_q=[0, 16], cu_seqlens_k=[0, 400], method="flat", topk=50)
    assert isinstance(b, np.ndarray) and (a == b).all() and (a == c).all()


# A DLPack capsule built by hand, claiming CUDA memory: the package must refuse to read it on the host.
class _DLTensor(ctypes.Structure):
    _fields_ = [("data", ctypes.c_void_p), ("device_type", ctypes.c_int32), ("device_id", ctypes.c_int32),
                ("ndim", ctypes.c_int32), ("code", ctypes.c_uint8), ("bits", ctypes.c_uint8),
                ("lanes", ctypes.c_uint16), ("shape", ctypes.POINTER(ctypes.c_int64)),
                ("strides", ctypes.POINTER(ctypes.c_int64)), ("byte_offset", ctypes.c_uint64)]


class _DLManaged(ctypes.Structure):
    _fields_ = [("dl_tensor", _DLTensor), ("manager_ctx", ctypes.c_void_p), ("deleter", ctypes.c_void_p)]


class FakeCuda:
    """Host memory that says it is on cuda:0 (no GPU is touched: the call must fail first)."""

    def __init__(self, a):
        self.a = np.ascontiguousarray(a)
        self.shape = self.a.shape
        self._shape = (ctypes.c_int64 * self.a.ndim)(*self.a.shape)
        kind = {"f": 2, "i": 0, "u": 1}[self.a.dtype.kind]
        self._mt = _DLManaged(_DLTensor(self.a.ctypes.data, 2, 0, self.a.ndim, kind, self.a.itemsize * 8, 1,
                                        self._shape, None, 0), None, None)

    def __dlpack_device__(self):
        return (2, 0)

    def __dlpack__(self, stream=None):
        self.stream = stream
        new = ctypes.pythonapi.PyCapsule_New
        new.restype, new.argtypes = ctypes.py_object, [ctypes.c_void_p, ctypes.c_char_p, ctypes.c_void_p]
        return new(ctypes.addressof(self._mt), b"dltensor", None)


def test_cuda_memory_is_never_read_on_the_host(rng):
    q, k, w = small_ints(rng, 8, 300, 4, 64)
    out = (FakeCuda(np.zeros((8, 50), np.int32)), None)
    cu = [FakeCuda(np.array([0, 8], np.int32)), FakeCuda(np.array([0, 300], np.int32))]
    for backend in ("cpu", "reference"):
        with pytest.raises(hisa.Error, match="is in CUDA memory .cuda:0. but backend '%s' reads host memory" % backend):
            hisa.select_prefill(FakeCuda(q), FakeCuda(k), FakeCuda(w), cu_seqlens_q=cu[0], cu_seqlens_k=cu[1],
                                method="flat", topk=50, backend=backend, out=out)
    with pytest.raises(hisa.Error, match="k is on cpu but q is on cuda:0"):
        hisa.select_prefill(FakeCuda(q), k, w, method="flat", topk=50, out=out)
    with pytest.raises(hisa.Error, match="pass out="):
        hisa.select_prefill(FakeCuda(q), FakeCuda(k), FakeCuda(w), method="flat", topk=50)
    with pytest.raises(hisa.Error, match="allocated as PyTorch CUDA tensors"):
        hisa.allocate_pooled_keys(2, 4, like=FakeCuda(q))
    with pytest.raises(hisa.Error, match="the pair allocate_pooled_keys"):
        hisa.update_pooled_keys(FakeCuda(q), FakeCuda(q), FakeCuda(q), np.zeros((2, 4, 128), np.float32))
    # The stream handed to the producer: DLPack's 1 (legacy default) when none is given.
    x = FakeCuda(q)
    with pytest.raises(hisa.Error):
        hisa.select_prefill(x, FakeCuda(k), FakeCuda(w), method="flat", topk=50, backend="cpu", out=out)
    assert x.stream == 1


# ---- errors: the library's messages ------------------------------------------------------------

def test_errors(rng):
    q, k, w = small_ints(rng, 8, 300, 4, 64)
    cases = [
        (lambda: hisa.select_prefill(q.astype(np.float64), k, w), "q: expected float32, bfloat16"),
        (lambda: hisa.select_prefill(q, hisa.to_bf16(k), w), "q and k must have the same dtype"),
        (lambda: hisa.select_prefill(q[:, :, ::2], k[:, ::2], w), "q must be contiguous (row-major)"),
        (lambda: hisa.select_prefill(q[0], k, w), "q must be [T, H, D], got shape [4, 64]"),
        (lambda: hisa.select_prefill(q, k[:, :32].copy(), w), "k must be [S, D] with D = 64"),
        (lambda: hisa.select_prefill(q, k, w[:, :2].copy()), "w must be [T, H] = [8, 4]"),
        (lambda: hisa.select_prefill(q, k, w.astype(np.float64)), "w: expected float32, got float64"),
        (lambda: hisa.select_prefill(q, k, w, k_scale=np.ones(299, np.float32)), "k_scale must be [S] or [S, 1]"),
        (lambda: hisa.select_prefill(q, k, w, pooling="median", **SMALL), "unknown pooling 'median' (expected mean or max)"),
        (lambda: hisa.select_prefill(q, k, w, method="sparse"), "unknown method 'sparse'"),
        (lambda: hisa.select_prefill(q, k, w, method="hisa", block_size=64, top_blocks=4, topk=1000),
         "must be at least topk"),
        (lambda: hisa.select_prefill(q, k, w, cu_seqlens_q=np.array([0.0, 8]), cu_seqlens_k=np.array([0, 300]),
                                     method="flat"), "cu_seqlens_q: expected an integer array (int32), got dtype float64"),
        (lambda: hisa.select_prefill(q, k, w, cu_seqlens_q=np.array([0, 8]), cu_seqlens_k=np.array([0, 2 ** 33]),
                                     method="flat"), "cu_seqlens_k[1] = 8589934592 does not fit in int32"),
        (lambda: hisa.select_prefill(q, k, w, cu_seqlens_q=np.array([0, 8], np.int32)), "go together"),
        (lambda: hisa.select_prefill(q, k, w, ks=np.zeros(8, np.int32), ke=np.full(8, 301, np.int32), method="flat",
                                     topk=10), "need 0 <= ks <= ke <= S = 300"),
        (lambda: hisa.select_prefill(q, k, w, method="flat", topk=10, out=(np.zeros((8, 9), np.int32), None)),
         "indices must be [8, 10]"),
        (lambda: hisa.select_prefill(q, k, w, method="flat", topk=10, out=(np.zeros((8, 10), np.int64), None)),
         "indices: expected int32, got int64"),
        (lambda: hisa.select_prefill(q, k, w, backend="tpu"), "tpu"),
    ]
    for fn, part in cases:
        with pytest.raises(hisa.Error) as e:
            fn()
        assert part in str(e.value), (part, str(e.value))
    ro = np.zeros((8, 10), np.int32)
    ro.flags.writeable = False
    with pytest.raises(hisa.Error, match="read-only"):
        hisa.select_prefill(q, k, w, method="flat", topk=10, out=(ro, None))
    assert issubclass(hisa.Error, ValueError)


def test_decode_errors(rng):
    q, w, cache, table, lens = decode_case(rng, 2, 1, 8, 128, [200, 100])
    with pytest.raises(hisa.Error, match="kv_cache must be"):
        hisa.select_decode(q, cache.reshape(cache.shape[0], -1), w, lens, table, topk=50)
    with pytest.raises(hisa.Error, match=r"seq_lens\[0\] = 5000 runs past the block table"):
        hisa.select_decode(q, cache, w, np.array([5000, 100], np.int32), table, topk=50)
    with pytest.raises(hisa.Error, match="weights must be"):
        hisa.select_decode(q, cache, w[:, :4].copy(), lens, table, topk=50)


# ---- cross-layer block reuse: another layer's chosen blocks given, the block stage skipped ----

@pytest.mark.parametrize("method", ("hisa", "block"))
def test_given_blocks_reuse_another_layers_choice(rng, method):
    q1, k1, w1 = small_ints(rng, 32, 900, 4, 64)
    q2, k2, w2 = small_ints(rng, 32, 900, 4, 64)
    _, b1 = hisa.select_prefill(q1, k1, w1, method=method, **SMALL)
    for backend in ("reference", "cpu"):
        idx, b2 = hisa.select_prefill(q2, k2, w2, method=method, given_blocks=b1, backend=backend,
                                      **SMALL)
        assert (b2 == b1).all()
        assert hisa.judge_prefill(q2, k2, w2, idx, b2, method=method, exact=True, given_blocks=b1,
                                  **SMALL) == []
    # A layer given its own blocks selects what it selects alone.
    own, ob = hisa.select_prefill(q2, k2, w2, method=method, **SMALL)
    again, _ = hisa.select_prefill(q2, k2, w2, method=method, given_blocks=ob, **SMALL)
    assert row_sets(again) == row_sets(own)
    bad = b1.copy()
    bad[3, 1] = bad[3, 0]
    with pytest.raises(hisa.Error, match=r"given_blocks\[3, 1\] = 0 does not ascend"):
        hisa.select_prefill(q2, k2, w2, method=method, given_blocks=bad, **SMALL)
    with pytest.raises(hisa.Error, match="given_blocks is for methods hisa and block"):
        hisa.select_prefill(q2, k2, w2, method="flat", given_blocks=b1, topk=100)
    with pytest.raises(hisa.Error, match="given_blocks"):
        hisa.select_prefill(q2, k2, w2, method=method, given_blocks=b1[:, :2].copy(), **SMALL)


def test_given_blocks_in_decode_need_no_pooled_keys(rng):
    B, n, H, D = 2, 2, 8, 128
    lens = [900, 300]
    q1, w1, cache1, table, lens = decode_case(rng, B, n, H, D, lens)
    q2, w2, cache2, _, _ = decode_case(rng, B, n, H, D, lens)
    cfg = dict(method="hisa", block_size=64, top_blocks=4, topk=100)
    pooled = hisa.allocate_pooled_keys(B, 16, D)
    hisa.update_pooled_keys(cache1, table, lens, pooled, block_size=64)
    _, b1 = hisa.select_decode(q1, cache1, w1, lens, table, pooled=pooled, **cfg)
    idx, b2 = hisa.select_decode(q2, cache2, w2, lens, table, given_blocks=b1, **cfg)
    assert (b2 == b1).all()
    assert hisa.judge_decode(q2, cache2, w2, lens, table, idx, b2, given_blocks=b1, **cfg) == []


def test_empty_batch():
    q = np.zeros((0, 4, 64), np.float32)
    idx, blocks = hisa.select_prefill(q, np.zeros((10, 64), np.float32), np.zeros((0, 4), np.float32),
                                      cu_seqlens_q=[0, 0], cu_seqlens_k=[0, 10], **SMALL)
    assert idx.shape == (0, 100) and blocks.shape == (0, 4)


def test_build_facts():
    assert "cpu" in hisa.backends() and "reference" in hisa.backends()
    assert isinstance(hisa.cuda_available(), bool)
    assert hisa.ops.available == (hisa.ops.why_unavailable() == "")
