"""Shared pieces of the fidelity study: data, the byte-level LM, the lightning indexer, fp8, selection
(SEMANTICS.md sections 2-5), metrics (section 8), checkpoints and a safetensors writer.

Runs under torch 2.x on the GPU (the study) and under old CPU torch (1.13, the local smoke test):
every newer API has a fallback here.
"""
import glob
import json
import lzma
import math
import os
import struct
import time
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

# ----------------------------------------------------------------------------------------------
# configuration


class Cfg:
    """Model and indexer shapes. The indexer follows DeepSeek-V3.2's Indexer: 64 heads x 128 dims,
    64 rotary dims, LayerNorm on keys, Hadamard rotation, ReLU, per-head weights from the hidden
    state scaled by H^-0.5 * D^-0.5 (and by the q fp8 scale at evaluation)."""

    def __init__(self, **kw):
        self.vocab = 256
        self.d_model = 384
        self.n_layers = 6
        self.n_heads = 6  # attention heads of the base model (head dim 64)
        self.mlp_mult = 4
        self.rope_theta = 100000.0
        self.idx_heads = 64
        self.idx_dim = 128
        self.idx_rope = 64
        self.idx_rank = 128  # low-rank query path (DeepSeek feeds the MLA query latent; ours is owned)
        for k, v in kw.items():
            if not hasattr(self, k):
                raise ValueError("unknown cfg field " + k)
            setattr(self, k, v)

    def to_dict(self):
        return dict(self.__dict__)


TINY = dict(d_model=64, n_layers=2, n_heads=2, idx_rank=16)

# ----------------------------------------------------------------------------------------------
# data


def read_books(path):
    with lzma.open(path, "rt", encoding="utf-8") as f:
        return f.read().split("\n<|book|>\n")


def load_corpus_bytes(paths, threads=8):
    """Concatenated UTF-8 bytes of every book in paths (books joined by a blank line)."""
    with ThreadPoolExecutor(threads) as ex:
        parts = list(ex.map(read_books, sorted(paths)))
    books = [b for p in parts for b in p]
    raw = "\n\n".join(books).encode("utf-8")
    return np.frombuffer(raw, dtype=np.uint8).copy(), len(books)


def load_valid_books(path):
    return [np.frombuffer(b.encode("utf-8"), dtype=np.uint8).copy() for b in read_books(path)]


# ----------------------------------------------------------------------------------------------
# small helpers with fallbacks for old torch


def rms_norm(x, weight, eps=1e-6):
    if hasattr(F, "rms_norm"):
        return F.rms_norm(x, (x.shape[-1],), weight, eps)
    xf = x.float()
    y = xf * torch.rsqrt(xf.pow(2).mean(-1, keepdim=True) + eps)
    return (y * weight.float()).to(x.dtype)


class RMSNorm(nn.Module):
    def __init__(self, d):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(d))

    def forward(self, x):
        return rms_norm(x, self.weight)


def rope_tables(n, dim, theta, device):
    inv = 1.0 / (theta ** (torch.arange(0, dim, 2, device=device, dtype=torch.float32) / dim))
    ang = torch.arange(n, device=device, dtype=torch.float32)[:, None] * inv[None, :]
    return ang.cos(), ang.sin()  # [n, dim/2]


def apply_rope(x, cos, sin):
    """x [..., T, (heads,) dim] with rotate-half pairing; cos/sin [T, dim/2] broadcast on the
    caller's layout (pass them already shaped)."""
    x1, x2 = x.float().chunk(2, dim=-1)
    y = torch.cat([x1 * cos - x2 * sin, x1 * sin + x2 * cos], dim=-1)
    return y.to(x.dtype)


def causal_attention(q, k, v):
    """q, k, v [B, H, T, dh]."""
    if hasattr(F, "scaled_dot_product_attention"):
        return F.scaled_dot_product_attention(q, k, v, is_causal=True)
    T = q.shape[-2]
    s = (q.float() @ k.float().transpose(-1, -2)) / math.sqrt(q.shape[-1])
    m = torch.ones(T, T, dtype=torch.bool, device=q.device).tril()
    s = s.masked_fill(~m, float("-inf"))
    return (s.softmax(-1) @ v.float()).to(q.dtype)


def hadamard(n, device):
    h = torch.ones(1, 1)
    while h.shape[0] < n:
        h = torch.cat([torch.cat([h, h], 1), torch.cat([h, -h], 1)], 0)
    return (h / math.sqrt(n)).to(device)


# ----------------------------------------------------------------------------------------------
# the base model


class Block(nn.Module):
    def __init__(self, c):
        super().__init__()
        d = c.d_model
        self.nh = c.n_heads
        self.n1 = RMSNorm(d)
        self.qkv = nn.Linear(d, 3 * d, bias=False)
        self.o = nn.Linear(d, d, bias=False)
        self.n2 = RMSNorm(d)
        self.fc1 = nn.Linear(d, c.mlp_mult * d, bias=False)
        self.fc2 = nn.Linear(c.mlp_mult * d, d, bias=False)

    def qkv_heads(self, h, cos, sin):
        """h [B, T, d] -> q, k, v [B, H, T, dh] with rope on q and k."""
        Bsz, T, d = h.shape
        qkv = self.qkv(h).view(Bsz, T, 3, self.nh, d // self.nh).permute(2, 0, 3, 1, 4)
        q, k, v = qkv[0], qkv[1], qkv[2]
        return apply_rope(q, cos, sin), apply_rope(k, cos, sin), v

    def mlp(self, x):
        return self.fc2(F.gelu(self.fc1(self.n2(x)), approximate="tanh"))


class LM(nn.Module):
    def __init__(self, c):
        super().__init__()
        self.c = c
        self.emb = nn.Embedding(c.vocab, c.d_model)
        self.blocks = nn.ModuleList([Block(c) for _ in range(c.n_layers)])
        self.nf = RMSNorm(c.d_model)
        self.head = nn.Linear(c.d_model, c.vocab, bias=False)
        for n, p in self.named_parameters():
            if p.dim() == 2:
                std = 0.02 / math.sqrt(2 * c.n_layers) if n.endswith(("o.weight", "fc2.weight")) else 0.02
                nn.init.normal_(p, 0.0, std)

    def rope(self, T, device):
        return rope_tables(T, self.c.d_model // self.c.n_heads, self.c.rope_theta, device)

    def forward(self, tok, capture=False):
        """tok [B, T] long -> logits [B, T, V]; with capture, also per layer (h, q, k) where h is the
        attention input (after the norm) [B, T, d] and q, k the roped heads [B, H, T, dh]."""
        Bsz, T = tok.shape
        cos, sin = self.rope(T, tok.device)
        x = self.emb(tok)
        caps = []
        for blk in self.blocks:
            h = blk.n1(x)
            q, k, v = blk.qkv_heads(h, cos, sin)
            if capture:
                caps.append((h.detach(), q.detach(), k.detach()))
            y = causal_attention(q, k, v).transpose(1, 2).reshape(Bsz, T, -1)
            x = x + blk.o(y)
            x = x + blk.mlp(x)
        logits = self.head(self.nf(x))
        return (logits, caps) if capture else logits


# ----------------------------------------------------------------------------------------------
# the lightning indexer (one per layer)


class Indexer(nn.Module):
    def __init__(self, c):
        super().__init__()
        d, H, D, r = c.d_model, c.idx_heads, c.idx_dim, c.idx_rank
        self.H, self.D, self.R = H, D, c.idx_rope
        self.theta = c.rope_theta
        self.wq_a = nn.Linear(d, r, bias=False)
        self.q_norm = RMSNorm(r)
        self.wq_b = nn.Linear(r, H * D, bias=False)
        self.wk = nn.Linear(d, D, bias=False)
        self.k_norm = nn.LayerNorm(D)
        self.weights_proj = nn.Linear(d, H, bias=False)
        self.register_buffer("had", hadamard(D, "cpu"), persistent=False)

    def _rope(self, x, pos):
        cos, sin = rope_tables(int(pos.max().item()) + 1, self.R, self.theta, x.device)
        cos, sin = cos[pos], sin[pos]
        if x.dim() == 3:
            cos, sin = cos[:, None, :], sin[:, None, :]
        return torch.cat([apply_rope(x[..., : self.R], cos, sin), x[..., self.R:]], -1)

    def queries(self, h, pos):
        """h [R, d] attention inputs of query tokens at positions pos [R] -> q [R, H, D] (rope on the
        first R dims, then the Hadamard rotation, as DeepSeek's Indexer), w [R, H] fp32 with
        H^-0.5 * D^-0.5 folded in."""
        R = h.shape[0]
        q = self.wq_b(self.q_norm(self.wq_a(h))).view(R, self.H, self.D)
        q = self._rope(q, pos) @ self.had.to(q.dtype)
        w = self.weights_proj(h).float() * (self.H ** -0.5) * (self.D ** -0.5)
        return q, w

    def keys(self, h):
        """h [S, d] -> k [S, D] (LayerNorm, rope, Hadamard rotation)."""
        k = self.k_norm(self.wk(h))
        pos = torch.arange(h.shape[0], device=h.device)
        return self._rope(k, pos) @ self.had.to(k.dtype)

    def forward(self, h):
        pos = torch.arange(h.shape[0], device=h.device)
        q, w = self.queries(h, pos)
        return q, self.keys(h), w


# ----------------------------------------------------------------------------------------------
# fp8 e4m3 (e4m3fn: bias 7, max 448, no inf)


def e4m3_table():
    vals = np.zeros(256, dtype=np.float64)
    for c in range(256):
        s, E, M = c >> 7, (c >> 3) & 15, c & 7
        if E == 15 and M == 7:
            v = np.nan
        elif E == 0:
            v = M * 2.0 ** -9
        else:
            v = (1 + M / 8.0) * 2.0 ** (E - 7)
        vals[c] = -v if s else v
    return vals


E4M3 = e4m3_table()
_POS = torch.tensor(E4M3[:127], dtype=torch.float64)  # codes 0..126, increasing


def has_fp8():
    return hasattr(torch, "float8_e4m3fn")


def round_e4m3_emulated(x):
    """Round-to-nearest-even onto the e4m3 grid (|x| <= 448 assumed), in float32."""
    a = x.abs().float()
    _, ex = torch.frexp(torch.where(a > 0, a, torch.ones_like(a)))
    e = torch.clamp(ex - 1, min=-6)
    step = torch.pow(2.0, (e - 3).float())
    r = torch.round(a / step) * step
    r = torch.clamp(r, max=448.0)
    return torch.where(x < 0, -r, r)


def to_e4m3_values(x):
    """x float (already scaled into [-448, 448]) -> float32 tensor of e4m3 values."""
    x = x.float().clamp(-448.0, 448.0)
    if has_fp8():
        return x.to(torch.float8_e4m3fn).float()
    return round_e4m3_emulated(x)


def e4m3_codes(vals):
    """float32 e4m3 values -> uint8 codes (numpy)."""
    if has_fp8():
        return vals.to(torch.float8_e4m3fn).view(torch.uint8).cpu().numpy()
    a = vals.abs().double().cpu()
    idx = torch.searchsorted(_POS, a.contiguous())
    assert torch.equal(_POS[idx.clamp(max=126)], a), "value not on the e4m3 grid"
    code = idx.to(torch.int32) + 128 * (vals.cpu() < 0).to(torch.int32)
    return code.numpy().astype(np.uint8)


def quant_rows_ue8m0(x):
    """Per-row fp8 quantisation with DeepSeek's power-of-two ('ue8m0') scale over the last dim:
    scale = 2^ceil(log2(amax / 448)); a zero row gets scale 1. Returns (e4m3 values fp32, scale)."""
    amax = x.float().abs().amax(-1, keepdim=True)
    scale = torch.where(amax > 0, torch.pow(2.0, torch.ceil(torch.log2(amax / 448.0))), torch.ones_like(amax))
    return to_e4m3_values(x.float() / scale), scale.squeeze(-1)


def quantize_indexer(q, k, w):
    """fp32 q [T,H,D], k [S,D], w [T,H] -> q8 values, k8 values, k_scale [S], w_eval [T,H] with the q
    scale folded in (SEMANTICS.md section 1)."""
    q8, qs = quant_rows_ue8m0(q)
    k8, ks = quant_rows_ue8m0(k)
    return q8, k8, ks, w.float() * qs


# ----------------------------------------------------------------------------------------------
# scores, selection and metrics (float32 on the GPU; ties toward the lower position)

INT64_MIN = -(2 ** 63)


def token_scores(q8, w8, k8, kscale, chunk_heads=None):
    """I[r, p] = k_scale[p] * sum_h w[r,h] * relu(q8[r,h] . k8[p]) in IEEE fp32 (no TF32).
    q8 [R,H,D], w8 [R,H], k8 [S,D], kscale [S] -> [R, S]."""
    R, H, D = q8.shape
    s = (q8.reshape(R * H, D) @ k8.t()).view(R, H, -1).clamp_(min=0)
    out = torch.bmm(w8.view(R, 1, H), s).view(R, -1)
    return out * kscale[None, :]


def block_scores(q8, w8, kbar):
    """J[r, j] = sum_h w[r,h] * relu(q8[r,h] . kbar[j]); kbar [NB, D] fp32."""
    R, H, D = q8.shape
    s = (q8.reshape(R * H, D) @ kbar.t()).view(R, H, -1).clamp_(min=0)
    return torch.bmm(w8.view(R, 1, H), s).view(R, -1)


def pooled_keys(k8, kscale, B, mode="mean"):
    """Pooled keys of the complete blocks of the sequence: [S // B, D] fp32."""
    S, D = k8.shape
    nb = S // B
    kd = (k8[: nb * B].float() * kscale[: nb * B, None]).view(nb, B, D)
    return kd.mean(1) if mode == "mean" else kd.amax(1)


def order_key(scores, valid):
    """int64 keys whose descending order is (score desc, index asc); invalid -> INT64_MIN.
    scores [R, N] float32 (no NaN)."""
    s = scores.float() + 0.0  # -0.0 -> +0.0
    bits = s.view(torch.int32).to(torch.int64)
    mono = torch.where(bits >= 0, bits, bits ^ 0x7FFFFFFF)
    idx = torch.arange(s.shape[1], device=s.device, dtype=torch.int64)
    key = mono * (2 ** 32) + (0xFFFFFFFF - idx)[None, :]
    return key.masked_fill(~valid, INT64_MIN)


def topk_mask(scores, valid, k):
    """Boolean mask of the min(k, |valid|) best entries per row (ties toward the lower index)."""
    key = order_key(scores, valid)
    kk = min(k, key.shape[1])
    val, idx = torch.topk(key, kk, dim=1)
    out = torch.zeros_like(valid)
    out.scatter_(1, idx, val > INT64_MIN)
    return out


def choose_blocks(J, e, B, m, sink=1, local=1):
    """Block choice (SEMANTICS.md 4.4). J [R, NB] block scores (entries of blocks without a pooled
    key are ignored), e [R] causal ends -> bool [R, NB]."""
    R, NB = J.shape
    nblk = (e + B - 1) // B  # eligible blocks per row
    j = torch.arange(NB, device=J.device)[None, :]
    elig_other = (j >= sink) & (j < (nblk[:, None] - local))
    chosen = torch.zeros(R, NB, dtype=torch.bool, device=J.device)
    n_other = m - sink - local
    if n_other > 0:
        chosen |= topk_mask(torch.nan_to_num(J, nan=0.0), elig_other, n_other) & elig_other
    chosen |= j < sink
    chosen |= (j >= nblk[:, None] - local) & (j < nblk[:, None])
    chosen |= (nblk[:, None] <= m) & (j < nblk[:, None])
    return chosen


def expand_blocks(chosen, B, S):
    return chosen.repeat_interleave(B, dim=1)[:, :S]


def select(method, I, e, S, J=None, B=128, m=64, k=2048):
    """Selection masks [R, S] for method in flat | hisa | block. I [R, S] token scores (may be None
    for block), J [R, NB] block scores."""
    pos = torch.arange(S, device=e.device)[None, :]
    vis = pos < e[:, None]
    if method == "flat":
        return topk_mask(I, vis, k)
    nb = (S + B - 1) // B
    if J.shape[1] < nb:  # the sequence's partial last block has no pooled key: it is only ever forced
        J = torch.cat([J, J.new_zeros(J.shape[0], nb - J.shape[1])], 1)
    chosen = choose_blocks(J[:, :nb], e, B, m)
    cand = expand_blocks(chosen, B, S) & vis
    if method == "block":
        return cand
    return topk_mask(I, cand, k)


def score_softmax(I, e):
    """softmax of I over each row's visible positions (zero elsewhere)."""
    vis = torch.arange(I.shape[1], device=I.device)[None, :] < e[:, None]
    Im = I.float().masked_fill(~vis, float("-inf"))
    lse = torch.logsumexp(Im, dim=1, keepdim=True)
    return torch.exp(Im - lse).masked_fill(~vis, 0.0)


def row_metrics(X, Y, I, e, p=None):
    """Per-row IoU, recall and score-mass recall of selection X against Y (DSA) under scores I
    (p: score_softmax(I, e) if already computed). Returns float64 tensors [R] each."""
    inter = (X & Y).sum(1).double()
    union = (X | Y).sum(1).double()
    ny = Y.sum(1).double()
    if p is None:
        p = score_softmax(I, e)
    mx = (p * X).double().sum(1)
    my = (p * Y).double().sum(1)
    return inter / union.clamp(min=1), inter / ny.clamp(min=1), mx / my.clamp(min=1e-300)


def nearest_rank(x, percent):
    """The percentile rule of hisa::summarize: the value at rank max(1, ceil(n * percent / 100))."""
    x = np.sort(x)
    return float(x[max(1, (len(x) * percent + 99) // 100) - 1])


def summarize(iou, rec, mass):
    """The fields of hisa::FidelitySummary (p1 by the nearest-rank rule, as the library), plus the
    linear-interpolated 1st percentiles (numpy's default) as *_p1_interp."""
    if len(iou) == 0:
        return {"rows": 0}
    iou, rec, mass = (np.asarray(a, dtype=np.float64) for a in (iou, rec, mass))
    return {
        "rows": int(len(iou)),
        "iou_mean": float(iou.mean()), "iou_p1": nearest_rank(iou, 1), "iou_min": float(iou.min()),
        "recall_mean": float(rec.mean()), "recall_min": float(rec.min()),
        "mass_mean": float(mass.mean()), "mass_p1": nearest_rank(mass, 1), "mass_min": float(mass.min()),
        "iou_p1_interp": float(np.percentile(iou, 1)), "mass_p1_interp": float(np.percentile(mass, 1)),
    }


# ----------------------------------------------------------------------------------------------
# checkpoints (sharded so that every file stays under the 16 MiB limit of files back)


def save_sharded(sd, prefix, max_bytes=15 * 2 ** 20, dtype=torch.bfloat16):
    shards, cur, cur_b = [], {}, 0
    for n, t in sd.items():
        t = t.detach().to("cpu")
        if t.is_floating_point():
            t = t.to(dtype)
        nb = t.numel() * t.element_size()
        if cur and cur_b + nb > max_bytes:
            shards.append(cur)
            cur, cur_b = {}, 0
        cur[n] = t
        cur_b += nb
    if cur:
        shards.append(cur)
    for old in glob.glob(prefix + "-*.pt"):
        os.remove(old)
    for i, sh in enumerate(shards):
        torch.save(sh, "%s-%02d.pt" % (prefix, i))
    return len(shards)


def load_sharded(prefix):
    sd = {}
    files = sorted(glob.glob(prefix + "-*.pt"))
    if not files:
        raise FileNotFoundError(prefix + "-*.pt")
    for f in files:
        sd.update(torch.load(f, map_location="cpu"))
    return sd


# ----------------------------------------------------------------------------------------------
# safetensors (written by hand: the format is 8-byte header length, JSON header, raw data)

ST_DTYPES = {np.dtype(np.float32): "F32", np.dtype(np.int32): "I32", np.dtype(np.float64): "F64",
             np.dtype(np.int64): "I64"}


def save_safetensors(path, tensors, metadata=None):
    """tensors: name -> numpy array, or (\"F8_E4M3\", uint8 array) for fp8 codes."""
    header, blobs, off = {}, [], 0
    for name, t in tensors.items():
        if isinstance(t, tuple):
            dt, arr = t
        else:
            arr = t
            dt = ST_DTYPES[arr.dtype]
        b = np.ascontiguousarray(arr).astype(arr.dtype.newbyteorder("<"), copy=False).tobytes()
        header[name] = {"dtype": dt, "shape": list(arr.shape), "data_offsets": [off, off + len(b)]}
        blobs.append(b)
        off += len(b)
    if metadata:
        header["__metadata__"] = {str(k): str(v) for k, v in metadata.items()}
    hb = json.dumps(header, separators=(",", ":")).encode("utf-8")
    hb += b" " * ((8 - len(hb) % 8) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(hb)))
        f.write(hb)
        for b in blobs:
            f.write(b)


def load_safetensors_np(path):
    """-> (dict name -> numpy array; F8_E4M3 as uint8 codes, metadata dict, dtypes dict)."""
    np_dt = {"F32": np.float32, "I32": np.int32, "F64": np.float64, "I64": np.int64, "F8_E4M3": np.uint8,
             "U8": np.uint8}
    with open(path, "rb") as f:
        data = f.read()
    (n,) = struct.unpack("<Q", data[:8])
    header = json.loads(data[8: 8 + n])
    meta = header.pop("__metadata__", {})
    out, dts = {}, {}
    base = 8 + n
    for name, h in header.items():
        a, b = h["data_offsets"]
        arr = np.frombuffer(data[base + a: base + b], dtype=np.dtype(np_dt[h["dtype"]]).newbyteorder("<"))
        out[name] = arr.reshape(h["shape"]).copy()
        dts[name] = h["dtype"]
    return out, meta, dts


# ----------------------------------------------------------------------------------------------


class Clock:
    def __init__(self, budget_s):
        self.t0 = time.time()
        self.budget = budget_s

    def el(self):
        return time.time() - self.t0

    def left(self):
        return self.budget - self.el()


def log(*a):
    print(*a, flush=True)
