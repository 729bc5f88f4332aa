"""Python front end: the bindings agree with the float64 reference on an exact small-integer case,
take the optional inputs by keyword, and refuse what they cannot pass on faithfully."""
import sys

import numpy as np

sys.path.insert(0, sys.argv[1])  # folder holding the built _hisa module and the hisa package
import hisa  # noqa: E402

failed = []


def check(name, fn):
    try:
        fn()
        print("ok  ", name)
    except Exception as e:  # noqa: BLE001 (any failure of a check is reported, then the next runs)
        failed.append(name)
        print("FAIL", name, "-", type(e).__name__, (str(e).splitlines() or [""])[0])


def expect_error(fn, part, error=hisa.Error):
    try:
        fn()
    except error as e:
        assert part in str(e), f"message {str(e)!r} lacks {part!r}"
        return
    raise AssertionError(f"expected {error.__name__} with {part!r}")


rng = np.random.default_rng(3)
print("seed 3")
T, S, H, D = 32, 900, 4, 64
q = rng.integers(-2, 3, size=(T, H, D)).astype(np.float32)
k = rng.integers(-2, 3, size=(S, D)).astype(np.float32)
w = rng.integers(-1, 4, size=(T, H)).astype(np.float32)
small = dict(block_size=64, top_blocks=4, topk=100)


def agrees_with_reference():
    for method in ("flat", "hisa", "block"):
        ref, rb = hisa.select_prefill(q, k, w, method=method, device="reference", **small)
        cpu, cb = hisa.select_prefill(q, k, w, method=method, device="cpu", **small)
        assert ref.shape == cpu.shape, (ref.shape, cpu.shape)
        for r in range(T):
            assert sorted(x for x in ref[r] if x >= 0) == sorted(x for x in cpu[r] if x >= 0), (method, r)
        assert (rb == cb).all(), method


def optional_inputs_are_keywords():
    # q, k, w positionally; k_scale and the sequence layout by keyword.
    a, _ = hisa.select_prefill(q, k, w, method="flat", topk=100)
    b, _ = hisa.select_prefill(q, k, w, k_scale=np.ones(S, np.float32), method="flat", topk=100)
    c, _ = hisa.select_prefill(q, k, w, cu_seqlens_q=np.array([0, T], np.int32),
                               cu_seqlens_k=[0, S], method="flat", topk=100)
    assert (a == b).all() and (a == c).all()
    expect_error(lambda: hisa.select_prefill(q, k, None, w, method="flat"), "", TypeError)


def index_arrays_must_be_integers():
    expect_error(lambda: hisa.select_prefill(q, k, w, cu_seqlens_q=np.array([0.0, T]),
                                             cu_seqlens_k=np.array([0, S]), method="flat"),
                 "cu_seqlens_q: expected an integer array (int32), got dtype float64")
    expect_error(lambda: hisa.select_prefill(q, k, w, ks=np.zeros(T, np.float32),
                                             ke=np.full(T, S), method="flat"),
                 "ks: expected an integer array")
    expect_error(lambda: hisa.select_prefill(q, k, w, cu_seqlens_q=np.array([0, T], np.int64),
                                             cu_seqlens_k=np.array([0, 2**33]), method="flat"),
                 "cu_seqlens_k[1] = 8589934592 does not fit in int32")
    # int64 index arrays that fit are fine.
    hisa.select_prefill(q, k, w, cu_seqlens_q=np.array([0, T]), cu_seqlens_k=np.array([0, S]),
                        method="flat", topk=100)


def unknown_pooling_is_refused():
    expect_error(lambda: hisa.select_prefill(q, k, w, pooling="median", **small),
                 "unknown pooling 'median' (expected mean or max)")


def empty_batch():
    for method in ("flat", "hisa", "block"):
        for device in ("reference", "cpu"):
            idx, blocks = hisa.select_prefill(q[:0], k, w[:0], method=method, device=device, **small)
            assert idx.shape == (0, 256 if method == "block" else 100), (method, device, idx.shape)
            assert blocks.shape[0] == 0


def clear_errors():
    expect_error(lambda: hisa.select_prefill(q, k, w[:, :2], method="flat"), "w must be [T, H]")


for name, fn in [("agrees with the reference", agrees_with_reference),
                 ("optional inputs are keywords", optional_inputs_are_keywords),
                 ("index arrays must be integers", index_arrays_must_be_integers),
                 ("unknown pooling is refused", unknown_pooling_is_refused),
                 ("empty batch", empty_batch),
                 ("clear errors", clear_errors)]:
    check(name, fn)
print(f"python bindings: {6 - len(failed)} passed, {len(failed)} failed")
sys.exit(1 if failed else 0)
