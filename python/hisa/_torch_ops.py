"""hisa's calls as PyTorch custom ops (torch.library, PyTorch 2.4 or newer), with fake (meta)
implementations so that they trace under torch.compile(fullgraph=True) and run inside captured CUDA
graphs. Without PyTorch, or with an older one, nothing is registered and `available` is False;
the plain functions of the package still take tensors.

    torch.ops.hisa.prefill(q, k, w, k_scale, cu_seqlens_q, cu_seqlens_k, ks, ke, method, block_size,
                           top_blocks, topk, sink_blocks, local_blocks, pooling, validate,
                           given_blocks=None)
        -> (indices [T, width] int32, blocks [T, m] int32; no columns for flat)
    torch.ops.hisa.decode(q, kv_cache, weights, context_lens, block_table, pooled, pooled_scales,
                          next_n, method, block_size, top_blocks, topk, sink_blocks, local_blocks, pooling, validate,
                          given_blocks=None)
        -> (indices [B * next_n, width] int32, blocks)
    given_blocks: another layer's chosen blocks (cross-layer reuse; the block stage is skipped).
    hisa.ops.hisa_indexer(...), hisa.ops.dsa_indexer(...): the public kernels' signatures on top.

Inside CUDA-graph capture the device-side index checks are skipped (they read a flag back), and
every captured call shares one workspace per device that keeps its buffers: replay graphs that
hold hisa calls one at a time, as graphs that share a memory pool.
"""
from typing import Optional, Tuple

from . import _core, _hisa

available = False
_reason = "PyTorch is not installed"

try:
    import torch
except ImportError:  # pragma: no cover - depends on the machine
    torch = None

if torch is not None:
    _version = tuple(int(p) for p in torch.__version__.split("+")[0].split(".")[:2] if p.isdigit())
    if _version < (2, 4) or not hasattr(torch.library, "custom_op"):
        _reason = "PyTorch %s is older than 2.4 (torch.library.custom_op)" % torch.__version__
    else:
        available = True
        _reason = ""


def _width(method, block_size, top_blocks, topk, sink_blocks, local_blocks, pooling):
    return _hisa.check_config(method, block_size, top_blocks, topk, sink_blocks, local_blocks, pooling)


def _has_blocks(method):
    return method not in ("flat", "dsa")


if available:
    Tensor = torch.Tensor

    @torch.library.custom_op("hisa::prefill", mutates_args=())
    def prefill(q: Tensor, k: Tensor, w: Tensor, k_scale: Optional[Tensor],
                cu_seqlens_q: Optional[Tensor], cu_seqlens_k: Optional[Tensor], ks: Optional[Tensor],
                ke: Optional[Tensor], method: str, block_size: int, top_blocks: int, topk: int,
                sink_blocks: int, local_blocks: int, pooling: str, validate: bool,
                given_blocks: Optional[Tensor] = None) -> Tuple[Tensor, Tensor]:
        idx, blocks = _core.select_prefill(
            q, k, w, k_scale=k_scale, cu_seqlens_q=cu_seqlens_q, cu_seqlens_k=cu_seqlens_k, ks=ks, ke=ke,
            method=method, block_size=block_size, top_blocks=top_blocks, topk=topk,
            sink_blocks=sink_blocks, local_blocks=local_blocks, pooling=pooling, validate=validate,
            given_blocks=given_blocks)
        return idx, blocks

    @prefill.register_fake
    def _prefill_fake(q, k, w, k_scale, cu_seqlens_q, cu_seqlens_k, ks, ke, method, block_size,
                      top_blocks, topk, sink_blocks, local_blocks, pooling, validate, given_blocks=None):
        width = _width(method, block_size, top_blocks, topk, sink_blocks, local_blocks, pooling)
        rows = q.shape[0]
        m = top_blocks if _has_blocks(method) else 0
        return (q.new_empty((rows, width), dtype=torch.int32), q.new_empty((rows, m), dtype=torch.int32))

    @torch.library.custom_op("hisa::decode", mutates_args=())
    def decode(q: Tensor, kv_cache: Tensor, weights: Tensor, context_lens: Tensor, block_table: Tensor,
               pooled: Optional[Tensor], pooled_scales: Optional[Tensor], next_n: int, method: str,
               block_size: int, top_blocks: int, topk: int, sink_blocks: int, local_blocks: int,
               pooling: str, validate: bool, given_blocks: Optional[Tensor] = None) -> Tuple[Tensor, Tensor]:
        # pooled_scales given: pooled is the device pooled cache's keys (allocate_pooled_keys).
        cache = (pooled, pooled_scales) if pooled_scales is not None else pooled
        idx, blocks = _core.select_decode(
            q, kv_cache, weights, context_lens, block_table, next_n=next_n if next_n > 0 else None,
            pooled=cache, method=method, block_size=block_size, top_blocks=top_blocks, topk=topk,
            sink_blocks=sink_blocks, local_blocks=local_blocks, pooling=pooling, validate=validate,
            given_blocks=given_blocks)
        return idx, blocks

    @decode.register_fake
    def _decode_fake(q, kv_cache, weights, context_lens, block_table, pooled, pooled_scales, next_n,
                     method, block_size, top_blocks, topk, sink_blocks, local_blocks, pooling, validate,
                     given_blocks=None):
        width = _width(method, block_size, top_blocks, topk, sink_blocks, local_blocks, pooling)
        rows = q.shape[0] * q.shape[1] if q.dim() == 4 else q.shape[0]
        m = top_blocks if _has_blocks(method) else 0
        return (q.new_empty((rows, width), dtype=torch.int32), q.new_empty((rows, m), dtype=torch.int32))

    def hisa_indexer(q, k, k_scale, weights, cu_seqlen_ks, cu_seqlen_ke, *, k_block_size=128,
                     block_topk=64, topk_tokens=2048, sink_blocks=1, local_blocks=1, validate=True):
        """hisa.hisa_indexer through the custom op: int32 [T, topk_tokens]."""
        idx, _ = torch.ops.hisa.prefill(q, k, weights, k_scale, None, None, cu_seqlen_ks, cu_seqlen_ke,
                                        "hisa", k_block_size, block_topk, topk_tokens, sink_blocks,
                                        local_blocks, "mean", validate)
        return idx

    def dsa_indexer(q, k, k_scale, weights, cu_seqlen_ks, cu_seqlen_ke, *, topk_tokens=2048,
                    validate=True):
        """hisa.dsa_indexer through the custom op: int32 [T, topk_tokens]."""
        idx, _ = torch.ops.hisa.prefill(q, k, weights, k_scale, None, None, cu_seqlen_ks, cu_seqlen_ke,
                                        "flat", 128, 64, topk_tokens, 1, 1, "mean", validate)
        return idx

    def paged_topk(q, kv_cache, weights, context_lens, block_table, *, topk_tokens=2048, validate=True):
        """Flat decode through the custom op, in DeepGEMM's argument order: int32 [B * next_n, topk]."""
        idx, _ = torch.ops.hisa.decode(q, kv_cache, weights, context_lens, block_table, None, None, 0, "flat",
                                       128, 64, topk_tokens, 1, 1, "mean", validate)
        return idx


def why_unavailable():
    """'' when the ops are registered, else the reason."""
    return _reason


# ---- fp8 quantisation of CUDA tensors -----------------------------------------------------------

def quantize_fp8_torch(x, rule, group, scale_shape):
    """hisa::quantize_fp8_rows's rule in torch operations, for CUDA tensors (the library has no
    device quantiser): amax per group, scale amax / 448 (rule 'amax') or its power of two
    2^ceil(log2(.)) read from the exponent bits (rule 'ue8m0', as DeepSeek's fast_round_scale),
    1 for a zero group; codes = RNE(x * (1 / scale)) saturated to +-448, or x / scale where the
    reciprocal of a subnormal scale overflows. Returns (float8_e4m3fn codes, float32 scale)."""
    fp8 = getattr(torch, "float8_e4m3fn", None)
    if fp8 is None:
        raise _core.Error("quantize_fp8 on CUDA needs a PyTorch with float8_e4m3fn")
    xf = x.float().reshape(-1, group)
    if not bool(torch.isfinite(xf).all()):  # the library refuses non-finite input too
        raise _core.Error("quantize_fp8_rows: non-finite value in x")
    amax = xf.abs().amax(dim=1, keepdim=True)
    s = amax / 448.0
    if rule == "ue8m0":
        bits = s.view(torch.int32)
        mantissa = bits & 0x7FFFFF
        exponent = (bits >> 23) & 0xFF
        # s = 2^(e - 127) * 1.m: the next power of two is 2^(e - 126) unless m == 0 (normal s);
        # A subnormal s (e == 0, amax below ~5e-36): the power of two from a float64 log2, which
        # is exact enough to tell 2^k + 1 ulp from 2^k at every subnormal.
        up = torch.where(mantissa == 0, exponent, exponent + 1)
        pow2 = (up.clamp(min=1) << 23).view(torch.float32)
        sub = torch.where(s == 0, s, torch.ldexp(torch.ones_like(s), torch.ceil(torch.log2(s.double())).int()))
        s = torch.where(exponent > 0, pow2, sub)
    s = torch.where(amax > 0, s, torch.ones_like(s))
    inv = 1.0 / s
    y = torch.where(torch.isfinite(inv), xf * inv, xf / s).clamp(-448.0, 448.0)
    codes = y.to(fp8).reshape(x.shape)
    return codes, s.reshape(scale_shape)
