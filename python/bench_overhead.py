"""Per-call cost of hisa's Python front end on the GPU, for decode (the issue's budget: at most 10 us
over the C++ call). One decode shape (DeepSeek-V3.2's indexer: H = 64, D = 128, fp8, k = 2048),
measured three ways in one run on one device:

  graph   100 calls captured in one CUDA graph, replayed: the GPU time of a call, no host work
  eager   200 calls back to back, one synchronisation at the end: the per-call time when the host
          side (Python, DLPack, the C++ checks, the launches) has to keep up
  host    the host time of one call alone (no synchronisation): what the front end costs the CPU

for the plain function (hisa.select_decode) and the torch custom op (torch.ops.hisa.decode). A
host time under the GPU time means the front end hides behind the kernels. Prints one JSON line.
"""
import json
import sys
import time

try:
    import torch
except ImportError:
    print("bench_overhead: PyTorch is not installed; nothing to measure")
    sys.exit(0)
import numpy as np

import hisa

if not (torch.cuda.is_available() and hisa.cuda_available()):
    print("bench_overhead: needs a CUDA GPU and a CUDA build of hisa; nothing to measure")
    sys.exit(0)


def case(B=1, next_n=1, ctx=8192, H=64, D=128, seed=0):
    rng = np.random.default_rng(seed)
    lens = np.full(B, ctx, np.int32)
    codes, scale = hisa.quantize_fp8(rng.standard_normal((B, ctx, D)).astype(np.float32))
    cache, table = hisa.pack_paged_cache(codes, scale, lens, shuffle_seed=seed)
    q, qs = hisa.quantize_fp8(rng.standard_normal((B, next_n, H, D)).astype(np.float32))
    w = rng.standard_normal((B * next_n, H)).astype(np.float32) * qs.reshape(B * next_n, H)
    fp8 = torch.float8_e4m3fn
    return (torch.from_numpy(q).cuda().view(fp8), torch.from_numpy(cache).cuda(),
            torch.from_numpy(w.astype(np.float32)).cuda(), torch.from_numpy(lens).cuda(),
            torch.from_numpy(table).cuda())


def measure(call, label):
    for _ in range(20):
        call()
    torch.cuda.synchronize()
    # graph
    s = torch.cuda.Stream()
    s.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(s):
        call()
    torch.cuda.current_stream().wait_stream(s)
    g = torch.cuda.CUDAGraph()
    with torch.cuda.graph(g):
        for _ in range(100):
            call()
    g.replay()
    torch.cuda.synchronize()
    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    start.record()
    for _ in range(10):
        g.replay()
    end.record()
    end.synchronize()
    graph_us = start.elapsed_time(end) * 1e3 / 1000
    # eager
    torch.cuda.synchronize()
    t0 = time.perf_counter()
    for _ in range(200):
        call()
    torch.cuda.synchronize()
    eager_us = (time.perf_counter() - t0) * 1e6 / 200
    # host
    host = []
    for _ in range(200):
        torch.cuda.synchronize()
        t0 = time.perf_counter()
        call()
        host.append(time.perf_counter() - t0)
    torch.cuda.synchronize()
    host_us = float(np.median(host)) * 1e6
    return {"call": label, "graph_us": round(graph_us, 2), "eager_us": round(eager_us, 2),
            "host_us": round(host_us, 2), "eager_over_graph_us": round(eager_us - graph_us, 2)}


def main():
    q, cache, w, lens, table = case()
    rows = []
    rows.append(measure(lambda: hisa.select_decode(q, cache, w, lens, table, topk=2048, validate=False),
                        "hisa.select_decode (validate=False)"))
    rows.append(measure(lambda: hisa.select_decode(q, cache, w, lens, table, topk=2048),
                        "hisa.select_decode (validate=True: one synchronisation)"))
    if hisa.ops.available:
        rows.append(measure(lambda: torch.ops.hisa.decode(q, cache, w, lens, table, None, None, 0, "flat", 128, 64,
                                                          2048, 1, 1, "mean", False), "torch.ops.hisa.decode"))
    print(json.dumps({"device": torch.cuda.get_device_name(), "torch": torch.__version__,
                      "shape": "decode B=1 next_n=1 ctx=8192 H=64 D=128 fp8 k=2048", "rows": rows}))


if __name__ == "__main__":
    main()
