"""One entry point for the whole study (see model/README.md).

    python3 model/study.py smoke                 # tiny end-to-end check (CPU or GPU, ~1 min)
    python3 model/study.py run1 --out $OUT       # device run 1: smoke, pre-train, indexer warm-up
    python3 model/study.py run2 --out $OUT       # device run 2: more warm-up, the study, the fixture
    python3 model/study.py needle --out $OUT     # passkey-mixed training, then the needle grid

Inputs are read from .carry/ (copied there by model/stage.sh): .carry/data/*.txt.xz and, for run2,
.carry/ckpt/{base,indexer}-NN.pt.
"""
import argparse
import glob
import json
import math
import os
import sys
import tempfile
import time
import traceback

import numpy as np
import torch
import torch.nn.functional as F

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from common import (TINY, Cfg, Indexer, LM, e4m3_codes, has_fp8, load_corpus_bytes, load_safetensors_np,  # noqa: E402
                    load_sharded, load_valid_books, log, quant_rows_ue8m0, round_e4m3_emulated, save_sharded)
from evaluate import EvalSettings, run_eval, sparse_nll  # noqa: E402
from fixture_eval import eval_case  # noqa: E402
from train import autocast, pretrain, train_indexers  # noqa: E402
from needle import heatmaps, passkey_batches, run_needle  # noqa: E402

T_START = time.time()
REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CARRY = os.path.join(REPO, ".carry")


TINY_PRE = dict(L_short=512, L_long=1024, tokens_per_step=4096, warmup=5, log_every=5)
TINY_IDX = dict(L=1024, rows_per_seq=128, chunk=64, log_every=2)
# k = 384: block-sparse at the token budget takes m = k / B blocks, at least sink + local + 1 = 3
TINY_EVAL = dict(k=384, Bs=[64, 128], mBs=[512, 1024], default=(64, 8), window=2048, row_stride=2,
                 ctx_windows=[4096], ctx_stride=4, loss_windows=1, fixture_rows=48, fixture_small_e=8,
                 chunk_elems=2 ** 22, max_fid_windows=2)
TINY_FIX = [("hisa", 64, 8, 128), ("block", 64, 3, 128)]


def elapsed():
    return time.time() - T_START


def device_info(device):
    info = {"torch": torch.__version__, "device": str(device), "fp8_native": has_fp8()}
    if device.type == "cuda":
        info["gpu"] = torch.cuda.get_device_name(0)
    return info


def eval_mode(model, idxs, device):
    """The model and its indexers in eval mode, the training's cached GPU memory given back."""
    if device.type == "cuda":
        torch.cuda.empty_cache()
    model.eval()
    for ix in idxs:
        ix.eval()


def build(cfg, device):
    model = LM(cfg).to(device)
    idxs = [Indexer(cfg).to(device) for _ in range(cfg.n_layers)]
    return model, idxs


def save_ckpt(out, model, idxs, cfg, which=("base", "indexer")):
    n = 0
    if "base" in which:
        n += save_sharded(model.state_dict(), os.path.join(out, "base"))
    if "indexer" in which:
        sd = {"%d.%s" % (i, k): v for i, ix in enumerate(idxs) for k, v in ix.state_dict().items()}
        n += save_sharded(sd, os.path.join(out, "indexer"))
    with open(os.path.join(out, "cfg.json"), "w") as f:
        json.dump(cfg.to_dict(), f)
    return n


def load_ckpt(d, device):
    with open(os.path.join(d, "cfg.json")) as f:
        cfg = Cfg(**json.load(f))
    model, idxs = build(cfg, device)
    model.load_state_dict({k: v.float() for k, v in load_sharded(os.path.join(d, "base")).items()})
    sd = load_sharded(os.path.join(d, "indexer"))
    for i, ix in enumerate(idxs):
        ix.load_state_dict({k.split(".", 1)[1]: v.float() for k, v in sd.items() if k.startswith("%d." % i)})
    return cfg, model, idxs


@torch.no_grad()
def valid_loss(model, books, L, n, device):
    from evaluate import interleave, windows_from_books
    ws = interleave(windows_from_books(books, L, 4))[:n]
    tot = []
    for bi, off in ws:
        tok = torch.from_numpy(books[bi][off: off + L + 1].astype(np.int64)).to(device)
        with autocast(device):
            logits = model(tok[None, :-1])
        tot.append(F.cross_entropy(logits[0].float(), tok[1:]).item())
    return float(np.mean(tot)) if tot else float("nan")


# ----------------------------------------------------------------------------------------------


def smoke(device, data, books, tmp):
    """Every code path at tiny sizes, with checks. Raises on failure."""
    t0 = time.time()
    ok = []
    # fp8: native conversion against the emulation, and the ue8m0 bound
    x = torch.randn(4096, 128, device=device) * torch.rand(4096, 1, device=device) * 3
    v, s = quant_rows_ue8m0(x)
    assert float(v.abs().max()) <= 448.0 and torch.isfinite(v).all()
    if has_fp8():
        em = round_e4m3_emulated((x / s[:, None]).clamp(-448, 448))
        mism = int((em != v).sum())
        log("smoke: fp8 native vs emulated mismatches %d / %d" % (mism, v.numel()))
        ok.append("fp8_mismatch=%d" % mism)
    codes = e4m3_codes(v[:4])
    from common import E4M3
    assert np.array_equal(E4M3[codes].astype(np.float32), v[:4].cpu().numpy()), "e4m3 codes"

    import selftest
    bad = selftest.main(device.type)
    assert bad == 0, "torch selection differs from the numpy reference on %d rows" % bad

    cfg = Cfg(**TINY)
    torch.manual_seed(0)
    model, idxs = build(cfg, device)
    pretrain(model, data, 4.0, device, L_short=512, L_long=1024, tokens_per_step=4096, warmup=5, log_every=5)
    train_indexers(model, idxs, data, 4.0, device, L=1024, rows_per_seq=128, chunk=64, log_every=2)
    # checkpoint round trip
    save_ckpt(tmp, model, idxs, cfg)
    _, m2, i2 = load_ckpt(tmp, device)
    tok = torch.from_numpy(books[0][:1025].astype(np.int64)).to(device)
    # the restricted forward with method dense equals the plain fp32 forward
    model.eval()
    with torch.no_grad():
        ref = F.cross_entropy(model(tok[None, :-1])[0].float(), tok[1:], reduction="none")
        st0 = EvalSettings(k=128, chunk_elems=2 ** 22)
        dn = sparse_nll(model, idxs, tok, "dense", st0)
        err = float((dn - ref).abs().max())
        log("smoke: sparse dense vs plain forward max |d nll| = %.2e" % err)
        assert err < 1e-3, err
        # flat with k >= T equals dense
        st1 = EvalSettings(k=2048, chunk_elems=2 ** 22)
        fl = sparse_nll(model, idxs, tok, "flat", st1)
        assert float((fl - ref).abs().max()) < 1e-3
        # hisa keeping every block (m * B = T = k: the library needs m * B >= k) equals dense
        hs = sparse_nll(model, idxs, tok, "hisa", EvalSettings(k=1024, chunk_elems=2 ** 22), B=64, m=16)
        assert float((hs - ref).abs().max()) < 1e-3
    st = EvalSettings(**TINY_EVAL)
    fx = os.path.join(tmp, "fx.safetensors")
    R = run_eval(model, idxs, books, st, tmp, 200.0 if device.type == "cpu" else 120.0, device, fixture_path=fx, smoke=True)
    assert R["parts_done"] == ["fidelity", "fixture", "loss", "context"], R["parts_done"]
    for name, ent in R["fidelity"]["configs"].items():
        o = ent["overall"]["all_rows"]
        assert 0 <= o["iou_min"] <= o["iou_mean"] <= 1 + 1e-12, (name, o)
    # rows with e <= m*B select exactly as flat
    log("smoke: dense bpb %.3f; default %s" % (R["fidelity"]["dense_bpb"],
                                               R["fidelity"]["configs"]["hisa B=64 mB=512"]["overall"]))
    for name, ent in R["fidelity"]["configs"].items():
        lo = [b for b in ent["by_e"] if b["e_hi"] <= ent["B"] * ent["m"] and b.get("rows", 0) > 0]
        for b in lo:
            assert b["iou_min"] == 1.0 and abs(b["mass_min"] - 1.0) < 1e-9, (name, b)
    # the numpy float64 path on the fixture against the torch fp32 path
    out, _ = eval_case(fx, configs=TINY_FIX)
    tn = R["fixture"]["torch_fp32"]
    a = out["configs"]["hisa B=64 m=8 k=128"]["all_rows"]["iou_mean"]
    b = tn["hisa B=64 m=8"]["all_rows"]["iou_mean"]
    log("smoke: fixture IoU numpy-f64 %.6f torch-fp32 %.6f" % (a, b))
    assert abs(a - b) < 0.02, (a, b)
    try:
        from safetensors.torch import load_file
        t = load_file(fx)
        mine, _, _ = load_safetensors_np(fx)
        same = all(np.array_equal(t[n].view(torch.uint8).numpy() if t[n].dtype == torch.float8_e4m3fn
                                  else t[n].numpy(), mine[n]) for n in mine)
        log("smoke: safetensors library reads the fixture: %s, dtypes %s" % (same, {n: str(t[n].dtype) for n in t}))
        assert same
    except ImportError:
        log("smoke: safetensors library not installed here; skipped")
    log("smoke passed in %.0fs %s" % (time.time() - t0, ok))


# ----------------------------------------------------------------------------------------------


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("stage", choices=["smoke", "run1", "run2", "needle"])
    ap.add_argument("--out", default=os.environ.get("OUT", "/tmp/hisa_out"))
    ap.add_argument("--budget", type=float, default=560.0, help="seconds from process start")
    ap.add_argument("--idx-seconds", type=float, default=100.0)
    ap.add_argument("--idx-lr", type=float, default=1e-3)
    ap.add_argument("--ckpt", default=os.path.join(CARRY, "ckpt"))
    ap.add_argument("--data", default=os.path.join(CARRY, "data"))
    ap.add_argument("--skip-smoke", action="store_true")
    ap.add_argument("--tiny", action="store_true", help="plumbing test of run1/run2 at tiny sizes (CPU)")
    ap.add_argument("--needle-frac", type=float, default=0.25,
                    help="needle: fraction of the pre-training windows that are passkey documents")
    ap.add_argument("--needle-ckpt", default="", help="needle: evaluate this checkpoint, no training")
    ap.add_argument("--needle-grid-seconds", type=float, default=-1.0,
                    help="needle: seconds kept for the grid after training (0: train only; default "
                         "0.45 of the budget)")
    ap.add_argument("--needle-lengths", default="8192,16384,32768")
    ap.add_argument("--needle-depths", type=int, default=6, help="depths 0 .. 1 in this many steps")
    ap.add_argument("--needle-per-cell", type=int, default=3)
    ap.add_argument("--needle-methods", default="dense,flat,hisa,hisa_L4,block,hisa_r1,hisa_r2,hisa_r4")
    a = ap.parse_args()
    os.makedirs(a.out, exist_ok=True)
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    torch.set_float32_matmul_precision("highest")
    info = device_info(device)
    log("study %s: %s (t=%.0fs)" % (a.stage, info, elapsed()))

    train_files = sorted(glob.glob(os.path.join(a.data, "train-*.txt.xz")))
    books = load_valid_books(os.path.join(a.data, "valid-00.txt.xz"))
    raw, nb = load_corpus_bytes(train_files)
    data = torch.from_numpy(raw).to(device)
    log("data: %d training books, %.1f MB from %d files; %d held-out books (%s bytes) (t=%.0fs)" % (
        nb, raw.size / 1e6, len(train_files), len(books), [len(b) for b in books], elapsed()))
    report = {"stage": a.stage, "info": info}

    if a.stage == "smoke":
        with tempfile.TemporaryDirectory() as tmp:
            smoke(device, data, books, tmp)
        return

    if a.stage == "needle":
        # Train (or load) a model whose pre-training mixes in passkey documents, warm up its
        # indexers, then the needle grid; the seeds are fixed (torch 0, the passkeys 0).
        if a.needle_ckpt:
            cfg, model, idxs = load_ckpt(a.needle_ckpt, device)
            log("loaded checkpoint from %s (t=%.0fs)" % (a.needle_ckpt, elapsed()))
        else:
            cfg = Cfg(**TINY) if a.tiny else Cfg()
            torch.manual_seed(0)
            model, idxs = build(cfg, device)
            grid_s = a.needle_grid_seconds
            if grid_s < 0:
                grid_s = 40.0 if a.tiny else 0.45 * a.budget
            pre_s = a.budget - elapsed() - a.idx_seconds - grid_s
            report["pretrain"] = pretrain(model, data, pre_s, device, batch_fn=passkey_batches(a.needle_frac),
                                          **(TINY_PRE if a.tiny else {}))
            save_ckpt(a.out, model, idxs, cfg, which=("base",))
            idx_s = a.budget - elapsed() - grid_s
            report["indexer"] = train_indexers(model, idxs, data, idx_s, device, **(TINY_IDX if a.tiny else {}))
            save_ckpt(a.out, model, idxs, cfg, which=("indexer",))
        del data
        eval_mode(model, idxs, device)
        lengths = [512, 1024] if a.tiny else [int(x) for x in a.needle_lengths.split(",")]
        if a.needle_grid_seconds == 0 and not a.needle_ckpt:
            lengths = []  # train only
        depths = np.linspace(0.0, 1.0, a.needle_depths)
        methods = a.needle_methods.split(",")
        res = run_needle(model, idxs, books, device, lengths, depths, 1 if a.tiny else a.needle_per_cell,
                         methods, k=128 if a.tiny else 2048, deadline=T_START + a.budget - 10.0)
        res["heatmaps"] = heatmaps(res, os.path.join(a.out, "needle"))
        report["needle"] = res
        with open(os.path.join(a.out, "needle_grid.json"), "w") as f:
            json.dump(res, f, indent=1)

    if a.stage == "run1":
        if not a.skip_smoke:
            try:
                with tempfile.TemporaryDirectory() as tmp:
                    smoke(device, data, books, tmp)
                report["smoke"] = "passed"
            except Exception:
                traceback.print_exc()
                report["smoke"] = "FAILED: " + traceback.format_exc()[-2000:]
                log("SMOKE FAILED; continuing with training so that the run is not lost")
            if device.type == "cuda":
                torch.cuda.empty_cache()
        cfg = Cfg(**TINY) if a.tiny else Cfg()
        torch.manual_seed(0)
        model, idxs = build(cfg, device)
        nparam = sum(p.numel() for p in model.parameters())
        nidx = sum(p.numel() for ix in idxs for p in ix.parameters())
        log("model: %.2fM params; indexers %.2fM params (t=%.0fs)" % (nparam / 1e6, nidx / 1e6, elapsed()))
        pre_s = a.budget - elapsed() - a.idx_seconds - 25.0
        report["pretrain"] = pretrain(model, data, pre_s, device, **(TINY_PRE if a.tiny else {}))
        report["valid_loss_32k"] = valid_loss(model, books, 2048 if a.tiny else 32768, 6, device)
        log("held-out loss at 32K: %.4f nats/byte (%.3f bpb) (t=%.0fs)" % (
            report["valid_loss_32k"], report["valid_loss_32k"] / math.log(2), elapsed()))
        save_ckpt(a.out, model, idxs, cfg, which=("base",))
        idx_s = a.budget - elapsed() - 8.0
        report["indexer"] = train_indexers(model, idxs, data, idx_s, device, **(TINY_IDX if a.tiny else {}))
        save_ckpt(a.out, model, idxs, cfg, which=("indexer",))
        report["params"] = {"base": nparam, "indexer": nidx}
    elif a.stage == "run2":
        cfg, model, idxs = load_ckpt(a.ckpt, device)
        log("loaded checkpoint from %s (t=%.0fs)" % (a.ckpt, elapsed()))
        if a.idx_seconds > 0:
            report["indexer_more"] = train_indexers(model, idxs, data, a.idx_seconds, device, seed=2,
                                                    lr=a.idx_lr, warmup=10, **(TINY_IDX if a.tiny else {}))
            save_ckpt(a.out, model, idxs, cfg, which=("indexer",))
        del data
        eval_mode(model, idxs, device)
        st = EvalSettings(**TINY_EVAL) if a.tiny else EvalSettings()
        fx = os.path.join(a.out, "fidelity_fixture.safetensors")
        ev_s = a.budget - elapsed() - 25.0
        report["eval"] = run_eval(model, idxs, books, st, a.out, ev_s, device, fixture_path=fx)
        if os.path.exists(fx):
            from fixture_eval import DEFAULT_CONFIGS
            fo, _ = eval_case(fx, configs=TINY_FIX if a.tiny else DEFAULT_CONFIGS)
            fo["torch_fp32_same_rows"] = report["eval"].get("fixture", {}).get("torch_fp32")
            with open(os.path.join(a.out, "fixture_fidelity.json"), "w") as f:
                json.dump(fo, f, indent=1)
    if device.type == "cuda":
        report["max_memory_gib"] = torch.cuda.max_memory_allocated() / 2 ** 30
        log("peak GPU memory %.1f GiB" % report["max_memory_gib"])
    report["seconds"] = elapsed()
    with open(os.path.join(a.out, "%s.json" % a.stage), "w") as f:
        json.dump(report, f, indent=1, default=float)
    log("%s finished at t=%.0fs; files in %s: %s" % (a.stage, elapsed(), a.out, sorted(os.listdir(a.out))))


if __name__ == "__main__":
    main()
