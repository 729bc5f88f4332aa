"""The framework-neutral functions: arrays in (NumPy, PyTorch, anything with DLPack or the array
interface), selections out, allocated where the inputs live. Host arrays run on the host backends,
CUDA arrays on the CUDA backend on the caller's current stream; nothing is copied between host and
device. Every check and message comes from the C++ library (hisa.Error, a ValueError)."""
import numpy as np

from . import _hisa

try:  # PyTorch is optional: tensors are recognised, allocated and streamed through it when present
    import torch as _torch
except ImportError:  # pragma: no cover - depends on the machine
    _torch = None

Error = _hisa.Error

_FP8 = getattr(_torch, "float8_e4m3fn", None) if _torch is not None else None
_CUDA_TYPES = (2, 13)  # DLPack's kDLCUDA and kDLCUDAManaged


def _is_torch(x):
    return _torch is not None and isinstance(x, _torch.Tensor)


def _place(x):
    """('cpu', -1) or ('cuda', device id) of an array argument."""
    if _is_torch(x):
        return ("cuda", x.device.index if x.device.index is not None else _torch.cuda.current_device()) \
            if x.is_cuda else ("cpu", -1)
    if isinstance(x, np.ndarray) or not hasattr(x, "__dlpack_device__"):
        return ("cpu", -1)
    kind, dev = x.__dlpack_device__()
    return ("cuda", int(dev)) if int(kind) in _CUDA_TYPES else ("cpu", -1)


def _arg(x):
    """What the C++ core reads: torch tensors as DLPack capsules (fp8 as its uint8 bits, which every
    torch version exports), everything else as it is."""
    if not _is_torch(x):
        return x
    x = x.detach()
    if _FP8 is not None and x.dtype == _FP8:
        x = x.view(_torch.uint8)
    return _torch.utils.dlpack.to_dlpack(x)


def _torch_stream(device):
    raw = getattr(_torch._C, "_cuda_getCurrentRawStream", None)
    return int(raw(device)) if raw is not None else int(_torch.cuda.current_stream(device).cuda_stream)


def _stream(lead, stream):
    """The CUDA stream a call on `lead`'s data runs on: PyTorch's (or CuPy's) current stream of the
    tensor's device; `stream` (a cudaStream_t as an int) for other CUDA arrays, where None means the
    legacy default stream. 0 for host data."""
    where, dev = _place(lead)
    if where != "cuda":
        return 0
    if _is_torch(lead):
        current = _torch_stream(dev)
        if stream is not None and int(stream) != current:
            raise Error("stream %#x differs from PyTorch's current stream %#x on cuda:%d: hisa runs on "
                        "the tensors' current stream (select it with torch.cuda.stream(...))"
                        % (int(stream), current, dev))
        return current
    if stream is not None:
        return int(stream)
    mod = type(lead).__module__.split(".")[0]
    if mod == "cupy":
        import cupy  # noqa: PLC0415 - only for CuPy arrays

        return int(cupy.cuda.get_current_stream().ptr)
    return 0


def _empty_int32(like, shape):
    """An uninitialised int32 output next to `like` (the backends write every entry)."""
    if _is_torch(like):
        return _torch.empty(shape, dtype=_torch.int32, device=like.device)
    where, dev = _place(like)
    if where == "cpu":
        return np.empty(shape, dtype=np.int32)
    if type(like).__module__.split(".")[0] == "cupy":
        import cupy  # noqa: PLC0415

        with cupy.cuda.Device(dev):
            return cupy.empty(shape, dtype=cupy.int32)
    raise Error("%s is in CUDA memory: pass out=(indices, blocks) (int32 arrays on cuda:%d), since "
                "hisa allocates device outputs only through PyTorch or CuPy" % (type(like).__name__, dev))


def _shaped(x):
    """Sequences (lists) become NumPy arrays; arrays pass as they are."""
    return x if hasattr(x, "shape") else np.asarray(x)


def _backend(lead, backend, device):
    if device is not None:  # the earlier name of the argument
        if backend is not None and backend != device:
            raise Error("give backend= or device=, not both")
        backend = device
    if backend is None:
        backend = "cuda" if _place(lead)[0] == "cuda" else "cpu"
    return backend


def _outputs(lead, rows, width, m, with_blocks, out):
    if out is not None:
        indices, blocks = out if isinstance(out, tuple) else (out, None)
        return indices, blocks
    indices = _empty_int32(lead, (rows, width))
    blocks = _empty_int32(lead, (rows, m)) if with_blocks else None
    return indices, blocks


def _no_blocks(lead, rows):
    return _empty_int32(lead, (rows, 0))


def select_prefill(q, k, w, *, k_scale=None, cu_seqlens_q=None, cu_seqlens_k=None, ks=None, ke=None,
                   method="hisa", block_size=128, top_blocks=64, topk=2048, sink_blocks=1,
                   local_blocks=1, pooling="mean", backend=None, device=None, stream=None,
                   validate=True, out=None, given_blocks=None):
    """Top-k key positions of every query row of a ragged prefill (SEMANTICS.md sections 3-5).

    q [T, H, D] and k [S, D]: float32, bfloat16 or fp8 e4m3 (float8_e4m3fn; NumPy: uint16 / uint8
    holding the bits); w [T, H] float32; k_scale [S] (or [S, 1]) float32. The batch is
    cu_seqlens_q / cu_seqlens_k [N + 1] or per-query ks / ke [T] (int32; host arrays of another
    integer type are converted when the values fit), or neither for one host sequence.

    Returns (indices [T, width] int32, blocks [T, m] int32): positions relative to each sequence's
    start (ks, or cu_seqlens_k[b]), valid entries first, then -1 (width is topk, m * B for block);
    the chosen blocks, ascending then -1 (no columns for flat). Both live where q lives.
    backend: None (where the data is: 'cpu' for host, 'cuda' for device arrays), 'reference',
    'cpu', 'cuda' or 'auto'; host data with 'cuda' is staged through the GPU explicitly, device
    data never goes to the host. validate: the CUDA backend checks the index arrays on the device
    (one stream synchronisation; skipped inside CUDA-graph capture). out: (indices, blocks) to
    write into instead of allocating (blocks may be None). given_blocks (hisa, block): int32
    [T, m] chosen blocks from another layer's call on the same rows (its returned blocks), where q
    lives: the block stage is skipped and the tokens are chosen inside them (cross-layer reuse);
    each row ascending and distinct, then -1, or an error naming the entry.
    """
    width = _hisa.check_config(method, block_size, top_blocks, topk, sink_blocks, local_blocks, pooling)
    has_blocks = method not in ("flat", "dsa")
    q = _shaped(q)
    rows = int(q.shape[0])
    indices, blocks = _outputs(q, rows, width, top_blocks, has_blocks, out)
    st = _stream(q, stream)
    _hisa.prefill(_arg(q), _arg(k), _arg(w), _arg(k_scale), _arg(cu_seqlens_q), _arg(cu_seqlens_k),
                  _arg(ks), _arg(ke), _arg(indices), _arg(blocks), method, block_size, top_blocks,
                  topk, sink_blocks, local_blocks, pooling, _backend(q, backend, device), st,
                  bool(validate), _arg(given_blocks))
    return indices, (blocks if blocks is not None else _no_blocks(q, rows))


def _last_column(context_lens, next_n):
    """seq_lens [B] from context_lens [B] or DeepGEMM's [B, next_n] (the last column: the contract
    gives query j of request b the context seq_len - next_n + j + 1). Host arrays are checked
    against that rule; device arrays are not read."""
    if len(context_lens.shape) == 1:
        return context_lens
    if len(context_lens.shape) != 2 or int(context_lens.shape[1]) != next_n:
        raise Error("context_lens must be [B] or [B, next_n] with next_n = %d, got shape %s"
                    % (next_n, tuple(context_lens.shape)))
    last = context_lens[:, -1]
    last = last.contiguous() if _is_torch(last) else np.ascontiguousarray(last)
    if _place(context_lens)[0] == "cpu":
        cl = np.asarray(context_lens.cpu() if _is_torch(context_lens) else context_lens, dtype=np.int64)
        want = cl[:, -1:] - next_n + 1 + np.arange(next_n)[None, :]
        bad = np.argwhere(cl != want)
        if len(bad):
            b, j = (int(x) for x in bad[0])
            raise Error("context_lens[%d, %d] = %d but the contract gives query j of a request the "
                        "context context_lens[b, -1] - next_n + j + 1 = %d" % (b, j, cl[b, j], want[b, j]))
    return last


def _next_n(q, next_n):
    if len(q.shape) == 4:
        return int(q.shape[1])
    return 1 if next_n is None else int(next_n)


def select_decode(q, kv_cache, weights, context_lens, block_table, *, next_n=None, pooled=None,
                  method="flat", topk=2048, block_size=128, top_blocks=64, sink_blocks=1,
                  local_blocks=1, pooling="mean", backend=None, device=None, stream=None,
                  validate=True, out=None, given_blocks=None):
    """Top-k positions of every decode query from the paged fp8 indexer cache, in DeepGEMM's
    argument order (fp8_paged_mqa_logits(q, kv_cache, weights, context_lens, block_table, ...)).

    q [B, next_n, H, D] (or [B * next_n, H, D] with next_n=); kv_cache uint8 [pages, page_size,
    1, D + 4] (DeepGEMM's view) or [pages, page_size, D + 4]: per page, page_size * D fp8 values
    then page_size fp32 scales; weights [B * next_n, H] float32; context_lens int32 [B] or
    [B, next_n]; block_table int32 [B, max_pages]. pooled (hisa and block): the pooled-key cache
    that update_pooled_keys keeps, as allocate_pooled_keys made it: host float32 [B, max_blocks, D]
    for the cpu backends, or for CUDA tensors the device cache (keys uint8 [B, max_blocks, 128],
    scales float32 [B, max_blocks]) as a pair.

    Returns (indices [B * next_n, width] int32, blocks [B * next_n, m] int32), rows request-major,
    positions relative to the request's first token, valid first then -1. given_blocks (hisa,
    block): int32 [B * next_n, m] chosen blocks from another layer's call (cross-layer reuse):
    the block stage is skipped and pooled is not needed.
    """
    width = _hisa.check_config(method, block_size, top_blocks, topk, sink_blocks, local_blocks, pooling)
    has_blocks = method not in ("flat", "dsa")
    q, context_lens = _shaped(q), _shaped(context_lens)
    n = _next_n(q, next_n)
    rows = int(q.shape[0]) * (int(q.shape[1]) if len(q.shape) == 4 else 1)
    indices, blocks = _outputs(q, rows, width, top_blocks, has_blocks, out)
    st = _stream(q, stream)
    lens = _last_column(context_lens, n)
    keys, scales = pooled if isinstance(pooled, (tuple, list)) else (pooled, None)
    _hisa.decode(_arg(q), _arg(weights), _arg(kv_cache), _arg(block_table), _arg(lens),
                 0 if len(q.shape) == 4 else n, _arg(keys), _arg(indices), _arg(blocks), method,
                 block_size, top_blocks, topk, sink_blocks, local_blocks, pooling,
                 _backend(q, backend, device), st, bool(validate), _arg(scales),
                 _arg(given_blocks))
    return indices, (blocks if blocks is not None else _no_blocks(q, rows))


def hisa_indexer(q, k, k_scale, weights, cu_seqlen_ks, cu_seqlen_ke, *, k_block_size=128,
                 block_topk=64, topk_tokens=2048, sink_blocks=1, local_blocks=1, backend=None,
                 stream=None, validate=True):
    """The public HISA kernels' call: q [T, H, D], k [S, D], k_scale [S], weights [T, H], per-query
    key ranges cu_seqlen_ks / cu_seqlen_ke [T] int32 -> int32 [T, topk_tokens] (positions relative
    to cu_seqlen_ks, -1 padded)."""
    idx, _ = select_prefill(q, k, weights, k_scale=k_scale, ks=cu_seqlen_ks, ke=cu_seqlen_ke,
                            method="hisa", block_size=k_block_size, top_blocks=block_topk,
                            topk=topk_tokens, sink_blocks=sink_blocks, local_blocks=local_blocks,
                            backend=backend, stream=stream, validate=validate)
    return idx


def dsa_indexer(q, k, k_scale, weights, cu_seqlen_ks, cu_seqlen_ke, *, topk_tokens=2048,
                backend=None, stream=None, validate=True):
    """Flat DSA in the same form: what DeepGEMM's fp8_mqa_logits followed by a top-k over each row's
    [ks, ke) computes, as int32 [T, topk_tokens] positions relative to ks, -1 padded."""
    idx, _ = select_prefill(q, k, weights, k_scale=k_scale, ks=cu_seqlen_ks, ke=cu_seqlen_ke,
                            method="flat", topk=topk_tokens, backend=backend, stream=stream,
                            validate=validate)
    return idx


# ---- fp8 quantisation (DeepSeek-V3.2's per-token key / per-head query scales) ---------------------

def quantize_fp8(x, rule="ue8m0", group_size=None):
    """fp8 e4m3 codes and one float32 scale per group of `group_size` values along the last axis
    (None: the whole last axis, one scale per token or head), so that codes * scale approximates x.
    rule 'ue8m0': scale = 2^ceil(log2(amax / 448)) (DeepSeek-V3.2's power-of-two scales);
    'amax': scale = amax / 448. A zero group gets scale 1. Host arrays run through the library
    (hisa::quantize_fp8_rows); PyTorch CUDA tensors through the same rule in torch operations
    (bitwise the same: tests compare them), since the library has no device quantiser.

    Returns (codes, scale): codes of x's shape (NumPy: uint8 bits; PyTorch: float8_e4m3fn where
    torch has it), scale of shape x.shape[:-1] (+ [D / group_size] when grouped).
    """
    if rule not in ("ue8m0", "amax"):
        raise Error("unknown scale rule '%s' (expected amax or ue8m0)" % rule)
    shape = tuple(int(s) for s in x.shape)
    if not shape:
        raise Error("x must have at least one dimension")
    g = shape[-1] if group_size is None else int(group_size)
    if g <= 0 or shape[-1] % g:
        raise Error("group_size (%d) must divide the last dimension (%d)" % (g, shape[-1]))
    scale_shape = shape[:-1] + (() if group_size is None else (shape[-1] // g,))
    if _is_torch(x) and x.is_cuda:
        from ._torch_ops import quantize_fp8_torch  # noqa: PLC0415

        return quantize_fp8_torch(x, rule, g, scale_shape)
    if _is_torch(x):
        codes = _torch.empty(shape, dtype=_torch.uint8)
        scale = _torch.empty(scale_shape, dtype=_torch.float32)
        _hisa.quantize_fp8(_arg(x.reshape(-1, g).contiguous()), _arg(codes.view(-1, g)),
                           _arg(scale.view(-1)), rule)
        return (codes.view(_FP8) if _FP8 is not None else codes), scale
    if _place(x)[0] != "cpu":
        raise Error("quantize_fp8: CUDA arrays other than PyTorch tensors are not supported")
    xa = np.ascontiguousarray(np.asarray(x), dtype=np.float32).reshape(-1, g)
    codes = np.empty(xa.shape, dtype=np.uint8)
    scale = np.empty(xa.shape[0], dtype=np.float32)
    _hisa.quantize_fp8(xa, codes, scale, rule)
    return codes.reshape(shape), scale.reshape(scale_shape)


def dequantize_fp8(codes, scale, group_size=None):
    """float32 values codes * scale (NumPy, host): the inverse view of quantize_fp8."""
    c = np.asarray(codes)
    g = c.shape[-1] if group_size is None else int(group_size)
    v = _hisa.to_float(np.ascontiguousarray(c)).reshape(-1, g) * np.asarray(scale, dtype=np.float32).reshape(-1, 1)
    return v.reshape(c.shape).astype(np.float32)


# ---- the pooled-key cache of paged decode --------------------------------------------------------

def allocate_pooled_keys(batch, max_blocks, head_dim=128, like=None):
    """A pooled-key cache for hisa and block decode. Host (NumPy, or a CPU tensor when `like` is
    one): zeroed float32 [batch, max_blocks, head_dim]. CUDA (`like` a CUDA tensor): the device
    cache as a pair (keys uint8 [batch, max_blocks, 128], scales float32 [batch, max_blocks]),
    132 bytes per block of B tokens (fp8 e4m3 with one scale per block); max_blocks * B must cover
    the block table (max_pages * page_size). Rows follow the block table's rows."""
    if like is not None and _place(like)[0] == "cuda":
        if not _is_torch(like):
            raise Error("allocate_pooled_keys: the device pooled cache is allocated as PyTorch "
                        "CUDA tensors (like= a torch CUDA tensor)")
        if int(head_dim) != 128:
            raise Error("the device pooled cache takes head_dim 128, got %d" % head_dim)
        dev = like.device
        return (_torch.zeros((batch, max_blocks, 128), dtype=_torch.uint8, device=dev),
                _torch.ones((batch, max_blocks), dtype=_torch.float32, device=dev))
    if _is_torch(like):
        return _torch.zeros((batch, max_blocks, head_dim), dtype=_torch.float32)
    return np.zeros((batch, max_blocks, head_dim), dtype=np.float32)


def update_pooled_keys(kv_cache, block_table, new_lens, pooled, *, old_lens=None, block_size=128,
                       pooling="mean", stream=None):
    """After tokens [old_lens[b], new_lens[b]) of each request were written to the paged cache,
    pools every block that just became complete into `pooled` (in place; blocks
    old_lens // B <= j < new_lens // B); old_lens None pools every complete block. Host arrays:
    the float32 cache (mean or max pooling). CUDA tensors: the device cache pair from
    allocate_pooled_keys (mean pooling), one launch on the current stream (no synchronisation)."""
    if isinstance(pooled, (tuple, list)):
        if pooling != "mean":
            raise Error("the device pooled cache pools by the mean only, got pooling '%s'" % pooling)
        keys, scales = pooled
        _hisa.update_pooled_cache(_arg(kv_cache), _arg(block_table), _arg(old_lens), _arg(new_lens),
                                  _arg(keys), _arg(scales), int(block_size), _stream(keys, stream))
        return pooled
    for a in (kv_cache, block_table, new_lens, pooled, old_lens):
        if a is not None and _place(a)[0] == "cuda":
            raise Error("update_pooled_keys: CUDA arrays update the device pooled cache, the pair "
                        "allocate_pooled_keys(..., like=<CUDA tensor>) returns; got a single %s "
                        "array" % ("CUDA" if _place(pooled)[0] == "cuda" else "host"))
    _hisa.update_pooled_keys(_arg(kv_cache), _arg(block_table), _arg(old_lens), _arg(new_lens),
                             _arg(pooled), block_size, pooling)
    return pooled


# ---- the float64 reference, judging and fidelity (host) ----------------------------------------

def reference_scores(q, k, w, *, k_scale=None, cu_seqlens_q=None, cu_seqlens_k=None, ks=None, ke=None):
    """I(t, p) in float64 (SEMANTICS.md section 2) of host inputs: [T, max_t e_t], NaN past each
    row's causal end e_t."""
    return _hisa.reference_scores(_arg(q), _arg(k), _arg(w), _arg(k_scale), _arg(cu_seqlens_q),
                                  _arg(cu_seqlens_k), _arg(ks), _arg(ke))


def reference_decode_scores(q, kv_cache, weights, context_lens, block_table, *, next_n=None):
    """I(t, p) in float64 of host decode inputs: [B * next_n, max e], NaN past each row's end."""
    n = _next_n(q, next_n)
    return _hisa.reference_decode_scores(_arg(q), _arg(weights), _arg(kv_cache), _arg(block_table),
                                         _arg(_last_column(context_lens, n)), 0 if len(q.shape) == 4 else n)


def _cfg(kw):
    return (kw.get("method", "hisa"), kw.get("block_size", 128), kw.get("top_blocks", 64),
            kw.get("topk", 2048), kw.get("sink_blocks", 1), kw.get("local_blocks", 1),
            kw.get("pooling", "mean"))


_CFG_KEYS = {"method", "block_size", "top_blocks", "topk", "sink_blocks", "local_blocks", "pooling"}


def _split(kw, allowed):
    bad = set(kw) - _CFG_KEYS - allowed
    if bad:
        raise TypeError("unexpected keyword arguments: " + ", ".join(sorted(bad)))


def judge_prefill(q, k, w, indices, blocks=None, *, exact=False, rounding="exact", **kw):
    """Judges a prefill selection against the float64 reference (SEMANTICS.md section 7): a list of
    (row, message) for every wrong row (empty: all right). Host arrays. kw: the layout (k_scale,
    cu_seqlens_q, cu_seqlens_k, ks, ke) and the configuration (method, block_size, ...). rounding:
    how the backend stored pooled keys: 'exact', 'fp32' (cpu), 'fp8_block' / 'bf16' (cuda, fp8 /
    bf16 inputs); exact: small-integer inputs, the sets must equal the reference's. given_blocks:
    the call's given blocks (the blocks must repeat them, the tokens come from them)."""
    layout = {"k_scale", "cu_seqlens_q", "cu_seqlens_k", "ks", "ke"}
    given = kw.pop("given_blocks", None)
    _split(kw, layout)
    return _hisa.judge_prefill(_arg(q), _arg(k), _arg(w), *(_arg(kw.get(n)) for n in
                               ("k_scale", "cu_seqlens_q", "cu_seqlens_k", "ks", "ke")),
                               _arg(indices), _arg(blocks), *_cfg(kw), bool(exact), rounding,
                               _arg(given))


def judge_decode(q, kv_cache, weights, context_lens, block_table, indices, blocks=None, *, next_n=None,
                 exact=False, rounding="exact", **kw):
    """judge_prefill for a decode selection (host arrays)."""
    given = kw.pop("given_blocks", None)
    _split(kw, set())
    kw.setdefault("method", "flat")
    n = _next_n(q, next_n)
    return _hisa.judge_decode(_arg(q), _arg(weights), _arg(kv_cache), _arg(block_table),
                              _arg(_last_column(context_lens, n)), 0 if len(q.shape) == 4 else n,
                              _arg(indices), _arg(blocks), *_cfg(kw), bool(exact), rounding,
                              _arg(given))


def fidelity(a, b, visible, *, scores=None, budget_tokens=0):
    """Fidelity of selection a (hisa) against b (dsa) on the same rows (SEMANTICS.md section 8):
    per-row IoU, recall and, with scores ([T, S] float64, e.g. reference_scores), score-mass
    recall; summaries over all rows and over the rows that can differ (visible > budget_tokens,
    the budget m * B). a [T, wa], b [T, wb] int32 (valid entries then -1), visible [T] the rows'
    causal ends. Host arrays. Returns a dict: iou, recall, mass_recall, can_differ [T] and
    'all' / 'differ' summaries (rows, iou_mean, iou_p1, iou_min, recall_mean, recall_min, and
    mass_mean, mass_p1, mass_min with scores)."""
    return _hisa.fidelity(_arg(a), _arg(b), _arg(scores), _arg(visible), int(budget_tokens))


# ---- building a paged cache on the host (tests, examples) ---------------------------------------

def pack_paged_cache(codes, scale, seq_lens, page_size=64, num_pages=None, shuffle_seed=None):
    """A paged fp8 indexer cache in DeepGEMM's layout from per-request keys, on the host (NumPy).

    codes [B, L, D] uint8 (fp8 e4m3 bits, L >= max seq_lens) and scale [B, L] float32: request b's
    keys, of which the first seq_lens[b] are stored. Returns (kv_cache uint8 [pages, page_size, 1,
    D + 4]: per page, page_size * D fp8 values token-major then page_size fp32 scales; block_table
    int32 [B, max_pages]). Pages are handed out in order, or shuffled with shuffle_seed; unused
    table entries point at page 0."""
    codes = np.asarray(codes, dtype=np.uint8)
    scale = np.asarray(scale, dtype=np.float32)
    lens = np.asarray(seq_lens, dtype=np.int64)
    B, L, D = codes.shape
    if scale.shape != (B, L) or lens.shape != (B,) or (lens > L).any() or (lens < 0).any():
        raise Error("pack_paged_cache: codes [B, L, D], scale [B, L] and seq_lens [B] <= L, got %s, %s, %s"
                    % (codes.shape, scale.shape, lens.shape))
    pages_of = [(int(n) + page_size - 1) // page_size for n in lens]
    max_pages = max(1, max(pages_of) if pages_of else 1)
    used = sum(pages_of)
    total = max(used, 1) if num_pages is None else int(num_pages)
    if total < used:
        raise Error("pack_paged_cache: num_pages = %d but the requests need %d" % (total, used))
    order = np.arange(total)
    if shuffle_seed is not None:
        order = np.random.default_rng(shuffle_seed).permutation(total)
    page_bytes = page_size * (D + 4)
    cache = np.zeros((total, page_bytes), dtype=np.uint8)
    table = np.zeros((B, max_pages), dtype=np.int32)
    nxt = 0
    for b in range(B):
        for j in range(pages_of[b]):
            p = int(order[nxt])
            nxt += 1
            table[b, j] = p
            lo, hi = j * page_size, min((j + 1) * page_size, int(lens[b]))
            vals = np.zeros((page_size, D), dtype=np.uint8)
            vals[: hi - lo] = codes[b, lo:hi]
            sc = np.ones(page_size, dtype=np.float32)
            sc[: hi - lo] = scale[b, lo:hi]
            cache[p, : page_size * D] = vals.reshape(-1)
            cache[p, page_size * D:] = sc.view(np.uint8)
    return cache.reshape(total, page_size, 1, D + 4), table
