#!/usr/bin/env python3
"""In-run PyTorch baseline for the flat DSA indexer (plain implementation: einsum, ReLU, weighted
head sum, key scale, causal mask, torch.topk), plus the machine ceilings (fp8 GEMM through
torch._scaled_mm, device copy). Same shapes as hisa_cuda_bench; bf16 compute on the dequantised
fp8 inputs. Prints a table and writes JSON (--json): device, torch, fp8_gemm_tflops, copy_tbps
(bytes read + written) and results: {kind: prefill, L, ms, estimated, tflops} and
{kind: decode, batch, context, us, tbps} (synchronised medians; hisa_cuda_bench --torch reads it).

Prefill is timed in chunks of 128 queries (the shape ANCHORS.md quotes); contexts up to 32K run
every chunk, 64K and 128K time 8 chunks at the midpoints of 8 equal spans and sum them up
(cost is linear in the visible keys, so the midpoint rule is close; marked "estimated").
"""
import argparse
import json
import time

import torch


def timed(fn, warmup=1, reps=5):
    for _ in range(warmup):
        fn()
    torch.cuda.synchronize()
    times = []
    for _ in range(reps):
        a, b = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        a.record()
        fn()
        b.record()
        b.synchronize()
        times.append(a.elapsed_time(b))
    times.sort()
    return times[len(times) // 2]


def fp8_gemm_tflops():
    """TFLOP/s of an fp8 e4m3 GEMM 8192^3 (bf16 out), or None where torch._scaled_mm fails."""
    n = 8192
    a = torch.randn(n, n, device="cuda").to(torch.float8_e4m3fn)
    b = torch.randn(n, n, device="cuda").to(torch.float8_e4m3fn).t()
    one = torch.tensor(1.0, device="cuda")
    try:
        ms = timed(lambda: torch._scaled_mm(a, b, scale_a=one, scale_b=one, out_dtype=torch.bfloat16), 2, 10)
    except Exception as e:  # the API of a private function may change between releases
        print(f"fp8 GEMM: torch._scaled_mm failed: {e!r}"[:300])
        return None
    return 2 * n**3 / (ms * 1e-3) / 1e12


def copy_tbps():
    x = torch.empty(2 << 30, dtype=torch.uint8, device="cuda").random_(0, 255)
    y = torch.empty_like(x)
    ms = timed(lambda: y.copy_(x), 2, 10)
    return 2 * x.numel() / (ms * 1e-3) / 1e12


def prefill(L, H=64, D=128, k=2048, chunk=128):
    g = torch.Generator(device="cuda").manual_seed(L)
    q = (torch.randn(L, H, D, device="cuda", generator=g) * 40).to(torch.float8_e4m3fn).to(torch.bfloat16)
    kk = (torch.randn(L, D, device="cuda", generator=g) * 3).to(torch.float8_e4m3fn).to(torch.bfloat16)
    scale = torch.rand(L, device="cuda", generator=g) * 1.5 + 0.5
    w = torch.randn(L, H, device="cuda", generator=g) * 0.1

    def run_chunk(c0):
        c1 = min(L, c0 + chunk)
        end = c1  # causal: the chunk sees keys [0, c1); row t sees [0, t]
        s = torch.einsum("chd,sd->chs", q[c0:c1], kk[:end]).relu_()
        s = torch.einsum("chs,ch->cs", s.float(), w[c0:c1]) * scale[:end]
        pos = torch.arange(end, device="cuda")
        rows = torch.arange(c0, c1, device="cuda")[:, None]
        s = s.masked_fill(pos[None, :] > rows, float("-inf"))
        return torch.topk(s, min(k, end), dim=-1)

    n = (L + chunk - 1) // chunk
    if L <= 32768:
        ms = timed(lambda: [run_chunk(i * chunk) for i in range(n)], 1, 3)
        est = False
    else:
        samples = [int((j + 0.5) * n / 8) for j in range(8)]
        ms = sum(timed(lambda c=c: run_chunk(c * chunk), 1, 3) for c in samples) * n / 8
        est = True
    flops = L * (L + 1) / 2 * H * D * 2
    # The ANCHORS shape: 128 queries against 128K keys, scores only.
    return {"kind": "prefill", "L": L, "ms": ms, "estimated": est, "tflops": flops / (ms * 1e-3) / 1e12}


def decode(batch, ctx, H=64, D=128, k=2048):
    g = torch.Generator(device="cuda").manual_seed(batch * 7 + ctx)
    pages = ctx // 64
    cache = torch.randint(0, 255, (batch * pages, 64 * 132), dtype=torch.uint8, device="cuda", generator=g)
    vals = (torch.randn(batch * pages, 64 * 128, device="cuda", generator=g) * 3).to(torch.float8_e4m3fn)
    cache[:, : 64 * 128] = vals.view(torch.uint8)
    sc = torch.rand(batch * pages, 64, device="cuda", generator=g) + 1.0
    cache[:, 64 * 128 :] = sc.view(torch.uint8).view(batch * pages, 256)
    table = torch.randperm(batch * pages, device="cuda", generator=g).view(batch, pages)
    q = (torch.randn(batch, H, D, device="cuda", generator=g) * 40).to(torch.float8_e4m3fn).to(torch.bfloat16)
    w = torch.randn(batch, H, device="cuda", generator=g) * 0.1

    def run():
        pg = cache[table.flatten()]  # [batch * pages, 8448]
        kv = pg[:, : 64 * 128].contiguous().view(torch.float8_e4m3fn).view(batch, ctx, D).to(torch.bfloat16)
        s_k = pg[:, 64 * 128 :].contiguous().view(torch.float32).view(batch, ctx)
        s = torch.einsum("bhd,bsd->bhs", q, kv).relu_()
        s = torch.einsum("bhs,bh->bs", s.float(), w) * s_k
        return torch.topk(s, k, dim=-1)

    us = timed(run, 2, 10) * 1e3
    return {"kind": "decode", "batch": batch, "context": ctx, "us": us, "tbps": batch * ctx * 132 / (us * 1e-6) / 1e12}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--json", default="")
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--prefill", default="8192,32768,65536,131072", help="lengths, or 'none'")
    ap.add_argument("--decode", default="1x32768,8x32768,64x32768,1x131072,8x131072,64x131072",
                    help="BATCHxCONTEXT cases, or 'none'")
    args = ap.parse_args()
    lists = lambda s: [] if s == "none" else [x for x in s.split(",") if x]
    sizes = [8192, 32768] if args.quick else [int(x) for x in lists(args.prefill)]
    cases = [tuple(int(v) for v in c.split("x")) for c in lists(args.decode)]
    t0 = time.time()
    rep = {"device": torch.cuda.get_device_name(), "torch": torch.__version__}
    rep["fp8_gemm_tflops"] = fp8_gemm_tflops()
    rep["copy_tbps"] = copy_tbps()
    gemm = rep["fp8_gemm_tflops"]
    print(f"torch {torch.__version__} on {rep['device']}: fp8 GEMM "
          f"{'-' if gemm is None else f'{gemm:.0f}'} TFLOP/s, copy {rep['copy_tbps']:.2f} TB/s")
    rep["results"] = []
    for L in sizes:
        try:
            r = prefill(L)
        except Exception as e:  # out of memory at large L: the other cases still run
            print(f"torch prefill L={L} failed: {e!r}"[:300])
            torch.cuda.empty_cache()
            continue
        rep["results"].append(r)
        print(f"torch prefill L={L:<7} {r['ms']:10.1f} ms{' (est.)' if r['estimated'] else '       '} "
              f"{r['tflops']:6.1f} TFLOP/s")
    for b, ctx in cases:
        try:
            r = decode(b, ctx)
        except Exception as e:
            print(f"torch decode b={b} ctx={ctx} failed: {e!r}"[:300])
            torch.cuda.empty_cache()
            continue
        rep["results"].append(r)
        print(f"torch decode b={b:<2} ctx={ctx:<6} {r['us']:10.1f} us  {r['tbps']:.2f} TB/s")
    rep["wall_s"] = time.time() - t0
    if args.json:
        with open(args.json, "w") as f:
            json.dump(rep, f, indent=2)


if __name__ == "__main__":
    main()
