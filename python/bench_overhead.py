"""Per-call cost of hisa's Python front end on the GPU, for decode (the issue's budget: at most 10 us
over the C++ call). One decode shape (DeepSeek-V3.2's indexer: H = 64, D = 128, fp8, k = 2048),
measured three ways in one run on one device:

  graph   100 calls captured in one CUDA graph, replayed: the GPU time of a call, no host work
  eager   200 calls back to back, one synchronisation at the end: the per-call time when the host
          side (Python, DLPack, the C++ checks, the launches) has to keep up
  host    the host time of one call alone (no synchronisation): what the front end costs the CPU

for the plain function (hisa.select_decode) and the torch custom op (torch.ops.hisa.decode). A
host time under the GPU time means the front end hides behind the kernels. With --cpp-json (the
JSON of `hisa_cuda_bench --methods flat --prefill none --decode 1x8192`, run just before on the
same device), each row also gets the overhead over the C++ call: eager against the C++ calls back
to back, graph against the C++ call's rested GPU time. Prints one JSON line.
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


def cpp_times(path):
    """(back-to-back us, rested us) of the C++ bench's flat decode at batch 1 x 8192, or None."""
    try:
        rep = json.load(open(path))
    except (OSError, ValueError):
        return None
    for r in rep.get("results", []):
        if (r.get("kind") == "decode" and r.get("method") == "flat" and r.get("batch") == 1
                and r.get("context") == 8192 and r.get("next_n", 1) == 1):
            return r["back_to_back_us"], r["rested_us"]
    return None


def main():
    cpp = None
    if "--cpp-json" in sys.argv:
        cpp = cpp_times(sys.argv[sys.argv.index("--cpp-json") + 1])
    q, cache, w, lens, table = case()
    rows = []
    rows.append(measure(lambda: hisa.select_decode(q, cache, w, lens, table, topk=2048, validate=False),
                        "hisa.select_decode (validate=False)"))
    rows.append(measure(lambda: hisa.select_decode(q, cache, w, lens, table, topk=2048),
                        "hisa.select_decode (validate=True: one synchronisation)"))
    if hisa.ops.available:
        rows.append(measure(lambda: torch.ops.hisa.decode(q, cache, w, lens, table, None, None, 0, "flat", 128, 64,
                                                          2048, 1, 1, "mean", False), "torch.ops.hisa.decode"))
    out = {"device": torch.cuda.get_device_name(), "torch": torch.__version__,
           "shape": "decode B=1 next_n=1 ctx=8192 H=64 D=128 fp8 k=2048", "rows": rows}
    if cpp:
        out["cpp"] = {"back_to_back_us": round(cpp[0], 2), "rested_us": round(cpp[1], 2)}
        for r in rows:
            r["eager_over_cpp_us"] = round(r["eager_us"] - cpp[0], 2)
            r["graph_over_cpp_rested_us"] = round(r["graph_us"] - cpp[1], 2)
    print(json.dumps(out))


if __name__ == "__main__":
    main()
