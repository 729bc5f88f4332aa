"""hisa: flat DSA and hierarchical HISA top-k selection for sparse-attention indexers.

    import numpy as np, hisa
    idx, blocks = hisa.select_prefill(q, k, w, k_scale=k_scale, method="hisa")  # q [T,H,D], k [S,D], w [T,H]

Everything after q, k and w is keyword-only. Output positions are relative to each sequence's start.
"""
from ._hisa import Error, backends, cuda_available, select_prefill  # noqa: F401

__all__ = ["Error", "backends", "cuda_available", "select_prefill"]
