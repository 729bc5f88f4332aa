"""hisa: flat DSA and hierarchical HISA top-k selection for the sparse-attention indexer.

    import hisa
    idx, blocks = hisa.select_prefill(q, k, w, k_scale=k_scale, cu_seqlens_q=cu_q, cu_seqlens_k=cu_k,
                                      method="hisa", topk=2048)          # q [T,H,D], k [S,D], w [T,H]
    idx = hisa.hisa_indexer(q, k, k_scale, w, ks, ke, k_block_size=128, block_topk=64, topk_tokens=2048)
    idx, _ = hisa.select_decode(q, kv_cache, w, context_lens, block_table, topk=2048)

Arrays are NumPy arrays, PyTorch tensors (CPU or CUDA) or anything with DLPack or the array
interface; outputs are allocated where the inputs live and CUDA work runs on the current stream.
With PyTorch 2.4 or newer the calls are also torch custom ops (torch.ops.hisa.*, usable under
torch.compile(fullgraph=True) and CUDA-graph capture); see hisa.ops.
"""
from ._core import (  # noqa: F401
    Error,
    allocate_pooled_keys,
    dequantize_fp8,
    dsa_indexer,
    fidelity,
    hisa_indexer,
    judge_decode,
    judge_prefill,
    pack_paged_cache,
    quantize_fp8,
    reference_decode_scores,
    reference_scores,
    select_decode,
    select_prefill,
    update_pooled_keys,
)
from ._hisa import backends, cuda_available, cuda_built, cuda_device, to_bf16, to_float  # noqa: F401
from . import _torch_ops as ops  # noqa: F401,E402  (ops.available says whether they are registered)

__all__ = [
    "Error", "allocate_pooled_keys", "backends", "cuda_available", "cuda_built", "cuda_device",
    "dequantize_fp8", "dsa_indexer", "fidelity", "hisa_indexer", "judge_decode", "judge_prefill",
    "ops", "pack_paged_cache", "quantize_fp8", "reference_decode_scores", "reference_scores", "select_decode",
    "select_prefill", "to_bf16", "to_float", "update_pooled_keys",
]
