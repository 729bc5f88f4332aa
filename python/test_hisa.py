"""Python front end: the bindings agree with the float64 reference on an exact small-integer case."""
import sys

import numpy as np

sys.path.insert(0, sys.argv[1])  # folder holding the built _hisa module and the hisa package
import hisa  # noqa: E402

rng = np.random.default_rng(3)
print("seed 3")
T, S, H, D = 32, 900, 4, 64
q = rng.integers(-2, 3, size=(T, H, D)).astype(np.float32)
k = rng.integers(-2, 3, size=(S, D)).astype(np.float32)
w = rng.integers(-1, 4, size=(T, H)).astype(np.float32)
for method in ("flat", "hisa", "block"):
    ref, rb = hisa.select_prefill(q, k, None, w, method=method, block_size=64, top_blocks=4, topk=100,
                                  device="reference")
    cpu, cb = hisa.select_prefill(q, k, None, w, method=method, block_size=64, top_blocks=4, topk=100,
                                  device="cpu")
    assert ref.shape == cpu.shape, (ref.shape, cpu.shape)
    for r in range(T):
        assert sorted(x for x in ref[r] if x >= 0) == sorted(x for x in cpu[r] if x >= 0), (method, r)
    assert (rb == cb).all(), method
try:
    hisa.select_prefill(q, k, None, w[:, :2], method="flat")
    raise SystemExit("expected an error for a wrong w shape")
except hisa.Error as e:
    assert "w must be [T, H]" in str(e), e
print("python bindings: 1 passed, 0 failed")
