#!/usr/bin/python3
"""PyTorch reference benchmark for lomo (plain-PyTorch LLaMA, fp32, CPU).

One mode per process so that peak RSS is per mode:

    /usr/bin/python3 tests/bench/torch_bench.py --mode lomo --threads 2
    /usr/bin/python3 tests/bench/torch_bench.py --all --threads 2   # every mode, one subprocess each
    /usr/bin/python3 tests/bench/torch_bench.py --selftest          # lomo == sgd, lomo-clip == sgd+clip

Prints one JSON line per mode on stdout.

Model: embed [V,C]; per layer RMSNorm -> q,k,v (no bias, GQA) -> RoPE (HF
rotate-half) -> causal attention (explicit matmul + masked softmax) -> o_proj,
residual; RMSNorm -> SwiGLU (gate, up, down), residual; final RMSNorm; untied
lm_head [V,C]; mean cross-entropy. Random init N(0, 0.02), norm weights = 1.
The same fixed random batch is used every step (so training losses fall).

Modes:
  inference  no_grad forward + loss
  sgd        forward, backward, torch.optim.SGD step, zero_grad(set_to_none)
  adamw      same with torch.optim.AdamW
  lomo       OpenLMLab/LOMO lomo.py scheme: a hook on every parameter; when a
             gradient has been accumulated into p.grad it is applied at the next
             hook firing (p -= lr*grad, p.grad = None), and once more after
             backward() for the last parameter (the reference's grad_func(0)).
  lomo-clip  reference two-pass clip_grad_norm scheme: backward(retain_graph=True)
             with hooks that only gather per-parameter grad norms (grads dropped),
             coef = min(1, clip / (total_norm + 1e-6)), then a second backward on
             the same graph with hooks applying p -= lr*coef*grad. One forward.

FLOPs (estimate): forward = 2 * n_matmul_params * tokens
                  + 2*2*layers*seq*seq*hidden*batch (attention QK^T and AV,
                  causal attention counted as the full seq^2).
training = 3x forward; lomo-clip = 5x forward (forward + 2 backwards).
"""
import argparse
import json
import math
import os
import resource
import statistics
import subprocess
import sys
import time

import torch
import torch.nn as nn
import torch.nn.functional as F

MODES = ["inference", "sgd", "adamw", "lomo", "lomo-clip"]


# --------------------------------------------------------------------------- model

class RMSNorm(nn.Module):
    def __init__(self, dim, eps):
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dim))

    def forward(self, x):
        return x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + self.eps) * self.weight


def rotate_half(x):
    h = x.shape[-1] // 2
    return torch.cat((-x[..., h:], x[..., :h]), dim=-1)


class Block(nn.Module):
    def __init__(self, a):
        super().__init__()
        C, H, KV = a.hidden, a.heads, a.kv_heads
        self.H, self.KV, self.hd = H, KV, C // H
        self.attn_norm = RMSNorm(C, a.norm_eps)
        self.q_proj = nn.Linear(C, H * self.hd, bias=False)
        self.k_proj = nn.Linear(C, KV * self.hd, bias=False)
        self.v_proj = nn.Linear(C, KV * self.hd, bias=False)
        self.o_proj = nn.Linear(H * self.hd, C, bias=False)
        self.mlp_norm = RMSNorm(C, a.norm_eps)
        self.gate_proj = nn.Linear(C, a.ffn, bias=False)
        self.up_proj = nn.Linear(C, a.ffn, bias=False)
        self.down_proj = nn.Linear(a.ffn, C, bias=False)

    def forward(self, x, cos, sin, mask):
        B, T, C = x.shape
        H, KV, hd = self.H, self.KV, self.hd
        h = self.attn_norm(x)
        q = self.q_proj(h).view(B, T, H, hd).transpose(1, 2)    # [B,H,T,hd]
        k = self.k_proj(h).view(B, T, KV, hd).transpose(1, 2)   # [B,KV,T,hd]
        v = self.v_proj(h).view(B, T, KV, hd).transpose(1, 2)
        q = q * cos + rotate_half(q) * sin
        k = k * cos + rotate_half(k) * sin
        if KV != H:  # HF repeat_kv
            r = H // KV
            k = k[:, :, None].expand(B, KV, r, T, hd).reshape(B, H, T, hd)
            v = v[:, :, None].expand(B, KV, r, T, hd).reshape(B, H, T, hd)
        att = torch.matmul(q, k.transpose(-1, -2)) * (1.0 / math.sqrt(hd))
        att = torch.softmax(att + mask, dim=-1)
        y = torch.matmul(att, v).transpose(1, 2).reshape(B, T, H * hd)
        x = x + self.o_proj(y)
        h = self.mlp_norm(x)
        return x + self.down_proj(F.silu(self.gate_proj(h)) * self.up_proj(h))


class Llama(nn.Module):
    def __init__(self, a):
        super().__init__()
        self.embed = nn.Embedding(a.vocab, a.hidden)
        self.layers = nn.ModuleList([Block(a) for _ in range(a.layers)])
        self.norm = RMSNorm(a.hidden, a.norm_eps)
        self.lm_head = nn.Linear(a.hidden, a.vocab, bias=False)
        for m in self.modules():
            if isinstance(m, (nn.Linear, nn.Embedding)):
                nn.init.normal_(m.weight, mean=0.0, std=0.02)
        hd = a.hidden // a.heads
        inv = 1.0 / (a.rope_theta ** (torch.arange(0, hd, 2, dtype=torch.float64) / hd))
        f = torch.outer(torch.arange(a.seq, dtype=torch.float64), inv)
        emb = torch.cat((f, f), dim=-1)
        self.register_buffer("cos", emb.cos().float(), persistent=False)  # [T,hd]
        self.register_buffer("sin", emb.sin().float(), persistent=False)
        self.register_buffer("mask", torch.full((a.seq, a.seq), float("-inf")).triu(1),
                             persistent=False)

    def forward(self, idx, targets):
        T = idx.shape[1]
        cos, sin, mask = self.cos[:T], self.sin[:T], self.mask[:T, :T]
        x = self.embed(idx)
        for blk in self.layers:
            x = blk(x, cos, sin, mask)
        logits = self.lm_head(self.norm(x))
        return F.cross_entropy(logits.view(-1, logits.shape[-1]), targets.reshape(-1))


# --------------------------------------------------------------------------- LOMO

class Lomo:
    """Fused-update optimizer following OpenLMLab/LOMO lomo.py (fp32, one rank).

    Each parameter gets p.register_hook(hook). In torch 1.13 a leaf tensor hook
    runs just before the gradient is accumulated into p.grad (i.e. after the
    autograd node that produced it -- which also produced dX from p -- has
    run). Like the reference, the hook applies the update for the parameters
    whose .grad is already set, then frees it; the one still pending after
    backward() is flushed by flush() (the reference's grad_func(0)).
    The reference sweeps all model.named_parameters() on each hook; we keep
    the same semantics with a pending list (O(1) per hook instead of O(P)).
    """

    def __init__(self, model, lr, clip_grad_norm=None):
        self.params = [p for p in model.parameters() if p.requires_grad]
        self.lr = lr
        self.clip_grad_norm = clip_grad_norm
        self.gather_norm = False
        self.grad_norms = []
        self.clip_coef = None
        self.pending = []
        for p in self.params:
            p.register_hook(self._make_hook(p))

    def _make_hook(self, p):
        def hook(grad):
            self.flush()
            self.pending.append(p)
            return grad  # accumulated into p.grad; consumed at the next flush
        return hook

    @torch.no_grad()
    def flush(self):
        for p in self.pending:
            g = p.grad
            if g is None:
                continue
            p.grad = None
            if self.gather_norm:
                self.grad_norms.append(torch.norm(g, 2.0))
            else:
                if self.clip_grad_norm is not None and self.clip_coef is not None:
                    g.mul_(self.clip_coef)
                p.data.add_(g, alpha=-self.lr)
        self.pending.clear()

    def fused_backward(self, loss, lr):
        self.lr = lr
        if self.clip_grad_norm is not None and self.clip_coef is None:
            raise ValueError("call grad_norm(loss) before fused_backward when clipping")
        loss.backward()
        self.flush()

    def grad_norm(self, loss):
        self.gather_norm = True
        self.grad_norms = []
        loss.backward(retain_graph=True)
        self.flush()
        with torch.no_grad():
            total = torch.norm(torch.stack(self.grad_norms), 2.0)
            self.clip_coef = torch.clamp(float(self.clip_grad_norm) / (total + 1e-6), max=1.0)
        self.gather_norm = False
        return total


# --------------------------------------------------------------------------- bench

def matmul_params(a):
    hd = a.hidden // a.heads
    per_layer = (a.hidden * a.heads * hd + 2 * a.hidden * a.kv_heads * hd
                 + a.heads * hd * a.hidden + 3 * a.hidden * a.ffn)
    return a.layers * per_layer + a.vocab * a.hidden  # + lm_head; embedding is a gather


def n_params(a):
    return matmul_params(a) + a.vocab * a.hidden + (2 * a.layers + 1) * a.hidden


def forward_flops(a):
    tokens = a.batch * a.seq
    return 2 * matmul_params(a) * tokens + 2 * 2 * a.layers * a.seq * a.seq * a.hidden * a.batch


def build(a):
    torch.manual_seed(a.seed)
    model = Llama(a)
    g = torch.Generator().manual_seed(a.seed + 1)
    tok = torch.randint(0, a.vocab, (a.batch, a.seq + 1), generator=g)
    return model, tok[:, :-1].contiguous(), tok[:, 1:].contiguous()


def make_step(a, model, idx, tgt):
    if a.mode == "inference":
        model.eval()

        def step():
            with torch.no_grad():
                return model(idx, tgt).item()
        return step
    model.train()
    if a.mode in ("sgd", "adamw"):
        ps = list(model.parameters())
        opt = (torch.optim.SGD(ps, lr=a.lr) if a.mode == "sgd"
               else torch.optim.AdamW(ps, lr=a.lr))

        def step():
            loss = model(idx, tgt)
            loss.backward()
            if a.clip_ref:  # selftest only: reference for lomo-clip
                torch.nn.utils.clip_grad_norm_(ps, a.clip)
            opt.step()
            opt.zero_grad(set_to_none=True)
            return loss.item()
        return step
    lomo = Lomo(model, a.lr, clip_grad_norm=a.clip if a.mode == "lomo-clip" else None)

    def step():
        loss = model(idx, tgt)
        if a.mode == "lomo-clip":
            lomo.grad_norm(loss)
        lomo.fused_backward(loss, a.lr)
        return loss.item()
    return step


def run_mode(a):
    model, idx, tgt = build(a)
    step = make_step(a, model, idx, tgt)
    losses, times = [], []
    for i in range(a.warmup + a.steps):
        t0 = time.perf_counter()
        losses.append(step())
        dt = time.perf_counter() - t0
        if i >= a.warmup:
            times.append(dt)
    return model, losses, times


def bench(a):
    _, losses, times = run_mode(a)
    med = statistics.median(times)
    mult = {"inference": 1, "sgd": 3, "adamw": 3, "lomo": 3, "lomo-clip": 5}[a.mode]
    flops = mult * forward_flops(a)
    out = {
        "impl": "torch",
        "mode": a.mode,
        "threads": a.threads,
        "shape": {"hidden": a.hidden, "layers": a.layers, "heads": a.heads,
                  "kv_heads": a.kv_heads, "ffn": a.ffn, "vocab": a.vocab,
                  "seq": a.seq, "batch": a.batch},
        "step_s_median": med,
        "tokens_per_s": a.batch * a.seq / med,
        "gflops": flops / med / 1e9,
        "peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0,
        "loss_first": losses[0],
        "loss_last": losses[-1],
        "step_s_all": times,
        "steps": a.steps, "warmup": a.warmup, "lr": a.lr,
        "n_params": n_params(a),
        "flops_per_step": flops,
        "torch": torch.__version__,
    }
    print(json.dumps(out), flush=True)


def selftest(a):
    """lomo must match SGD and lomo-clip must match SGD + clip_grad_norm_."""
    import copy
    ok = True
    shapes = [dict(hidden=64, layers=2, heads=4, kv_heads=4, ffn=128, vocab=500, seq=32, batch=2),
              dict(hidden=64, layers=2, heads=4, kv_heads=2, ffn=96, vocab=300, seq=16, batch=3)]
    for sh in shapes:
        for lomo_mode, clip_ref, lr in (("lomo", False, 0.05), ("lomo-clip", True, 0.5)):
            res = {}
            for mode in ("sgd", lomo_mode):
                b = copy.copy(a)
                vars(b).update(sh, mode=mode, steps=2, warmup=0, lr=lr,
                               clip_ref=(clip_ref and mode == "sgd"))
                model, losses, _ = run_mode(b)
                res[mode] = (losses, [p.detach().clone() for p in model.parameters()])
            (l0, p0), (l1, p1) = res["sgd"], res[lomo_mode]
            diff = max((x - y).abs().max().item() for x, y in zip(p0, p1))
            moved = max((x - y).abs().max().item() for x, y in zip(p0, build(b)[0].parameters()))
            good = diff <= 1e-6 * max(1.0, moved) and abs(l0[-1] - l1[-1]) < 1e-5
            ok &= good
            print(f"selftest kv_heads={sh['kv_heads']} {lomo_mode:9s} vs sgd{'+clip' if clip_ref else ''}:"
                  f" max|dW|={diff:.3g} (update size {moved:.3g})"
                  f" losses sgd={['%.6f' % x for x in l0]} {lomo_mode}={['%.6f' % x for x in l1]}"
                  f" {'OK' if good else 'FAIL'}", flush=True)
    print("selftest", "PASSED" if ok else "FAILED")
    return 0 if ok else 1


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--hidden", type=int, default=768)
    ap.add_argument("--layers", type=int, default=12)
    ap.add_argument("--heads", type=int, default=12)
    ap.add_argument("--kv-heads", type=int, default=None, help="default = heads")
    ap.add_argument("--ffn", type=int, default=2048)
    ap.add_argument("--vocab", type=int, default=32000)
    ap.add_argument("--seq", type=int, default=256)
    ap.add_argument("--batch", type=int, default=2)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--steps", type=int, default=5)
    ap.add_argument("--warmup", type=int, default=1)
    ap.add_argument("--mode", choices=MODES, default="inference")
    ap.add_argument("--lr", type=float, default=1e-3)
    ap.add_argument("--clip", type=float, default=1.0, help="lomo-clip max grad norm")
    ap.add_argument("--seed", type=int, default=1234)
    ap.add_argument("--norm-eps", type=float, default=1e-5)
    ap.add_argument("--rope-theta", type=float, default=10000.0)
    ap.add_argument("--all", action="store_true", help="run every mode in its own subprocess")
    ap.add_argument("--selftest", action="store_true", help="check lomo/lomo-clip against sgd at tiny shapes")
    a = ap.parse_args()
    a.clip_ref = False
    if a.kv_heads is None:
        a.kv_heads = a.heads
    if a.hidden % a.heads or a.heads % a.kv_heads or (a.hidden // a.heads) % 2:
        ap.error("need hidden % heads == 0, heads % kv_heads == 0, even head_dim")
    if a.steps < 1:
        ap.error("--steps must be >= 1")

    torch.set_num_threads(a.threads)
    try:
        torch.set_num_interop_threads(1)
    except RuntimeError:
        pass

    if a.selftest:
        return selftest(a)
    if a.all:
        rc = 0
        for mode in MODES:
            argv = [x for x in sys.argv[1:] if x != "--all"]
            # drop any --mode X / --mode=X given on the command line
            clean, skip = [], False
            for x in argv:
                if skip:
                    skip = False
                    continue
                if x == "--mode":
                    skip = True
                    continue
                if x.startswith("--mode="):
                    continue
                clean.append(x)
            r = subprocess.run([sys.executable, os.path.abspath(__file__)] + clean + ["--mode", mode])
            rc = rc or r.returncode
        return rc
    bench(a)
    return 0


if __name__ == "__main__":
    sys.exit(main())
