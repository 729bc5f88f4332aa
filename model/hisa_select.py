"""The model's indexer selection through the hisa package (flat DSA, HISA and block-sparse with
mean pooling: the library's rule, SEMANTICS.md sections 3-5), as boolean masks over key positions.

The package is the installed `hisa`, or the build folder's (HISA_PYTHONPATH, else
build/python of the repository: `HISA_PYTHON=1 bash scripts/build.sh`).
"""
import os
import sys

import numpy as np

_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def load_hisa():
    try:
        import hisa  # noqa: PLC0415
    except ImportError:
        sys.path.insert(0, os.environ.get("HISA_PYTHONPATH", os.path.join(_ROOT, "build", "python")))
        try:
            import hisa  # noqa: PLC0415
        except ImportError as e:
            raise ImportError("the hisa package is neither installed nor built in build/python "
                              "(HISA_PYTHON=1 bash scripts/build.sh, or pip install .)") from e
    return hisa


hisa = load_hisa()


def _is_torch(x):
    return type(x).__module__.split(".")[0] == "torch"


def select_mask(method, q8, w8, k8, kscale, e, S, B=128, m=64, k=2048, backend=None, given_blocks=None,
                return_blocks=False):
    """Selection masks [R, S] of rows whose causal ends are e [R] over keys [0, S) of one sequence.

    q8 [R, H, D], k8 [>= S, D]: e4m3 values (float32 on the fp8 grid, or float8_e4m3fn tensors);
    w8 [R, H] float32 with every scale folded in; kscale [>= S] float32. NumPy arrays or torch
    tensors: on a CUDA device the CUDA backend runs (fp8 inputs, so that hisa and block take its
    fused path), on the host the cpu backend (float32 values: the same scores). Returns a boolean
    array of the inputs' kind and device. given_blocks [R, m] int32 (hisa, block): another layer's
    chosen blocks for these rows (cross-layer reuse: no block stage); return_blocks: also return
    the rows' chosen blocks [R, m] int32."""
    if _is_torch(q8):
        import torch  # noqa: PLC0415

        if q8.is_cuda and hasattr(torch, "float8_e4m3fn"):
            q8, k8 = q8.to(torch.float8_e4m3fn), k8.to(torch.float8_e4m3fn)  # exact: already on the grid
        q8, k8 = q8.contiguous(), k8[:S].contiguous()
        w8, kscale = w8.float().contiguous(), kscale[:S].float().contiguous()
        ke = e.to(torch.int32).contiguous()
        ks = torch.zeros_like(ke)
    else:
        q8, k8 = np.ascontiguousarray(q8, np.float32), np.ascontiguousarray(k8[:S], np.float32)
        w8, kscale = np.ascontiguousarray(w8, np.float32), np.ascontiguousarray(kscale[:S], np.float32)
        ke = np.ascontiguousarray(e, np.int32)
        ks = np.zeros_like(ke)
    idx, blocks = hisa.select_prefill(q8, k8, w8, k_scale=kscale, ks=ks, ke=ke, method=method,
                                      block_size=B, top_blocks=m, topk=k, backend=backend,
                                      given_blocks=given_blocks)
    mask = indices_to_mask(idx, S)
    return (mask, blocks) if return_blocks else mask


def indices_to_mask(idx, S):
    """[R, width] positions (valid first, then -1) -> bool [R, S]."""
    if _is_torch(idx):
        import torch  # noqa: PLC0415

        R = idx.shape[0]
        col = torch.where(idx >= 0, idx.long(), torch.full_like(idx, S, dtype=torch.long))
        mask = torch.zeros(R, S + 1, dtype=torch.bool, device=idx.device)
        mask.scatter_(1, col, True)
        return mask[:, :S]
    mask = np.zeros((idx.shape[0], S + 1), dtype=bool)
    rows = np.repeat(np.arange(idx.shape[0]), idx.shape[1])
    col = np.where(idx >= 0, idx, S).reshape(-1)
    mask[rows, col] = True
    return mask[:, :S]
