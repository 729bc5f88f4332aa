"""Pre-training of the byte-level LM and the DSA warm-up of its lightning indexers."""
import math
import time

import torch
import torch.nn.functional as F

from common import log


def autocast(device):
    if device.type == "cuda":
        return torch.autocast("cuda", dtype=torch.bfloat16)
    return torch.autocast("cpu", enabled=False)


def sample_batch(data, nseq, L, gen, device):
    """data: uint8 tensor on device. -> tokens [nseq, L + 1] long."""
    off = torch.randint(0, data.numel() - L - 1, (nseq,), generator=gen, device="cpu").to(device)
    idx = off[:, None] + torch.arange(L + 1, device=device)[None, :]
    return data[idx].long()


def make_adamw(params, lr, wd):
    decay = [p for p in params if p.dim() >= 2]
    other = [p for p in params if p.dim() < 2]
    groups = [{"params": decay, "weight_decay": wd}, {"params": other, "weight_decay": 0.0}]
    kw = dict(lr=lr, betas=(0.9, 0.95), eps=1e-8)
    if decay and decay[0].is_cuda:
        try:
            return torch.optim.AdamW(groups, fused=True, **kw)
        except (TypeError, RuntimeError):
            pass
    return torch.optim.AdamW(groups, **kw)


def pretrain(model, data, seconds, device, lr=1.5e-3, tokens_per_step=131072, L_short=8192, L_long=32768,
             long_frac=0.2, warmup=100, seed=0, log_every=50, valid_fn=None, batch_fn=None):
    """Train for a wall-clock budget. LR: linear warm-up over `warmup` steps, then cosine by elapsed time
    fraction down to 10%. The last `long_frac` of the time trains at L_long context. batch_fn: the
    batch sampler (default sample_batch; needle.passkey_batches mixes in passkey documents)."""
    batch_fn = batch_fn or sample_batch
    gen = torch.Generator().manual_seed(seed)
    opt = make_adamw(list(model.parameters()), lr, 0.1)
    model.train()
    t0 = time.time()
    step, hist = 0, []
    tok_seen = 0
    while True:
        el = time.time() - t0
        f = el / seconds
        if f >= 1.0:
            break
        L = L_long if f >= 1.0 - long_frac else L_short
        nseq = max(1, tokens_per_step // L)
        cur_lr = lr * min(1.0, (step + 1) / warmup) * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * min(f, 1.0))))
        for g in opt.param_groups:
            g["lr"] = cur_lr
        tok = batch_fn(data, nseq, L, gen, device)
        with autocast(device):
            logits = model(tok[:, :-1])
            loss = F.cross_entropy(logits.float().reshape(-1, logits.shape[-1]), tok[:, 1:].reshape(-1))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        gn = torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        step += 1
        tok_seen += nseq * L
        if step % log_every == 0 or step == 1:
            lv = loss.item()
            hist.append({"step": step, "t": round(time.time() - t0, 1), "L": L, "loss": lv, "lr": cur_lr,
                         "gnorm": float(gn)})
            log("pretrain step %d t=%.0fs L=%d loss=%.4f (%.3f bpb) lr=%.2e gn=%.2f tok/s=%.0f" % (
                step, time.time() - t0, L, lv, lv / math.log(2), cur_lr, float(gn), tok_seen / (time.time() - t0)))
    log("pretrain done: %d steps, %.1fM tokens in %.0fs" % (step, tok_seen / 1e6, time.time() - t0))
    return {"steps": step, "tokens": tok_seen, "seconds": time.time() - t0, "hist": hist}


# ----------------------------------------------------------------------------------------------
# indexer warm-up: base frozen, KL(head-mean dense attention || softmax(indexer scores))


def base_attention_probs(qb, kb, rows, Sc):
    """Head-mean causal attention distribution of the base layer for query positions `rows`.
    qb, kb [H, T, dh] (roped) -> [R, Sc] fp32 (zero beyond the causal end)."""
    H, T, dh = qb.shape
    s = torch.matmul(qb[:, rows].float(), kb[:, :Sc].float().transpose(1, 2)) / math.sqrt(dh)
    vis = torch.arange(Sc, device=qb.device)[None, :] <= rows[:, None]
    s = s.masked_fill(~vis[None], float("-inf"))
    return s.softmax(-1).mean(0)


def indexer_logits_train(q, w, k, Sc, cdt):
    """Training-time indexer scores (no fp8): q [R,H,D], w [R,H] fp32, k [S,D] -> [R, Sc] fp32."""
    R, H, D = q.shape
    s = (q.to(cdt).reshape(R * H, D) @ k[:Sc].to(cdt).t()).view(R, H, Sc)
    s = torch.relu(s).float()
    return torch.bmm(w.view(R, 1, H), s).view(R, Sc)


def indexer_layer_step(idx, h, qb, kb, rows, chunk, cdt, n_total):
    """Accumulates the gradient of this layer's KL on `rows` (sorted). Returns (sum KL, sum CE)."""
    k_all = idx.keys(h)
    k_leaf = k_all.detach().requires_grad_(True)
    kl_sum, ce_sum = 0.0, 0.0
    for c0 in range(0, rows.numel(), chunk):
        rc = rows[c0: c0 + chunk]
        Sc = int(rc[-1].item()) + 1
        q, w = idx.queries(h[rc], rc)
        I = indexer_logits_train(q, w, k_leaf, Sc, cdt)
        vis = torch.arange(Sc, device=h.device)[None, :] <= rc[:, None]
        logq = torch.log_softmax(I.masked_fill(~vis, float("-inf")), -1).masked_fill(~vis, 0.0)
        with torch.no_grad():
            p = base_attention_probs(qb, kb, rc, Sc)
            plogp = torch.where(p > 0, p * torch.log(p.clamp(min=1e-30)), torch.zeros_like(p)).sum()
        ce = -(p * logq).sum()
        (ce / n_total).backward()
        ce_sum += ce.item()
        kl_sum += ce.item() + plogp.item()
    k_all.backward(k_leaf.grad)
    return kl_sum, ce_sum


def train_indexers(model, idxs, data, seconds, device, lr=1e-3, L=32768, rows_per_seq=2048, chunk=512,
                   warmup=20, seed=1, log_every=20):
    """DSA warm-up: one window per step, `rows_per_seq` random query rows, every layer."""
    gen = torch.Generator().manual_seed(seed)
    params = [p for ix in idxs for p in ix.parameters()]
    opt = make_adamw(params, lr, 0.0)
    model.eval()
    for p in model.parameters():
        p.requires_grad_(False)
    cdt = torch.bfloat16 if device.type == "cuda" else torch.float32
    t0 = time.time()
    step, hist = 0, []
    nl = len(idxs)
    while time.time() - t0 < seconds:
        f = (time.time() - t0) / seconds
        cur_lr = lr * min(1.0, (step + 1) / warmup) * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * f)))
        for g in opt.param_groups:
            g["lr"] = cur_lr
        tok = sample_batch(data, 1, L, gen, device)[:, :-1]
        with torch.no_grad(), autocast(device):
            _, caps = model(tok, capture=True)
        n = min(rows_per_seq, L)
        rows = torch.randperm(L, generator=gen)[:n].sort().values.to(device)
        opt.zero_grad(set_to_none=True)
        kls = []
        for li in range(nl):
            h, qb, kb = caps[li]
            kl, _ = indexer_layer_step(idxs[li], h[0].float(), qb[0], kb[0], rows, chunk, cdt, n)
            kls.append(kl / n)
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        step += 1
        if step % log_every == 0 or step == 1:
            hist.append({"step": step, "t": round(time.time() - t0, 1), "kl": kls})
            log("indexer step %d t=%.0fs lr=%.2e KL per layer: %s" % (
                step, time.time() - t0, cur_lr, " ".join("%.3f" % x for x in kls)))
    log("indexer warm-up done: %d steps (%d rows/layer) in %.0fs" % (step, step * rows_per_seq, time.time() - t0))
    return {"steps": step, "rows_per_layer": step * rows_per_seq, "seconds": time.time() - t0, "hist": hist}
